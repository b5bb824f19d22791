package arbiter

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/raftfsm"
)

// adminDB opens an admin pool on a member (bypasses read_only).
func adminDB(t *testing.T, m *chaos.Member) *sql.DB {
	t.Helper()
	db, err := m.DB()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func mustExec(t *testing.T, ctx context.Context, db interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, qs ...string) {
	t.Helper()
	for _, q := range qs {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func count(t *testing.T, ctx context.Context, db *sql.DB, table string) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM app."+table).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

// waitPromotable waits until the leader's monitor sees member as an eligible
// replica with a known lag (what Promote checks) and the heartbeat period
// the arbiters give it (they restart its replication to set it: a promote
// in that moment would find it "not replicating").
func (g *arbiters) waitPromotable(ctx context.Context, member string) {
	g.t.Helper()
	if err := chaos.Poll(ctx, 20*time.Second, func() (bool, error) {
		i := g.leaderIndex()
		if i < 0 {
			return false, nil
		}
		for _, m := range g.mons[i].Snapshot().Members {
			if m.Name == member {
				hb := m.HeartbeatPeriod > 0 && m.HeartbeatPeriod <= testConfig().FailureThreshold/2
				return m.Eligible && m.Lag >= 0 && hb, nil
			}
		}
		return false, nil
	}); err != nil {
		g.t.Fatalf("%s never promotable: %v", member, err)
	}
}

// wantFailoverWithRows waits for a failover and checks it went to want, the
// only holder of the n acknowledged rows of table.
func (g *arbiters) wantFailoverWithRows(ctx context.Context, want, table string, n int) {
	g.t.Helper()
	cl := g.waitState("failover to "+want, 40*time.Second, func(cl *raftfsm.Cluster) bool {
		return cl.Epoch >= 2 && cl.Phase == raftfsm.PhaseServing
	})
	if cl.Primary != want {
		g.t.Fatalf("failed over to %s, want %s (the only holder of the writes)", cl.Primary, want)
	}
	if got := count(g.t, ctx, adminDB(g.t, g.member(want)), table); got != n {
		g.t.Fatalf("new primary has %d of %d acknowledged rows", got, n)
	}
}

// setMaintenance proposes maintenance on or off through the leader.
func (g *arbiters) setMaintenance(ctx context.Context, member string, on bool) {
	g.t.Helper()
	if err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
		n, _ := g.leader()
		if n == nil {
			return false, nil
		}
		cl := n.State().Cluster("shop")
		_, err := n.Propose(ctx, &raftfsm.Command{Type: raftfsm.TypeMember, Cluster: "shop", Epoch: cl.Epoch, At: time.Now(), Member: member, Maintenance: &on})
		return err == nil, nil
	}); err != nil {
		g.t.Fatalf("maintenance %s=%v: %v", member, on, err)
	}
}

// waitHeartbeatsFixed waits until the arbiters have given every replica a
// heartbeat period short enough to tell a hung primary from a quiet one
// (the harness starts them with 1 s, more than half the test threshold).
func (g *arbiters) waitHeartbeatsFixed(ctx context.Context) {
	g.t.Helper()
	if err := chaos.Poll(ctx, 20*time.Second, func() (bool, error) {
		for _, m := range g.mons[0].Snapshot().Members {
			if m.Role == "replica" && (m.HeartbeatPeriod == 0 || m.HeartbeatPeriod > testConfig().FailureThreshold/2) {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		g.t.Fatalf("replicas' heartbeat periods not shortened: %v", err)
	}
}

// A SIGSTOPped primary keeps its replicas' IO threads "connected" for
// slave_net_timeout (60 s by default, which the harness keeps). The
// arbiters must fail over in about failure_threshold all the same, repoint
// each replica once (not every round while the old primary hangs), and
// when the old primary wakes up holding a write the new primary lacks —
// with a sequence number the new primary has long passed — it must come
// back fenced and errant, never rejoined (MariaDB would stop it with error
// 1236, "the slave has diverged"). A rejoined member that later breaks on
// such a transaction is examined again.
func TestHungPrimaryFailsOverFastAndComesBackErrant(t *testing.T) {
	g := startArbiters(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	db1 := g.member("db1")
	app := appDB(t, db1)
	mustExec(t, ctx, app, "CREATE TABLE hung (id INT PRIMARY KEY)")
	for i := 1; i <= 20; i++ {
		mustExec(t, ctx, app, fmt.Sprintf("INSERT INTO hung VALUES (%d)", i))
	}
	g.waitHeartbeatsFixed(ctx)

	paused := time.Now()
	if err := db1.Pause(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			_ = db1.Resume()
		}
	}()
	cl := g.waitState("failover away from the hung primary", 15*time.Second, func(cl *raftfsm.Cluster) bool {
		return cl.Epoch >= 2 && cl.Phase == raftfsm.PhaseServing && cl.Primary != "db1"
	})
	took := time.Since(paused)
	t.Logf("failover to %s committed %s after SIGSTOP (failure_threshold %s)", cl.Primary, took.Round(time.Millisecond), testConfig().FailureThreshold)
	if limit := testConfig().FailureThreshold + 4*time.Second; took > limit {
		t.Fatalf("failover took %s, more than %s", took, limit)
	}
	other := "db2"
	if cl.Primary == "db2" {
		other = "db3"
	}
	// While db1 stays hung, the other replica is repointed once, by the
	// failover; the rounds after it must not repoint it again.
	if err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
		p := g.position(ctx, g.member(other))
		return p.IORunning && p.Replica.SourceServerID == uint32(g.member(cl.Primary).ServerID), nil
	}); err != nil {
		t.Fatalf("%s not replicating from %s: %v", other, cl.Primary, err)
	}
	before := g.count("repoint " + other)
	time.Sleep(3 * time.Second) // an observation window: db1 is still hung
	if n := g.count("repoint " + other); n != before || n > 1 {
		t.Fatalf("%s repointed %d times (%d while the old primary hung after the failover)", other, n, n-before)
	}

	// db1 wakes up; a write lands on it that the new primary lacks (a stray
	// job with SUPER, or a statement that sat in its socket buffer). Its
	// sequence number is far below the new primary's, which has been
	// writing heartbeats all along.
	if err := db1.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	adm := adminDB(t, db1)
	if err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) { return adm.PingContext(ctx) == nil, nil }); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, adm, "INSERT INTO app.hung VALUES (1000)")
	var pos string
	if err := adm.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&pos); err != nil {
		t.Fatal(err)
	}
	got := g.waitState("db1 fenced as errant", 30*time.Second, func(c *raftfsm.Cluster) bool {
		return c.Members["db1"].Fenced && strings.HasPrefix(c.Members["db1"].Errant, "0-1-")
	})
	t.Logf("db1 at %s: errant %s", pos, got.Members["db1"].Errant)
	// Fenced, and it stays so: never repointed to the new primary.
	time.Sleep(2 * time.Second) // an observation window
	p := g.position(ctx, db1)
	if p.Replica.SourceServerID == uint32(g.member(cl.Primary).ServerID) && p.Replica.LastIOErrno == 0 && p.IORunning {
		t.Fatalf("errant db1 replicates from %s", cl.Primary)
	}
	if w := g.writable(ctx); len(w) != 1 || w[0] != cl.Primary {
		t.Fatalf("writable %v, want only %s", w, cl.Primary)
	}
	if c := g.nodes[0].State().Cluster("shop"); !c.Members["db1"].Fenced {
		t.Fatalf("db1 unfenced later: %+v", c.Members["db1"])
	}
}

// Semi-sync promises only that some replica received each acknowledged
// commit. When only db3 acknowledged (db2's IO thread is stopped), the
// failover must never open db2, which lacks the writes. db3 in maintenance:
// the failover is refused, with the reason, until db3 can be the candidate.
// db3 out of the leader's reach only: the leader hands over to an arbiter
// that reaches it, which fails over to db3.
func TestFailoverNeverOpensACandidateMissingAcknowledgedWrites(t *testing.T) {
	for _, variant := range []string{"maintenance", "leader cut off from db3"} {
		t.Run(variant, func(t *testing.T) {
			links := map[int][]string{}
			if variant != "maintenance" {
				links = map[int][]string{0: {"db3"}, 1: {"db3"}, 2: {"db3"}}
			}
			g := startArbitersLinked(t, chaos.StartT(t, chaos.Options{Members: 3}), testConfig(), links)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			db1, db2, db3 := g.member("db1"), g.member("db2"), g.member("db3")
			g.waitHeartbeatsFixed(ctx) // the arbiters restart replicas' threads for that
			mustExec(t, ctx, adminDB(t, db2), "STOP SLAVE IO_THREAD")
			app := appDB(t, db1)
			mustExec(t, ctx, app, "CREATE TABLE acked (id INT PRIMARY KEY)")
			for i := 1; i <= 200; i++ {
				mustExec(t, ctx, app, fmt.Sprintf("INSERT INTO acked VALUES (%d)", i))
			}
			if err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
				var n int
				err := appDB(t, db3).QueryRowContext(ctx, "SELECT COUNT(*) FROM acked").Scan(&n)
				return err == nil && n == 200, nil
			}); err != nil {
				t.Fatal("db3 never got the rows")
			}
			var restore func()
			if variant == "maintenance" {
				g.setMaintenance(ctx, "db3", true)
				restore = func() { g.setMaintenance(ctx, "db3", false) }
			} else {
				i := g.leaderIndex()
				link := g.links[g.nodes[i].ID()+"/db3"]
				link.Cut()
				restore = func() {
					if err := link.Restore(); err != nil {
						t.Error(err)
					}
				}
			}
			if err := db1.Kill(); err != nil {
				t.Fatal(err)
			}
			if variant != "maintenance" {
				cl := g.waitState("failover handed over", 30*time.Second, func(cl *raftfsm.Cluster) bool {
					return cl.Epoch >= 2 || historyHas(cl, "note", "failover refused")
				})
				if cl.Primary != "db3" && cl.Epoch >= 2 || !historyHas(cl, "note", "handed to arbiter") {
					t.Fatalf("with db3 out of the leader's reach only: %+v", cl)
				}
				g.wantFailoverWithRows(ctx, "db3", "acked", 200)
				restore()
				return
			}
			cl := g.waitState("failover refused", 30*time.Second, func(cl *raftfsm.Cluster) bool {
				return historyHas(cl, "note", "failover refused") && historyHas(cl, "note", "db3")
			})
			if cl.Epoch != 1 || cl.Primary != "db1" {
				t.Fatalf("failed over to %s at epoch %d although only db3 has the acknowledged writes", cl.Primary, cl.Epoch)
			}
			for _, d := range cl.History {
				if d.Kind == "note" {
					t.Logf("history: %s", d.Reason)
				}
			}
			if w := g.writable(ctx); len(w) != 0 {
				t.Fatalf("writable %v while the failover is refused", w)
			}
			// Once db3 can be the candidate, the failover goes to it and
			// nothing acknowledged is lost.
			restore()
			g.wantFailoverWithRows(ctx, "db3", "acked", 200)
		})
	}
}

// The replica that received the most has its SQL thread stopped (someone
// paused it), or both its threads: it is still the candidate, its relay log
// is applied (with both threads stopped a plain START SLAVE would make
// MariaDB discard it), and nothing acknowledged is lost.
func TestFailoverAppliesACandidateWhoseApplierWasStopped(t *testing.T) {
	for _, variant := range []string{"sql thread stopped", "both threads stopped"} {
		t.Run(variant, func(t *testing.T) {
			g := startArbiters(t)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			db1, db2, db3 := g.member("db1"), g.member("db2"), g.member("db3")
			g.waitHeartbeatsFixed(ctx)
			mustExec(t, ctx, adminDB(t, db2), "STOP SLAVE IO_THREAD")
			mustExec(t, ctx, adminDB(t, db3), "STOP SLAVE SQL_THREAD")
			app := appDB(t, db1)
			mustExec(t, ctx, app, "CREATE TABLE acked (id INT PRIMARY KEY)")
			for i := 1; i <= 200; i++ {
				mustExec(t, ctx, app, fmt.Sprintf("INSERT INTO acked VALUES (%d)", i))
			}
			if variant == "both threads stopped" {
				mustExec(t, ctx, adminDB(t, db3), "STOP SLAVE IO_THREAD")
			}
			if err := db1.Kill(); err != nil {
				t.Fatal(err)
			}
			g.wantFailoverWithRows(ctx, "db3", "acked", 200)
		})
	}
}

// MASTER_GTID_WAIT may take the whole catch-up timeout (10 s by default),
// longer than an admin connection's read timeout (3 s here). A target held
// by FLUSH TABLES WITH READ LOCK for 4 s must still be promoted, in a
// switchover and in a failover, with every row.
func TestCatchupOutlastsTheStepTimeout(t *testing.T) {
	g := startArbiters(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	db1, db2, db3 := g.member("db1"), g.member("db2"), g.member("db3")
	app := appDB(t, db1)
	mustExec(t, ctx, app, "CREATE TABLE c (id INT PRIMARY KEY)")
	lockFor := func(m *chaos.Member, d time.Duration) {
		conn, err := adminDB(t, m).Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, ctx, conn, "FLUSH TABLES WITH READ LOCK")
		go func() {
			defer conn.Close()
			time.Sleep(d)
			_, _ = conn.ExecContext(context.Background(), "UNLOCK TABLES")
		}()
	}
	g.waitPromotable(ctx, "db2")
	lockFor(db2, 4*time.Second)
	for i := 1; i <= 20; i++ {
		mustExec(t, ctx, app, fmt.Sprintf("INSERT INTO c VALUES (%d)", i))
	}
	_, arb := g.leader()
	start := time.Now()
	if err := arb.Promote(ctx, "db2", 20*time.Second); err != nil {
		t.Fatalf("promote db2 with its applier locked for 4 s: %v", err)
	}
	t.Logf("switchover done in %s", time.Since(start).Round(time.Millisecond))
	if n := count(t, ctx, adminDB(t, db2), "c"); n != 20 {
		t.Fatalf("db2 has %d of 20 rows", n)
	}

	// Failover: both replicas' appliers locked for 4 s.
	cl := g.waitState("serving on db2", 10*time.Second, func(cl *raftfsm.Cluster) bool { return cl.Primary == "db2" && cl.Phase == raftfsm.PhaseServing })
	for _, m := range []*chaos.Member{db1, db3} {
		if err := chaos.Poll(ctx, 15*time.Second, func() (bool, error) {
			p := g.position(ctx, m)
			return p.IORunning && p.SQLRunning && p.Replica.SourceServerID == uint32(db2.ServerID), nil
		}); err != nil {
			t.Fatalf("%s not replicating from db2", m.Name)
		}
	}
	app2 := appDB(t, db2)
	lockFor(db1, 4*time.Second)
	lockFor(db3, 4*time.Second)
	for i := 21; i <= 40; i++ {
		mustExec(t, ctx, app2, fmt.Sprintf("INSERT INTO c VALUES (%d)", i))
	}
	if err := db2.Kill(); err != nil {
		t.Fatal(err)
	}
	cl = g.waitState("failover", 40*time.Second, func(c *raftfsm.Cluster) bool {
		return c.Epoch > cl.Epoch && c.Phase == raftfsm.PhaseServing
	})
	if n := count(t, ctx, adminDB(t, g.member(cl.Primary)), "c"); n != 40 {
		t.Fatalf("new primary %s has %d of 40 rows", cl.Primary, n)
	}
	for _, d := range cl.History {
		if strings.Contains(d.Reason, "candidate") && strings.Contains(d.Reason, "failed") {
			t.Fatalf("a candidate failed: %s", d.Reason)
		}
	}
}

// A leader cut off from the others during a switchover's drain must take
// no further step: the new leader rolls the switchover back, and a deposed
// leader fencing the old primary and opening the target behind its back
// would leave the cluster with the wrong writer.
func TestDeposedLeaderTakesNoFurtherStep(t *testing.T) {
	g := startArbiters(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mustExec(t, ctx, appDB(t, g.member("db1")), "CREATE TABLE d (id INT PRIMARY KEY)")
	g.waitPromotable(ctx, "db2")
	lead := g.leaderIndex()
	var once sync.Once
	g.setHook(func(i int, step string) {
		if step == "drain" && i == lead {
			once.Do(func() { g.isolate(lead, true) })
		}
	})
	err := g.arbs[lead].Promote(ctx, "db2", 20*time.Second)
	if !errors.Is(err, ErrDeposed) {
		t.Fatalf("promote by a leader cut off mid-drain: %v, want ErrDeposed", err)
	}
	// The others roll the switchover back.
	deadline := time.Now().Add(30 * time.Second)
	for {
		done := 0
		var cl *raftfsm.Cluster
		for j, n := range g.nodes {
			if j == lead {
				continue
			}
			cl = n.State().Cluster("shop")
			if cl.Phase == raftfsm.PhaseServing && cl.Primary == "db1" && cl.Epoch == 3 {
				done++
			}
		}
		if done == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no rollback by the new leader: %+v", cl)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second) // an observation window for the deposed leader
	if w := g.writable(ctx); len(w) != 1 || w[0] != "db1" {
		t.Fatalf("writable %v after the rollback, want only db1", w)
	}
	g.setHook(nil)
	g.isolate(lead, false)
	g.waitState("all agree", 20*time.Second, func(cl *raftfsm.Cluster) bool { return cl.Epoch == 3 && cl.Primary == "db1" })
	if _, err := appDB(t, g.member("db1")).ExecContext(ctx, "INSERT INTO d VALUES (1)"); err != nil {
		t.Fatalf("write on db1 after the rollback: %v", err)
	}
}

// staleGroup is a leader whose FSM has not applied the whole log yet (a
// node restarted from an old snapshot that just won an election): its
// State lags until Barrier has run.
type staleGroup struct {
	*raftfsm.Node
	mu     sync.Mutex
	stale  *raftfsm.State
	caught bool
}

func (s *staleGroup) State() *raftfsm.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.caught {
		return s.stale
	}
	return s.Node.State()
}

func (s *staleGroup) Barrier(ctx context.Context) error {
	err := s.Node.Barrier(ctx)
	if err == nil {
		s.mu.Lock()
		s.caught = true
		s.mu.Unlock()
	}
	return err
}

// A new leader must catch up with the log before its first decision: on
// the state of an old snapshot, the real primary looks like a second
// writer and would be fenced.
func TestNewLeaderCatchesUpBeforeActing(t *testing.T) {
	g := startArbiters(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	old := g.nodes[0].State() // epoch 1, db1 primary
	db1 := g.member("db1")
	g.quietPrimary(ctx)
	if err := db1.Kill(); err != nil {
		t.Fatal(err)
	}
	g.quiet.Store(false)
	cl := g.waitState("failover", 30*time.Second, func(cl *raftfsm.Cluster) bool {
		return cl.Epoch >= 2 && cl.Phase == raftfsm.PhaseServing && cl.Primary != "db1"
	})
	if err := db1.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	g.waitState("db1 rejoined", 30*time.Second, func(cl *raftfsm.Cluster) bool { return !cl.Members["db1"].Fenced })
	i := g.leaderIndex()
	if i < 0 {
		t.Fatal("no leader")
	}
	stale := &staleGroup{Node: g.nodes[i], stale: old}
	fresh := New(testConfig(), stale, g.mons[i], g, g.acts[i], g.arbs[i].log)
	if err := fresh.Reconcile(ctx); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	if w := g.writable(ctx); len(w) != 1 || w[0] != cl.Primary {
		t.Fatalf("writable %v after a new leader's first round, want only %s", w, cl.Primary)
	}
}

// The old primary dies during a switchover's drain: a switchover can then
// neither finish nor roll back, and a failover must take over from it
// (not leave the cluster `switching`, writes held, forever).
func TestFailoverPreemptsASwitchoverWhoseOldPrimaryDied(t *testing.T) {
	g := startArbiters(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db1 := g.member("db1")
	app := appDB(t, db1)
	mustExec(t, ctx, app, "CREATE TABLE p (id INT PRIMARY KEY)")
	for i := 1; i <= 50; i++ {
		mustExec(t, ctx, app, fmt.Sprintf("INSERT INTO p VALUES (%d)", i))
	}
	g.waitPromotable(ctx, "db2")
	var once sync.Once
	g.setHook(func(_ int, step string) {
		if step == "drain" {
			once.Do(func() { _ = db1.Kill() })
		}
	})
	_, arb := g.leader()
	err := arb.Promote(ctx, "db2", 20*time.Second)
	if err == nil {
		t.Fatal("switchover succeeded with its old primary killed mid-drain")
	}
	t.Logf("promote: %v", err)
	cl := g.waitState("failover after the switchover", 30*time.Second, func(cl *raftfsm.Cluster) bool {
		return cl.Phase == raftfsm.PhaseServing && cl.Primary != "db1" && cl.Epoch >= 3
	})
	if !historyHas(cl, "failover_begin", "during a switchover") {
		t.Fatalf("history %+v", cl.History)
	}
	if w := g.writable(ctx); len(w) != 1 || w[0] != cl.Primary {
		t.Fatalf("writable %v, want only %s", w, cl.Primary)
	}
	if n := count(t, ctx, adminDB(t, g.member(cl.Primary)), "p"); n != 50 {
		t.Fatalf("new primary has %d of 50 rows", n)
	}
	if _, err := appDB(t, g.member(cl.Primary)).ExecContext(ctx, "INSERT INTO p VALUES (51)"); err != nil {
		t.Fatalf("write on the new primary: %v", err)
	}
}

// A replica configured for the primary that cannot log in to it (the new
// primary lacks the replication account) is not repointed every round —
// repointing cannot fix that — and the error is recorded once.
func TestUnconnectableSourceIsNotRepointedEveryRound(t *testing.T) {
	g := startArbiters(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db2 := g.member("db2")
	conn, err := adminDB(t, db2).Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, conn, "SET SESSION sql_log_bin=0", "DROP USER '"+chaos.ReplUser+"'@'%'")
	conn.Close()
	g.waitPromotable(ctx, "db2")
	_, arb := g.leader()
	if err := arb.Promote(ctx, "db2", 20*time.Second); err != nil {
		t.Fatalf("promote db2: %v", err)
	}
	cl := g.waitState("db3's error recorded", 15*time.Second, func(cl *raftfsm.Cluster) bool {
		return historyHas(cl, "note", "db3 replicates from db2 but stopped with an error")
	})
	before := g.count("repoint db3")
	time.Sleep(3 * time.Second) // an observation window: 30 reconcile rounds
	if n := g.count("repoint db3"); n != before {
		t.Fatalf("db3 repointed %d more times while it could not log in to db2", n-before)
	}
	notes := 0
	for _, d := range g.nodes[0].State().Cluster("shop").History {
		if d.Kind == "note" && strings.Contains(d.Reason, "db3 replicates from db2") {
			notes++
		}
	}
	if notes != 1 {
		t.Fatalf("the error was recorded %d times, want once: %+v", notes, cl.History)
	}
}

// A replica that replicates without a hitch can still hold a transaction
// the primary's history lacks (a write in another GTID domain breaks
// nothing): it is found, fenced and shown errant all the same.
func TestErrantReplicaIsFenced(t *testing.T) {
	g := startArbiters(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := adminDB(t, g.member("db3")).Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, conn, "SET SESSION gtid_domain_id=7", "CREATE TABLE app.stray (id INT PRIMARY KEY)")
	conn.Close()
	cl := g.waitState("db3 fenced as errant", 20*time.Second, func(cl *raftfsm.Cluster) bool {
		return cl.Members["db3"].Fenced && strings.HasPrefix(cl.Members["db3"].Errant, "7-3-")
	})
	if cl.Epoch != 1 || cl.Primary != "db1" {
		t.Fatalf("an errant replica changed the primary: %+v", cl)
	}
	if p := g.position(ctx, g.member("db3")); !p.ReadOnly {
		t.Fatal("errant db3 writable")
	}
}

// A primary found read-only while serving (restarted faster than
// failure_threshold: members start read_only=ON; or set so by hand) would
// refuse every write with 1290 for ever. Holding everything its replicas
// received, it is opened again, at the same epoch.
func TestPrimaryFoundReadOnlyIsOpenedAgain(t *testing.T) {
	g := startArbiters(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db1 := g.member("db1")
	app := appDB(t, db1)
	mustExec(t, ctx, app, "CREATE TABLE ro (id INT PRIMARY KEY)")
	mustExec(t, ctx, adminDB(t, db1), "SET GLOBAL read_only=ON")
	cl := g.waitState("primary reopened", 15*time.Second, func(cl *raftfsm.Cluster) bool {
		return historyHas(cl, "note", "opened again")
	})
	if cl.Epoch != 1 || cl.Primary != "db1" {
		t.Fatalf("state changed: %+v", cl)
	}
	if err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
		_, err := app.ExecContext(ctx, "INSERT INTO ro VALUES (1)")
		return err == nil, nil
	}); err != nil {
		t.Fatalf("no write on db1 after it was reopened: %v", err)
	}
	if w := g.writable(ctx); len(w) != 1 || w[0] != "db1" {
		t.Fatalf("writable %v", w)
	}
}

// The failover's candidate is the only safe one, and the leader loses its
// link to it mid-failover (others still reach it): the cluster must not
// stay failing_over with writes held — the leader hands over to an arbiter
// that reaches the candidate, which finishes the failover.
func TestFailoverHandedOverWhenTheLeaderLosesTheCandidate(t *testing.T) {
	links := map[int][]string{0: {"db2"}, 1: {"db2"}, 2: {"db2"}}
	g := startArbitersLinked(t, chaos.StartT(t, chaos.Options{Members: 3}), testConfig(), links)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db1, db3 := g.member("db1"), g.member("db3")
	g.waitHeartbeatsFixed(ctx)
	mustExec(t, ctx, adminDB(t, db3), "STOP SLAVE IO_THREAD") // only db2 acknowledges
	app := appDB(t, db1)
	mustExec(t, ctx, app, "CREATE TABLE h (id INT PRIMARY KEY)")
	for i := 1; i <= 100; i++ {
		mustExec(t, ctx, app, fmt.Sprintf("INSERT INTO h VALUES (%d)", i))
	}
	var once sync.Once
	g.setHook(func(i int, step string) {
		if step == "stop_replicas" {
			once.Do(func() { g.links[g.nodes[i].ID()+"/db2"].Cut() })
		}
	})
	if err := db1.Kill(); err != nil {
		t.Fatal(err)
	}
	cl := g.waitState("failover finished", 40*time.Second, func(cl *raftfsm.Cluster) bool {
		return cl.Phase == raftfsm.PhaseServing && cl.Epoch >= 2
	})
	if cl.Primary != "db2" || !historyHas(cl, "note", "handed to") {
		t.Fatalf("failover without a handover to an arbiter that reaches db2: %+v", cl.History)
	}
	g.setHook(nil)
	if n := count(t, ctx, adminDB(t, g.member("db2")), "h"); n != 100 {
		t.Fatalf("new primary has %d of 100 rows", n)
	}
}
