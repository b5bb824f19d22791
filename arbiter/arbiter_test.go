package arbiter

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/hashicorp/raft"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/raftfsm"
	"github.com/dbrouter/dbrouter/topology"
	"github.com/dbrouter/dbrouter/topology/mariadb"
)

// arbiters is three arbiters (in-memory Raft, real monitors and actions)
// watching one real MariaDB cluster.
type arbiters struct {
	t     *testing.T
	db    *chaos.Cluster
	nodes []*raftfsm.Node
	mons  []*topology.Monitor
	arbs  []*Arbiter
	acts  []*mariadb.Actions
	links map[string]*chaos.Link // "arbiter/member" → link the arbiter probes and acts through
	trans map[string]*raft.InmemTransport
	steps sync.Map // step name → *atomic.Int64, counted by every arbiter
	// quiet stops the arbiters' heartbeat writes: a test that needs the
	// primary's binlog to be all replicated at a kill sets it (a heartbeat
	// committed on the primary and not yet received by a replica when it
	// dies is, rightly, an errant transaction when it returns).
	quiet atomic.Bool
}

// count returns how often any arbiter took a step.
func (g *arbiters) count(step string) int64 {
	if v, ok := g.steps.Load(step); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

// isolate cuts (or restores) the Raft traffic between node i and the others.
func (g *arbiters) isolate(i int, cut bool) {
	id := g.nodes[i].ID()
	for other, tr := range g.trans {
		if other == id {
			continue
		}
		if cut {
			g.trans[id].Disconnect(raft.ServerAddress(other))
			tr.Disconnect(raft.ServerAddress(id))
		} else {
			g.trans[id].Connect(raft.ServerAddress(other), tr)
			tr.Connect(raft.ServerAddress(id), g.trans[id])
		}
	}
}

func (g *arbiters) leaderIndex() int {
	for i, n := range g.nodes {
		if n.IsLeader() {
			return i
		}
	}
	return -1
}

// setHook installs f as every arbiter's step hook (nil removes it); steps
// are counted either way.
func (g *arbiters) setHook(f func(arbiter int, step string)) {
	for i, a := range g.arbs {
		h := func(step string) {
			v, _ := g.steps.LoadOrStore(step, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
			if f != nil {
				f(i, step)
			}
		}
		a.hook.Store(&h)
	}
}

func (g *arbiters) Observations(ctx context.Context, cluster string) []Observation {
	var out []Observation
	for i, m := range g.mons {
		out = append(out, Observe(g.nodes[i].ID(), m.Snapshot()))
	}
	return out
}

func testConfig() Config {
	return Config{Cluster: "shop", Arbiters: 3, FailureThreshold: time.Second, Cooldown: 1500 * time.Millisecond,
		Lease: 500 * time.Millisecond, LeaseMargin: 100 * time.Millisecond, DrainTimeout: 2 * time.Second,
		CatchupTimeout: 5 * time.Second, MaxPromoteLag: 5 * time.Second, Interval: 100 * time.Millisecond}
}

// startArbiters starts the group; linked names the arbiters (0..2) whose
// probes of member 0 go through a cuttable link.
func startArbiters(t *testing.T, linked ...int) *arbiters {
	return startArbitersWith(t, testConfig(), linked...)
}

func startArbitersWith(t *testing.T, cfg Config, linked ...int) *arbiters {
	return startArbitersOn(t, chaos.StartT(t, chaos.Options{Members: 3}), cfg, linked...)
}

func startArbitersOn(t *testing.T, c *chaos.Cluster, cfg Config, linked ...int) *arbiters {
	links := map[int][]string{}
	for _, i := range linked {
		links[i] = []string{"db1"}
	}
	return startArbitersLinked(t, c, cfg, links)
}

// startArbitersLinked starts the group; links names, per arbiter (0..2), the
// members it reaches through a cuttable link (probes and actions alike).
func startArbitersLinked(t *testing.T, c *chaos.Cluster, cfg Config, links map[int][]string) *arbiters {
	g := &arbiters{t: t, db: c, links: map[string]*chaos.Link{}}
	var voters []raftfsm.Peer
	trans := map[string]*raft.InmemTransport{}
	for i := 0; i < 3; i++ {
		id := fmt.Sprintf("a%d", i+1)
		addr, tr := raft.NewInmemTransport(raft.ServerAddress(id))
		trans[id] = tr
		voters = append(voters, raftfsm.Peer{ID: id, Addr: string(addr)})
	}
	for a, ta := range trans {
		for b, tb := range trans {
			if a != b {
				ta.Connect(raft.ServerAddress(b), tb)
			}
		}
	}
	g.trans = trans
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		for _, n := range g.nodes {
			n.Close()
		}
		for _, l := range g.links {
			l.Close()
		}
	})
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	for i, p := range voters {
		n, err := raftfsm.Open(raftfsm.NodeConfig{ID: p.ID, Voter: true, Voters: voters, Transport: trans[p.ID], InMemory: true,
			HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond, Lease: 500 * time.Millisecond}, log)
		if err != nil {
			t.Fatal(err)
		}
		g.nodes = append(g.nodes, n)
		var members []topology.MemberConfig
		dial := map[string]string{}
		for _, m := range c.Members {
			mc := topology.MemberConfig{Name: m.Name, Addr: m.Addr()}
			if contains(links[i], m.Name) {
				l, err := chaos.NewLink(fmt.Sprintf("%s-%s-%d", p.ID, m.Name, time.Now().UnixNano()), m.Addr())
				if err != nil {
					t.Fatal(err)
				}
				g.links[p.ID+"/"+m.Name] = l
				mc.Dial = l.Addr
				dial[m.Addr()] = l.Addr
			}
			members = append(members, mc)
		}
		// As daemon's: heartbeats only to the serving primary, only by the
		// leader.
		gate := func(member string) bool {
			cl := n.State().Cluster("shop")
			return !g.quiet.Load() && cl.Writable() && cl.Primary == member && n.IsLeader()
		}
		mon, err := mariadb.NewMonitor(mariadb.MonitorConfig{Cluster: "shop", Members: members, User: chaos.AdminUser, Password: chaos.AdminPassword,
			ProbeInterval: 100 * time.Millisecond, MaxReplicaLag: 2 * time.Second, HeartbeatID: p.ID, HeartbeatGate: gate}, log)
		if err != nil {
			t.Fatal(err)
		}
		g.mons = append(g.mons, mon)
		act := &mariadb.Actions{User: chaos.AdminUser, Password: chaos.AdminPassword, ReplUser: chaos.ReplUser, ReplPassword: chaos.ReplPassword, Timeout: 3 * time.Second,
			HeartbeatPeriod: cfg.FailureThreshold / 4}
		if len(dial) > 0 {
			act.Dial = func(addr string) string {
				if d, ok := dial[addr]; ok {
					return d
				}
				return addr
			}
		}
		g.acts = append(g.acts, act)
		arb := New(cfg, n, mon, g, act, log.With(zap.String("arbiter", p.ID)))
		g.arbs = append(g.arbs, arb)
		h := func(step string) {
			v, _ := g.steps.LoadOrStore(step, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
		}
		arb.hook.Store(&h)
		wg.Add(2)
		go func() { defer wg.Done(); mon.Run(ctx) }()
		go func() { defer wg.Done(); arb.Run(ctx) }()
	}
	g.waitState("bootstrap", 20*time.Second, func(cl *raftfsm.Cluster) bool {
		return cl != nil && cl.Primary == "db1" && cl.Phase == raftfsm.PhaseServing
	})
	return g
}

func (g *arbiters) leader() (*raftfsm.Node, *Arbiter) {
	for i, n := range g.nodes {
		if n.IsLeader() {
			return n, g.arbs[i]
		}
	}
	return nil, nil
}

// waitState polls every node's FSM until ok holds on all of them.
func (g *arbiters) waitState(what string, d time.Duration, ok func(*raftfsm.Cluster) bool) *raftfsm.Cluster {
	g.t.Helper()
	deadline := time.Now().Add(d)
	for {
		all := true
		var cl *raftfsm.Cluster
		for _, n := range g.nodes {
			cl = n.State().Cluster("shop")
			if !ok(cl) {
				all = false
				break
			}
		}
		if all {
			return cl
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("timed out waiting for %s; state %+v", what, cl)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (g *arbiters) member(name string) *chaos.Member {
	for _, m := range g.db.Members {
		if m.Name == name {
			return m
		}
	}
	g.t.Fatalf("no member %s", name)
	return nil
}

func appDB(t *testing.T, m *chaos.Member) *sql.DB {
	t.Helper()
	db, err := m.AppDB()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func (g *arbiters) writable(ctx context.Context) []string { return g.db.Writable(ctx) }

// quietPrimary stops heartbeat writes and waits until every replica has
// received all of db1's binlog, so a kill leaves nothing errant behind;
// the caller sets g.quiet back after the kill.
func (g *arbiters) quietPrimary(ctx context.Context) {
	g.t.Helper()
	g.quiet.Store(true)
	if err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
		want := g.position(ctx, g.member("db1")).BinlogPos
		for _, m := range g.db.Members[1:] {
			if p := g.position(ctx, m); p.IOPos != want || p.CurrentPos != want {
				return false, nil
			}
		}
		return g.position(ctx, g.member("db1")).BinlogPos == want, nil
	}); err != nil {
		g.t.Fatalf("replicas never caught up with db1: %v", err)
	}
}

func (g *arbiters) position(ctx context.Context, m *chaos.Member) mariadb.ServerState {
	g.t.Helper()
	a := &mariadb.Actions{User: chaos.AdminUser, Password: chaos.AdminPassword, Timeout: 3 * time.Second}
	p, err := a.Position(ctx, m.Addr())
	if err != nil {
		g.t.Fatal(err)
	}
	return p
}

func historyHas(cl *raftfsm.Cluster, kind, substr string) bool {
	for _, d := range cl.History {
		if d.Kind == kind && strings.Contains(d.Reason, substr) {
			return true
		}
	}
	return false
}

func TestFailoverAfterKillAndCleanRejoin(t *testing.T) {
	g := startArbiters(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db1 := g.member("db1")
	app := appDB(t, db1)
	if _, err := app.ExecContext(ctx, "CREATE TABLE acked (id INT PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 50; i++ {
		if _, err := app.ExecContext(ctx, "INSERT INTO acked VALUES (?)", i); err != nil {
			t.Fatal(err)
		}
	}
	g.quietPrimary(ctx)
	killed := time.Now()
	if err := db1.Kill(); err != nil {
		t.Fatal(err)
	}
	g.quiet.Store(false)
	cl := g.waitState("failover", 30*time.Second, func(cl *raftfsm.Cluster) bool {
		return cl.Epoch >= 2 && cl.Phase == raftfsm.PhaseServing && cl.Primary != "db1"
	})
	t.Logf("failover committed %s after kill -9; epoch %d primary %s", time.Since(killed).Round(time.Millisecond), cl.Epoch, cl.Primary)
	if w := g.writable(ctx); len(w) != 1 || w[0] != cl.Primary {
		t.Fatalf("writable members %v, want only %s", w, cl.Primary)
	}
	if !historyHas(cl, "failover_begin", "unreachable from") || !cl.Members["db1"].Fenced {
		t.Fatalf("history/member state: %+v", cl)
	}
	newp := g.member(cl.Primary)
	var n int
	if err := appDB(t, newp).QueryRowContext(ctx, "SELECT COUNT(*) FROM acked").Scan(&n); err != nil || n != 50 {
		t.Fatalf("new primary has %d of 50 acknowledged rows (%v)", n, err)
	}
	if _, err := appDB(t, newp).ExecContext(ctx, "INSERT INTO acked VALUES (51)"); err != nil {
		t.Fatalf("write on the new primary: %v", err)
	}
	for _, m := range g.db.Members {
		if m.Name == cl.Primary || m.Name == "db1" {
			continue
		}
		if err := chaos.Poll(ctx, 15*time.Second, func() (bool, error) {
			p := g.position(ctx, m)
			return p.IORunning && p.Source == newp.Addr(), nil
		}); err != nil {
			t.Fatalf("%s not repointed to %s: %v", m.Name, cl.Primary, err)
		}
	}

	// The old primary returns with nothing the new one lacks: it rejoins.
	if err := db1.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	g.waitState("clean rejoin", 30*time.Second, func(cl *raftfsm.Cluster) bool { return !cl.Members["db1"].Fenced })
	if err := chaos.Poll(ctx, 15*time.Second, func() (bool, error) {
		p := g.position(ctx, db1)
		return p.IORunning && p.SQLRunning && p.Source == newp.Addr() && p.ReadOnly, nil
	}); err != nil {
		t.Fatalf("db1 is not a replica of %s: %v", cl.Primary, err)
	}
	if err := chaos.Poll(ctx, 15*time.Second, func() (bool, error) {
		var n int
		err := appDB(t, db1).QueryRowContext(ctx, "SELECT COUNT(*) FROM acked").Scan(&n)
		return err == nil && n == 51, nil
	}); err != nil {
		t.Fatalf("rejoined db1 did not catch up: %v", err)
	}
	// Cooldown respected: the history holds exactly one failover.
	begins := 0
	for _, d := range g.nodes[0].State().Cluster("shop").History {
		if d.Kind == "failover_begin" {
			begins++
		}
	}
	if begins != 1 {
		t.Fatalf("%d failovers recorded, want 1", begins)
	}
}

func TestErrantOldPrimaryStaysFencedUntilFixed(t *testing.T) {
	g := startArbiters(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db1 := g.member("db1")
	if err := db1.Kill(); err != nil {
		t.Fatal(err)
	}
	cl := g.waitState("failover", 30*time.Second, func(cl *raftfsm.Cluster) bool {
		return cl.Epoch >= 2 && cl.Phase == raftfsm.PhaseServing && cl.Primary != "db1"
	})
	// db1 comes back and takes a write nobody else has (admin bypasses
	// read_only, as a stray cron job would).
	if err := db1.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	adm, err := db1.DB()
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	// In its own GTID domain the write is errant whether or not the leader
	// repointed db1 first: no other member has domain 7, and a replica's own
	// writes are not sent back to the primary.
	if _, err := adm.ExecContext(ctx, "SET SESSION gtid_domain_id=7"); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS app.errant (id INT PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	got := g.waitState("errant fenced", 30*time.Second, func(c *raftfsm.Cluster) bool {
		return c.Members["db1"].Fenced && c.Members["db1"].Errant != ""
	})
	// Domain 7 must be named. Other ranges may come with it: killed right
	// after the harness started, db1 can hold a write of its own (a
	// heartbeat committed before any replica was attached, when semi-sync
	// has no one to wait for) that no other member received.
	if errant := got.Members["db1"].Errant; !strings.Contains(","+errant, ",7-") {
		t.Fatalf("errant %q, want domain 7 among them", errant)
	}
	if w := g.writable(ctx); len(w) != 1 || w[0] != cl.Primary {
		t.Fatalf("writable members %v, want only %s", w, cl.Primary)
	}

	// The operator gives the primary the missing transaction (same GTID,
	// as Orchestrator's errant-GTID injection does): db1 is no longer
	// errant, and the arbiters rejoin it on their own.
	var pos string
	if err := adm.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&pos); err != nil {
		t.Fatal(err)
	}
	var server, seq int
	for _, gtid := range strings.Split(pos, ",") {
		if _, err := fmt.Sscanf(gtid, "7-%d-%d", &server, &seq); err == nil {
			break
		}
	}
	if seq == 0 {
		t.Fatalf("no domain 7 in db1's gtid_binlog_pos %q", pos)
	}
	prim, err := g.member(cl.Primary).DB()
	if err != nil {
		t.Fatal(err)
	}
	defer prim.Close()
	conn, err := prim.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []string{
		"SET SESSION gtid_domain_id=7",
		fmt.Sprintf("SET SESSION server_id=%d", server),
		fmt.Sprintf("SET SESSION gtid_seq_no=%d", seq),
		"CREATE TABLE IF NOT EXISTS app.errant (id INT PRIMARY KEY)",
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	g.waitState("errant member rejoined", 30*time.Second, func(c *raftfsm.Cluster) bool {
		return !c.Members["db1"].Fenced && c.Members["db1"].Errant == ""
	})
	// db1 replicates again: a new write on the primary reaches it.
	if _, err := prim.ExecContext(ctx, "INSERT INTO app.errant VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if err := chaos.Poll(ctx, 15*time.Second, func() (bool, error) {
		var n int
		err := adm.QueryRowContext(ctx, "SELECT COUNT(*) FROM app.errant WHERE id = 1").Scan(&n)
		return err == nil && n == 1, nil
	}); err != nil {
		t.Fatalf("a write on the primary never reached the rejoined db1: %v", err)
	}
	if w := g.writable(ctx); len(w) != 1 || w[0] != cl.Primary {
		t.Fatalf("writable members %v after the rejoin, want only %s", w, cl.Primary)
	}
}

func TestNoFailoverWithoutAgreement(t *testing.T) {
	// Arbiters 0 and 1 probe db1 through links that can be cut.
	g := startArbiters(t, 0, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// One arbiter loses its link to the primary: a minority, no failover.
	g.links["a1/db1"].Cut()
	waitFailing := func(n int) {
		t.Helper()
		if err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
			down := 0
			for _, o := range g.Observations(ctx, "shop") {
				if o.Failing["db1"] >= 2*testConfig().FailureThreshold {
					down++
				}
			}
			return down >= n, nil
		}); err != nil {
			t.Fatalf("%d arbiters never saw db1 failing for twice the threshold", n)
		}
	}
	waitFailing(1)
	if cl := g.nodes[0].State().Cluster("shop"); cl.Epoch != 1 || cl.Primary != "db1" {
		t.Fatalf("one arbiter's broken link changed the primary: %+v", cl)
	}
	// A majority loses it, but the replicas still stream from it: still no
	// failover, and the leader says why (if it is one of the cut ones; the
	// uncut leader never even asks).
	g.links["a2/db1"].Cut()
	waitFailing(2)
	cl := g.nodes[0].State().Cluster("shop")
	if cl.Epoch != 1 || cl.Primary != "db1" {
		t.Fatalf("failover while replicas were connected to the primary: %+v", cl)
	}
	if w := g.writable(ctx); len(w) != 1 || w[0] != "db1" {
		t.Fatalf("writable members %v", w)
	}
}

func TestSwitchoverAndRollback(t *testing.T) {
	g := startArbiters(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db1, db2, db3 := g.member("db1"), g.member("db2"), g.member("db3")
	if _, err := appDB(t, db1).ExecContext(ctx, "CREATE TABLE s (id INT PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	// Wait for the monitors to see db2 replicating with a known lag.
	_, arb := g.leader()
	var err error
	if err = chaos.Poll(ctx, 20*time.Second, func() (bool, error) {
		_, arb = g.leader()
		if arb == nil {
			return false, nil
		}
		err = arb.Promote(ctx, "db2", 20*time.Second)
		return err == nil, nil
	}); err != nil {
		t.Fatalf("promote db2: %v", err)
	}
	cl := g.waitState("switchover", 10*time.Second, func(cl *raftfsm.Cluster) bool {
		return cl.Primary == "db2" && cl.Phase == raftfsm.PhaseServing && cl.Epoch == 2
	})
	// The cooldown after a change applies to switchovers too.
	if err := arb.Promote(ctx, "db3", time.Second); err == nil || !strings.Contains(err.Error(), "cooldown") {
		t.Fatalf("promote within the cooldown: %v", err)
	}
	if w := g.writable(ctx); len(w) != 1 || w[0] != "db2" {
		t.Fatalf("writable %v after switchover", w)
	}
	for _, m := range []*chaos.Member{db1, db3} {
		if err := chaos.Poll(ctx, 15*time.Second, func() (bool, error) {
			p := g.position(ctx, m)
			return p.IORunning && p.Source == db2.Addr(), nil
		}); err != nil {
			t.Fatalf("%s not replicating from db2: %v", m.Name, err)
		}
	}
	if !historyHas(cl, "switchover_done", "promoted") {
		t.Fatalf("history %+v", cl.History)
	}

	// Refusals: unknown member, the primary itself.
	for _, target := range []string{"db9", "db2"} {
		if err := arb.Promote(ctx, target, time.Second); err == nil {
			t.Fatalf("promote %s accepted", target)
		}
	}

	// Kill the target mid-switch: everything rolls back to db2.
	if err := chaos.Poll(ctx, 20*time.Second, func() (bool, error) {
		m := g.mons[0].Snapshot().Members[2]
		return m.Eligible, nil
	}); err != nil {
		t.Fatal("db3 never eligible after repoint")
	}
	// The cooldown as the leader itself measures it (its own clock, from
	// when it saw the change).
	if err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
		if _, arb = g.leader(); arb == nil {
			return false, nil
		}
		since, _, ok, _ := arb.seen.since(time.Now())
		return ok && since > testConfig().Cooldown, nil
	}); err != nil {
		t.Fatal(err)
	}
	kill := func(step string) {
		if step == "catchup" {
			_ = db3.Kill()
		}
	}
	arb.hook.Store(&kill)
	err = arb.Promote(ctx, "db3", 20*time.Second)
	arb.hook.Store(nil)
	if err == nil || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("promote with the target killed: %v", err)
	}
	cl = g.waitState("rollback", 10*time.Second, func(cl *raftfsm.Cluster) bool {
		return cl.Primary == "db2" && cl.Phase == raftfsm.PhaseServing && cl.Epoch == 4
	})
	if w := g.writable(ctx); len(w) != 1 || w[0] != "db2" {
		t.Fatalf("writable %v after rollback", w)
	}
	if _, err := appDB(t, db2).ExecContext(ctx, "INSERT INTO s VALUES (1)"); err != nil {
		t.Fatalf("write after rollback: %v", err)
	}
	if !historyHas(cl, "switchover_aborted", "switchover failed") {
		t.Fatalf("history %+v", cl.History)
	}
}

// The Raft leader dies in the middle of a failover (after committing the
// new epoch, before opening the candidate): a new leader finds the cluster
// failing_over and finishes the failover it finds in the log.
func TestLeaderLostMidFailover(t *testing.T) {
	g := startArbiters(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var once sync.Once
	var lostID atomic.Value // string
	lostID.Store("")
	for i, a := range g.arbs {
		node := g.nodes[i]
		kill := func(step string) {
			if step == "lease_wait" {
				once.Do(func() {
					lostID.Store(node.ID())
					go node.Close() // shutdown waits for this goroutine's caller to return
				})
			}
		}
		a.hook.Store(&kill)
	}
	if err := g.member("db1").Kill(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	var cl *raftfsm.Cluster
	var lost string
	for {
		lost = lostID.Load().(string)
		done := true
		for _, n := range g.nodes {
			if n.ID() == lost {
				continue
			}
			c := n.State().Cluster("shop")
			if c.Phase != raftfsm.PhaseServing || c.Epoch < 2 || c.Primary == "db1" {
				done = false
			}
			cl = c
		}
		if done && lost != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("failover not finished after losing leader %q: %+v", lost, cl)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("leader %s lost mid-failover; the new leader finished it: epoch %d primary %s", lost, cl.Epoch, cl.Primary)
	if !historyHas(cl, "failover_done", "promoted") {
		t.Fatalf("history %+v", cl.History)
	}
	if w := g.writable(ctx); len(w) != 1 || w[0] != cl.Primary {
		t.Fatalf("writable %v, want only %s", w, cl.Primary)
	}
}

// A second primary failure within the cooldown is not acted on (and the
// history says why); once the cooldown has passed it is. The arbiters stamp
// their commands with a clock an hour ahead: the cooldown is judged by each
// arbiter's own clock, never by comparing a command's time with it.
func TestRepeatedFailoversRespectCooldown(t *testing.T) {
	cfg := testConfig()
	cfg.Cooldown = 6 * time.Second
	cfg.Clock = func() time.Time { return time.Now().Add(time.Hour) }
	g := startArbitersWith(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := g.member("db1").Kill(); err != nil {
		t.Fatal(err)
	}
	first := g.waitState("first failover", 30*time.Second, func(cl *raftfsm.Cluster) bool {
		return cl.Epoch == 2 && cl.Phase == raftfsm.PhaseServing && cl.Primary != "db1"
	})
	firstAt := first.LastFailover
	if err := g.member(first.Primary).Kill(); err != nil {
		t.Fatal(err)
	}
	second := g.waitState("second failover", 30*time.Second, func(cl *raftfsm.Cluster) bool {
		return cl.Epoch == 3 && cl.Phase == raftfsm.PhaseServing
	})
	if gap := second.LastFailover.Sub(firstAt); gap < cfg.Cooldown {
		t.Fatalf("second failover %s after the first, within the cooldown %s", gap, cfg.Cooldown)
	}
	if !historyHas(second, "note", "cooldown") {
		t.Fatalf("no cooldown refusal in the history: %+v", second.History)
	}
	if w := g.writable(ctx); len(w) != 1 || w[0] != second.Primary {
		t.Fatalf("writable %v, want only %s", w, second.Primary)
	}
}

// With every member read-only (the recommended my.cnf), the first primary is
// the member the others replicate from, and the arbiters open it.
func TestBootstrapOpensTheReplicationSource(t *testing.T) {
	c := chaos.StartT(t, chaos.Options{Members: 3})
	adm, err := c.Members[0].DB()
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	if _, err := adm.Exec("SET GLOBAL read_only=ON"); err != nil {
		t.Fatal(err)
	}
	g := startArbitersOn(t, c, testConfig())
	cl := g.waitState("bootstrap", 10*time.Second, func(cl *raftfsm.Cluster) bool { return cl != nil && cl.Primary == "db1" })
	if !historyHas(cl, "bootstrap", "opened") {
		t.Fatalf("history %+v", cl.History)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
		w := g.writable(ctx)
		return len(w) == 1 && w[0] == "db1", nil
	}); err != nil {
		t.Fatalf("db1 not opened: writable %v", g.writable(ctx))
	}
}
