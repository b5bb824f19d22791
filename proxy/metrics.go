package proxy

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are one cluster's proxy metrics, whatever its protocol. Their
// names and labels are a contract (docs/admin.md lists them; dashboards
// read them): they never change. Every child is resolved up front, so the
// hot path only increments.
type Metrics struct {
	queries   []prometheus.Counter // dbrouter_queries_total by member, route "routed"
	pinned    []prometheus.Counter // by member, route "pinned": on a connection the session is pinned to or holds
	errs      [numKinds]prometheus.Counter
	durations [numRoutes][numStmtKinds]prometheus.Observer

	Sessions     prometheus.Gauge   // dbrouter_client_sessions
	AuthFailures prometheus.Counter // dbrouter_auth_failures_total
	ClientErrors prometheus.Counter // dbrouter_client_protocol_errors_total: sessions closed for malformed or oversized messages
	// Causal reads (dbrouter_causal_reads_total): a replica waited for the
	// writes a read must see, or was too slow and the primary answered.
	CausalWaited   prometheus.Counter
	CausalFallback prometheus.Counter
}

// Route is the route label of dbrouter_query_duration_seconds.
type Route uint8

// Routes and statement kinds of dbrouter_query_duration_seconds: few
// values each, so the series stay few (9 per cluster).
const (
	RoutePrimary Route = iota // chosen as the primary (writes, reads that must be there)
	RouteReplica              // a read on an eligible replica
	RoutePinned               // the connection the session is pinned to or holds
	numRoutes
)

// StmtKind is the kind label of dbrouter_query_duration_seconds.
type StmtKind uint8

const (
	StmtRead  StmtKind = iota // provably read-only statements
	StmtWrite                 // everything else that runs a statement (writes, DDL, transaction control...)
	StmtOther                 // session state, prepares, and other commands
	numStmtKinds
)

var (
	routeLabels    = [numRoutes]string{"primary", "replica", "pinned"}
	stmtKindLabels = [numStmtKinds]string{"read", "write", "other"}
)

// durationBuckets span a loopback round trip (100 µs) to a long report
// (10 s).
var durationBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// PoolStats is what the metrics read of one member's connections, at
// scrape time.
type PoolStats interface {
	Member() string
	Stats() ConnStats
	InFlight() int64
	// Pinned is the number of sessions pinned to one of the member's
	// connections for reason (an index into the protocol's reasons).
	Pinned(reason int) int
}

// NewMetrics registers one cluster's metrics on reg (nil: none). pools
// are the cluster's members, in member order; pinReasons are the reason
// label values of dbrouter_pinned_sessions, in the order Pinned counts
// them. Every proxy of a routerd shares its registry, one per cluster:
// vectors with a cluster label are registered by the first proxy and used
// by the others (see shared); collectors of one cluster's own (const
// cluster label) are registered by its proxy. A registration the registry
// refuses is an error, never dropped: a dropped one is a cluster whose
// metrics are silently never exported.
func NewMetrics(reg prometheus.Registerer, cluster string, pools []PoolStats, pinReasons []string) (*Metrics, error) {
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
	m := &Metrics{}
	for r := range m.durations {
		for k := range m.durations[r] {
			m.durations[r][k] = durations.WithLabelValues(cluster, routeLabels[r], stmtKindLabels[k])
		}
	}
	m.CausalWaited, m.CausalFallback = causal.WithLabelValues(cluster, "waited"), causal.WithLabelValues(cluster, "primary")
	m.Sessions = prometheus.NewGauge(prometheus.GaugeOpts{Name: "dbrouter_client_sessions", Help: "Connected client sessions.", ConstLabels: prometheus.Labels{"cluster": cluster}})
	m.AuthFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "dbrouter_auth_failures_total", Help: "Client logins refused.", ConstLabels: prometheus.Labels{"cluster": cluster}})
	m.ClientErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "dbrouter_client_protocol_errors_total", Help: "Client sessions closed for malformed or oversized packets.", ConstLabels: prometheus.Labels{"cluster": cluster}})
	for _, pool := range pools {
		m.queries = append(m.queries, queries.WithLabelValues(cluster, pool.Member(), "routed"))
		m.pinned = append(m.pinned, queries.WithLabelValues(cluster, pool.Member(), "pinned"))
	}
	for _, k := range Kinds() {
		m.errs[k] = errs.WithLabelValues(cluster, k.String())
	}
	gauge := prometheus.NewGaugeFunc // read at scrape time
	collectors := []prometheus.Collector{m.Sessions, m.AuthFailures, m.ClientErrors}
	for _, pool := range pools {
		collectors = append(collectors,
			gauge(prometheus.GaugeOpts{Name: "dbrouter_backend_connections", Help: "Open backend connections per member.",
				ConstLabels: prometheus.Labels{"cluster": cluster, "member": pool.Member(), "state": "open"}},
				func() float64 { return float64(pool.Stats().Open) }),
			gauge(prometheus.GaugeOpts{Name: "dbrouter_backend_connections", Help: "Open backend connections per member.",
				ConstLabels: prometheus.Labels{"cluster": cluster, "member": pool.Member(), "state": "idle"}},
				func() float64 { return float64(pool.Stats().Idle) }),
			gauge(prometheus.GaugeOpts{Name: "dbrouter_backend_inflight", Help: "Statements sent to the member and waiting for its answer.",
				ConstLabels: prometheus.Labels{"cluster": cluster, "member": pool.Member()}},
				func() float64 { return float64(pool.InFlight()) }))
	}
	// Sessions keep their pools' pin counts up to date as pins change (a
	// few atomic adds, only when they change); the gauge sums them per
	// reason.
	for i, reason := range pinReasons {
		collectors = append(collectors, gauge(prometheus.GaugeOpts{Name: "dbrouter_pinned_sessions",
			Help:        "Client sessions pinned to a backend connection (keeping it between statements), by reason; a session pinned for several reasons counts under each.",
			ConstLabels: prometheus.Labels{"cluster": cluster, "reason": reason}},
			func() float64 {
				n := 0
				for _, pool := range pools {
					n += pool.Pinned(i)
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

// Queries is the counter of statements forwarded to member; pinned: on a
// connection the session is pinned to or holds.
func (m *Metrics) Queries(member int, pinned bool) prometheus.Counter {
	if pinned {
		return m.pinned[member]
	}
	return m.queries[member]
}

// CountError counts an error the proxy itself returned to a client, under
// its kind.
func (m *Metrics) CountError(err error) {
	m.errs[KindOf(err)].Inc()
}

// Errors is the counter of errors of kind k.
func (m *Metrics) Errors(k Kind) prometheus.Counter {
	if k >= numKinds {
		k = KindOther
	}
	return m.errs[k]
}

// Duration is the histogram of statements a member answered, by the
// route they took and their kind.
func (m *Metrics) Duration(r Route, k StmtKind) prometheus.Observer {
	return m.durations[r][k]
}
