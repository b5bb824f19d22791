package arbiter

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.uber.org/zap/zaptest"

	"github.com/dbrouter/dbrouter/raftfsm"
	"github.com/dbrouter/dbrouter/topology"
	tmongo "github.com/dbrouter/dbrouter/topology/mongo"
)

// fakeSet is a replica set as the Mongo arbiter's actuator sees it: each
// member's hello (nil: unreachable), who hears whom, and the steps taken.
type fakeSet struct {
	mu     sync.Mutex
	hello  map[string]*tmongo.Detail // by address
	hears  map[[2]string]bool        // [member, peer] addresses
	stepUp map[string]error          // a member's answer to replSetStepUp
	steps  []string
	// onHello, when set, runs (under mu) before each Hello answer: a
	// test's way to move the set on as the arbiter looks at it.
	onHello func(f *fakeSet, addr string)
	// votesByOptime: StepUp loses, as MongoDB's vote rules make it, when a
	// writable member has a newer last write than the candidate.
	votesByOptime bool
}

func (f *fakeSet) Hello(_ context.Context, addr string) (*tmongo.Detail, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.onHello != nil {
		f.onHello(f, addr)
	}
	d := f.hello[addr]
	if d == nil {
		return nil, errors.New("connection refused")
	}
	c := *d
	return &c, nil
}

func (f *fakeSet) StepUp(_ context.Context, addr string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.steps = append(f.steps, "step_up "+addr)
	if err := f.stepUp[addr]; err != nil {
		return err
	}
	if f.votesByOptime {
		for a, o := range f.hello {
			if a != addr && o != nil && o.Writable && tmongo.Newer(o.LastWrite, f.hello[addr].LastWrite) {
				return errors.New("election failed: a voter has a newer optime than the candidate")
			}
		}
	}
	d := *f.hello[addr]
	d.Writable, d.Secondary = true, false
	f.hello[addr] = &d
	return nil
}

func (f *fakeSet) StepDown(_ context.Context, addr string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.steps = append(f.steps, "step_down "+addr)
	return nil
}

func (f *fakeSet) Hears(_ context.Context, addr, peer string, _ time.Duration) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hears[[2]string{addr, peer}], nil
}

func (f *fakeSet) took() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.steps...)
}

func mongoAddr(name string) string { return name + ":27017" }

// lw is a last write at term t, second s.
func lw(t int64, s uint32) *tmongo.LastWrite {
	return &tmongo.LastWrite{Term: t, OpTime: bson.Timestamp{T: s}, Date: time.Unix(int64(s), 0)}
}

func election(term byte) *bson.ObjectID {
	id := bson.ObjectID{0x7f, 0xff, 0xff, 0xff}
	id[11] = term
	return &id
}

// mongoMember is a member as the monitor published it: role, reachability
// and hello detail.
func mongoMember(name string, role topology.Role, d *tmongo.Detail) topology.Member {
	m := topology.Member{Name: name, Addr: mongoAddr(name), Role: role, Reachable: d != nil, Lag: -1}
	if d == nil {
		m.FailingFor = time.Minute
		return m
	}
	m.Detail = d
	return m
}

func secondary(w *tmongo.LastWrite) *tmongo.Detail {
	return &tmongo.Detail{SetName: "rs0", Secondary: true, LastWrite: w}
}

func primaryHello(term byte, w *tmongo.LastWrite) *tmongo.Detail {
	return &tmongo.Detail{SetName: "rs0", Writable: true, ElectionID: election(term), LastWrite: w}
}

// mongoSet builds a snapshot (db1 first) and the fake actuator answering
// with the same hellos.
func mongoSet(members ...topology.Member) (*topology.Snapshot, *fakeSet) {
	snap := &topology.Snapshot{Cluster: "shop", Taken: time.Now(), Primary: -1, Members: members}
	f := &fakeSet{hello: map[string]*tmongo.Detail{}, hears: map[[2]string]bool{}, stepUp: map[string]error{}}
	for i, m := range members {
		if d, ok := tmongo.DetailOf(m); ok {
			f.hello[m.Addr] = d
		}
		if m.Role == topology.RolePrimary {
			snap.Primary = i
		}
	}
	return snap, f
}

// fsmGroup always leads and applies what it is asked to commit to a real
// FSM, recording each command.
type fsmGroup struct {
	fakeGroup
	fsm *raftfsm.FSM
	n   uint64
}

func (g *fsmGroup) State() *raftfsm.State { return g.fsm.State() }

func (g *fsmGroup) Propose(ctx context.Context, c *raftfsm.Command) (raftfsm.Result, error) {
	_, _ = g.fakeGroup.Propose(ctx, c)
	data, err := c.Encode()
	if err != nil {
		return raftfsm.Result{}, err
	}
	g.n++
	r := g.fsm.Apply(&raft.Log{Index: g.n, Type: raft.LogCommand, Data: data}).(raftfsm.Result)
	r.Index = g.n
	return r, r.Err
}

// fakeMongo returns the arbiter of cluster "shop" (members db1..db4 and
// arb; primary recorded at epoch 1 unless primary is "") seeing snap.
func fakeMongo(t *testing.T, primary string, snap *topology.Snapshot, act MongoActuator, obs ...Observation) (*Mongo, *fsmGroup) {
	t.Helper()
	g := &fsmGroup{fsm: raftfsm.NewFSM()}
	if primary != "" {
		if _, err := g.Propose(context.Background(), &raftfsm.Command{Type: raftfsm.TypeBootstrap, Cluster: "shop", Primary: primary,
			Members: []string{"db1", "db2", "db3", "db4", "arb"}}); err != nil {
			t.Fatal(err)
		}
		g.proposed = nil
	}
	m := NewMongo(Config{Cluster: "shop", Arbiters: 3, FailureThreshold: time.Second, Lease: 10 * time.Millisecond, LeaseMargin: 10 * time.Millisecond,
		DrainTimeout: 200 * time.Millisecond, CatchupTimeout: time.Second, MaxPromoteLag: 5 * time.Second},
		g, fixedSnapshot{snap}, fixedObservations(obs), act, zaptest.NewLogger(t))
	return m, g
}

// lostBy is an observation by arbiter a that has failed to reach the
// named members for a minute and sees no primary.
func lostBy(a string, members ...string) Observation {
	o := Observation{Arbiter: a, Failing: map[string]time.Duration{}}
	for _, m := range members {
		o.Failing[m] = time.Minute
	}
	return o
}

func kinds(g *fsmGroup) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for _, c := range g.proposed {
		s := c.Type.String()
		if c.Primary != "" {
			s += " " + c.Primary
		}
		out = append(out, s)
	}
	return out
}

// TestMongoBootstrapRecordsTheElectedPrimary: the first epoch is the
// primary the set elected, not one the arbiters choose.
func TestMongoBootstrapRecordsTheElectedPrimary(t *testing.T) {
	snap, f := mongoSet(mongoMember("db1", topology.RoleReplica, secondary(lw(2, 9))),
		mongoMember("db2", topology.RolePrimary, primaryHello(2, lw(2, 10))))
	m, g := fakeMongo(t, "", snap, f)
	if err := m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(kinds(g), ","); got != "bootstrap db2" {
		t.Fatalf("proposed %s, want bootstrap db2", got)
	}
	if len(f.took()) != 0 {
		t.Fatalf("steps %v on a set that has a primary", f.took())
	}
}

// TestMongoFollowsTheSetsElection: a primary the set elected becomes the
// epoch's (failing_over: writes held, old acknowledgements fenced), then
// serving; a snapshot that shows a newer claimant than the fresh hellos
// confirm changes nothing.
func TestMongoFollowsTheSetsElection(t *testing.T) {
	t.Run("new primary elected", func(t *testing.T) {
		snap, f := mongoSet(mongoMember("db1", topology.RoleReplica, secondary(lw(2, 9))),
			mongoMember("db2", topology.RolePrimary, primaryHello(3, lw(3, 10))))
		m, g := fakeMongo(t, "db1", snap, f)
		if err := m.Reconcile(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(kinds(g), ","); got != "begin db2,open" {
			t.Fatalf("proposed %s, want begin db2,open", got)
		}
		if c := g.commands(raftfsm.TypeBegin)[0]; c.Phase != raftfsm.PhaseFailingOver {
			t.Fatalf("begin phase %s, want failing_over (the old epoch's w:1 writes may be rolled back)", c.Phase)
		}
	})
	t.Run("deposed primary still claims", func(t *testing.T) {
		// Cut off from the set, db1 has not heard of db2's election: it
		// is stepped down once db2's epoch is committed.
		snap, f := mongoSet(mongoMember("db1", topology.RoleStalePrimary, primaryHello(2, lw(2, 9))),
			mongoMember("db2", topology.RolePrimary, primaryHello(3, lw(3, 10))))
		m, g := fakeMongo(t, "db1", snap, f)
		if err := m.Reconcile(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(kinds(g), ","); got != "begin db2,open" {
			t.Fatalf("proposed %s, want begin db2,open", got)
		}
		if got := strings.Join(f.took(), ","); got != "step_down db1:27017" {
			t.Fatalf("steps %q, want step_down db1", got)
		}
	})
	t.Run("recorded primary still leads a newer election", func(t *testing.T) {
		snap, f := mongoSet(mongoMember("db1", topology.RoleReplica, secondary(lw(2, 9))),
			mongoMember("db2", topology.RolePrimary, primaryHello(3, lw(3, 10))))
		f.hello[mongoAddr("db1")] = primaryHello(4, lw(4, 11)) // the snapshot is older than db1's step-up
		m, g := fakeMongo(t, "db1", snap, f)
		if err := m.Reconcile(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := kinds(g); len(got) != 0 {
			t.Fatalf("proposed %v on a stale snapshot", got)
		}
	})
}

// TestMongoStepUpRules: a secondary is asked to step up only when a
// majority of arbiters has lost the primary for failure_threshold and no
// member still hears from it; the freshest electable one is asked first,
// the next when it is refused.
func TestMongoStepUpRules(t *testing.T) {
	lost3 := []Observation{lostBy("a1", "db1"), lostBy("a2", "db1"), lostBy("a3", "db1")}
	for _, tc := range []struct {
		name   string
		obs    []Observation
		hears  bool
		refuse string // member that refuses the step-up
		arbDB3 bool   // db3 is an arbiter
		want   []string
		epochs string
	}{
		{name: "majority lost it", obs: lost3, want: []string{"step_up db3:27017"}, epochs: "begin db3,open"},
		{name: "majority lost it, freshest refused", obs: lost3, refuse: "db3", want: []string{"step_up db3:27017", "step_up db2:27017"}, epochs: "begin db2,open"},
		{name: "only one arbiter lost it", obs: []Observation{lostBy("a1", "db1"), {Arbiter: "a2", Failing: map[string]time.Duration{}, Primary: "db1"},
			{Arbiter: "a3", Failing: map[string]time.Duration{}, Primary: "db1"}}},
		{name: "a secondary still hears from it", obs: lost3, hears: true, epochs: "note"},
		{name: "an arbiter is never asked", obs: lost3, arbDB3: true, want: []string{"step_up db2:27017"}, epochs: "begin db2,open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db3 := mongoMember("db3", topology.RoleReplica, secondary(lw(2, 12)))
			if tc.arbDB3 {
				db3 = mongoMember("db3", topology.RoleArbiter, &tmongo.Detail{SetName: "rs0", Arbiter: true})
			}
			snap, f := mongoSet(mongoMember("db1", topology.RoleUnknown, nil),
				mongoMember("db2", topology.RoleReplica, secondary(lw(2, 11))), db3)
			if tc.hears {
				f.hears[[2]string{mongoAddr("db2"), mongoAddr("db1")}] = true
			}
			if tc.refuse != "" {
				f.stepUp[mongoAddr(tc.refuse)] = errors.New("Election failed: not caught up")
			}
			m, g := fakeMongo(t, "db1", snap, f, tc.obs...)
			m.sawPrimary = time.Now().Add(-time.Minute)
			if err := m.Reconcile(context.Background()); err != nil {
				t.Logf("reconcile: %v", err)
			}
			if got, want := strings.Join(f.took(), ","), strings.Join(tc.want, ","); got != want {
				t.Fatalf("steps %q, want %q", got, want)
			}
			if got := strings.Join(kinds(g), ","); got != tc.epochs {
				t.Fatalf("proposed %q, want %q", got, tc.epochs)
			}
		})
	}
	t.Run("hung primary still shown reachable", func(t *testing.T) {
		// Probes fail, but not yet often enough for the monitor to call it
		// unreachable: it counts as lost from its last answer.
		db1 := mongoMember("db1", topology.RolePrimary, primaryHello(2, lw(2, 10)))
		db1.FailingFor = 1500 * time.Millisecond
		snap, f := mongoSet(db1, mongoMember("db2", topology.RoleReplica, secondary(lw(2, 10))))
		delete(f.hello, mongoAddr("db1")) // hung: no answer
		m, g := fakeMongo(t, "db1", snap, f, lost3...)
		m.sawPrimary = time.Now().Add(-time.Minute)
		if err := m.Reconcile(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(f.took(), ","); got != "step_up db2:27017" {
			t.Fatalf("steps %q, want step_up db2", got)
		}
		if got := strings.Join(kinds(g), ","); got != "begin db2,open" {
			t.Fatalf("proposed %q, want begin db2,open", got)
		}
	})
	t.Run("others see a primary this leader does not", func(t *testing.T) {
		snap, f := mongoSet(mongoMember("db1", topology.RoleUnknown, nil), mongoMember("db2", topology.RoleUnknown, nil))
		sees := Observation{Arbiter: "a2", Failing: map[string]time.Duration{}, Primary: "db1", Members: map[string]ObservedMember{"db1": {}, "db2": {}}}
		m, g := fakeMongo(t, "db1", snap, f, lostBy("a1", "db1", "db2"), sees, sees)
		m.sawPrimary = time.Now().Add(-time.Minute)
		if err := m.Reconcile(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(f.took()) != 0 || len(g.transferred) != 1 || g.transferred[0] != "a2" {
			t.Fatalf("steps %v, leadership to %v: want none, and a2", f.took(), g.transferred)
		}
	})
	t.Run("not before this leader watched failure_threshold", func(t *testing.T) {
		snap, f := mongoSet(mongoMember("db1", topology.RoleUnknown, nil), mongoMember("db2", topology.RoleReplica, secondary(lw(2, 11))))
		m, _ := fakeMongo(t, "db1", snap, f, lost3...)
		_ = m.Reconcile(context.Background()) // first look: starts counting
		if got := f.took(); len(got) != 0 {
			t.Fatalf("steps %v on the first look", got)
		}
	})
}

// TestMongoPromoteRefusals: a switchover is refused, with the reason,
// for a target that is an arbiter, unreachable, lagging, not a member, or
// not in the set; nothing is committed.
func TestMongoPromoteRefusals(t *testing.T) {
	build := func() (*topology.Snapshot, *fakeSet) {
		other := secondary(lw(2, 10))
		other.SetName = "rs1"
		other.Note = "reports set rs1, not rs0: not counted"
		return mongoSet(mongoMember("db1", topology.RolePrimary, primaryHello(2, lw(2, 100))),
			mongoMember("db2", topology.RoleReplica, secondary(lw(2, 90))),
			mongoMember("db3", topology.RoleReplica, nil),
			mongoMember("arb", topology.RoleArbiter, &tmongo.Detail{SetName: "rs0", Arbiter: true}),
			mongoMember("db4", topology.RoleUnknown, other))
	}
	for _, tc := range []struct{ target, want string }{
		{"arb", "arb is an arbiter of the set"},
		{"db3", "db3 is unreachable"},
		{"db2", "db2 lags 10s behind the primary, more than max_promote_lag 5s"},
		{"db9", "db9 is not a member of cluster shop"},
		{"db4", "db4 is not in the replica set: reports set rs1"},
		{"db1", "db1 is already the primary"},
	} {
		t.Run(tc.target, func(t *testing.T) {
			snap, f := build()
			m, g := fakeMongo(t, "db1", snap, f)
			err := m.Promote(context.Background(), tc.target, 5*time.Second)
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Promote(%s) = %v, want a refusal saying %q", tc.target, err, tc.want)
			}
			if got := kinds(g); len(got) != 0 {
				t.Fatalf("proposed %v on a refusal", got)
			}
		})
	}
}

// TestMongoPromoteStepsUpTheCaughtUpTarget: switching is committed, the
// target catches up, is asked to step up, and its epoch opens once it is
// the writable primary; a refused step-up rolls back to the old primary.
func TestMongoPromoteStepsUpTheCaughtUpTarget(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		snap, f := mongoSet(mongoMember("db1", topology.RolePrimary, primaryHello(2, lw(2, 100))),
			mongoMember("db2", topology.RoleReplica, secondary(lw(2, 100))))
		if refuse {
			f.stepUp[mongoAddr("db2")] = errors.New("Election failed: no majority")
		}
		m, g := fakeMongo(t, "db1", snap, f)
		err := m.Promote(context.Background(), "db2", 5*time.Second)
		want := "begin db2,open"
		if refuse {
			want = "begin db2,abort"
			if err == nil || !strings.Contains(err.Error(), "rolled back to db1") {
				t.Fatalf("Promote = %v, want a rollback", err)
			}
		} else if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(kinds(g), ","); got != want {
			t.Fatalf("refuse %v: proposed %q, want %q", refuse, got, want)
		}
		if c := g.commands(raftfsm.TypeBegin)[0]; c.Phase != raftfsm.PhaseSwitching {
			t.Fatalf("begin phase %s, want switching", c.Phase)
		}
	}
}

// TestMongoPromoteWaitsForWritesLandingAfterTheDrain: a write already
// sent lands on the old primary after its last write looked stable (the
// drain's two quiet reads): the target must catch up with it too before it
// runs for primary, or the set's vote rules make it lose and the
// switchover rolls back (seen under load in make chaos).
func TestMongoPromoteWaitsForWritesLandingAfterTheDrain(t *testing.T) {
	snap, f := mongoSet(mongoMember("db1", topology.RolePrimary, primaryHello(2, lw(2, 100))),
		mongoMember("db2", topology.RoleReplica, secondary(lw(2, 100))))
	f.votesByOptime = true
	db1, db2 := mongoAddr("db1"), mongoAddr("db2")
	landed, seen, oldReads := false, 0, 0
	f.onHello = func(f *fakeSet, addr string) {
		if addr == db1 {
			oldReads++
		}
		switch {
		case addr == db2 && !landed && oldReads >= 3: // after the drain's quiet reads
			// The straggler lands as the catch-up begins...
			landed = true
			d := *f.hello[db1]
			d.LastWrite = lw(2, 101)
			f.hello[db1] = &d
		case addr == db2 && landed:
			// ...and reaches db2 a few reads later.
			if seen++; seen == 3 {
				d := *f.hello[db2]
				d.LastWrite = lw(2, 101)
				f.hello[db2] = &d
			}
		}
	}
	m, g := fakeMongo(t, "db1", snap, f)
	if err := m.Promote(context.Background(), "db2", 5*time.Second); err != nil {
		t.Fatalf("Promote: %v (steps %v)", err, f.took())
	}
	if got := strings.Join(kinds(g), ","); got != "begin db2,open" {
		t.Fatalf("proposed %q, want begin db2,open", got)
	}
}

// TestMongoNewLeaderFinishesOrRollsBackASwitchover: a switchover its
// leader left in phase switching is opened when the target did become the
// writable primary, and rolled back to the old primary otherwise.
func TestMongoNewLeaderFinishesOrRollsBackASwitchover(t *testing.T) {
	for _, won := range []bool{true, false} {
		db2 := mongoMember("db2", topology.RoleReplica, secondary(lw(2, 100)))
		db1 := mongoMember("db1", topology.RolePrimary, primaryHello(2, lw(2, 100)))
		if won {
			db2 = mongoMember("db2", topology.RolePrimary, primaryHello(3, lw(3, 101)))
			db1 = mongoMember("db1", topology.RoleReplica, secondary(lw(3, 101)))
		}
		snap, f := mongoSet(db1, db2)
		m, g := fakeMongo(t, "db1", snap, f)
		if _, err := g.Propose(context.Background(), &raftfsm.Command{Type: raftfsm.TypeBegin, Cluster: "shop", Epoch: 1, Primary: "db2", Phase: raftfsm.PhaseSwitching}); err != nil {
			t.Fatal(err)
		}
		g.proposed = nil
		if err := m.Reconcile(context.Background()); err != nil {
			t.Fatal(err)
		}
		cl := g.State().Cluster("shop")
		want := "db1"
		if won {
			want = "db2"
		}
		if cl.Phase != raftfsm.PhaseServing || cl.Primary != want {
			t.Fatalf("target won %v: %s %s, want serving %s (proposed %v)", won, cl.Phase, cl.Primary, want, kinds(g))
		}
	}
}
