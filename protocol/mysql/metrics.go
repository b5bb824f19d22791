package mysql

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dbrouter/dbrouter/router"
)

// metrics are resolved to concrete children up front: the hot path only
// increments.
type metrics struct {
	byMember     []prometheus.Counter // queries routed to each member, unpinned
	pinned       []prometheus.Counter // queries on a pinned/held connection
	errs         map[string]prometheus.Counter
	sessions     prometheus.Gauge
	authFailures prometheus.Counter
	clientErrors prometheus.Counter
	// causal reads: a replica waited for the session's writes, or was too
	// slow and the primary answered.
	causalWaited   prometheus.Counter
	causalFallback prometheus.Counter
}

var errorKinds = []string{"no_primary", "writable_conflict", "no_replica", "backend_down", "backend_lost", "pool_timeout", "session_state", "no_lease", "changing", "ack_fenced", "other"}

func newMetrics(cluster string, p *Proxy, reg prometheus.Registerer) *metrics {
	queries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dbrouter_queries_total", Help: "Commands forwarded, by cluster, member and route (member = not pinned, pinned = on a pinned or held connection).",
	}, []string{"cluster", "member", "route"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dbrouter_errors_total", Help: "Errors the proxy itself returned to clients, by kind.",
	}, []string{"cluster", "kind"})
	m := &metrics{errs: map[string]prometheus.Counter{}}
	causal := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dbrouter_causal_reads_total", Help: "Replica reads after a session's write (causal_reads): waited = the replica caught up in time, primary = it did not and the primary answered.",
	}, []string{"cluster", "result"})
	m.causalWaited, m.causalFallback = causal.WithLabelValues(cluster, "waited"), causal.WithLabelValues(cluster, "primary")
	m.sessions = prometheus.NewGauge(prometheus.GaugeOpts{Name: "dbrouter_client_sessions", Help: "Connected client sessions.", ConstLabels: prometheus.Labels{"cluster": cluster}})
	m.authFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "dbrouter_auth_failures_total", Help: "Client logins refused.", ConstLabels: prometheus.Labels{"cluster": cluster}})
	m.clientErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "dbrouter_client_protocol_errors_total", Help: "Client sessions closed for malformed or oversized packets.", ConstLabels: prometheus.Labels{"cluster": cluster}})
	for _, mem := range p.cfg.Members {
		m.byMember = append(m.byMember, queries.WithLabelValues(cluster, mem.Name, "routed"))
		m.pinned = append(m.pinned, queries.WithLabelValues(cluster, mem.Name, "pinned"))
	}
	for _, k := range errorKinds {
		m.errs[k] = errs.WithLabelValues(cluster, k)
	}
	conns := prometheus.NewGaugeFunc // per member, read at scrape time
	var collectors []prometheus.Collector
	collectors = append(collectors, queries, errs, causal, m.sessions, m.authFailures, m.clientErrors)
	for _, pool := range p.pools {
		pool := pool
		collectors = append(collectors,
			conns(prometheus.GaugeOpts{Name: "dbrouter_backend_connections", Help: "Open backend connections per member.",
				ConstLabels: prometheus.Labels{"cluster": cluster, "member": pool.name, "state": "open"}},
				func() float64 { o, _ := pool.stats(); return float64(o) }),
			conns(prometheus.GaugeOpts{Name: "dbrouter_backend_connections", Help: "Open backend connections per member.",
				ConstLabels: prometheus.Labels{"cluster": cluster, "member": pool.name, "state": "idle"}},
				func() float64 { _, i := pool.stats(); return float64(i) }))
	}
	if reg != nil {
		for _, c := range collectors {
			_ = reg.Register(c)
		}
	}
	return m
}

func (m *metrics) queries(member int, pinned bool) prometheus.Counter {
	if pinned {
		return m.pinned[member]
	}
	return m.byMember[member]
}

func (m *metrics) errorsByKind(err error) prometheus.Counter {
	k := "other"
	switch {
	case errors.Is(err, router.ErrWritableConflict):
		k = "writable_conflict"
	case errors.Is(err, router.ErrNoReplica):
		k = "no_replica"
	case errors.Is(err, router.ErrNoPrimary):
		k = "no_primary"
	case errors.Is(err, errBackendDown):
		k = "backend_down"
	case errors.Is(err, errBackendLost):
		k = "backend_lost"
	case errors.Is(err, errPoolTimeout):
		k = "pool_timeout"
	case errors.Is(err, errSessionState):
		k = "session_state"
	case errors.Is(err, router.ErrNoLease):
		k = "no_lease"
	case errors.Is(err, router.ErrChanging):
		k = "changing"
	case errors.Is(err, errAckFenced):
		k = "ack_fenced"
	}
	return m.errs[k]
}
