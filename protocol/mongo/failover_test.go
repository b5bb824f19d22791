package mongo

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/router"
	"github.com/dbrouter/dbrouter/topology"
)

// load runs writers (inserts of unique _ids) and readers (by read
// preference) through c until stop closes, recording every error a driver
// call returned and every acknowledged _id.
type load struct {
	wg     sync.WaitGroup
	mu     sync.Mutex
	errs   []error
	acked  []int64
	writes atomic.Int64
	reads  atomic.Int64
}

func startLoad(ctx context.Context, c *mongo.Client, writers int, rps []*readpref.ReadPref, stop <-chan struct{}) *load {
	l := &load{}
	next := atomic.Int64{}
	coll := c.Database("app").Collection("load")
	for range writers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := next.Add(1)
				if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: id}}); err != nil {
					l.fail(fmt.Errorf("insert %d: %w", id, err))
					continue
				}
				l.writes.Add(1)
				l.mu.Lock()
				l.acked = append(l.acked, id)
				l.mu.Unlock()
			}
		}()
	}
	for _, rp := range rps {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			rcoll := c.Database("app").Collection("marker", options.Collection().SetReadPreference(rp))
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := rcoll.FindOne(ctx, bson.D{{Key: "_id", Value: 1}}).Err(); err != nil {
					l.fail(fmt.Errorf("read %v: %w", rp, err))
					continue
				}
				l.reads.Add(1)
			}
		}()
	}
	return l
}

func (l *load) fail(err error) {
	l.mu.Lock()
	l.errs = append(l.errs, err)
	l.mu.Unlock()
}

// check: no error reached a driver, work was done, and every acknowledged
// write is on some member.
func (l *load) check(t *testing.T, ctx context.Context, mc *chaos.MongoCluster, alive []int) {
	t.Helper()
	l.wg.Wait()
	for i, err := range l.errs {
		if i == 10 {
			t.Errorf("... %d errors in all", len(l.errs))
			break
		}
		t.Errorf("a driver saw: %v", err)
	}
	if l.writes.Load() == 0 || l.reads.Load() == 0 {
		t.Fatalf("%d writes, %d reads acknowledged: the load did not run", l.writes.Load(), l.reads.Load())
	}
	t.Logf("%d writes and %d reads acknowledged", l.writes.Load(), l.reads.Load())
	have := map[int64]bool{}
	for _, i := range alive {
		cur, err := connect(t, mc.Members[i].URI()).Database("app").Collection("load").Find(ctx, bson.D{})
		if err != nil {
			t.Fatal(err)
		}
		for cur.Next(ctx) {
			id, _ := cur.Current.Lookup("_id").AsInt64OK()
			have[id] = true
		}
		if err := cur.Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range l.acked {
		if !have[id] {
			t.Errorf("acknowledged insert %d is on no member", id)
		}
	}
}

// TestSwitchoverMidLoadShowsNoErrors: the control plane changes the
// primary twice under load (a change in progress, then another member
// named), and the snapshot follows late. Writes in the change are held,
// writes answered after their epoch ended are retried by the driver
// (RetryableWriteError) on the new primary, and no error reaches a
// driver.
func TestSwitchoverMidLoadShowsNoErrors(t *testing.T) {
	mc, ft := routedSet(t, 3)
	auth := newFakeAuthority(mc.Members[0].Name)
	addr, _ := routedProxy(t, mc, ft, Config{Authority: auth, WriteHold: 5 * time.Second})
	c := connect(t, "mongodb://"+addr+"/")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stop := make(chan struct{})
	l := startLoad(ctx, c, 4, []*readpref.ReadPref{readpref.Primary(), readpref.PrimaryPreferred(), readpref.SecondaryPreferred(), readpref.Nearest()}, stop)
	for _, next := range []int{1, 2} {
		time.Sleep(300 * time.Millisecond)
		auth.set("", router.ErrChanging)
		time.Sleep(300 * time.Millisecond)
		auth.set(mc.Members[next].Name, nil)
		time.Sleep(100 * time.Millisecond) // the snapshot lags the control plane
		ft.set(next, nil)
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	l.check(t, ctx, mc, []int{0, 1, 2})
}

// TestPrimaryKilledMidLoadShowsNoErrors: the primary is killed (kill -9)
// under load; the topology sees it unreachable and no primary (an
// election) for a while, then another member as primary. Writes in
// flight on the dead member are answered with RetryableWriteError (the
// driver retries them), writes that find it down are held and sent to the
// next primary, reads go to the members left; no error reaches a driver.
func TestPrimaryKilledMidLoadShowsNoErrors(t *testing.T) {
	mc, ft := routedSet(t, 3)
	addr, _ := routedProxy(t, mc, ft, Config{WriteHold: 5 * time.Second, MemberConnectTimeout: time.Second})
	c := connect(t, "mongodb://"+addr+"/")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stop := make(chan struct{})
	l := startLoad(ctx, c, 4, []*readpref.ReadPref{readpref.Primary(), readpref.PrimaryPreferred(), readpref.SecondaryPreferred(), readpref.Secondary()}, stop)
	time.Sleep(500 * time.Millisecond)
	if err := mc.Members[0].Kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the monitor's failure detection
	ft.set(-1, func(ms []topology.Member) { ms[0].Reachable, ms[0].Role = false, topology.RoleUnknown })
	time.Sleep(500 * time.Millisecond) // the election
	ft.set(1, func(ms []topology.Member) { ms[0].Reachable, ms[0].Role = false, topology.RoleUnknown })
	time.Sleep(500 * time.Millisecond)
	close(stop)
	l.wg.Wait()
	// These members do not replicate: what the killed member acknowledged
	// before it died is on its disk, and the check reads it back.
	if err := mc.Members[0].Restart(ctx); err != nil {
		t.Fatal(err)
	}
	l.check(t, ctx, mc, []int{0, 1, 2})
}

// TestWriteLostInFlightIsOutcomeUnknown: a write whose member connection
// dies under it may have run. Without a txnNumber (retryWrites off) the
// client gets DbrouterOutcomeUnknown (9510), which no driver takes for a
// state change or a network error; with one it also gets
// RetryableWriteError, so the driver retries it.
func TestWriteLostInFlightIsOutcomeUnknown(t *testing.T) {
	mc, ft := routedSet(t, 1)
	addr, _ := routedProxy(t, mc, ft, Config{WriteHold: 500 * time.Millisecond})
	insert := func(rc *rawConn, id int32, txn bool) bsoncore.Document {
		b := bsoncore.NewDocumentBuilder().AppendString("insert", "lost").
			AppendArray("documents", bsoncore.NewArrayBuilder().AppendDocument(bsoncore.NewDocumentBuilder().AppendInt32("_id", id).Build()).Build())
		if txn {
			b.AppendDocument("lsid", bsoncore.NewDocumentBuilder().AppendBinary("id", 4, make([]byte, 16)).Build()).AppendInt64("txnNumber", int64(id))
		}
		return rc.command(b.AppendString("$db", "app").Build())
	}
	for _, tc := range []struct {
		txn    bool
		labels string
	}{{false, ""}, {true, `["RetryableWriteError"]`}} {
		rc := dialRaw(t, addr)
		if r := insert(rc, 1, tc.txn); !isOK(r) {
			t.Fatalf("insert: %v", r)
		}
		if err := mc.Members[0].Kill(); err != nil {
			t.Fatal(err)
		}
		r := insert(rc, 2, tc.txn)
		labels := ""
		if v, err := r.LookupErr("errorLabels"); err == nil {
			labels = v.String()
		}
		if replyCode(r) != CodeOutcomeUnknown.Code || labels != tc.labels {
			t.Fatalf("write lost in flight (txnNumber %v): %v, want %s with labels %q", tc.txn, r, CodeOutcomeUnknown.Name, tc.labels)
		}
		ctx := testCtx(t)
		if err := mc.Members[0].Restart(ctx); err != nil {
			t.Fatal(err)
		}
		connect(t, mc.Members[0].URI()).Database("app").Collection("lost").Drop(ctx)
	}
}
