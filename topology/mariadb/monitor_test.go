package mariadb_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/topology"
	"github.com/dbrouter/dbrouter/topology/mariadb"
)

const probe = 100 * time.Millisecond

func startMonitor(t *testing.T, c *chaos.Cluster) *topology.Monitor {
	mon, _ := startMonitorWith(t, c, t.Name(), nil)
	return mon
}

// startMonitorWith runs a monitor writing heartbeats as id when gate allows;
// stop ends it (also done at cleanup).
func startMonitorWith(t *testing.T, c *chaos.Cluster, id string, gate func(string) bool) (mon *topology.Monitor, stop func()) {
	mon, _, stop = startMonitorProber(t, c, id, gate)
	return mon, stop
}

// startMonitorProber is startMonitorWith that also returns the monitor's
// prober, to look at its heartbeats.
func startMonitorProber(t *testing.T, c *chaos.Cluster, id string, gate func(string) bool) (mon *topology.Monitor, p *mariadb.TestProber, stop func()) {
	t.Helper()
	var ms []topology.MemberConfig
	for _, m := range c.Members {
		ms = append(ms, topology.MemberConfig{Name: m.Name, Addr: m.Addr()})
	}
	mon, p, err := mariadb.NewTestMonitor(mariadb.MonitorConfig{Cluster: "t", Members: ms, User: chaos.AdminUser, Password: chaos.AdminPassword,
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
	return mon, p, stop
}

// waitFor polls snapshots until cond holds; d is the promise being tested.
func waitFor(t *testing.T, mon *topology.Monitor, d time.Duration, what string, cond func(*topology.Snapshot) bool) time.Duration {
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
	waitFor(t, mon, 10*time.Second, "healthy", func(s *topology.Snapshot) bool {
		return s.Primary == 0 && s.Members[1].Eligible && s.Members[2].Eligible
	})
	s := mon.Snapshot()
	p := s.Members[0]
	if p.Role != topology.RolePrimary || !p.SemiSyncOn || !p.SemiSyncActive || p.GTIDBinlogPos == "" {
		t.Fatalf("primary state %+v", p)
	}
	for _, r := range s.Members[1:] {
		if r.Role != topology.RoleReplica || !r.IORunning || !r.SQLRunning || r.Lag < 0 || r.Lag > time.Second || r.RTT <= 0 || r.GTIDSlavePos == "" {
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
		took := waitFor(t, mon, 5*time.Second, "db2 ineligible", func(s *topology.Snapshot) bool { return !s.Members[1].Eligible })
		if took > 2*probe+probe { // two intervals plus one probe's own duration
			t.Errorf("left the read set after %v, want within two probe intervals", took)
		}
		if _, err := r1.ExecContext(ctx, "START SLAVE SQL_THREAD"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, mon, 5*time.Second, "db2 back", func(s *topology.Snapshot) bool { return s.Members[1].Eligible })
	})

	t.Run("DelayedReplicaIsIneligibleByHeartbeatLag", func(t *testing.T) {
		for _, q := range []string{"STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 3", "START SLAVE"} {
			if _, err := r1.ExecContext(ctx, q); err != nil {
				t.Fatal(q, err)
			}
		}
		waitFor(t, mon, 10*time.Second, "delayed db2 ineligible by lag", func(s *topology.Snapshot) bool {
			m := s.Members[1]
			return !m.Eligible && m.IORunning && m.SQLRunning && m.Lag > time.Second
		})
		for _, q := range []string{"STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 0", "START SLAVE"} {
			if _, err := r1.ExecContext(ctx, q); err != nil {
				t.Fatal(q, err)
			}
		}
		waitFor(t, mon, 10*time.Second, "db2 caught up", func(s *topology.Snapshot) bool { return s.Members[1].Eligible })
	})

	t.Run("TwoWritableMembersAreAConflict", func(t *testing.T) {
		if _, err := r1.ExecContext(ctx, "SET GLOBAL read_only = OFF"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, mon, 5*time.Second, "conflict", func(s *topology.Snapshot) bool { return s.Primary == -1 && len(s.Conflict) == 2 })
		if _, err := r1.ExecContext(ctx, "SET GLOBAL read_only = ON"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, mon, 5*time.Second, "resolved", func(s *topology.Snapshot) bool { return s.Primary == 0 && len(s.Conflict) == 0 })
	})

	t.Run("KilledPrimaryIsUnreachable", func(t *testing.T) {
		if mon.Snapshot().Members[0].FailingFor != 0 {
			t.Fatal("a reachable member is failing")
		}
		killed := time.Now()
		if err := c.Members[0].Kill(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, mon, 5*time.Second, "primary gone", func(s *topology.Snapshot) bool { return s.Primary == -1 && !s.Members[0].Reachable })
		// FailingFor counts from the last answer, which came before the kill.
		waitFor(t, mon, 5*time.Second, "failing for a second", func(s *topology.Snapshot) bool { return s.Members[0].FailingFor >= time.Second })
		if f := mon.Snapshot().Members[0].FailingFor; f < time.Since(killed)-2*probe || f > time.Since(killed)+2*probe {
			t.Fatalf("failing for %s, %s after the kill", f, time.Since(killed))
		}
	})
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
	reader, rp, _ := startMonitorProber(t, c, "reader", func(string) bool { return allow.Load() })
	bothEligible := func(s *topology.Snapshot) bool { return s.Members[1].Eligible && s.Members[2].Eligible }
	waitFor(t, reader, 10*time.Second, "replicas eligible by the reader's own heartbeats", bothEligible)
	allow.Store(false)
	waitFor(t, reader, 5*time.Second, "lag measured from the writer's heartbeats", func(s *topology.Snapshot) bool {
		return rp.ObservedSource() == "writer" && !rp.OwnHeartbeatsFresh(time.Now()) && bothEligible(s) && s.Members[1].Lag >= 0
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
	waitFor(t, reader, 10*time.Second, "delayed db2 ineligible by observed lag", func(s *topology.Snapshot) bool {
		return !s.Members[1].Eligible && s.Members[1].Lag > time.Second && s.Members[2].Eligible
	})
	for _, q := range []string{"STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 0", "START SLAVE"} {
		if _, err := r1.ExecContext(ctx, q); err != nil {
			t.Fatal(q, err)
		}
	}
	waitFor(t, reader, 10*time.Second, "db2 caught up", bothEligible)
	stopWriter()
	waitFor(t, reader, 5*time.Second, "lag unknown with no heartbeat written", func(s *topology.Snapshot) bool {
		return s.Members[1].Lag == -1 && !s.Members[1].Eligible && s.Members[2].Lag == -1
	})
}
