package mariadb

import (
	"time"

	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/topology"
)

// TestProber gives the real-server tests (package mariadb_test: the
// harness in chaos imports this package) a look at a monitor's heartbeats.
type TestProber = prober

// NewTestMonitor is NewMonitor that also returns the monitor's prober.
func NewTestMonitor(cfg MonitorConfig, log *zap.Logger) (*topology.Monitor, *TestProber, error) {
	return newMonitor(cfg, log)
}

// ObservedSource is whose heartbeat row the prober follows while it may
// not write its own.
func (p *prober) ObservedSource() string { return p.obs.source() }

// OwnHeartbeatsFresh reports whether the prober's own heartbeat writes
// still measure lag.
func (p *prober) OwnHeartbeatsFresh(now time.Time) bool { return p.hb.fresh(now, p.staleAfter()) }

// Redact and SQLQuote are the admin statements' password redaction and
// string quoting.
func Redact(s string) string   { return redact(s) }
func SQLQuote(s string) string { return sqlQuote(s) }
