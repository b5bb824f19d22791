package topology

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/dbrouter/dbrouter/chaos"
)

const probe = 100 * time.Millisecond

func startMonitor(t *testing.T, c *chaos.Cluster) *Monitor {
	t.Helper()
	var ms []MemberConfig
	for _, m := range c.Members {
		ms = append(ms, MemberConfig{Name: m.Name, Addr: m.Addr()})
	}
	mon, err := New(Config{Cluster: "t", Members: ms, User: chaos.AdminUser, Password: chaos.AdminPassword,
		ProbeInterval: probe, MaxReplicaLag: time.Second, HeartbeatID: t.Name()}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); mon.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return mon
}

// waitFor polls snapshots until cond holds; d is the promise being tested.
func waitFor(t *testing.T, mon *Monitor, d time.Duration, what string, cond func(*Snapshot) bool) time.Duration {
	t.Helper()
	start := time.Now()
	err := chaos.Poll(context.Background(), d, func() (bool, error) { return cond(mon.Snapshot()), nil })
	if err != nil {
		t.Fatalf("%s: not within %v; last snapshot %+v", what, d, mon.Snapshot())
	}
	return time.Since(start)
}

func TestMonitorSeesRolesPositionsAndHealth(t *testing.T) {
	c := chaos.StartT(t, chaos.Options{Members: 3})
	mon := startMonitor(t, c)
	waitFor(t, mon, 10*time.Second, "healthy", func(s *Snapshot) bool {
		return s.Primary == 0 && s.Members[1].Eligible && s.Members[2].Eligible
	})
	s := mon.Snapshot()
	p := s.Members[0]
	if p.Role != RolePrimary || !p.SemiSyncOn || !p.SemiSyncActive || p.GTIDBinlogPos == "" {
		t.Fatalf("primary state %+v", p)
	}
	for _, r := range s.Members[1:] {
		if r.Role != RoleReplica || !r.IORunning || !r.SQLRunning || r.Lag < 0 || r.Lag > time.Second || r.RTT <= 0 || r.GTIDSlavePos == "" {
			t.Fatalf("replica state %+v", r)
		}
	}
	ctx := context.Background()
	r1, _ := c.Members[1].DB()
	defer r1.Close()

	t.Run("BrokenReplicationLeavesReadSetWithinTwoProbes", func(t *testing.T) {
		if _, err := r1.ExecContext(ctx, "STOP SLAVE SQL_THREAD"); err != nil {
			t.Fatal(err)
		}
		took := waitFor(t, mon, 5*time.Second, "db2 ineligible", func(s *Snapshot) bool { return !s.Members[1].Eligible })
		if took > 2*probe+probe { // two intervals plus one probe's own duration
			t.Errorf("left the read set after %v, want within two probe intervals", took)
		}
		if _, err := r1.ExecContext(ctx, "START SLAVE SQL_THREAD"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, mon, 5*time.Second, "db2 back", func(s *Snapshot) bool { return s.Members[1].Eligible })
	})

	t.Run("DelayedReplicaIsIneligibleByHeartbeatLag", func(t *testing.T) {
		for _, q := range []string{"STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 3", "START SLAVE"} {
			if _, err := r1.ExecContext(ctx, q); err != nil {
				t.Fatal(q, err)
			}
		}
		waitFor(t, mon, 10*time.Second, "delayed db2 ineligible by lag", func(s *Snapshot) bool {
			m := s.Members[1]
			return !m.Eligible && m.IORunning && m.SQLRunning && m.Lag > time.Second
		})
		for _, q := range []string{"STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 0", "START SLAVE"} {
			if _, err := r1.ExecContext(ctx, q); err != nil {
				t.Fatal(q, err)
			}
		}
		waitFor(t, mon, 10*time.Second, "db2 caught up", func(s *Snapshot) bool { return s.Members[1].Eligible })
	})

	t.Run("TwoWritableMembersAreAConflict", func(t *testing.T) {
		if _, err := r1.ExecContext(ctx, "SET GLOBAL read_only = OFF"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, mon, 5*time.Second, "conflict", func(s *Snapshot) bool { return s.Primary == -1 && len(s.Conflict) == 2 })
		if _, err := r1.ExecContext(ctx, "SET GLOBAL read_only = ON"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, mon, 5*time.Second, "resolved", func(s *Snapshot) bool { return s.Primary == 0 && len(s.Conflict) == 0 })
	})

	t.Run("KilledPrimaryIsUnreachable", func(t *testing.T) {
		if mon.Snapshot().Members[0].FailingFor != 0 {
			t.Fatal("a reachable member is failing")
		}
		killed := time.Now()
		if err := c.Members[0].Kill(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, mon, 5*time.Second, "primary gone", func(s *Snapshot) bool { return s.Primary == -1 && !s.Members[0].Reachable })
		// FailingFor counts from the last answer, which came before the kill.
		waitFor(t, mon, 5*time.Second, "failing for a second", func(s *Snapshot) bool { return s.Members[0].FailingFor >= time.Second })
		if f := mon.Snapshot().Members[0].FailingFor; f < time.Since(killed)-2*probe || f > time.Since(killed)+2*probe {
			t.Fatalf("failing for %s, %s after the kill", f, time.Since(killed))
		}
	})
}

func TestHeartbeatLag(t *testing.T) {
	var h heartbeats
	now := time.UnixMicro(10_000_000)
	if got := h.lag(0, now); got != -1 {
		t.Fatalf("no writes yet: lag %v, want unknown", got)
	}
	h.writes = []int64{9_000_000, 9_500_000, 9_900_000}
	tests := []struct {
		seen int64
		want time.Duration
	}{
		{9_900_000, 0},
		{9_500_000, 100 * time.Millisecond},
		{9_000_000, 500 * time.Millisecond},
		{0, time.Second},
	}
	for _, tt := range tests {
		if got := h.lag(tt.seen, now); got != tt.want {
			t.Errorf("seen %d: lag %v, want %v", tt.seen, got, tt.want)
		}
	}
}
