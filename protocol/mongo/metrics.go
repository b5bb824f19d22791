package mongo

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dbrouter/dbrouter/proxy"
)

// Metrics. The Mongo proxy exports package proxy's per-cluster metrics
// under the same names and labels as the MySQL proxy (docs/admin.md):
// every child is resolved when the proxy is built, so the hot path only
// increments and observes, and allocates nothing.
//
// What the labels mean here: route "routed" (dbrouter_queries_total) is a
// command sent on a pooled connection, "pinned" one sent on a connection a
// cursor or transaction holds (getMore, killCursors, a transaction's
// commands after its first); route "primary"/"replica"/"pinned"
// (dbrouter_query_duration_seconds) is the named primary, another member
// (a read by its read preference), or a held connection; kind is by
// command (stmtKind).

// Pin reasons: what holds a member connection out of the pool (pins.go),
// the reason label of dbrouter_pinned_sessions. Cursors are counted one by
// one (a driver session may hold several), transactions one per driver
// session (lsid).
const (
	pinCursor = iota
	pinTxn
	numPins
)

var pinLabels = [numPins]string{"cursor", "transaction"}

// newMetrics registers the cluster's metrics on reg (nil: none); members
// are the pools in Config.Members order, t the table whose cursors and
// transactions are the pinned sessions.
func newMetrics(reg prometheus.Registerer, cluster string, members []*memberPool, t *pins) (*proxy.Metrics, error) {
	stats := make([]proxy.PoolStats, len(members))
	for i, mp := range members {
		stats[i] = memberStats{mp, &t.pinned[i]}
	}
	return proxy.NewMetrics(reg, cluster, stats, pinLabels[:])
}

// memberStats is a member's pool as the metrics read it, with the pins
// table's counts for that member.
type memberStats struct {
	*memberPool
	pinned *memberPins
}

func (m memberStats) Pinned(reason int) int { return int(m.pinned[reason].Load()) }

// stmtKind is a command's kind label: read for what classify routes as a
// read (and getMore), other for killCursors and the commands that read or
// manage the server rather than data, write for everything else (a write,
// DDL, a transaction's commit or abort, and any command the proxy does not
// know: unknown means write, as it means primary).
func stmtKind(name string, rt route) proxy.StmtKind {
	switch rt {
	case routeRead, routeGetMore:
		return proxy.StmtRead
	case routeKillCursors:
		return proxy.StmtOther
	}
	switch name {
	case "explain", "serverStatus", "hostInfo", "getParameter", "getCmdLineOpts", "getLog", "listCommands",
		"connectionStatus", "whatsmyuri", "currentOp", "replSetGetStatus", "replSetGetConfig", "getDefaultRWConcern",
		"startSession", "refreshSessions", "killSessions", "getFreeMonitoringStatus", "features", "top", "validate":
		return proxy.StmtOther
	}
	return proxy.StmtWrite
}

// observe records the current command's time since it arrived, for a
// command a member answered, under the route it took.
func (s *session) observe(r proxy.Route) {
	s.p.metrics.Duration(r, s.kind).Observe(time.Since(s.start).Seconds())
}

// answerErr answers a command with the proxy's code for err's kind, and
// counts it (dbrouter_errors_total).
func (s *session) answerErr(reqID int32, err error, labels ...string) error {
	s.p.metrics.CountError(err)
	return s.answer(reqID, codeOf(err), s.errmsg(err), labels...)
}
