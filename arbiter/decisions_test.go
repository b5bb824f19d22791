package arbiter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/dbrouter/dbrouter/raftfsm"
	"github.com/dbrouter/dbrouter/topology"
	"github.com/dbrouter/dbrouter/topology/mariadb"
)

// The arbiter's rules on fakes: a fake actuator (members' positions, a
// record of every step taken), a group that is always the leader and only
// records what it is asked to commit, and fixed snapshots and observations.
// The real-server tests (arbiter_test.go, safety_test.go) prove the same
// rules end to end; these pin each rule down in milliseconds.

func addrOf(name string) string { return net.JoinHostPort(name, "3306") }

// fakeActuator answers Position from state (by address; a missing address is
// unreachable) and records every other step as "step addr [args]".
type fakeActuator struct {
	mu    sync.Mutex
	state map[string]mariadb.ServerState
	steps []string
}

func newFakeActuator(states map[string]mariadb.ServerState) *fakeActuator {
	f := &fakeActuator{state: map[string]mariadb.ServerState{}}
	for name, s := range states {
		f.state[addrOf(name)] = s
	}
	return f
}

func (f *fakeActuator) record(step, addr string, args ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.steps = append(f.steps, strings.Join(append([]string{step, addr}, args...), " "))
}

// took reports whether a step was taken on member name.
func (f *fakeActuator) took(step, name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.ContainsFunc(f.steps, func(s string) bool { return strings.HasPrefix(s, step+" "+addrOf(name)) })
}

func (f *fakeActuator) update(addr string, fn func(*mariadb.ServerState)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.state[addr]; ok {
		fn(&s)
		f.state[addr] = s
	}
}

func (f *fakeActuator) Position(_ context.Context, addr string) (mariadb.ServerState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.state[addr]
	if !ok {
		return s, fmt.Errorf("connect %s: unreachable", addr)
	}
	return s, nil
}

func (f *fakeActuator) Fence(_ context.Context, addr string) error {
	f.record("fence", addr)
	f.update(addr, func(s *mariadb.ServerState) { s.ReadOnly = true })
	return nil
}

func (f *fakeActuator) Open(_ context.Context, addr string) error {
	f.record("open", addr)
	f.update(addr, func(s *mariadb.ServerState) { s.ReadOnly = false })
	return nil
}

func (f *fakeActuator) Detach(_ context.Context, addr string) error {
	f.record("detach", addr)
	f.update(addr, func(s *mariadb.ServerState) { s.Replicating, s.Replica = false, mariadb.ReplicaStatus{} })
	return nil
}

func (f *fakeActuator) Repoint(_ context.Context, addr, source string) error {
	f.record("repoint", addr, source)
	return nil
}

func (f *fakeActuator) StopReplication(_ context.Context, addr string, ioOnly bool) error {
	f.record("stop_replication", addr, fmt.Sprint(ioOnly))
	return nil
}

func (f *fakeActuator) StartApplier(_ context.Context, addr string) error {
	f.record("start_applier", addr)
	return nil
}

func (f *fakeActuator) WaitApplied(_ context.Context, addr, pos string, _ time.Duration) error {
	f.record("wait_applied", addr, pos)
	return nil
}

func (f *fakeActuator) SetHeartbeatPeriod(_ context.Context, addr string) error {
	f.record("set_heartbeat_period", addr)
	return nil
}

func (f *fakeActuator) ActiveTransactions(_ context.Context, addr string) (int, error) {
	f.record("active_transactions", addr)
	return 0, nil
}

// fakeGroup always leads (term 1) and records the commands it is asked to
// commit without applying them: each test looks at one decision.
type fakeGroup struct {
	state *raftfsm.State

	mu          sync.Mutex
	proposed    []raftfsm.Command
	transferred []string
}

func (g *fakeGroup) IsLeader() bool                     { return true }
func (g *fakeGroup) Term() uint64                       { return 1 }
func (g *fakeGroup) Barrier(context.Context) error      { return nil }
func (g *fakeGroup) VerifyLeader(context.Context) error { return nil }
func (g *fakeGroup) State() *raftfsm.State              { return g.state }

func (g *fakeGroup) TransferLeadership(_ context.Context, to string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.transferred = append(g.transferred, to)
	return nil
}

func (g *fakeGroup) Propose(_ context.Context, c *raftfsm.Command) (raftfsm.Result, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.proposed = append(g.proposed, *c)
	return raftfsm.Result{Epoch: c.Epoch, Index: uint64(len(g.proposed))}, nil
}

// commands returns the proposed commands of type ty.
func (g *fakeGroup) commands(ty raftfsm.Type) []raftfsm.Command {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []raftfsm.Command
	for _, c := range g.proposed {
		if c.Type == ty {
			out = append(out, c)
		}
	}
	return out
}

type fixedSnapshot struct{ s *topology.Snapshot }

func (f fixedSnapshot) Snapshot() *topology.Snapshot { return f.s }

type fixedObservations []Observation

func (o fixedObservations) Observations(context.Context, string) []Observation { return o }

// fakeArbiter returns an arbiter of cluster cl (named "shop") seeing snap,
// leading, with the decision context its steps need.
func fakeArbiter(t *testing.T, cl *raftfsm.Cluster, snap *topology.Snapshot, act Actuator, obs ...Observation) (*Arbiter, *fakeGroup, context.Context) {
	t.Helper()
	cl.Name = "shop"
	g := &fakeGroup{state: &raftfsm.State{Clusters: map[string]*raftfsm.Cluster{"shop": cl}}}
	a := New(Config{Cluster: "shop", Arbiters: 3, FailureThreshold: 2 * time.Second}, g, fixedSnapshot{snap}, fixedObservations(obs), act, zaptest.NewLogger(t))
	ctx, err := a.lead(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return a, g, ctx
}

// serving is cluster state with db1 primary at epoch 1 (opened by server 1
// at 0-1-5) and members db1..db3 with the given states.
func serving(states map[string]raftfsm.MemberState) *raftfsm.Cluster {
	cl := &raftfsm.Cluster{Epoch: 1, Primary: "db1", Phase: raftfsm.PhaseServing, Members: map[string]raftfsm.MemberState{},
		Openings: []raftfsm.Opening{{Epoch: 1, Member: "db1", ServerID: 1, GTID: "0-1-5"}}}
	for _, n := range []string{"db1", "db2", "db3"} {
		cl.Members[n] = states[n]
	}
	return cl
}

// replicaOf is a healthy replica of db1 (server id 1) as probed.
func replicaOf(name string, id uint32, pos string) topology.Member {
	return topology.Member{Name: name, Addr: addrOf(name), Reachable: true, ReadOnly: true, Role: topology.RoleReplica, ServerID: id,
		IORunning: true, SQLRunning: true, Source: addrOf("db1"), SourceServerID: 1, SourceContact: -1, Lag: 100 * time.Millisecond,
		HeartbeatPeriod: 100 * time.Millisecond, GTIDBinlogPos: pos, GTIDSlavePos: pos, Eligible: true}
}

// replicaState is a replica's fresh position: received io, applied bin.
func replicaState(id uint32, io, bin string) mariadb.ServerState {
	return mariadb.ServerState{ServerID: id, ReadOnly: true, IOPos: io, BinlogPos: bin, SlavePos: bin, Replicating: true,
		IORunning: true, SQLRunning: true}
}

// Failover candidates: semi-sync promises only that *some* replica received
// each acknowledged commit, so the candidate must contain what every
// replica received, whatever state that replica is in; only an errant
// member (whose extra transactions no primary had) does not count.
func TestFailoverCandidateContainsWhatEveryReplicaReceived(t *testing.T) {
	lost := topology.Member{Name: "db1", Addr: addrOf("db1"), ServerID: 1, FailingFor: 10 * time.Second, Lag: -1, SourceContact: -1}
	for _, tc := range []struct {
		name    string
		members map[string]raftfsm.MemberState
		states  map[string]mariadb.ServerState // absent: unreachable from the leader
		// lostReplicas: SHOW SLAVE HOSTS on db1 when it last answered.
		lostReplicas []uint32
		obs          []Observation
		exclude      []string
		want         string // the candidate; "" refused
		reason       string // in the refusal
		handTo       string
	}{
		{name: "the replica that received most is chosen",
			states: map[string]mariadb.ServerState{"db2": replicaState(2, "0-1-10", "0-1-10"), "db3": replicaState(3, "0-1-12", "0-1-11")},
			want:   "db3"},
		{name: "received and not yet applied counts as held",
			states: map[string]mariadb.ServerState{"db2": replicaState(2, "0-1-12", "0-1-9"), "db3": replicaState(3, "0-1-11", "0-1-11")},
			want:   "db2"},
		{name: "a candidate lacking a transaction a replica in maintenance received is refused",
			members: map[string]raftfsm.MemberState{"db3": {Maintenance: true}},
			states:  map[string]mariadb.ServerState{"db2": replicaState(2, "0-1-10", "0-1-10"), "db3": replicaState(3, "0-1-12", "0-1-12")},
			reason:  "db3 received 0-1-12, which no member that can be opened has (db2 has 0-1-10); db3: in maintenance"},
		{name: "a candidate lacking a transaction a fenced replica received is refused",
			members: map[string]raftfsm.MemberState{"db3": {Fenced: true}},
			states:  map[string]mariadb.ServerState{"db2": replicaState(2, "0-1-10", "0-1-10"), "db3": replicaState(3, "0-1-12", "0-1-12")},
			reason:  "db3 received 0-1-12, which no member that can be opened has (db2 has 0-1-10); db3: fenced"},
		{name: "a candidate that failed still holds what it received",
			exclude: []string{"db3"},
			states:  map[string]mariadb.ServerState{"db2": replicaState(2, "0-1-10", "0-1-10"), "db3": replicaState(3, "0-1-12", "0-1-12")},
			reason:  "db3: failed as the candidate"},
		{name: "an errant member holds nothing a primary had",
			members: map[string]raftfsm.MemberState{"db3": {Fenced: true, Errant: "0-3-6..0-3-12"}},
			states:  map[string]mariadb.ServerState{"db2": replicaState(2, "0-1-10", "0-1-10"), "db3": replicaState(3, "0-3-12", "0-3-12")},
			want:    "db2"},
		{name: "diverged replicas: no candidate",
			states: map[string]mariadb.ServerState{"db2": replicaState(2, "0-1-12,1-2-1", "0-1-12,1-2-1"), "db3": replicaState(3, "0-1-13", "0-1-13")},
			reason: "members have diverged"},
		{name: "a replica no arbiter reaches that was connected to the lost primary refuses the failover",
			lostReplicas: []uint32{2, 3},
			states:       map[string]mariadb.ServerState{"db2": replicaState(2, "0-1-10", "0-1-10")},
			reason:       "db3 is unreachable from every arbiter and may have been replicating from db1"},
		{name: "a replica no arbiter reaches that was not connected to the lost primary is not waited for",
			lostReplicas: []uint32{2},
			states:       map[string]mariadb.ServerState{"db2": replicaState(2, "0-1-10", "0-1-10")},
			want:         "db2"},
		{name: "a replica only another arbiter reaches holds more: leadership goes to that arbiter",
			states: map[string]mariadb.ServerState{"db2": replicaState(2, "0-1-10", "0-1-10")},
			obs:    []Observation{{Arbiter: "a2", Members: map[string]ObservedMember{"db3": {ServerID: 3, ReadOnly: true, Received: "0-1-12"}}}},
			reason: "db3 received 0-1-12, which no member that can be opened has (db2 has 0-1-10); db3: the leader cannot reach it (seen by arbiter a2)",
			handTo: "a2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := lost
			l.Replicas = tc.lostReplicas
			snap := &topology.Snapshot{Cluster: "shop", Taken: time.Now(), Primary: -1, Members: []topology.Member{l}}
			for i, n := range []string{"db2", "db3"} {
				m := replicaOf(n, uint32(i+2), "")
				if _, ok := tc.states[n]; !ok {
					m.Reachable = false
				}
				snap.Members = append(snap.Members, m)
			}
			a, _, ctx := fakeArbiter(t, serving(tc.members), snap, newFakeActuator(tc.states), tc.obs...)
			cand, reason, handTo := a.candidate(ctx, a.group.State().Cluster("shop"), snap, "db1", tc.exclude...)
			if cand != tc.want || !strings.Contains(reason, tc.reason) || handTo != tc.handTo {
				t.Fatalf("candidate %q, reason %q, hand to %q; want %q, a reason with %q, hand to %q", cand, reason, handTo, tc.want, tc.reason, tc.handTo)
			}
			if tc.want == "" && tc.reason == "" {
				t.Fatal("a refusal case must name its reason")
			}
		})
	}
}

// Failure detection needs agreement: a majority of arbiters failing to
// reach the primary, and no replica (identified by server id) still
// receiving from it.
func TestPrimaryFailedNeedsAMajorityAndSilentReplicas(t *testing.T) {
	failing := func(d time.Duration) map[string]time.Duration { return map[string]time.Duration{"db1": d} }
	for _, tc := range []struct {
		name   string
		leader time.Duration // how long the leader has failed to reach db1
		obs    []Observation
		db2    func(*topology.Member)
		want   bool
	}{
		{name: "the leader still reaches it", leader: 0,
			obs: []Observation{{Arbiter: "a1", Failing: failing(3 * time.Second)}, {Arbiter: "a2", Failing: failing(3 * time.Second)}}},
		{name: "a majority cannot reach it and the replicas stopped receiving", leader: 3 * time.Second,
			obs:  []Observation{{Arbiter: "a1", Failing: failing(3 * time.Second)}, {Arbiter: "a2", Failing: failing(3 * time.Second)}, {Arbiter: "a3", Failing: failing(0)}},
			want: true},
		{name: "one arbiter is not a majority", leader: 3 * time.Second,
			obs: []Observation{{Arbiter: "a1", Failing: failing(3 * time.Second)}, {Arbiter: "a2", Failing: failing(0)}, {Arbiter: "a3", Failing: failing(0)}}},
		{name: "a replica the leader sees still receives from it", leader: 3 * time.Second,
			obs: []Observation{{Arbiter: "a1", Failing: failing(3 * time.Second)}, {Arbiter: "a2", Failing: failing(3 * time.Second)}},
			db2: func(m *topology.Member) { m.SourceContact = 200 * time.Millisecond }},
		{name: "a replica receiving from another server id does not count", leader: 3 * time.Second,
			obs:  []Observation{{Arbiter: "a1", Failing: failing(3 * time.Second)}, {Arbiter: "a2", Failing: failing(3 * time.Second)}},
			db2:  func(m *topology.Member) { m.SourceContact, m.SourceServerID = 200*time.Millisecond, 9 },
			want: true},
		{name: "a replica another arbiter sees still receives from it", leader: 3 * time.Second,
			obs: []Observation{{Arbiter: "a1", Failing: failing(3 * time.Second)}, {Arbiter: "a2", Failing: failing(3 * time.Second),
				Members: map[string]ObservedMember{"db3": {ServerID: 3, ReadOnly: true, IORunning: true, SourceServerID: 1, SourceContactMs: 100}}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prim := topology.Member{Name: "db1", Addr: addrOf("db1"), ServerID: 1, Reachable: tc.leader == 0, FailingFor: tc.leader, Lag: -1, SourceContact: -1}
			db2 := replicaOf("db2", 2, "0-1-10")
			db2.IORunning = true // the IO thread still says "connected": only contact counts
			if tc.db2 != nil {
				tc.db2(&db2)
			}
			db3 := replicaOf("db3", 3, "0-1-10")
			db3.Reachable = false
			snap := &topology.Snapshot{Cluster: "shop", Taken: time.Now(), Primary: -1, Members: []topology.Member{prim, db2, db3}}
			a, _, ctx := fakeArbiter(t, serving(nil), snap, newFakeActuator(nil), tc.obs...)
			if got, why := a.primaryFailed(ctx, a.group.State().Cluster("shop"), snap, "db1"); got != tc.want {
				t.Fatalf("failed = %v (%s), want %v", got, why, tc.want)
			}
		})
	}
}

// A failover within the cooldown of the last one this arbiter saw is
// refused with the reason, and nothing is begun.
func TestFailoverRefusedDuringCooldown(t *testing.T) {
	cl := serving(nil)
	cl.Epoch, cl.LastFailover = 2, time.Unix(1000, 0) // a failover this arbiter just learnt of
	snap := &topology.Snapshot{Cluster: "shop", Taken: time.Now(), Primary: -1, Members: []topology.Member{
		{Name: "db1", Addr: addrOf("db1"), ServerID: 1, FailingFor: 10 * time.Second, Lag: -1, SourceContact: -1}, replicaOf("db2", 2, "0-1-10")}}
	act := newFakeActuator(map[string]mariadb.ServerState{"db2": replicaState(2, "0-1-10", "0-1-10")})
	a, g, ctx := fakeArbiter(t, cl, snap, act)
	if err := a.failover(ctx, cl, snap, "db1", "test"); err != nil {
		t.Fatal(err)
	}
	if begun := g.commands(raftfsm.TypeBegin); len(begun) != 0 {
		t.Fatalf("failover begun during the cooldown: %+v", begun)
	}
	notes := g.commands(raftfsm.TypeNote)
	if len(notes) != 1 || !strings.Contains(notes[0].Reason, "failover refused: cooldown") {
		t.Fatalf("notes %+v, want one cooldown refusal", notes)
	}
}

// A switchover is refused, with the reason, unless the target is a healthy,
// caught-up replica of a reachable primary of a serving cluster.
func TestSwitchoverRefusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		target string
		mod    func(cl *raftfsm.Cluster, snap *topology.Snapshot)
		reason string // "" accepted
	}{
		{name: "a healthy replica is accepted", target: "db2"},
		{name: "not a member", target: "db9", reason: "db9 is not a member of cluster shop"},
		{name: "a change in progress", target: "db2", reason: "cluster shop is switching",
			mod: func(cl *raftfsm.Cluster, _ *topology.Snapshot) { cl.Phase = raftfsm.PhaseSwitching }},
		{name: "already the primary", target: "db1", reason: "db1 is already the primary"},
		{name: "within the cooldown of the last change", target: "db2", reason: "cooldown",
			mod: func(cl *raftfsm.Cluster, _ *topology.Snapshot) { cl.Epoch = 2 }},
		{name: "in maintenance", target: "db2", reason: "db2 is in maintenance or fenced",
			mod: func(cl *raftfsm.Cluster, _ *topology.Snapshot) {
				cl.Members["db2"] = raftfsm.MemberState{Maintenance: true}
			}},
		{name: "fenced", target: "db2", reason: "db2 is in maintenance or fenced",
			mod: func(cl *raftfsm.Cluster, _ *topology.Snapshot) { cl.Members["db2"] = raftfsm.MemberState{Fenced: true} }},
		{name: "unreachable", target: "db2", reason: "db2 is unreachable",
			mod: func(_ *raftfsm.Cluster, s *topology.Snapshot) { s.Members[1].Reachable = false }},
		{name: "not replicating", target: "db2", reason: "db2 is not replicating (SQL error 1062: duplicate)",
			mod: func(_ *raftfsm.Cluster, s *topology.Snapshot) {
				s.Members[1].SQLRunning, s.Members[1].ReplError = false, "SQL error 1062: duplicate"
			}},
		{name: "lag unknown", target: "db2", reason: "db2's lag is not known yet",
			mod: func(_ *raftfsm.Cluster, s *topology.Snapshot) { s.Members[1].Lag = -1 }},
		{name: "too far behind", target: "db2", reason: "db2 lags 6s, more than max_promote_lag 5s",
			mod: func(_ *raftfsm.Cluster, s *topology.Snapshot) { s.Members[1].Lag = 6 * time.Second }},
		{name: "the primary is unreachable", target: "db2", reason: "the primary db1 is unreachable; a failover, not a switchover, handles that",
			mod: func(_ *raftfsm.Cluster, s *topology.Snapshot) { s.Members[0].Reachable = false }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := serving(nil)
			snap := &topology.Snapshot{Cluster: "shop", Taken: time.Now(), Primary: 0, Members: []topology.Member{
				{Name: "db1", Addr: addrOf("db1"), ServerID: 1, Reachable: true, Role: topology.RolePrimary, Lag: 0, SourceContact: -1},
				replicaOf("db2", 2, "0-1-10"), replicaOf("db3", 3, "0-1-10")}}
			if tc.mod != nil {
				tc.mod(cl, snap)
			}
			a, _, _ := fakeArbiter(t, cl, snap, newFakeActuator(nil))
			err := a.checkPromote(cl, snap, tc.target)
			switch {
			case tc.reason == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.reason != "" && (err == nil || !strings.Contains(err.Error(), tc.reason)):
				t.Fatalf("got %v, want a refusal saying %q", err, tc.reason)
			case err != nil && !errors.Is(err, ErrRefused):
				t.Fatalf("%v does not wrap ErrRefused", err)
			}
		})
	}
}

// Rejoin: a member is judged on a fresh reading against the primary's
// history (the recorded openings). An errant one is fenced and never
// repointed; a clean one is repointed and unfenced; a relay log holding
// transactions the primary lacks is never reset.
func TestRejoinDecisions(t *testing.T) {
	primary := mariadb.ServerState{ServerID: 1, BinlogPos: "0-1-20", CurrentPos: "0-1-20"}
	for _, tc := range []struct {
		name      string
		member    raftfsm.MemberState    // db3's recorded state
		db3       mariadb.ServerState    // db3's fresh reading
		snap3     func(*topology.Member) // db3 as probed (default: a stopped replica)
		fenced    bool                   // db3 is fenced
		repointed bool                   // db3 is repointed to db1
		// commits: the member changes committed about db3 (fenced, errant).
		commits []string
		note    string // a note about db3 recorded instead
	}{
		{name: "a returning member with transactions outside the primary's history is fenced, not repointed",
			db3:     mariadb.ServerState{ServerID: 3, ReadOnly: true, BinlogPos: "0-3-12", CurrentPos: "0-3-12"},
			fenced:  true,
			commits: []string{"fenced=true errant=0-3-6..0-3-12"}},
		{name: "an errant replica that still replicates is fenced and its replication stopped",
			db3: mariadb.ServerState{ServerID: 3, ReadOnly: true, BinlogPos: "0-1-20,7-3-1", SlavePos: "0-1-20", Replicating: true, IORunning: true, SQLRunning: true,
				Replica: mariadb.ReplicaStatus{SourceHost: "db1", SourcePort: 3306, SourceServerID: 1, IOState: "Yes", SQLRunning: true}},
			snap3: func(m *topology.Member) {
				m.IORunning, m.SQLRunning, m.SourceServerID, m.GTIDBinlogPos, m.GTIDSlavePos = true, true, 1, "0-1-20,7-3-1", "0-1-20"
			},
			fenced:  true,
			commits: []string{"fenced=true errant=7-3-1"}},
		{name: "an errant member already recorded is left for an operator",
			member: raftfsm.MemberState{Fenced: true, Errant: "0-3-6..0-3-12"},
			db3:    mariadb.ServerState{ServerID: 3, ReadOnly: true, BinlogPos: "0-3-12", CurrentPos: "0-3-12"}},
		{name: "a clean returning member is repointed and unfenced",
			member:    raftfsm.MemberState{Fenced: true},
			db3:       mariadb.ServerState{ServerID: 3, ReadOnly: true, BinlogPos: "0-1-15", CurrentPos: "0-1-15"},
			repointed: true,
			commits:   []string{"fenced=false errant="}},
		{name: "a relay log holding transactions the primary lacks is not reset",
			db3: mariadb.ServerState{ServerID: 3, ReadOnly: true, BinlogPos: "0-1-18", IOPos: "0-1-25", Replicating: true,
				Replica: mariadb.ReplicaStatus{SourceHost: "db9", SourcePort: 3306, IOState: "No", GTIDIOPos: "0-1-25"}},
			note: "db3 not rejoined: relay log holds transactions the new source lacks"},
		{name: "a second writable member is fenced",
			db3:    mariadb.ServerState{ServerID: 3, BinlogPos: "0-1-20", CurrentPos: "0-1-20"},
			snap3:  func(m *topology.Member) { m.ReadOnly = false },
			fenced: true, repointed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := serving(map[string]raftfsm.MemberState{"db3": tc.member})
			db3 := replicaOf("db3", 3, tc.db3.BinlogPos)
			db3.IORunning, db3.SQLRunning, db3.SourceServerID = false, false, 0
			if tc.snap3 != nil {
				tc.snap3(&db3)
			}
			snap := &topology.Snapshot{Cluster: "shop", Taken: time.Now(), Primary: 0, Members: []topology.Member{
				{Name: "db1", Addr: addrOf("db1"), ServerID: 1, Reachable: true, Role: topology.RolePrimary, GTIDBinlogPos: "0-1-20", SourceContact: -1},
				replicaOf("db2", 2, "0-1-20"), db3}}
			act := newFakeActuator(map[string]mariadb.ServerState{"db1": primary, "db2": replicaState(2, "0-1-20", "0-1-20"), "db3": tc.db3})
			a, g, ctx := fakeArbiter(t, cl, snap, act)
			if err := a.rejoin(ctx, cl, snap); err != nil {
				t.Fatalf("rejoin: %v", err)
			}
			if got := act.took("fence", "db3"); got != tc.fenced {
				t.Errorf("db3 fenced: %v, want %v (steps %v)", got, tc.fenced, act.steps)
			}
			if got := act.took("repoint", "db3"); got != tc.repointed {
				t.Errorf("db3 repointed: %v, want %v (steps %v)", got, tc.repointed, act.steps)
			}
			if len(tc.commits) > 0 && strings.HasPrefix(tc.commits[0], "fenced=true") && tc.db3.Replicating && !act.took("stop_replication", "db3") {
				t.Errorf("an errant replica still receives (steps %v)", act.steps)
			}
			if act.took("fence", "db2") || act.took("repoint", "db2") {
				t.Errorf("the healthy replica db2 was touched: %v", act.steps)
			}
			var commits []string
			for _, c := range g.commands(raftfsm.TypeMember) {
				if c.Member == "db3" && c.Fenced != nil && c.Errant != nil {
					commits = append(commits, fmt.Sprintf("fenced=%v errant=%s", *c.Fenced, *c.Errant))
				}
			}
			if fmt.Sprint(commits) != fmt.Sprint(tc.commits) {
				t.Errorf("committed %v, want %v", commits, tc.commits)
			}
			notes := g.commands(raftfsm.TypeNote)
			switch {
			case tc.note == "" && len(notes) > 0:
				t.Errorf("unexpected notes %+v", notes)
			case tc.note != "" && (len(notes) != 1 || !strings.Contains(notes[0].Reason, tc.note)):
				t.Errorf("notes %+v, want one saying %q", notes, tc.note)
			}
		})
	}
}

// The real MariaDB admin actions are what the arbiter drives.
var _ Actuator = (*mariadb.Actions)(nil)
