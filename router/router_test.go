package router

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/topology"
)

type fakeSource struct {
	p atomic.Pointer[topology.Snapshot]
}

func (f *fakeSource) Snapshot() *topology.Snapshot { return f.p.Load() }

func member(name, site string, eligible bool, rtt time.Duration) topology.Member {
	return topology.Member{Name: name, Site: site, Reachable: true, ReadOnly: true, Eligible: eligible, RTT: rtt, Role: topology.RoleReplica}
}

func snap(primary int, ms ...topology.Member) *topology.Snapshot {
	if primary >= 0 {
		ms[primary].ReadOnly = false
		ms[primary].Role = topology.RolePrimary
		ms[primary].Eligible = false
	}
	return &topology.Snapshot{Cluster: "c", Primary: primary, Members: ms}
}

func readSet(t *testing.T, r *Router, n int) map[int]int {
	t.Helper()
	got := map[int]int{}
	for i := 0; i < n; i++ {
		m, err := r.Replica(-1)
		if err != nil {
			t.Fatal(err)
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
	if p, err := r.Primary(); err != nil || p != 0 {
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
	if m, err := r.Replica(-1); err != nil || m != 0 {
		t.Fatalf("no eligible replica: read went to %d (%v), want the primary", m, err)
	}
	rf := New(Config{Cluster: "c", ReadsWithoutReplica: FallbackFail}, src)
	if _, err := rf.Replica(-1); !errors.Is(err, ErrNoReplica) {
		t.Fatalf("reads_without_replica=fail: %v", err)
	}
}

func TestAvoidRetriesElsewhere(t *testing.T) {
	src := &fakeSource{}
	src.p.Store(snap(0, member("p", "", false, 0), member("r1", "", true, 0), member("r2", "", true, 0)))
	r := New(Config{Cluster: "c", LocalityWindow: time.Millisecond}, src)
	for i := 0; i < 10; i++ {
		if m, err := r.Replica(1); err != nil || m != 2 {
			t.Fatalf("avoiding r1 got %d, %v", m, err)
		}
	}
	src.p.Store(snap(0, member("p", "", false, 0), member("r1", "", true, 0)))
	if m, err := r.Replica(1); err != nil || m != 0 {
		t.Fatalf("avoiding the only replica got %d, %v; want the primary", m, err)
	}
}

func TestNoWritesWithoutExactlyOnePrimary(t *testing.T) {
	src := &fakeSource{}
	src.p.Store(snap(-1, member("a", "", true, 0), member("b", "", true, 0)))
	r := New(Config{Cluster: "c"}, src)
	if _, err := r.Primary(); !errors.Is(err, ErrNoPrimary) {
		t.Fatalf("no writable member: %v", err)
	}
	s := snap(-1, member("a", "", false, 0), member("b", "", false, 0))
	s.Conflict = []string{"a", "b"}
	src.p.Store(s)
	if _, err := r.Primary(); !errors.Is(err, ErrWritableConflict) {
		t.Fatalf("two writable members: %v", err)
	}
}

func TestPlanFollowsNewSnapshots(t *testing.T) {
	src := &fakeSource{}
	src.p.Store(snap(0, member("p", "", false, 0), member("r1", "", true, 0)))
	r := New(Config{Cluster: "c"}, src)
	if m, _ := r.Replica(-1); m != 1 {
		t.Fatalf("read went to %d", m)
	}
	src.p.Store(snap(1, member("r1", "", true, 0), member("p", "", false, 0)))
	if p, _ := r.Primary(); p != 1 {
		t.Fatalf("primary after a new snapshot = %d", p)
	}
}

func BenchmarkReplica(b *testing.B) {
	src := &fakeSource{}
	src.p.Store(snap(0, member("p", "", false, 0), member("r1", "", true, 0), member("r2", "", true, 0)))
	r := New(Config{Cluster: "c", LocalityWindow: time.Millisecond}, src)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := r.Replica(-1); err != nil {
			b.Fatal(err)
		}
	}
}
