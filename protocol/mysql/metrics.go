package mysql

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dbrouter/dbrouter/proxy"
)

// metrics are resolved to concrete children up front: the hot path only
// increments.
type metrics struct {
	byMember     []prometheus.Counter               // queries routed to each member, unpinned
	pinned       []prometheus.Counter               // queries on a pinned/held connection
	errs         [proxy.NumKinds]prometheus.Counter // by kind
	sessions     prometheus.Gauge
	authFailures prometheus.Counter
	clientErrors prometheus.Counter
	// causal reads: a replica waited for the session's writes, or was too
	// slow and the primary answered.
	causalWaited   prometheus.Counter
	causalFallback prometheus.Counter
	// durations: dbrouter_query_duration_seconds by route and statement
	// kind, resolved up front so an observation is a few atomic adds.
	durations [numRoutes][numStmtKinds]prometheus.Observer
}

// Routes and statement kinds of dbrouter_query_duration_seconds: few
// values each, so the series stay few (9 per cluster).
const (
	routePrimary = iota // chosen as the primary (writes, reads that must be there)
	routeReplica        // a read on an eligible replica
	routePinned         // the connection the session is pinned to or holds
	numRoutes
)

const (
	stmtRead  = iota // provably read-only statements
	stmtWrite        // everything else that runs SQL (DML, DDL, BEGIN, COMMIT...)
	stmtOther        // session state (SET, USE), prepares, and other commands
	numStmtKinds
)

var (
	routeLabels = [numRoutes]string{"primary", "replica", "pinned"}
	kindLabels  = [numStmtKinds]string{"read", "write", "other"}
)

// durationBuckets span a loopback round trip (100 µs) to a long report
// (10 s).
var durationBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// newMetrics registers one proxy's metrics on reg (nil: none). Every proxy
// of a routerd shares its registry, one per cluster: vectors with a
// cluster label are registered by the first proxy and used by the others
// (see shared); collectors of one cluster's own (const cluster label) are
// registered by its proxy. A registration the registry refuses is an
// error, never dropped: a dropped one is a cluster whose metrics are
// silently never exported.
func newMetrics(cluster string, p *Proxy, reg prometheus.Registerer) (*metrics, error) {
	queries, err := shared(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dbrouter_queries_total", Help: "Commands forwarded, by cluster, member and route (member = not pinned, pinned = on a pinned or held connection).",
	}, []string{"cluster", "member", "route"}))
	if err != nil {
		return nil, err
	}
	errs, err := shared(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dbrouter_errors_total", Help: "Errors the proxy itself returned to clients, by kind.",
	}, []string{"cluster", "kind"}))
	if err != nil {
		return nil, err
	}
	causal, err := shared(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dbrouter_causal_reads_total", Help: "Replica reads after a session's write (causal_reads): waited = the replica caught up in time, primary = it did not and the primary answered.",
	}, []string{"cluster", "result"}))
	if err != nil {
		return nil, err
	}
	durations, err := shared(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "dbrouter_query_duration_seconds", Help: "Time from a statement's arrival to the end of the member's answer, for statements a member answered, by route (primary, replica, pinned) and kind (read, write, other).",
		Buckets: durationBuckets,
	}, []string{"cluster", "route", "kind"}))
	if err != nil {
		return nil, err
	}
	m := &metrics{}
	for r := range m.durations {
		for k := range m.durations[r] {
			m.durations[r][k] = durations.WithLabelValues(cluster, routeLabels[r], kindLabels[k])
		}
	}
	m.causalWaited, m.causalFallback = causal.WithLabelValues(cluster, "waited"), causal.WithLabelValues(cluster, "primary")
	m.sessions = prometheus.NewGauge(prometheus.GaugeOpts{Name: "dbrouter_client_sessions", Help: "Connected client sessions.", ConstLabels: prometheus.Labels{"cluster": cluster}})
	m.authFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "dbrouter_auth_failures_total", Help: "Client logins refused.", ConstLabels: prometheus.Labels{"cluster": cluster}})
	m.clientErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "dbrouter_client_protocol_errors_total", Help: "Client sessions closed for malformed or oversized packets.", ConstLabels: prometheus.Labels{"cluster": cluster}})
	for _, mem := range p.cfg.Members {
		m.byMember = append(m.byMember, queries.WithLabelValues(cluster, mem.Name, "routed"))
		m.pinned = append(m.pinned, queries.WithLabelValues(cluster, mem.Name, "pinned"))
	}
	for _, k := range proxy.Kinds() {
		m.errs[k] = errs.WithLabelValues(cluster, k.String())
	}
	gauge := prometheus.NewGaugeFunc // read at scrape time
	collectors := []prometheus.Collector{m.sessions, m.authFailures, m.clientErrors}
	for _, pool := range p.pools {
		pool := pool
		collectors = append(collectors,
			gauge(prometheus.GaugeOpts{Name: "dbrouter_backend_connections", Help: "Open backend connections per member.",
				ConstLabels: prometheus.Labels{"cluster": cluster, "member": pool.name, "state": "open"}},
				func() float64 { o, _ := pool.stats(); return float64(o) }),
			gauge(prometheus.GaugeOpts{Name: "dbrouter_backend_connections", Help: "Open backend connections per member.",
				ConstLabels: prometheus.Labels{"cluster": cluster, "member": pool.name, "state": "idle"}},
				func() float64 { _, i := pool.stats(); return float64(i) }),
			gauge(prometheus.GaugeOpts{Name: "dbrouter_backend_inflight", Help: "Statements sent to the member and waiting for its answer.",
				ConstLabels: prometheus.Labels{"cluster": cluster, "member": pool.name}},
				func() float64 { return float64(pool.inflight.Load()) }))
	}
	// Sessions keep their pin counts up to date as pins change (a few
	// atomic adds, only when they change); the gauge sums them per reason.
	for i, reason := range pinLabels {
		collectors = append(collectors, gauge(prometheus.GaugeOpts{Name: "dbrouter_pinned_sessions",
			Help:        "Client sessions pinned to a backend connection (keeping it between statements), by reason; a session pinned for several reasons counts under each.",
			ConstLabels: prometheus.Labels{"cluster": cluster, "reason": reason}},
			func() float64 {
				n := 0
				for _, pool := range p.pools {
					n += int(pool.pins.byReason[i].Load())
				}
				return float64(n)
			}))
	}
	if reg != nil {
		for _, c := range collectors {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	return m, nil
}

// shared registers vec on reg, or returns the identical vector another
// proxy of the same registry registered first.
func shared[V prometheus.Collector](reg prometheus.Registerer, vec V) (V, error) {
	if reg == nil {
		return vec, nil
	}
	err := reg.Register(vec)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(V); ok {
			return existing, nil
		}
	}
	if err != nil {
		return vec, fmt.Errorf("register metrics: %w", err)
	}
	return vec, nil
}

func (m *metrics) queries(member int, pinned bool) prometheus.Counter {
	if pinned {
		return m.pinned[member]
	}
	return m.byMember[member]
}

// errorsByKind is the counter of err's kind.
func (m *metrics) errorsByKind(err error) prometheus.Counter {
	return m.errs[proxy.KindOf(err)]
}

// stmtKindOf is the kind label of a command of class c answered as kind.
func stmtKindOf(c Class, kind respKind) int {
	switch {
	case kind != respResult && kind != respFetch:
		return stmtOther
	case c.Kind == KindRead:
		return stmtRead
	case c.Kind == KindWrite:
		return stmtWrite
	}
	return stmtOther
}
