package topology

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/dbrouter/dbrouter/chaos"
)

const probe = 100 * time.Millisecond

func startMonitor(t *testing.T, c *chaos.Cluster) *Monitor {
	mon, _ := startMonitorWith(t, c, t.Name(), nil)
	return mon
}

// startMonitorWith runs a monitor writing heartbeats as id when gate allows;
// stop ends it (also done at cleanup).
func startMonitorWith(t *testing.T, c *chaos.Cluster, id string, gate func(string) bool) (mon *Monitor, stop func()) {
	t.Helper()
	var ms []MemberConfig
	for _, m := range c.Members {
		ms = append(ms, MemberConfig{Name: m.Name, Addr: m.Addr()})
	}
	mon, err := New(Config{Cluster: "t", Members: ms, User: chaos.AdminUser, Password: chaos.AdminPassword,
		ProbeInterval: probe, MaxReplicaLag: time.Second, HeartbeatID: id, HeartbeatGate: gate}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); mon.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return mon, stop
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
	for _, ts := range []int64{9_000_000, 9_500_000, 9_900_000} {
		h.add(hbPoint{ts: ts, at: time.UnixMicro(ts)})
	}
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

func TestObservedHeartbeats(t *testing.T) {
	var h heartbeats
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// Round 1 only learns the rows; nothing is known to be live yet.
	h.observe(map[string]int64{"old-leader": 900, "a1": 100}, at(0))
	if h.source() != "" || h.lag(0, at(0)) != -1 {
		t.Fatalf("after one round: following %q, lag %v", h.source(), h.lag(0, at(0)))
	}
	// a1 keeps writing (with a clock far behind old-leader's); old-leader
	// stopped. a1 is followed, timed by when its values were first seen.
	h.observe(map[string]int64{"old-leader": 900, "a1": 200}, at(500))
	h.observe(map[string]int64{"old-leader": 900, "a1": 300}, at(1000))
	if h.source() != "a1" {
		t.Fatalf("following %q, want the live writer a1", h.source())
	}
	for _, tt := range []struct {
		replica int64
		want    time.Duration
	}{{300, 0}, {200, 200 * time.Millisecond}, {100, 700 * time.Millisecond}} {
		if got := h.lag(tt.replica, at(1200)); got != tt.want {
			t.Errorf("replica at %d: lag %v, want %v", tt.replica, got, tt.want)
		}
	}
	if !h.fresh(at(1200), time.Second) || h.fresh(at(2500), time.Second) {
		t.Fatal("freshness: a point 200 ms old is fresh, 1.5 s old is not")
	}
	// a1 stops, a2 takes over: a2 is followed from scratch.
	h.observe(map[string]int64{"a1": 300, "a2": 50}, at(1500))
	h.observe(map[string]int64{"a1": 300, "a2": 60}, at(2000))
	if h.source() != "a2" {
		t.Fatalf("following %q, want a2", h.source())
	}
	if got := h.lag(60, at(2100)); got != 0 {
		t.Fatalf("replica with a2's newest value: lag %v", got)
	}
	if got := h.lag(50, at(2100)); got != 100*time.Millisecond {
		t.Fatalf("replica one a2 value behind: lag %v, want 100ms", got)
	}
}

// TestLagWithoutWritingHeartbeats: a monitor that may not write heartbeats
// (an arbiter that does not lead, a proxy without a lease) measures lag
// against another node's, and reports it unknown — never a stale 0 — when
// nobody writes any.
func TestLagWithoutWritingHeartbeats(t *testing.T) {
	c := chaos.StartT(t, chaos.Options{Members: 3})
	_, stopWriter := startMonitorWith(t, c, "writer", nil)
	var allow atomic.Bool
	allow.Store(true)
	reader, _ := startMonitorWith(t, c, "reader", func(string) bool { return allow.Load() })
	bothEligible := func(s *Snapshot) bool { return s.Members[1].Eligible && s.Members[2].Eligible }
	waitFor(t, reader, 10*time.Second, "replicas eligible by the reader's own heartbeats", bothEligible)
	allow.Store(false)
	waitFor(t, reader, 5*time.Second, "lag measured from the writer's heartbeats", func(s *Snapshot) bool {
		return reader.obs.source() == "writer" && !reader.hb.fresh(time.Now(), reader.staleAfter()) && bothEligible(s) && s.Members[1].Lag >= 0
	})
	r1, err := c.Members[1].DB()
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	ctx := context.Background()
	for _, q := range []string{"STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 3", "START SLAVE"} {
		if _, err := r1.ExecContext(ctx, q); err != nil {
			t.Fatal(q, err)
		}
	}
	waitFor(t, reader, 10*time.Second, "delayed db2 ineligible by observed lag", func(s *Snapshot) bool {
		return !s.Members[1].Eligible && s.Members[1].Lag > time.Second && s.Members[2].Eligible
	})
	for _, q := range []string{"STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 0", "START SLAVE"} {
		if _, err := r1.ExecContext(ctx, q); err != nil {
			t.Fatal(q, err)
		}
	}
	waitFor(t, reader, 10*time.Second, "db2 caught up", bothEligible)
	stopWriter()
	waitFor(t, reader, 5*time.Second, "lag unknown with no heartbeat written", func(s *Snapshot) bool {
		return s.Members[1].Lag == -1 && !s.Members[1].Eligible && s.Members[2].Lag == -1
	})
}
