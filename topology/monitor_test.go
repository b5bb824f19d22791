package topology

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// fakeProber answers every probe with what the test set last. The
// real-server tests of the monitor are topology/mariadb's.
type fakeProber struct {
	mu  sync.Mutex
	pr  Probe
	err error
}

func (f *fakeProber) set(pr Probe, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pr, f.err = pr, err
}

func (f *fakeProber) Probe(context.Context, int) (Probe, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pr, f.err
}

func (f *fakeProber) Run(ctx context.Context, _ func() *Snapshot) { <-ctx.Done() }
func (f *fakeProber) Close() error                                { return nil }

func newFakeMonitor(t *testing.T, members ...string) (*Monitor, *fakeProber) {
	t.Helper()
	var ms []MemberConfig
	for _, n := range members {
		ms = append(ms, MemberConfig{Name: n, Addr: n + ":3306", Site: "here"})
	}
	fp := &fakeProber{}
	m, err := New(Config{Cluster: "c", Members: ms, ProbeInterval: 100 * time.Millisecond}, fp, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return m, fp
}

// One failed probe keeps the last observation (a busy server missing one
// deadline must not take the primary away from every writer); the second
// makes the member unreachable, keeping only what the prober still knows
// of it. RTT is smoothed, and failure is timed from the last answer.
func TestMonitorJudgesProbes(t *testing.T) {
	m, fp := newFakeMonitor(t, "db1")
	ml := m.members[0]
	ctx := context.Background()
	answered := time.Now().Add(-time.Second)
	fp.set(Probe{Member: Member{ServerID: 7, ReadOnly: true, IORunning: true, SQLRunning: true, Lag: 0}, RTT: 10 * time.Millisecond, Answered: answered}, nil)
	st, _ := m.probe(ctx, ml, Member{})
	if !st.Reachable || st.Name != "db1" || st.Addr != "db1:3306" || st.Site != "here" || st.RTT != 10*time.Millisecond {
		t.Fatalf("first probe: %+v", st)
	}
	fp.set(Probe{Member: Member{ServerID: 7, ReadOnly: true, Lag: 0}, RTT: 60 * time.Millisecond, Answered: answered}, nil)
	st, _ = m.probe(ctx, ml, st)
	if st.RTT != 20*time.Millisecond {
		t.Fatalf("RTT %v after 10ms then 60ms, want 20ms (smoothed 4:1)", st.RTT)
	}

	fp.set(Probe{Member: Member{ServerID: 7}}, errors.New("i/o timeout"))
	once, _ := m.probe(ctx, ml, st)
	if !once.Reachable || once.ProbeError != "i/o timeout" || !once.ReadOnly || once.RTT != 20*time.Millisecond {
		t.Fatalf("after one failed probe: %+v, want the last observation kept, with the error", once)
	}
	if once.FailingFor < time.Second {
		t.Fatalf("failing for %v, want at least the second since the last answer", once.FailingFor)
	}
	twice, _ := m.probe(ctx, ml, once)
	if twice.Reachable || twice.ServerID != 7 || twice.Lag != -1 || twice.ReadOnly || twice.RTT != 20*time.Millisecond || twice.SourceContact != -1 {
		t.Fatalf("after two failed probes: %+v, want unreachable, the server id kept, lag unknown", twice)
	}
	if ml.fails != 2 {
		t.Fatalf("%d failures counted", ml.fails)
	}

	fp.set(Probe{Member: Member{ServerID: 7, ReadOnly: true, Lag: 0}, RTT: 20 * time.Millisecond}, nil)
	back, _ := m.probe(ctx, ml, twice)
	if !back.Reachable || back.FailingFor != 0 || ml.fails != 0 || !ml.failingSince.IsZero() {
		t.Fatalf("answering again: %+v (fails %d)", back, ml.fails)
	}
}

// A snapshot's primary is the single reachable writable member; two are a
// conflict and neither is the primary. A replica serves reads only while
// reachable, receiving, applying and within max_replica_lag.
func TestMonitorPublishesPrimaryRolesAndEligibility(t *testing.T) {
	replica := Member{ReadOnly: true, Reachable: true, IORunning: true, SQLRunning: true, Lag: 100 * time.Millisecond}
	for _, tc := range []struct {
		name     string
		members  []Member
		primary  int
		conflict int
		roles    []Role
		eligible []bool
	}{
		{name: "one writable member is the primary",
			members:  []Member{{Reachable: true}, replica, func() Member { r := replica; r.SQLRunning = false; return r }()},
			primary:  0,
			roles:    []Role{RolePrimary, RoleReplica, RoleReplica},
			eligible: []bool{false, true, false}},
		{name: "two writable members conflict",
			members:  []Member{{Reachable: true}, {Reachable: true}, replica},
			primary:  -1,
			conflict: 2,
			roles:    []Role{RolePrimary, RolePrimary, RoleReplica},
			eligible: []bool{false, false, true}},
		{name: "unreachable and lagging replicas serve no reads",
			members:  []Member{{}, func() Member { r := replica; r.Lag = 2 * time.Second; return r }(), func() Member { r := replica; r.Lag = -1; return r }()},
			primary:  -1,
			roles:    []Role{RoleUnknown, RoleReplica, RoleReplica},
			eligible: []bool{false, false, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := newFakeMonitor(t, "db1", "db2", "db3")
			for i, mm := range tc.members {
				mm.Name = m.cfg.Members[i].Name
				m.members[i].store(probeResult{Member: mm, done: true})
			}
			m.publishAt(time.Now())
			s := m.Snapshot()
			if s.Primary != tc.primary || len(s.Conflict) != tc.conflict {
				t.Fatalf("primary %d conflict %v, want %d and %d conflicting", s.Primary, s.Conflict, tc.primary, tc.conflict)
			}
			for i, mm := range s.Members {
				if mm.Role != tc.roles[i] || mm.Eligible != tc.eligible[i] {
					t.Errorf("%s: role %s eligible %v, want %s %v", mm.Name, mm.Role, mm.Eligible, tc.roles[i], tc.eligible[i])
				}
			}
			select {
			case <-m.Updated():
			default:
				t.Fatal("publication not signalled")
			}
		})
	}
}

// Durations are measured at publication, not when a probe ended: a member
// whose probe hangs is seen failing for longer at every publication.
func TestMonitorAgesDurationsAtPublication(t *testing.T) {
	m, _ := newFakeMonitor(t, "db1")
	now := time.Now()
	m.members[0].store(probeResult{Member: Member{Reachable: true, ReadOnly: true, SourceContact: 0}, done: true, failed: true,
		failingSince: now.Add(-3 * time.Second), progressAt: now.Add(-2 * time.Second)})
	m.publishAt(now)
	if mm := m.Snapshot().Members[0]; mm.FailingFor != 3*time.Second || mm.SourceContact != 2*time.Second {
		t.Fatalf("failing for %v, source contact %v; want 3s and 2s", mm.FailingFor, mm.SourceContact)
	}
}

// electingProber is a fakeProber whose members elect their primary.
type electingProber struct {
	fakeProber
	primary int
}

func (e *electingProber) Elect(ms []Member) (int, []string) {
	for i := range ms {
		ms[i].Role, ms[i].Lag = RoleReplica, 0
	}
	ms[e.primary].Role = RolePrimary
	return e.primary, nil
}

// A prober that elects decides the primary and the roles in place of the
// single-writable rule: here two writable members are no conflict, and the
// Monitor still judges eligibility from the neutral fields.
func TestMonitorLetsAnElectorPickThePrimary(t *testing.T) {
	ep := &electingProber{primary: 1}
	m, err := New(Config{Cluster: "c", Members: []MemberConfig{{Name: "a"}, {Name: "b"}, {Name: "c"}}}, ep, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	replica := Member{ReadOnly: true, Reachable: true, IORunning: true, SQLRunning: true}
	for i, mm := range []Member{{Reachable: true}, {Reachable: true}, replica} {
		m.members[i].store(probeResult{Member: mm, done: true})
	}
	m.publishAt(time.Now())
	s := m.Snapshot()
	if s.Primary != 1 || len(s.Conflict) != 0 {
		t.Fatalf("primary %d conflict %v; want the elected b, no conflict", s.Primary, s.Conflict)
	}
	for i, want := range []Role{RoleReplica, RolePrimary, RoleReplica} {
		if s.Members[i].Role != want {
			t.Errorf("member %d: role %s, want %s", i, s.Members[i].Role, want)
		}
	}
	if s.Members[0].Eligible || !s.Members[2].Eligible {
		t.Errorf("eligible %v %v; want a writable member never, the replica yes", s.Members[0].Eligible, s.Members[2].Eligible)
	}
}
