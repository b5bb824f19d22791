package hooks

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/raftfsm"
)

// group is a Source over a real FSM, with leadership set by the test.
type group struct {
	fsm    *raftfsm.FSM
	leader bool
}

func (g *group) State() *raftfsm.State    { return g.fsm.State() }
func (g *group) Changed() <-chan struct{} { return g.fsm.Changed() }
func (g *group) IsLeader() bool           { return g.leader }
func (g *group) epoch() uint64            { return g.fsm.State().Cluster("app").Epoch }
func bptr(b bool) *bool                   { return &b }
func sptr(s string) *string               { return &s }
func (g *group) apply(t *testing.T, cmds ...*raftfsm.Command) {
	t.Helper()
	for _, c := range cmds {
		c.Cluster = "app"
		if c.Type != raftfsm.TypeBootstrap {
			c.Epoch = g.epoch()
		}
		b, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if res := g.fsm.Apply(&raft.Log{Index: g.fsm.State().Index + 1, Type: raft.LogCommand, Data: b}).(raftfsm.Result); res.Err != nil {
			t.Fatalf("%s: %v", c.Type, res.Err)
		}
	}
}

// watcher returns a Watcher over g whose fired events the test reads.
func watcher(g *group, window time.Duration) (*Watcher, *[]Event) {
	var fired []Event
	return NewWatcher(g, func(e Event) { fired = append(fired, e) }, window, zap.NewNop()), &fired
}

func kinds(es []Event) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Kind)
	}
	return out
}

// The leader fires each decision once, in order, with its sequence number;
// a follower fires none.
func TestLeaderFiresEachDecisionOnce(t *testing.T) {
	now := at
	g := &group{fsm: raftfsm.NewFSM(), leader: true}
	w, fired := watcher(g, 10*time.Second)
	follower, followerFired := watcher(&group{fsm: g.fsm}, 10*time.Second)
	step := func() { w.step(now); follower.step(now) }
	step()
	g.apply(t, &raftfsm.Command{Type: raftfsm.TypeBootstrap, At: now, Primary: "db1", Members: []string{"db1", "db2"}})
	step()
	now = now.Add(time.Second)
	g.apply(t, &raftfsm.Command{Type: raftfsm.TypeBegin, At: now, Primary: "db2", Phase: raftfsm.PhaseSwitching, Reason: "switchover requested by operator"})
	step()
	step()
	g.apply(t, &raftfsm.Command{Type: raftfsm.TypeOpen, At: now, Reason: "db2 caught up"})
	now = now.Add(time.Second)
	g.apply(t, &raftfsm.Command{Type: raftfsm.TypeNote, At: now, Member: "db1", Reason: "observed"}) // two in one step
	step()
	step()
	if got, want := kinds(*fired), []string{KindBootstrap, KindSwitchoverBegin, KindSwitchoverDone, KindNote}; !slices.Equal(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	for i, e := range *fired {
		if e.Seq != uint64(i+1) || e.ID != "app/"+string(rune('1'+i)) || e.Resent {
			t.Errorf("event %d: %+v", i, e)
		}
	}
	if b := (*fired)[1]; b.Epoch != 2 || b.From != "db1" || b.To != "db2" || b.Reason != "switchover requested by operator" {
		t.Errorf("switchover_begin event %+v", b)
	}
	if len(*followerFired) != 0 {
		t.Fatalf("a follower fired %v", kinds(*followerFired))
	}
}

// A follower that takes over fires the decisions recorded within the window
// before it did (marked Resent, the previous leader may have run them), not
// the older ones, and each once.
func TestTakeoverFiresRecentDecisionsOnly(t *testing.T) {
	now := at
	g := &group{fsm: raftfsm.NewFSM()}
	w, fired := watcher(g, 10*time.Second)
	g.apply(t, &raftfsm.Command{Type: raftfsm.TypeBootstrap, At: now.Add(-time.Hour), Primary: "db1", Members: []string{"db1", "db2"}})
	w.step(now.Add(-time.Hour))
	g.apply(t, &raftfsm.Command{Type: raftfsm.TypeBegin, At: now.Add(-3 * time.Second), Primary: "db2", Phase: raftfsm.PhaseFailingOver, Reason: "db1 unreachable"})
	w.step(now.Add(-3 * time.Second))
	w.step(now) // the bootstrap is out of the window by now
	g.leader = true
	w.step(now)
	g.apply(t, &raftfsm.Command{Type: raftfsm.TypeOpen, At: now.Add(time.Second), Reason: "db2 promoted"})
	w.step(now.Add(time.Second))
	w.step(now.Add(2 * time.Second))
	if got, want := kinds(*fired), []string{KindFailoverBegin, KindFailoverDone}; !slices.Equal(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	if !(*fired)[0].Resent || (*fired)[1].Resent {
		t.Fatalf("resent flags: %+v", *fired)
	}
}

// A node that leads from its first look at a state (a restart that replays
// the log) does not run the old decisions again.
func TestRestartedLeaderDoesNotReplayHistory(t *testing.T) {
	g := &group{fsm: raftfsm.NewFSM(), leader: true}
	g.apply(t, &raftfsm.Command{Type: raftfsm.TypeBootstrap, At: at.Add(-time.Hour), Primary: "db1", Members: []string{"db1", "db2"}},
		&raftfsm.Command{Type: raftfsm.TypeBegin, At: at.Add(-50 * time.Minute), Primary: "db2", Phase: raftfsm.PhaseSwitching},
		&raftfsm.Command{Type: raftfsm.TypeOpen, At: at.Add(-50 * time.Minute)})
	w, fired := watcher(g, 10*time.Second)
	w.step(at)
	if len(*fired) != 0 {
		t.Fatalf("replayed %v", kinds(*fired))
	}
	g.apply(t, &raftfsm.Command{Type: raftfsm.TypeBegin, At: at, Primary: "db1", Phase: raftfsm.PhaseSwitching})
	w.step(at)
	if got := kinds(*fired); !slices.Equal(got, []string{KindSwitchoverBegin}) || (*fired)[0].Seq != 4 {
		t.Fatalf("fired %v", *fired)
	}
}

// Member decisions are named by what they did to the member.
func TestMemberDecisionKinds(t *testing.T) {
	g := &group{fsm: raftfsm.NewFSM(), leader: true}
	w, fired := watcher(g, 10*time.Second)
	g.apply(t, &raftfsm.Command{Type: raftfsm.TypeBootstrap, At: at, Primary: "db1", Members: []string{"db1", "db2", "db3"}})
	w.step(at)
	for _, c := range []*raftfsm.Command{
		{Type: raftfsm.TypeMember, Member: "db2", Fenced: bptr(true), Reason: "failed primary: fenced until it rejoins clean"},
		{Type: raftfsm.TypeMember, Member: "db2", Fenced: bptr(true), Errant: sptr("0-1-5"), Reason: "errant"},
		{Type: raftfsm.TypeMember, Member: "db2", Fenced: bptr(false), Errant: sptr(""), Reason: "rejoined"},
		{Type: raftfsm.TypeMember, Member: "db3", Maintenance: bptr(true), Reason: "maintenance on by operator"},
		{Type: raftfsm.TypeMember, Member: "db3", Maintenance: bptr(true), Reason: "again"},
	} {
		c.At = at
		g.apply(t, c)
		w.step(at)
	}
	// Two decisions about one member between two looks: what each did is
	// unknown, so both keep kind member.
	g.apply(t, &raftfsm.Command{Type: raftfsm.TypeMember, At: at, Member: "db3", Maintenance: bptr(false)},
		&raftfsm.Command{Type: raftfsm.TypeMember, At: at, Member: "db3", Fenced: bptr(true)})
	w.step(at)
	want := []string{KindBootstrap, KindMemberFenced, KindMemberErrant, KindMemberRejoined, KindMemberMaintenance, KindMember, KindMember, KindMember}
	if got := kinds(*fired); !slices.Equal(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	if e := (*fired)[1]; e.Member != "db2" || e.Reason != "failed primary: fenced until it rejoins clean" {
		t.Fatalf("fenced event %+v", e)
	}
}

// Run fires as the FSM applies and returns when its context ends (TestMain
// checks it leaves no goroutine).
func TestWatcherRunFollowsTheFSM(t *testing.T) {
	g := &group{fsm: raftfsm.NewFSM(), leader: true}
	fired := make(chan Event, 8)
	w := NewWatcher(g, func(e Event) { fired <- e }, 10*time.Second, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	g.apply(t, &raftfsm.Command{Type: raftfsm.TypeBootstrap, At: time.Now(), Primary: "db1", Members: []string{"db1", "db2"}})
	select {
	case e := <-fired:
		if e.Kind != KindBootstrap || e.ID != "app/1" {
			t.Fatalf("fired %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing fired within 5s of a decision")
	}
	cancel()
	<-done
}
