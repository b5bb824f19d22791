package mongo

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.uber.org/zap/zaptest"

	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
	"github.com/dbrouter/dbrouter/topology"
	tmongo "github.com/dbrouter/dbrouter/topology/mongo"
)

// The replica-set fault tests (rs_*_test.go) run the proxy in-process in
// front of a simulated replica set of real processes
// (chaos.StartReplicaSetT, docs/mongosim.md) with the real topology/mongo
// monitor as its Topology and no control plane: the set's own elections
// decide. The Go driver v2 talks to the proxy with its default settings.

// rsElectionTimeout is the members' election timeout in these tests.
const rsElectionTimeout = 2 * time.Second

// rsEnv is one routed replica set.
type rsEnv struct {
	rs   *chaos.ReplicaSet
	rec  *recTopo
	taps []*tap // the proxy reaches member i through taps[i]
	addr string // the proxy's listener
	px   *Proxy
	// first is the primary at the start.
	first int
}

// startRSEnv starts a 3-member set, its monitor (probing every 100 ms),
// a tap in front of each member and the proxy, and waits until the
// proxy's topology names the set's primary.
func startRSEnv(t *testing.T, cfg Config) *rsEnv {
	t.Helper()
	rs := chaos.StartReplicaSetT(t, chaos.ReplicaSetOptions{Members: 3, ElectionTimeout: rsElectionTimeout})
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	p, err := rs.WaitPrimary(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	e := &rsEnv{rs: rs}
	var mcs []topology.MemberConfig
	for i, m := range rs.Members {
		if m == p {
			e.first = i
		}
		mcs = append(mcs, topology.MemberConfig{Name: m.Name, Addr: m.Addr()})
		tp := startTap(t, m.Addr())
		e.taps = append(e.taps, tp)
		cfg.Members = append(cfg.Members, Member{Name: m.Name, Addr: tp.addr()})
	}
	mon, err := tmongo.NewMonitor(tmongo.MonitorConfig{Cluster: "rs", Members: mcs, ReplicaSet: rs.Name,
		ProbeInterval: 100 * time.Millisecond, MaxReplicaLag: 5 * time.Second}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	mctx, mcancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); mon.Run(mctx) }()
	t.Cleanup(func() { mcancel(); <-done })
	e.rec = &recTopo{mon: mon}
	cfg.Cluster = "rs"
	cfg.Topology = e.rec
	e.addr, e.px = startProxy(t, cfg)
	e.waitNamed(t, ctx, p.Name, 15*time.Second)
	return e
}

// waitNamed polls until the proxy's topology names member name primary
// and returns when it first did.
func (e *rsEnv) waitNamed(t *testing.T, ctx context.Context, name string, within time.Duration) time.Time {
	t.Helper()
	if err := chaos.Poll(ctx, within, func() (bool, error) { return e.rec.Snapshot().PrimaryName() == name, nil }); err != nil {
		t.Fatalf("the proxy's topology never named %s primary within %s: %+v", name, within, e.rec.Snapshot())
	}
	return e.rec.firstNamed(name)
}

// waitOtherNamed polls until the proxy's topology names a primary other
// than old; it returns the member's index and when it was first named.
func (e *rsEnv) waitOtherNamed(t *testing.T, ctx context.Context, old int, within time.Duration) (int, time.Time) {
	t.Helper()
	var idx int
	if err := chaos.Poll(ctx, within, func() (bool, error) {
		s := e.rec.Snapshot()
		idx = s.Primary
		return idx >= 0 && idx != old, nil
	}); err != nil {
		t.Fatalf("the proxy's topology never named a primary other than %s within %s: %+v", e.rs.Members[old].Name, within, e.rec.Snapshot())
	}
	return idx, e.rec.firstNamed(e.rs.Members[idx].Name)
}

// idsOn is every _id of app.load on member m, read directly from it.
func idsOn(t *testing.T, ctx context.Context, m *chaos.MongoMember) map[int64]bool {
	t.Helper()
	cl := connect(t, m.URI())
	cur, err := cl.Database("app").Collection("load").Find(ctx, bson.D{})
	if err != nil {
		t.Fatalf("read app.load on %s: %v", m.Name, err)
	}
	have := map[int64]bool{}
	for cur.Next(ctx) {
		id, _ := cur.Current.Lookup("_id").AsInt64OK()
		have[id] = true
	}
	if err := cur.Err(); err != nil {
		t.Fatalf("read app.load on %s: %v", m.Name, err)
	}
	return have
}

// missingOn is the acknowledged ids member m lacks.
func missingOn(t *testing.T, ctx context.Context, m *chaos.MongoMember, acked []int64) []int64 {
	t.Helper()
	have := idsOn(t, ctx, m)
	var miss []int64
	for _, id := range acked {
		if !have[id] {
			miss = append(miss, id)
		}
	}
	return miss
}

func rollbacksOf(t *testing.T, ctx context.Context, rs *chaos.ReplicaSet, m *chaos.MongoMember) int64 {
	t.Helper()
	st, err := rs.Status(ctx, m)
	if err != nil {
		t.Fatalf("replSetGetStatus on %s: %v", m.Name, err)
	}
	n, _ := st.Lookup("rollbacks").AsInt64OK()
	return n
}

// ---- the proxy's topology, recorded ----

// recTopo is the monitor as the proxy sees it, recording every snapshot
// the proxy was handed: when each member was first named primary, and
// which members claimed primary under which electionId.
type recTopo struct {
	mon  *topology.Monitor
	mu   sync.Mutex
	last *topology.Snapshot
	// named: the first time a snapshot naming each member primary was
	// handed out.
	named map[string]time.Time
	// claims: electionId (hex) → the members judged primary under it.
	claims map[string]map[string]bool
}

func (r *recTopo) Snapshot() *topology.Snapshot {
	s := r.mon.Snapshot()
	r.mu.Lock()
	defer r.mu.Unlock()
	if s == r.last {
		return s
	}
	r.last = s
	if r.named == nil {
		r.named, r.claims = map[string]time.Time{}, map[string]map[string]bool{}
	}
	if n := s.PrimaryName(); n != "" {
		if _, ok := r.named[n]; !ok {
			r.named[n] = time.Now()
		}
	}
	for _, m := range s.Members {
		if m.Role != topology.RolePrimary {
			continue
		}
		d, ok := tmongo.DetailOf(m)
		if !ok || d.ElectionID == nil {
			continue
		}
		k := d.ElectionID.Hex()
		if r.claims[k] == nil {
			r.claims[k] = map[string]bool{}
		}
		r.claims[k][m.Name] = true
	}
	return s
}

func (r *recTopo) firstNamed(name string) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.named[name]
}

// checkOneClaimantPerElection: no two members were ever judged primary
// under one electionId (one term).
func (r *recTopo) checkOneClaimantPerElection(t *testing.T) int {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, ms := range r.claims {
		if len(ms) > 1 {
			t.Errorf("electionId %s: %d members judged primary: %v", id, len(ms), ms)
		}
	}
	return len(r.claims)
}

// ---- a tap between the proxy and a member ----

// tap forwards TCP between the proxy and one member and records when each
// command the proxy sent passed it, by name: it shows which member a
// command went to, which no reply says.
type tap struct {
	t        testing.TB
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	conns    map[net.Conn]bool
	seen     []tapped
	wg       sync.WaitGroup
}

type tapped struct {
	at   time.Time
	name string
}

func startTap(t testing.TB, upstream string) *tap {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tp := &tap{t: t, ln: ln, upstream: upstream, conns: map[net.Conn]bool{}}
	tp.wg.Add(1)
	go tp.accept()
	t.Cleanup(tp.close)
	return tp
}

func (tp *tap) addr() string { return tp.ln.Addr().String() }

func (tp *tap) accept() {
	defer tp.wg.Done()
	for {
		c, err := tp.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.DialTimeout("tcp", tp.upstream, 2*time.Second)
		if err != nil {
			c.Close() // the member is down: the proxy sees its connection end
			continue
		}
		if !tp.track(c, u) {
			return
		}
		tp.wg.Add(2)
		go func() {
			defer tp.wg.Done()
			_, _ = io.Copy(c, u)
			c.Close()
			u.Close()
		}()
		go func() {
			defer tp.wg.Done()
			defer c.Close()
			defer u.Close()
			var buf []byte
			for {
				m, b, err := wire.ReadMessage(c, 0, buf)
				buf = b
				if err != nil {
					return
				}
				if m.Header.OpCode == wire.OpCodeMsg {
					if msg, err := wire.DecodeOpMsg(m.Raw); err == nil {
						tp.record(msg.CommandName())
					}
				}
				if _, err := u.Write(m.Raw); err != nil {
					return
				}
			}
		}()
	}
}

// track registers a connection pair; false once the tap is closed.
func (tp *tap) track(c, u net.Conn) bool {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if tp.conns == nil {
		c.Close()
		u.Close()
		return false
	}
	tp.conns[c], tp.conns[u] = true, true
	return true
}

func (tp *tap) record(name string) {
	tp.mu.Lock()
	tp.seen = append(tp.seen, tapped{time.Now(), name})
	tp.mu.Unlock()
}

// count is how many commands named one of names passed the tap after from.
func (tp *tap) count(from time.Time, names ...string) (n int, last time.Time) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	for _, s := range tp.seen {
		for _, nm := range names {
			if s.name == nm && s.at.After(from) {
				n++
				if s.at.After(last) {
					last = s.at
				}
			}
		}
	}
	return n, last
}

func (tp *tap) close() {
	tp.ln.Close()
	tp.mu.Lock()
	for c := range tp.conns {
		c.Close()
	}
	tp.conns = nil
	tp.mu.Unlock()
	tp.wg.Wait()
}

// writeNames are the write commands the load sends.
var writeNames = []string{"insert", "update", "delete", "findAndModify"}

// ---- a w:majority write load (chaos.MongoLoad) ----

// wload is chaos.MongoLoad with the tests' own checks.
type wload struct{ *chaos.MongoLoad }

func startWLoad(ctx context.Context, c *mongo.Client, every time.Duration, maxInFlight int) wload {
	return wload{chaos.StartMongoLoad(ctx, c, "load", every, maxInFlight)}
}

// waitAcked polls until n writes were acknowledged after from.
func (l wload) waitAcked(t *testing.T, ctx context.Context, from time.Time, n int, within time.Duration) {
	t.Helper()
	if err := chaos.Poll(ctx, within, func() (bool, error) { return l.AckedAfter(from) >= n, nil }); err != nil {
		t.Fatalf("fewer than %d writes acknowledged within %s (%d in all, errors: %v)", n, within, l.Acked(), l.Errors())
	}
}

// checkNoErrors fails the test with the first errors a driver saw.
func (l wload) checkNoErrors(t *testing.T) {
	t.Helper()
	errs := l.Errors()
	for i, err := range errs {
		if i == 10 {
			t.Errorf("... %d errors in all", len(errs))
			break
		}
		t.Errorf("a driver saw: %v", err)
	}
}
