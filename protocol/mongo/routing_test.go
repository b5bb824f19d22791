package mongo

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/tag"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/router"
	"github.com/dbrouter/dbrouter/topology"
	tmongo "github.com/dbrouter/dbrouter/topology/mongo"
)

// fakeTopo is a topology source the test controls: the FerretDB members
// are independent standalones, so which one is "the primary" and which
// are "secondaries" is what the test says it is. The members answer for
// real; only their roles are the test's.
type fakeTopo struct {
	snap atomic.Pointer[topology.Snapshot]
	mu   sync.Mutex
	ms   []topology.Member
}

func (f *fakeTopo) Snapshot() *topology.Snapshot { return f.snap.Load() }

// set publishes a snapshot with primary (-1: none) after mutate has
// edited the members (a copy; Details are replaced, never modified).
func (f *fakeTopo) set(primary int, mutate func(ms []topology.Member)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ms := append([]topology.Member(nil), f.ms...)
	for i := range ms {
		d, _ := tmongo.DetailOf(ms[i])
		c := *d
		c.Observed = time.Now()
		ms[i].Detail = &c
		switch {
		case i == primary:
			ms[i].Role, ms[i].ReadOnly, ms[i].Lag, ms[i].Eligible = topology.RolePrimary, false, 0, false
		case ms[i].Role == topology.RolePrimary:
			ms[i].Role, ms[i].ReadOnly, ms[i].Lag, ms[i].Eligible = topology.RoleReplica, true, 0, true
		}
	}
	if mutate != nil {
		mutate(ms)
	}
	f.ms = ms
	f.snap.Store(&topology.Snapshot{Cluster: "c1", Taken: time.Now(), Members: ms, Primary: primary})
}

// routedSet starts n FerretDB members, writes a marker document naming
// each member on that member directly (app.marker {_id: 1, member}), and
// a topology where member 0 is the primary and the others secondaries:
// member i at RTT (1+5i) ms, site lon for 0 and 1, fra for the rest, tag
// dc the same.
func routedSet(t *testing.T, n int) (*chaos.MongoCluster, *fakeTopo) {
	t.Helper()
	mc := chaos.StartMongoT(t, n)
	ctx := testCtx(t)
	ft := &fakeTopo{}
	now := time.Now()
	for i, m := range mc.Members {
		direct := connect(t, m.URI())
		if _, err := direct.Database("app").Collection("marker").InsertOne(ctx, bson.D{{Key: "_id", Value: 1}, {Key: "member", Value: m.Name}}); err != nil {
			t.Fatalf("marker on %s: %v", m.Name, err)
		}
		site := "lon"
		if i >= 2 {
			site = "fra"
		}
		ft.ms = append(ft.ms, topology.Member{
			Name: m.Name, Addr: m.Addr(), Site: site, Reachable: true, Role: topology.RoleReplica, ReadOnly: true,
			RTT: time.Duration(1+5*i) * time.Millisecond, Lag: 0, Eligible: true, IORunning: true, SQLRunning: true,
			Detail: &tmongo.Detail{SetName: "rs0", MaxWireVersion: 21, Secondary: i != 0, Writable: i == 0,
				Tags: map[string]string{"dc": site}, LastWrite: &tmongo.LastWrite{Date: now}, Observed: now, Heartbeat: 500 * time.Millisecond},
		})
	}
	ft.set(0, nil)
	return mc, ft
}

func routedProxy(t *testing.T, mc *chaos.MongoCluster, ft *fakeTopo, cfg Config) (string, *Proxy) {
	t.Helper()
	cfg.Cluster = "c1"
	for _, m := range mc.Members {
		cfg.Members = append(cfg.Members, Member{Name: m.Name, Addr: m.Addr()})
	}
	cfg.Topology = ft
	return startProxy(t, cfg)
}

// answeredBy reads the marker through coll's read preference: the name of
// the member that answered.
func answeredBy(t *testing.T, ctx context.Context, c *mongo.Client, rp *readpref.ReadPref) string {
	t.Helper()
	var got struct{ Member string }
	coll := c.Database("app").Collection("marker", options.Collection().SetReadPreference(rp))
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: 1}}).Decode(&got); err != nil {
		t.Fatalf("read with %v: %v", rp, err)
	}
	return got.Member
}

func TestRoutingReadsFollowTheReadPreference(t *testing.T) {
	mc, ft := routedSet(t, 3)
	addr, _ := routedProxy(t, mc, ft, Config{LocalThreshold: 2 * time.Millisecond})
	c := connect(t, "mongodb://"+addr+"/")
	ctx := testCtx(t)
	name := func(i int) string { return mc.Members[i].Name }

	for _, tc := range []struct {
		rp   *readpref.ReadPref
		want []int
	}{
		{readpref.Primary(), []int{0}},
		{readpref.PrimaryPreferred(), []int{0}},
		{readpref.Secondary(), []int{1}}, // 6 ms; 11 ms is outside the 2 ms window
		{readpref.SecondaryPreferred(readpref.WithTags("dc", "fra")), []int{2}},
		{readpref.Nearest(), []int{0}},
		{readpref.Nearest(readpref.WithTagSets(tag.Set{{Name: "dc", Value: "nyc"}}, tag.Set{{Name: "dc", Value: "fra"}})), []int{2}},
		{readpref.Secondary(readpref.WithMaxStaleness(90 * time.Second)), []int{1}},
	} {
		for range 5 {
			got := answeredBy(t, ctx, c, tc.rp)
			ok := false
			for _, w := range tc.want {
				ok = ok || got == name(w)
			}
			if !ok {
				t.Fatalf("%v answered by %s, want member %v", tc.rp, got, tc.want)
			}
		}
	}

	// A secondary 200 s behind is dropped by maxStalenessSeconds 90.
	ft.set(0, func(ms []topology.Member) {
		d, _ := tmongo.DetailOf(ms[1])
		d.LastWrite = &tmongo.LastWrite{Date: d.Observed.Add(-200 * time.Second)}
	})
	if got := answeredBy(t, ctx, c, readpref.Secondary(readpref.WithMaxStaleness(90*time.Second))); got != name(2) {
		t.Fatalf("maxStaleness read answered by %s, want %s (the fresh one)", got, name(2))
	}
	// An unreachable secondary is skipped; with none left, secondary fails
	// and secondaryPreferred reads the primary.
	ft.set(0, func(ms []topology.Member) { ms[1].Reachable = false; ms[2].Lag = -1 })
	if got := answeredBy(t, ctx, c, readpref.SecondaryPreferred()); got != name(0) {
		t.Fatalf("secondaryPreferred with no secondary answered by %s, want the primary", got)
	}
	err := c.Database("app").Collection("marker", options.Collection().SetReadPreference(readpref.Secondary())).
		FindOne(ctx, bson.D{}).Err()
	var se mongo.ServerError
	if !errors.As(err, &se) || !se.HasErrorCode(int(CodeNoReplica.Code)) {
		t.Fatalf("secondary read with no secondary: %v, want %s", err, CodeNoReplica.Name)
	}
}

func TestRoutingPrefersTheProxysSite(t *testing.T) {
	mc, ft := routedSet(t, 3)
	addr, _ := routedProxy(t, mc, ft, Config{Site: "fra"})
	c := connect(t, "mongodb://"+addr+"/")
	ctx := testCtx(t)
	for range 5 {
		if got := answeredBy(t, ctx, c, readpref.Nearest()); got != mc.Members[2].Name {
			t.Fatalf("nearest from site fra answered by %s, want %s", got, mc.Members[2].Name)
		}
	}
}

// TestRoutingWritesGoToThePrimary: writes go to the member the topology
// calls primary, and follow it when it changes; a read on the primary
// follows too.
func TestRoutingWritesGoToThePrimary(t *testing.T) {
	mc, ft := routedSet(t, 3)
	addr, _ := routedProxy(t, mc, ft, Config{})
	c := connect(t, "mongodb://"+addr+"/")
	ctx := testCtx(t)
	coll := c.Database("app").Collection("w")
	countOn := func(i int) int64 {
		n, err := connect(t, mc.Members[i].URI()).Database("app").Collection("w").CountDocuments(ctx, bson.D{})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	for i := range 3 {
		if _, err := coll.InsertOne(ctx, bson.D{{Key: "i", Value: i}}); err != nil {
			t.Fatal(err)
		}
	}
	ft.set(2, nil)
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "i", Value: 3}}); err != nil {
		t.Fatal(err)
	}
	// findAndModify and an aggregate with $out are writes too.
	if err := coll.FindOneAndUpdate(ctx, bson.D{{Key: "i", Value: 3}}, bson.D{{Key: "$set", Value: bson.D{{Key: "x", Value: 1}}}}).Err(); err != nil {
		t.Fatalf("findAndModify on the new primary: %v", err)
	}
	if got := []int64{countOn(0), countOn(1), countOn(2)}; got[0] != 3 || got[1] != 0 || got[2] != 1 {
		t.Fatalf("documents per member %v, want [3 0 1]", got)
	}
	if got := answeredBy(t, ctx, c, readpref.Primary()); got != mc.Members[2].Name {
		t.Fatalf("primary read answered by %s after the switch", got)
	}
}

// TestRoutingAuthorityNamesThePrimary: under a control plane, writes and
// reads on the primary go to the member it names, not to a snapshot's
// primary that lags it; while it is changing, writes wait.
func TestRoutingAuthorityNamesThePrimary(t *testing.T) {
	mc, ft := routedSet(t, 3)
	auth := newFakeAuthority(mc.Members[1].Name)
	addr, _ := routedProxy(t, mc, ft, Config{Authority: auth, WriteHold: 5 * time.Second})
	c := connect(t, "mongodb://"+addr+"/")
	ctx := testCtx(t)
	if got := answeredBy(t, ctx, c, readpref.Primary()); got != mc.Members[1].Name {
		t.Fatalf("primary read answered by %s, want the authority's %s (the snapshot says %s)", got, mc.Members[1].Name, mc.Members[0].Name)
	}
	if got := answeredBy(t, ctx, c, readpref.Secondary()); got == mc.Members[1].Name {
		t.Fatalf("secondary read answered by the authority's primary %s", got)
	}
	auth.set("", router.ErrChanging)
	done := make(chan error, 1)
	began := time.Now()
	go func() {
		_, err := c.Database("app").Collection("held").InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	auth.set(mc.Members[2].Name, nil)
	if err := <-done; err != nil {
		t.Fatalf("held write: %v", err)
	}
	if d := time.Since(began); d < 250*time.Millisecond {
		t.Fatalf("write answered after %s: it was not held", d)
	}
	n, err := connect(t, mc.Members[2].URI()).Database("app").Collection("held").CountDocuments(ctx, bson.D{})
	if err != nil || n != 1 {
		t.Fatalf("held write on %s: %d %v", mc.Members[2].Name, n, err)
	}
}

// fakeAuthority is a control plane the test sets.
type fakeAuthority struct {
	mu      sync.Mutex
	name    string
	err     error
	epoch   uint64
	changed chan struct{}
}

func newFakeAuthority(name string) *fakeAuthority {
	return &fakeAuthority{name: name, epoch: 1, changed: make(chan struct{})}
}

func (a *fakeAuthority) set(name string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.name, a.err = name, err
	if err == nil {
		a.epoch++
	}
	close(a.changed)
	a.changed = make(chan struct{})
}

func (a *fakeAuthority) Writer() (string, uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.name, a.epoch, a.err
}

func (a *fakeAuthority) Acknowledgeable(epoch uint64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err == nil && epoch == a.epoch
}

func (a *fakeAuthority) Changed() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.changed
}

// TestRoutingRefusesBadReadPreference: what mongos refuses with BadValue,
// the proxy refuses without forwarding.
func TestRoutingRefusesBadReadPreference(t *testing.T) {
	mc, ft := routedSet(t, 2)
	addr, _ := routedProxy(t, mc, ft, Config{})
	rc := dialRaw(t, addr)
	for _, rp := range []bsoncore.Document{
		bsoncore.NewDocumentBuilder().AppendString("mode", "secondary").AppendInt32("maxStalenessSeconds", 30).Build(),
		bsoncore.NewDocumentBuilder().AppendString("mode", "primary").AppendInt32("maxStalenessSeconds", 120).Build(),
		bsoncore.NewDocumentBuilder().AppendString("mode", "sideways").Build(),
	} {
		r := rc.command(bsoncore.NewDocumentBuilder().AppendString("find", "marker").AppendDocument("$readPreference", rp).
			AppendString("$db", "app").Build())
		if replyCode(r) != CodeBadValue.Code {
			t.Fatalf("read preference %v: %v, want BadValue", rp, r)
		}
	}
}

// TestRoutingAnnouncesTheSmallestWireVersion: the members' smallest
// maxWireVersion, floored at 9 and capped by the configuration.
func TestRoutingAnnouncesTheSmallestWireVersion(t *testing.T) {
	ft := &fakeTopo{}
	for i, w := range []int32{21, 17, 25} {
		ft.ms = append(ft.ms, topology.Member{Name: string(rune('a' + i)), Reachable: true,
			Detail: &tmongo.Detail{SetName: "rs0", MaxWireVersion: w}})
	}
	ft.set(0, nil)
	for _, tc := range []struct {
		cap  int32
		want int32
	}{{0, 17}, {13, 13}, {25, 17}} {
		p, err := New(Config{Cluster: "w", Topology: ft, MaxWireVersion: tc.cap, Members: []Member{{"a", "x:1"}, {"b", "x:2"}, {"c", "x:3"}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.wireVersion(); got != tc.want {
			t.Errorf("cap %d: wire version %d, want %d", tc.cap, got, tc.want)
		}
	}
	ft.set(0, func(ms []topology.Member) { ms[1].Detail = &tmongo.Detail{MaxWireVersion: 6} })
	p, _ := New(Config{Cluster: "w", Topology: ft, Members: []Member{{"a", "x:1"}, {"b", "x:2"}, {"c", "x:3"}}}, nil)
	if got := p.wireVersion(); got != MinMaxWireVersion {
		t.Errorf("with a member at 6: %d, want the floor %d", got, MinMaxWireVersion)
	}
}

// TestRoutingExcludedMembersServeNoReads: a member the control plane
// fenced serves no reads, whatever the snapshot says of it.
func TestRoutingExcludedMembersServeNoReads(t *testing.T) {
	mc, ft := routedSet(t, 3)
	addr, p := routedProxy(t, mc, ft, Config{LocalThreshold: time.Millisecond})
	c := connect(t, "mongodb://"+addr+"/")
	ctx := testCtx(t)
	p.SetExcluded([]string{mc.Members[1].Name})
	for range 5 {
		if got := answeredBy(t, ctx, c, readpref.Secondary()); got != mc.Members[2].Name {
			t.Fatalf("secondary read answered by %s with %s fenced", got, mc.Members[1].Name)
		}
	}
}
