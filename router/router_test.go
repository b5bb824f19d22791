package router

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/topology"
)

type fakeSource struct {
	p atomic.Pointer[topology.Snapshot]
}

func (f *fakeSource) Snapshot() *topology.Snapshot { return f.p.Load() }

type staticSource struct{ s *topology.Snapshot }

func (f staticSource) Snapshot() *topology.Snapshot { return f.s }

func member(name, site string, eligible bool, rtt time.Duration) topology.Member {
	return topology.Member{Name: name, Site: site, Reachable: true, ReadOnly: true, Eligible: eligible, RTT: rtt, Role: topology.RoleReplica}
}

func snap(primary int, ms ...topology.Member) *topology.Snapshot {
	if primary >= 0 {
		ms[primary].ReadOnly = false
		ms[primary].Role = topology.RolePrimary
		ms[primary].Eligible = false
	}
	return &topology.Snapshot{Cluster: "c", Taken: time.Now(), Primary: primary, Members: ms}
}

func readSet(t *testing.T, r *Router, n int) map[int]int {
	t.Helper()
	got := map[int]int{}
	for i := 0; i < n; i++ {
		m, replica, err := r.Replica(context.Background(), -1, -1)
		if err != nil || !replica {
			t.Fatalf("Replica = %d, %v, %v", m, replica, err)
		}
		got[m]++
	}
	return got
}

func TestNearestWithinLocalityWindowShareReads(t *testing.T) {
	src := &fakeSource{}
	src.p.Store(snap(0,
		member("p", "a", false, time.Millisecond),
		member("r1", "a", true, 1*time.Millisecond),
		member("r2", "a", true, 3*time.Millisecond),
		member("r3", "b", true, 12*time.Millisecond)))
	r := New(Config{Cluster: "c", LocalityWindow: 5 * time.Millisecond}, src)
	got := readSet(t, r, 100)
	if got[1] == 0 || got[2] == 0 || got[3] != 0 || got[0] != 0 {
		t.Fatalf("reads spread %v: want r1 and r2 only", got)
	}
	if p, _, err := r.Primary(context.Background()); err != nil || p != 0 {
		t.Fatalf("primary = %d, %v", p, err)
	}
}

func TestOwnSiteIsPreferredOverLowerRTT(t *testing.T) {
	src := &fakeSource{}
	src.p.Store(snap(0,
		member("p", "a", false, time.Millisecond),
		member("far-but-local", "b", true, 20*time.Millisecond),
		member("near-remote", "a", true, time.Millisecond)))
	r := New(Config{Cluster: "c", Site: "b", LocalityWindow: time.Millisecond}, src)
	if got := readSet(t, r, 20); got[1] != 20 {
		t.Fatalf("reads %v: want all on the proxy's own site", got)
	}
}

func TestIneligibleReplicasAndFallback(t *testing.T) {
	src := &fakeSource{}
	src.p.Store(snap(0, member("p", "", false, 0), member("lagging", "", false, 0)))
	r := New(Config{Cluster: "c"}, src)
	if m, replica, err := r.Replica(context.Background(), -1, -1); err != nil || m != 0 || replica {
		t.Fatalf("no eligible replica: read went to %d (replica %v, %v), want the primary", m, replica, err)
	}
	rf := New(Config{Cluster: "c", ReadsWithoutReplica: FallbackFail}, src)
	if _, _, err := rf.Replica(context.Background(), -1, -1); !errors.Is(err, ErrNoReplica) {
		t.Fatalf("reads_without_replica=fail: %v", err)
	}
}

func TestAvoidRetriesElsewhere(t *testing.T) {
	src := &fakeSource{}
	src.p.Store(snap(0, member("p", "", false, 0), member("r1", "", true, 0), member("r2", "", true, 0)))
	r := New(Config{Cluster: "c", LocalityWindow: time.Millisecond}, src)
	for i := 0; i < 10; i++ {
		if m, replica, err := r.Replica(context.Background(), 1, -1); err != nil || m != 2 || !replica {
			t.Fatalf("avoiding r1 got %d (replica %v), %v", m, replica, err)
		}
	}
	src.p.Store(snap(0, member("p", "", false, 0), member("r1", "", true, 0)))
	if m, replica, err := r.Replica(context.Background(), 1, -1); err != nil || m != 0 || replica {
		t.Fatalf("avoiding the only replica got %d (replica %v), %v; want the primary", m, replica, err)
	}
}

func TestSessionKeepsItsReplica(t *testing.T) {
	src := &fakeSource{}
	src.p.Store(snap(0,
		member("p", "a", false, time.Millisecond),
		member("r1", "a", true, time.Millisecond),
		member("r2", "a", true, time.Millisecond),
		member("far", "a", true, 30*time.Millisecond),
		member("lagging", "a", false, time.Millisecond)))
	r := New(Config{Cluster: "c", LocalityWindow: 5 * time.Millisecond}, src)
	for _, tc := range []struct {
		name          string
		avoid, prefer int
		want          []int // any of these
	}{
		{"keeps the nearest replica it read from", -1, 2, []int{2}},
		{"keeps the other one too", -1, 1, []int{1}},
		{"no preference: any nearest", -1, -1, []int{1, 2}},
		{"preferred replica failed: the other one", 2, 2, []int{1}},
		{"preferred is outside the locality window", -1, 3, []int{1, 2}},
		{"preferred is not eligible", -1, 4, []int{1, 2}},
		{"preferred is the primary", -1, 0, []int{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i < 10; i++ {
				m, _, err := r.Replica(context.Background(), tc.avoid, tc.prefer)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Contains(tc.want, m) {
					t.Fatalf("Replica(%d, %d) = %d, want one of %v", tc.avoid, tc.prefer, m, tc.want)
				}
			}
		})
	}
}

// A member the control plane fenced serves no reads, however healthy its
// replication looks, until it is unfenced.
func TestFencedMembersServeNoReads(t *testing.T) {
	src := staticSource{snap(0,
		member("p", "a", false, time.Millisecond),
		member("r1", "a", true, time.Millisecond),
		member("r2", "a", true, time.Millisecond))}
	r := New(Config{Cluster: "c", LocalityWindow: 5 * time.Millisecond}, src)
	if got := readSet(t, r, 50); got[1] == 0 || got[2] == 0 {
		t.Fatalf("reads %v, want both replicas", got)
	}
	r.SetExcluded([]string{"r2"})
	if got := readSet(t, r, 50); got[2] != 0 || got[1] != 50 {
		t.Fatalf("reads %v with r2 fenced", got)
	}
	r.SetExcluded([]string{"r1", "r2"})
	if m, _, err := r.Replica(context.Background(), -1, 2); err != nil || m != 0 {
		t.Fatalf("every replica fenced: read went to %d (%v), want the primary", m, err)
	}
	r.SetExcluded(nil)
	if got := readSet(t, r, 50); got[2] == 0 {
		t.Fatalf("reads %v after unfencing", got)
	}
}

func TestNoWritesWithoutExactlyOnePrimary(t *testing.T) {
	src := &fakeSource{}
	src.p.Store(snap(-1, member("a", "", true, 0), member("b", "", true, 0)))
	r := New(Config{Cluster: "c"}, src)
	if _, _, err := r.Primary(context.Background()); !errors.Is(err, ErrNoPrimary) {
		t.Fatalf("no writable member: %v", err)
	}
	s := snap(-1, member("a", "", false, 0), member("b", "", false, 0))
	s.Conflict = []string{"a", "b"}
	src.p.Store(s)
	if _, _, err := r.Primary(context.Background()); !errors.Is(err, ErrWritableConflict) {
		t.Fatalf("two writable members: %v", err)
	}
}

func TestPlanFollowsNewSnapshots(t *testing.T) {
	src := &fakeSource{}
	src.p.Store(snap(0, member("p", "", false, 0), member("r1", "", true, 0)))
	r := New(Config{Cluster: "c"}, src)
	if m, _, _ := r.Replica(context.Background(), -1, -1); m != 1 {
		t.Fatalf("read went to %d", m)
	}
	src.p.Store(snap(1, member("r1", "", true, 0), member("p", "", false, 0)))
	if p, _, _ := r.Primary(context.Background()); p != 1 {
		t.Fatalf("primary after a new snapshot = %d", p)
	}
}

func BenchmarkReplica(b *testing.B) {
	src := &fakeSource{}
	src.p.Store(snap(0, member("p", "", false, 0), member("r1", "", true, 0), member("r2", "", true, 0)))
	r := New(Config{Cluster: "c", LocalityWindow: time.Millisecond}, src)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, _, err := r.Replica(context.Background(), -1, -1); err != nil {
			b.Fatal(err)
		}
	}
}

// fakeAuthority is a control plane whose answer the test sets.
type fakeAuthority struct {
	mu      sync.Mutex
	name    string
	epoch   uint64
	err     error
	changed chan struct{}
}

func newFakeAuthority(name string, err error) *fakeAuthority {
	return &fakeAuthority{name: name, err: err, changed: make(chan struct{})}
}

func (f *fakeAuthority) Writer() (string, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.name, f.epoch, f.err
}

// Acknowledgeable: the fake treats every change as a failover.
func (f *fakeAuthority) Acknowledgeable(epoch uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err == nil && f.epoch == epoch
}

func (f *fakeAuthority) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fakeAuthority) set(name string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.name, f.err = name, err
	f.epoch++
	close(f.changed)
	f.changed = make(chan struct{})
}

func TestAuthorityNamesThePrimary(t *testing.T) {
	snap := &topology.Snapshot{Primary: 0, Conflict: []string{"db1", "db2"}, Members: []topology.Member{
		{Name: "db1", Reachable: true}, {Name: "db2", Reachable: true}, {Name: "db3", Reachable: true, ReadOnly: true}}}
	auth := newFakeAuthority("db2", nil)
	r := New(Config{Authority: auth, WriteHold: time.Second}, staticSource{snap})
	// The snapshot's conflict does not matter: the control plane decides.
	if p, _, err := r.Primary(context.Background()); err != nil || p != 1 {
		t.Fatalf("Primary = %d, %v; want db2 (1)", p, err)
	}
	auth.set("db9", nil)
	if _, _, err := r.Primary(context.Background()); !errors.Is(err, ErrNoPrimary) {
		t.Fatalf("unknown member: %v", err)
	}
	auth.set("", errors.New("cluster state incompatible"))
	start := time.Now()
	if _, _, err := r.Primary(context.Background()); err == nil || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("a non-holding error must fail at once: %v after %s", err, time.Since(start))
	}
}

func TestWritesHoldDuringAChange(t *testing.T) {
	snap := &topology.Snapshot{Primary: 0, Members: []topology.Member{{Name: "db1"}, {Name: "db2"}}}
	auth := newFakeAuthority("", ErrChanging)
	r := New(Config{Authority: auth, WriteHold: 10 * time.Second}, staticSource{snap})
	done := make(chan struct{})
	var got int
	var err error
	go func() {
		defer close(done)
		got, _, err = r.Primary(context.Background())
	}()
	select {
	case <-done:
		t.Fatalf("write was not held: %d, %v", got, err)
	case <-time.After(100 * time.Millisecond):
	}
	auth.set("db2", nil)
	<-done
	if err != nil || got != 1 {
		t.Fatalf("held write got %d, %v; want db2", got, err)
	}
}

func TestHeldWriteFailsAfterWriteHold(t *testing.T) {
	snap := &topology.Snapshot{Primary: 0, Members: []topology.Member{{Name: "db1"}}}
	r := New(Config{Authority: newFakeAuthority("", ErrNoLease), WriteHold: 150 * time.Millisecond}, staticSource{snap})
	start := time.Now()
	_, _, err := r.Primary(context.Background())
	if !errors.Is(err, ErrNoLease) || !strings.Contains(err.Error(), "write_hold_timeout") {
		t.Fatalf("err %v", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("failed after %s, before the hold ended", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := r.Primary(ctx); !errors.Is(err, ErrNoLease) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestCurrentRefusesAcksFromAnOldEpoch(t *testing.T) {
	snap := &topology.Snapshot{Primary: 0, Members: []topology.Member{{Name: "db1"}, {Name: "db2"}}}
	auth := newFakeAuthority("db1", nil)
	auth.set("db1", nil) // epoch 1
	r := New(Config{Authority: auth}, staticSource{snap})
	_, epoch, err := r.Primary(context.Background())
	if err != nil || epoch != 1 || !r.Current(epoch) {
		t.Fatalf("epoch %d, %v, current %v", epoch, err, r.Current(epoch))
	}
	auth.set("db2", nil) // a failover: epoch 2
	if r.Current(epoch) {
		t.Fatal("a write routed at epoch 1 may be acknowledged at epoch 2")
	}
	_, epoch, _ = r.Primary(context.Background())
	auth.mu.Lock()
	auth.err = ErrNoLease // the lease runs out; the epoch stays
	auth.mu.Unlock()
	if r.Current(epoch) {
		t.Fatal("acknowledged without a lease")
	}
	if !New(Config{}, staticSource{snap}).Current(0) {
		t.Fatal("without an authority every ack stands")
	}
}

func TestMovedTellsADrainFromACompletedChange(t *testing.T) {
	snap := &topology.Snapshot{Primary: 0, Members: []topology.Member{{Name: "db1"}, {Name: "db2"}}}
	auth := newFakeAuthority("db1", nil)
	auth.set("db1", nil) // epoch 1, serving
	r := New(Config{Authority: auth}, staticSource{snap})
	for _, tc := range []struct {
		name            string
		set             func()
		moved, changing bool
	}{
		{"serving at the connection's epoch", func() {}, false, false},
		{"switching (epoch 2)", func() { auth.set("", ErrChanging) }, false, true},
		{"serving at the new epoch 3", func() { auth.set("db2", nil) }, true, false},
		{"lease lost: no verdict", func() { auth.set("", ErrNoLease) }, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.set()
			if moved, changing := r.Moved(1); moved != tc.moved || changing != tc.changing {
				t.Fatalf("Moved(1) = %v, %v; want %v, %v", moved, changing, tc.moved, tc.changing)
			}
		})
	}
	if moved, changing := New(Config{}, staticSource{snap}).Moved(1); moved || changing {
		t.Fatal("without an authority nothing moves")
	}
}

func TestChangedFollowsTheAuthority(t *testing.T) {
	snap := &topology.Snapshot{Primary: 0, Members: []topology.Member{{Name: "db1"}}}
	if ch := New(Config{}, staticSource{snap}).Changed(); ch != nil {
		t.Fatal("without an authority Changed must be nil (never ready)")
	}
	auth := newFakeAuthority("db1", nil)
	r := New(Config{Authority: auth}, staticSource{snap})
	ch := r.Changed()
	select {
	case <-ch:
		t.Fatal("ready before any change")
	default:
	}
	auth.set("db1", nil)
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("not closed at a change")
	}
}

// A (re)started proxy knows nothing about its members until the monitor
// publishes its first snapshot: a statement arriving before that waits for
// it (bounded by WriteHold) instead of failing with "no eligible member".
func TestStatementsWaitForTheFirstSnapshot(t *testing.T) {
	src := &fakeSource{}
	src.p.Store(&topology.Snapshot{Cluster: "c", Primary: -1, Members: []topology.Member{{Name: "p"}, {Name: "r1"}}})
	r := New(Config{Cluster: "c"}, src)
	type answer struct {
		m       int
		replica bool
		err     error
	}
	reads, writes := make(chan answer, 1), make(chan answer, 1)
	go func() {
		m, replica, err := r.Replica(context.Background(), -1, -1)
		reads <- answer{m, replica, err}
	}()
	go func() {
		m, _, err := r.Primary(context.Background())
		writes <- answer{m: m, err: err}
	}()
	select {
	case a := <-reads:
		t.Fatalf("a read before the first snapshot answered %+v; want it to wait", a)
	case a := <-writes:
		t.Fatalf("a write before the first snapshot answered %+v; want it to wait", a)
	case <-time.After(100 * time.Millisecond):
	}
	src.p.Store(snap(0, member("p", "", false, 0), member("r1", "", true, 0)))
	if a := <-reads; a.err != nil || a.m != 1 || !a.replica {
		t.Fatalf("read after the first snapshot: %+v, want r1", a)
	}
	if a := <-writes; a.err != nil || a.m != 0 {
		t.Fatalf("write after the first snapshot: %+v, want p", a)
	}

	// Bounded: no snapshot within WriteHold is the error it always was.
	src.p.Store(&topology.Snapshot{Cluster: "c", Primary: -1, Members: []topology.Member{{Name: "p"}}})
	r = New(Config{Cluster: "c", WriteHold: 50 * time.Millisecond}, src)
	if _, _, err := r.Replica(context.Background(), -1, -1); !errors.Is(err, ErrNoReplica) {
		t.Fatalf("no snapshot within the hold: %v", err)
	}
}

// In a switchover there is a moment when no member can serve a read: the
// old primary is read-only and detached, the target is detached and not
// yet open, the other replicas are being repointed. Under the control
// plane a read then waits (like a write, up to WriteHold) for the next
// snapshot instead of failing with "no eligible replica and no eligible
// primary". A standalone proxy, and reads_without_replica: fail, answer at
// once as before.
func TestReadsHoldWhileNoMemberCanServeThem(t *testing.T) {
	none := snap(-1, member("db1", "", false, 0), member("db2", "", false, 0))
	src := &fakeSource{}
	src.p.Store(none)
	auth := newFakeAuthority("", ErrChanging)
	r := New(Config{Cluster: "c", Authority: auth, WriteHold: 10 * time.Second}, src)
	got := replicaAsync(r)
	select {
	case a := <-got:
		t.Fatalf("a read with no member to serve it answered %+v; want it to wait", a)
	case <-time.After(100 * time.Millisecond):
	}
	src.p.Store(snap(1, member("db1", "", true, 0), member("db2", "", false, 0)))
	if a := <-got; a.err != nil || a.m != 0 || !a.replica {
		t.Fatalf("read after the change: %+v, want db1 as a replica", a)
	}

	// Bounded by WriteHold and by the statement's context.
	src.p.Store(none)
	r = New(Config{Cluster: "c", Authority: auth, WriteHold: 50 * time.Millisecond}, src)
	if _, _, err := r.Replica(context.Background(), -1, -1); !errors.Is(err, ErrNoReplica) {
		t.Fatalf("nothing within the hold: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r = New(Config{Cluster: "c", Authority: auth, WriteHold: time.Hour}, src)
	if _, _, err := r.Replica(ctx, -1, -1); !errors.Is(err, ErrNoReplica) {
		t.Fatalf("cancelled statement: %v", err)
	}

	// No control plane, or reads_without_replica: fail: at once.
	for _, cfg := range []Config{{Cluster: "c"}, {Cluster: "c", Authority: auth, ReadsWithoutReplica: FallbackFail}} {
		start := time.Now()
		if _, _, err := New(cfg, src).Replica(context.Background(), -1, -1); !errors.Is(err, ErrNoReplica) || time.Since(start) > time.Second {
			t.Fatalf("%+v: %v after %s, want ErrNoReplica at once", cfg, err, time.Since(start))
		}
	}
}

// Under the control plane the snapshot can lag it by a probe interval: right
// after a switchover from db1 to db2 the snapshot may still call db1 the
// primary and db2 a replica, while writes already go to db2. A read must
// follow the control plane: a read sent "to the primary" skips the
// read-your-writes wait, so sending it to db1 would miss the session's
// writes on db2; and db2 is the primary, not a replica to wait on.
func TestReadsFollowTheAuthoritysPrimaryNotAStaleSnapshot(t *testing.T) {
	src := &fakeSource{}
	src.p.Store(snap(0, member("db1", "", false, 0), member("db2", "", true, 0), member("db3", "", false, 0)))
	auth := newFakeAuthority("db2", nil)
	r := New(Config{Cluster: "c", Authority: auth, WriteHold: 10 * time.Second}, src)
	for range 20 {
		if m, replica, err := r.Replica(context.Background(), -1, -1); err != nil || m != 1 || replica {
			t.Fatalf("Replica = %d, replica %v, %v; want db2 (1) as the primary", m, replica, err)
		}
	}
	// A replica that is one: the read goes there, as a replica.
	src.p.Store(snap(0, member("db1", "", false, 0), member("db2", "", true, 0), member("db3", "", true, 0)))
	for range 20 {
		if m, replica, err := r.Replica(context.Background(), -1, 1); err != nil || m != 2 || !replica {
			t.Fatalf("Replica = %d, replica %v, %v; want db3 (2) as a replica", m, replica, err)
		}
	}
	// While the control plane is changing the primary, a read with no
	// replica to go to waits for the new primary rather than go to the
	// snapshot's.
	src.p.Store(snap(0, member("db1", "", false, 0), member("db2", "", false, 0), member("db3", "", false, 0)))
	auth.set("", ErrChanging)
	got := replicaAsync(r)
	select {
	case a := <-got:
		t.Fatalf("a read during the change answered %+v; want it to wait", a)
	case <-time.After(100 * time.Millisecond):
	}
	auth.set("db3", nil)
	if a := <-got; a.err != nil || a.m != 2 || a.replica {
		t.Fatalf("read after the change: %+v, want db3 (2) as the primary", a)
	}
}

// answer is one Replica call's result.
type answer struct {
	m       int
	replica bool
	err     error
}

// replicaAsync asks r for a read's member in the background.
func replicaAsync(r *Router) <-chan answer {
	got := make(chan answer, 1)
	go func() {
		m, replica, err := r.Replica(context.Background(), -1, -1)
		got <- answer{m, replica, err}
	}()
	return got
}
