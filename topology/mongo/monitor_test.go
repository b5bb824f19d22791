package mongo_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/topology"
	"github.com/dbrouter/dbrouter/topology/mongo"
)

const probe = 100 * time.Millisecond

// The FerretDB members are standalones: hello reports no set name and
// isWritablePrimary. A standalone is a writable member without a set, so
// two of them are a conflict, exactly as two writable MariaDB servers are:
// nothing says which one writes should go to, so none is the primary. Kill
// -9 makes a member unreachable once the monitor's failure count is
// reached, which leaves the other the only writable member, hence the
// primary; a restart brings the conflict back, and so does resuming a
// member that was paused (SIGSTOP) long enough to be judged unreachable.
func TestMonitorStandalonesKillPauseRestart(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) }) // runs last: after the monitor and members stop
	c := chaos.StartMongoT(t, 2)
	var ms []topology.MemberConfig
	for _, m := range c.Members {
		ms = append(ms, topology.MemberConfig{Name: m.Name, Addr: m.Addr()})
	}
	mon, err := mongo.NewMonitor(mongo.MonitorConfig{Cluster: "mg", Members: ms, ProbeInterval: probe, MaxReplicaLag: time.Second}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); mon.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	a, b := c.Members[0].Name, c.Members[1].Name
	waitFor(t, mon, 10*time.Second, "both standalones seen, in conflict", func(s *topology.Snapshot) bool {
		return s.Members[0].Reachable && s.Members[1].Reachable && len(s.Conflict) == 2
	})
	s := mon.Snapshot()
	if s.Primary != -1 || !slices.Equal(s.Conflict, []string{a, b}) {
		t.Fatalf("primary %d conflict %v; want none and both", s.Primary, s.Conflict)
	}
	for _, m := range s.Members {
		d, ok := mongo.DetailOf(m)
		if !ok || m.Role != topology.RolePrimary || m.ReadOnly || m.Eligible || m.Lag != 0 || m.RTT <= 0 {
			t.Errorf("%s: %+v; want a writable standalone primary, lag 0, not eligible for reads", m.Name, m)
			continue
		}
		if d.SetName != "" || d.ElectionID != nil || !d.Writable || d.MaxWireVersion == 0 {
			t.Errorf("%s: detail %+v; want a standalone's hello", m.Name, d)
		}
	}

	if err := c.Members[1].Kill(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, mon, 10*time.Second, b+" unreachable after kill -9", func(s *topology.Snapshot) bool { return !s.Members[1].Reachable })
	s = mon.Snapshot()
	if m := s.Members[1]; m.ProbeError == "" || m.FailingFor < probe || m.Role != topology.RoleUnknown || m.Lag != -1 {
		t.Errorf("killed member: %+v; want a probe error, failing for at least one interval (two failed probes), role unknown, lag unknown", m)
	}
	if s.Primary != 0 || len(s.Conflict) != 0 {
		t.Errorf("primary %d conflict %v; want %s, the only writable member left", s.Primary, s.Conflict, a)
	}

	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	if err := c.Members[1].Restart(rctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, mon, 10*time.Second, b+" back after restart", func(s *topology.Snapshot) bool {
		return s.Members[1].Reachable && s.Members[1].ProbeError == "" && len(s.Conflict) == 2 && s.Primary == -1
	})

	// A frozen member accepts connections and never answers: only the
	// probe's own deadline (1 s here, not the driver's 30 s) finds it.
	if err := c.Members[0].Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Members[0].Resume() })
	waitFor(t, mon, 5*time.Second, a+" unreachable while paused", func(s *topology.Snapshot) bool {
		return !s.Members[0].Reachable && s.Primary == 1
	})
	if err := c.Members[0].Resume(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, mon, 10*time.Second, a+" back after resume", func(s *topology.Snapshot) bool {
		return s.Members[0].Reachable && s.Members[0].ProbeError == "" && len(s.Conflict) == 2
	})
}

// waitFor polls snapshots until cond holds within d.
func waitFor(t *testing.T, mon *topology.Monitor, d time.Duration, what string, cond func(*topology.Snapshot) bool) {
	t.Helper()
	if err := chaos.Poll(context.Background(), d, func() (bool, error) { return cond(mon.Snapshot()), nil }); err != nil {
		t.Fatalf("%s: not within %v; last snapshot %+v", what, d, mon.Snapshot())
	}
}
