package daemon_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"github.com/dbrouter/dbrouter/admin"
	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/chaos/deploy"
)

// startMongoDeploy runs three arbiters and the given proxies over a
// simulated replica set whose own election timeout is 10 s (mongod's
// default): anything faster is the arbiters' doing.
func startMongoDeploy(t *testing.T, proxies int, toArbiters bool) *deploy.Deployment {
	t.Helper()
	d := start(t, deploy.Options{Proxies: proxies, ProxyToArbiters: toArbiters, ProbeInterval: "100ms",
		Mongo: &chaos.ReplicaSetOptions{Members: 3, ElectionTimeout: 10 * time.Second}})
	waitStatus(t, d, 20*time.Second, "the arbiters serve a primary", func(st []admin.Status) bool {
		return len(st[0].Clusters) > 0 && st[0].Clusters[0].Phase == "serving" && st[0].Clusters[0].Primary != ""
	})
	return d
}

// proxyClient is a driver v2 client through proxy i, with a plain URI (no
// replicaSet=): the proxy is a mongos to it.
func proxyClient(t *testing.T, d *deploy.Deployment, i int, timeout time.Duration) *mongo.Client {
	t.Helper()
	cl, err := mongo.Connect(options.Client().ApplyURI("mongodb://" + d.Proxies[i].Listen + "/").
		SetServerSelectionTimeout(15 * time.Second).SetTimeout(timeout))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Disconnect(context.Background()) })
	return cl
}

// mongoWriter inserts increasing _ids through a client at w:majority and
// records which were acknowledged, when, and every error.
type mongoWriter struct {
	mu    sync.Mutex
	acked []int
	times []time.Time
	errs  []string
	stop  chan struct{}
	done  chan struct{}
}

func startMongoWriter(ctx context.Context, cl *mongo.Client, coll string, first int) *mongoWriter {
	return startMongoWriterTimeout(ctx, cl, coll, first, 0)
}

// startMongoWriterTimeout gives each write opTimeout (0: the client's).
func startMongoWriterTimeout(ctx context.Context, cl *mongo.Client, coll string, first int, opTimeout time.Duration) *mongoWriter {
	w := &mongoWriter{stop: make(chan struct{}), done: make(chan struct{})}
	c := cl.Database("app").Collection(coll, options.Collection().SetWriteConcern(writeconcern.Majority()))
	go func() {
		defer close(w.done)
		deadline := time.Now().Add(90 * time.Second)
		for id := first; id < first+100000 && time.Now().Before(deadline); id++ {
			select {
			case <-w.stop:
				return
			case <-ctx.Done():
				return
			default:
			}
			octx, ocancel := ctx, context.CancelFunc(func() {})
			if opTimeout > 0 {
				octx, ocancel = context.WithTimeout(ctx, opTimeout)
			}
			_, err := c.InsertOne(octx, bson.D{{Key: "_id", Value: id}})
			ocancel()
			w.mu.Lock()
			if err == nil {
				w.acked = append(w.acked, id)
				w.times = append(w.times, time.Now())
			} else {
				w.errs = append(w.errs, fmt.Sprintf("%s id %d: %v", time.Now().Format("15:04:05.000"), id, err))
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *mongoWriter) count() (acked, errs int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked), len(w.errs)
}

func (w *mongoWriter) finish() ([]int, []time.Time, []string) {
	close(w.stop)
	<-w.done
	return w.acked, w.times, w.errs
}

// missingOn returns the acknowledged ids the member's app.COLL lacks.
func missingOn(t *testing.T, m *chaos.MongoMember, coll string, acked []int) []int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl, err := mongo.Connect(m.ClientOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cl.Disconnect(context.Background()) }()
	cur, err := cl.Database("app").Collection(coll).Find(ctx, bson.D{}, options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		t.Fatal(err)
	}
	var docs []struct {
		ID int `bson:"_id"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		t.Fatal(err)
	}
	have := map[int]bool{}
	for _, d := range docs {
		have[d.ID] = true
	}
	var out []int
	for _, id := range acked {
		if !have[id] {
			out = append(out, id)
		}
	}
	return out
}

// recovered is when writes were acknowledged again after a fault at at:
// the first acknowledgement after the last gap of over 500 ms since (writes
// acknowledged just before the fault may have been answered after it), or
// the first one after at when there was no gap.
func recovered(times []time.Time, at time.Time) time.Time {
	var again time.Time
	for i, t := range times {
		if !t.After(at) {
			continue
		}
		if again.IsZero() || i > 0 && t.Sub(times[i-1]) > 500*time.Millisecond {
			again = t
		}
	}
	return again
}

func leaderCluster(st []admin.Status, arbiters int) (admin.ClusterStatus, bool) {
	for _, s := range st[:arbiters] {
		if s.Control != nil && s.Control.Leader == s.Control.Node && len(s.Clusters) > 0 {
			return s.Clusters[0], true
		}
	}
	return admin.ClusterStatus{}, false
}

// TestMongoSwitchoverUnderLoad: routerctl promote to a secondary while a
// driver writes at w:majority through the proxy: no client error, a pause
// under a second, every acknowledged write on the new primary, and the
// status shows the set's members and roles.
func TestMongoSwitchoverUnderLoad(t *testing.T) {
	d := startMongoDeploy(t, 1, false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl := proxyClient(t, d, 0, 20*time.Second)
	w := startMongoWriter(ctx, cl, "sw", 1)
	poll(t, 20*time.Second, "writes flow", func() bool { n, _ := w.count(); return n > 50 })

	st, _ := leaderCluster(d.Statuses(), len(d.Arbiters))
	old := st.Primary
	target := "db2"
	if old == target {
		target = "db3"
	}
	roles := map[string]string{}
	lag := map[string]int64{}
	pos := map[string]string{}
	for _, m := range st.Members {
		roles[m.Name], lag[m.Name], pos[m.Name] = m.Role, m.LagMs, m.Position
	}
	if roles[old] != "primary" || roles[target] != "replica" || lag[target] < 0 || pos[target] == "" || len(st.Warnings) > 0 {
		t.Fatalf("status roles %v, lag %v, optimes %v, warnings %v: want %s primary and %s a replica of known lag and optime, no warning (no arbiter)",
			roles, lag, pos, st.Warnings, old, target)
	}
	// The cooldown after the first epoch (the arbiters' step-up) ends.
	var err error
	poll(t, 20*time.Second, "promote accepted", func() bool {
		err = d.Promote(ctx, 0, target, 20*time.Second)
		return err == nil || !strings.Contains(err.Error(), "cooldown")
	})
	if err != nil {
		t.Fatalf("promote %s: %v", target, err)
	}
	promoted := time.Now()
	n, _ := w.count()
	poll(t, 20*time.Second, "writes flow on the new primary", func() bool { m, _ := w.count(); return m > n+50 })
	acked, times, errs := w.finish()
	if len(errs) > 0 {
		t.Fatalf("%d client errors during the switchover, first: %s", len(errs), errs[0])
	}
	var pause time.Duration
	for i := 1; i < len(times); i++ {
		if times[i].After(promoted.Add(-20*time.Second)) && times[i].Before(promoted.Add(time.Second)) {
			pause = max(pause, times[i].Sub(times[i-1]))
		}
	}
	t.Logf("switchover %s → %s: longest write pause %s, %d writes acknowledged, 0 errors", old, target, pause.Round(time.Millisecond), len(acked))
	if pause > time.Second {
		t.Fatalf("writes paused %s during the switchover, want ≤ 1s", pause)
	}
	if p, err := d.RS.Primary(ctx); err != nil || p.Name != target {
		t.Fatalf("set primary %v (%v), want %s", p, err, target)
	}
	waitStatus(t, d, 10*time.Second, "every node serves the target", func(st []admin.Status) bool {
		for _, s := range st {
			if len(s.Clusters) == 0 || s.Clusters[0].Primary != target || s.Clusters[0].Phase != "serving" {
				return false
			}
		}
		return true
	})
	if lost := missingOn(t, d.RS.Member(target), "sw", acked); len(lost) > 0 {
		t.Fatalf("%d acknowledged w:majority writes missing on %s: %v", len(lost), target, lost[:min(5, len(lost))])
	}
	// Refusals name the reason.
	if err := d.Promote(ctx, 0, "db9", 5*time.Second); err == nil || !strings.Contains(err.Error(), "not a member") {
		t.Fatalf("promote db9: %v, want not a member", err)
	}
}

// TestMongoKillPrimaryFastFailover: kill -9 of the primary under write load:
// writes through the proxy succeed again within 5 s (the set's own
// election timeout is 10 s: the arbiters' step-up is what makes it fast),
// and every acknowledged w:majority write is on the new primary.
func TestMongoKillPrimaryFastFailover(t *testing.T) {
	d := startMongoDeploy(t, 1, false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl := proxyClient(t, d, 0, 20*time.Second)
	w := startMongoWriter(ctx, cl, "fo", 1)
	poll(t, 20*time.Second, "writes flow", func() bool { n, _ := w.count(); return n > 50 })
	st, _ := leaderCluster(d.Statuses(), len(d.Arbiters))
	old := d.RS.Member(st.Primary)
	killed := time.Now()
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	n, _ := w.count()
	poll(t, 15*time.Second, "writes succeed again", func() bool { m, _ := w.count(); return m > n+20 })
	acked, times, errs := w.finish()
	again := recovered(times, killed)
	took := again.Sub(killed)
	t.Logf("kill -9 %s: writes acknowledged again after %s (%d errors: %v)", old.Name, took.Round(time.Millisecond), len(errs), errs[:min(3, len(errs))])
	if took > 5*time.Second {
		t.Fatalf("writes came back %s after the kill, want ≤ 5s", took)
	}
	p, err := d.RS.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if lost := missingOn(t, p, "fo", acked); len(lost) > 0 {
		t.Fatalf("%d acknowledged w:majority writes missing on %s: %v", len(lost), p.Name, lost[:min(5, len(lost))])
	}
	h, err := d.History(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	stepped := false
	for _, e := range h {
		stepped = stepped || strings.Contains(e.Reason, "asked to step up")
	}
	if !stepped {
		t.Fatalf("no step-up in the history: %+v", h)
	}
}

// TestMongoProxyCutOffStopsAcknowledging: a proxy cut off from the
// arbiters acknowledges no write once its lease (1 s) ran out, while the
// other proxy goes on writing to the same primary.
func TestMongoProxyCutOffStopsAcknowledging(t *testing.T) {
	d := startMongoDeploy(t, 2, true)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ctx1, cancel1 := context.WithCancel(ctx)
	defer cancel1()
	w1 := startMongoWriter(ctx1, proxyClient(t, d, 0, 20*time.Second), "cut", 1)
	w2 := startMongoWriter(ctx, proxyClient(t, d, 1, 20*time.Second), "cut", 1_000_000)
	poll(t, 20*time.Second, "writes flow", func() bool {
		a, _ := w1.count()
		b, _ := w2.count()
		return a > 50 && b > 50
	})
	cut := time.Now()
	d.Cut("p1/")
	n2, _ := w2.count()
	// Past the lease and its margin, p2 still writing.
	poll(t, 30*time.Second, "p2 writes on after p1's lease ran out", func() bool {
		a2, _ := w2.count()
		return time.Since(cut) > 3*time.Second && a2 > n2+100
	})
	cancel1() // p1's writes are held (or failed): give up on them
	_, times1, errs1 := w1.finish()
	_, _, errs2 := w2.finish()
	last := times1[len(times1)-1]
	t.Logf("p1 cut off: last write acknowledged %s after the cut (lease 1s); %d errors", last.Sub(cut).Round(time.Millisecond), len(errs1))
	if last.Sub(cut) > 1500*time.Millisecond {
		t.Fatalf("p1 acknowledged a write %s after it was cut off (lease 1s)", last.Sub(cut))
	}
	if len(errs2) > 0 {
		t.Fatalf("p2 saw errors: %v", errs2[:min(3, len(errs2))])
	}
	if st, _ := leaderCluster(d.Statuses(), len(d.Arbiters)); st.Phase != "serving" {
		t.Fatalf("a proxy's partition changed the cluster: %+v", st)
	}
}

// TestMongoPausedPrimaryFailover: SIGSTOP of the primary under write load:
// the arbiters step a secondary up and writes through the proxy succeed
// again within 5 s; once the old primary resumes it is a secondary, and
// every acknowledged w:majority write is on the new primary. The write in
// flight on the hung primary is not ended by the failover (the Mongo proxy
// waits for that member's reply), so the client gives each write 1 s, as
// an application with a deadline does: only such writes may fail.
func TestMongoPausedPrimaryFailover(t *testing.T) {
	d := startMongoDeploy(t, 1, false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := startMongoWriterTimeout(ctx, proxyClient(t, d, 0, 20*time.Second), "hang", 1, time.Second)
	poll(t, 20*time.Second, "writes flow", func() bool { n, _ := w.count(); return n > 50 })
	st, _ := leaderCluster(d.Statuses(), len(d.Arbiters))
	old := d.RS.Member(st.Primary)
	paused := time.Now()
	if err := old.Pause(); err != nil {
		t.Fatal(err)
	}
	n, _ := w.count()
	if err := chaos.Poll(ctx, 15*time.Second, func() (bool, error) { m, _ := w.count(); return m > n+20, nil }); err != nil {
		_ = old.Resume()
		t.Fatalf("writes succeed again: %v", err)
	}
	if err := old.Resume(); err != nil {
		t.Fatal(err)
	}
	acked, times, errs := w.finish()
	again := recovered(times, paused)
	t.Logf("SIGSTOP %s: writes acknowledged again after %s (%d client timeouts)", old.Name, again.Sub(paused).Round(time.Millisecond), len(errs))
	if again.Sub(paused) > 5*time.Second {
		t.Fatalf("writes came back %s after the pause, want ≤ 5s", again.Sub(paused))
	}
	for _, e := range errs {
		if !strings.Contains(e, "deadline exceeded") {
			t.Fatalf("client error %q, want only the writes' own deadlines", e)
		}
	}
	p, err := d.RS.Primary(ctx)
	if err != nil || p == old {
		t.Fatalf("primary after the resume: %v, %v; want a new one", p, err)
	}
	if err := chaos.Poll(ctx, 15*time.Second, func() (bool, error) {
		h, err := old.Hello(ctx)
		if err != nil {
			return false, nil
		}
		var hello struct {
			Secondary bool `bson:"secondary"`
		}
		return bson.Unmarshal(h, &hello) == nil && hello.Secondary, nil
	}); err != nil {
		t.Fatalf("%s is not a secondary after it resumed: %v", old.Name, err)
	}
	if lost := missingOn(t, p, "hang", acked); len(lost) > 0 {
		t.Fatalf("%d acknowledged w:majority writes missing on %s: %v", len(lost), p.Name, lost[:min(5, len(lost))])
	}
}

// TestMongoPSAStatusWarns: the status of a set with an arbiter shows the
// arbiter's role and warns that its w:1 writes can be rolled back after a
// failover, on the proxies and the arbiters alike.
func TestMongoPSAStatusWarns(t *testing.T) {
	d := start(t, deploy.Options{Proxies: 1, ProbeInterval: "100ms", Mongo: &chaos.ReplicaSetOptions{Members: 2, Arbiter: true, ElectionTimeout: 10 * time.Second}})
	waitStatus(t, d, 20*time.Second, "every node shows the arbiter and the PSA warning", func(st []admin.Status) bool {
		for _, s := range st {
			if len(s.Clusters) == 0 {
				return false
			}
			c := s.Clusters[0]
			warned, arbiter := false, false
			for _, w := range c.Warnings {
				warned = warned || w.Check == "psa_write_concern" && strings.Contains(w.Message, "write_concern: majority")
			}
			for _, m := range c.Members {
				arbiter = arbiter || m.Name == "arb" && m.Role == "arbiter"
			}
			if !warned || !arbiter || c.Primary == "" {
				return false
			}
		}
		return true
	})
	if err := d.Promote(context.Background(), 0, "arb", 5*time.Second); err == nil || !strings.Contains(err.Error(), "arbiter") {
		t.Fatalf("promote arb: %v, want a refusal naming the arbiter", err)
	}
}

// TestMongoArbitersCutFromPrimaryNoStepUp: every arbiter loses the primary
// while its secondaries (and the proxy) still reach it: the arbiters do
// not ask anyone to step up (a secondary still hears from the primary),
// the epoch stays, and writes through the proxy go on without an error.
func TestMongoArbitersCutFromPrimaryNoStepUp(t *testing.T) {
	d := start(t, deploy.Options{Proxies: 1, ProbeInterval: "100ms", ArbiterToPrimary: true,
		Mongo: &chaos.ReplicaSetOptions{Members: 3, ElectionTimeout: 10 * time.Second}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st := waitStatus(t, d, 20*time.Second, "the arbiters serve a primary", func(st []admin.Status) bool {
		c, ok := leaderCluster(st, len(d.Arbiters))
		return ok && c.Phase == "serving" && c.Primary != ""
	})
	if c, _ := leaderCluster(st, len(d.Arbiters)); c.Primary != "db1" {
		// The links are in front of db1: make it the primary.
		var err error
		poll(t, 20*time.Second, "switchover to db1", func() bool {
			err = d.Promote(ctx, 0, "db1", 20*time.Second)
			return err == nil || !strings.Contains(err.Error(), "cooldown")
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	epoch := d.Statuses()[0].Clusters[0].Epoch
	w := startMongoWriter(ctx, proxyClient(t, d, 0, 20*time.Second), "veto", 1)
	poll(t, 20*time.Second, "writes flow", func() bool { n, _ := w.count(); return n > 20 })
	d.Cut("a")
	poll(t, 15*time.Second, "the leader notes that a secondary still hears from db1", func() bool {
		h, err := d.History(ctx, 0)
		if err != nil {
			return false
		}
		for _, e := range h {
			if strings.Contains(e.Reason, "still hears from it") {
				return true
			}
		}
		return false
	})
	n, _ := w.count()
	poll(t, 10*time.Second, "writes go on", func() bool { m, _ := w.count(); return m > n+50 })
	_, _, errs := w.finish()
	if len(errs) > 0 {
		t.Fatalf("client errors with the arbiters cut from the primary: %v", errs[:min(3, len(errs))])
	}
	for _, s := range d.Statuses() {
		if c := s.Clusters[0]; c.Epoch != epoch || c.Primary != "db1" {
			t.Fatalf("%s: epoch %d primary %s, want %d db1 unchanged", s.Control.Node, c.Epoch, c.Primary, epoch)
		}
	}
	if p, err := d.RS.Primary(ctx); err != nil || p.Name != "db1" {
		t.Fatalf("set primary %v, %v; want db1", p, err)
	}
}
