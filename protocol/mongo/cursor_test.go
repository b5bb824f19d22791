package mongo

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/topology"
)

// seedBig writes n documents {_id: i, member} on every member directly.
func seedBig(t *testing.T, ctx context.Context, uris []string, names []string, n int) {
	t.Helper()
	for k, uri := range uris {
		docs := make([]any, n)
		for i := range docs {
			docs[i] = bson.D{{Key: "_id", Value: i}, {Key: "member", Value: names[k]}, {Key: "pad", Value: "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}
		}
		if _, err := connect(t, uri).Database("app").Collection("big").InsertMany(ctx, docs); err != nil {
			t.Fatalf("seed %s: %v", names[k], err)
		}
	}
}

// TestCursorsThroughProxyWithConcurrentClients: several clients each read
// 10,000 documents in batches of 500 from members chosen by read
// preference; every getMore must reach the member (and connection) that
// opened the cursor, and each cursor must read one member's documents
// only, all of them, in order. Cursor ids from different members collide
// (FerretDB numbers them from 1 in each process); the proxy's do not.
func TestCursorsThroughProxyWithConcurrentClients(t *testing.T) {
	mc, ft := routedSet(t, 3)
	addr, p := routedProxy(t, mc, ft, Config{LocalThreshold: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var uris, names []string
	for _, m := range mc.Members {
		uris, names = append(uris, m.URI()), append(names, m.Name)
	}
	const n = 10_000
	seedBig(t, ctx, uris, names, n)

	var wg sync.WaitGroup
	errs := make(chan error, 16)
	seenMembers := sync.Map{}
	for k := range 6 {
		c := connect(t, "mongodb://"+addr+"/?maxPoolSize=3")
		rp := []*readpref.ReadPref{readpref.Primary(), readpref.Secondary(), readpref.Nearest()}[k%3]
		wg.Add(1)
		go func() {
			defer wg.Done()
			coll := c.Database("app").Collection("big", options.Collection().SetReadPreference(rp))
			for round := range 2 {
				cur, err := coll.Find(ctx, bson.D{}, options.Find().SetBatchSize(500).SetSort(bson.D{{Key: "_id", Value: 1}}))
				if err != nil {
					errs <- fmt.Errorf("client %d: find: %w", k, err)
					return
				}
				seen, member := 0, ""
				for cur.Next(ctx) {
					id, _ := cur.Current.Lookup("_id").AsInt64OK()
					m := cur.Current.Lookup("member").StringValue()
					if member == "" {
						member = m
						seenMembers.Store(m, true)
					}
					if int(id) != seen || m != member {
						errs <- fmt.Errorf("client %d round %d: document %d is _id %d of %s (cursor began on %s)", k, round, seen, id, m, member)
						cur.Close(ctx)
						return
					}
					seen++
				}
				if err := cur.Err(); err != nil || seen != n {
					errs <- fmt.Errorf("client %d round %d: read %d of %d: %v", k, round, seen, n, err)
					return
				}
				cur.Close(ctx)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	count := 0
	seenMembers.Range(func(any, any) bool { count++; return true })
	if count < 2 {
		t.Errorf("cursors ran on %d member(s), want several", count)
	}
	// Exhausted cursors hand their connections back.
	if cursors, _ := p.OpenCursors(); cursors != 0 {
		t.Errorf("%d cursors still open after every cursor was exhausted", cursors)
	}
}

// TestCursorKillCursorsSplitByMember: killCursors with cursors of two
// members (and an id the proxy never issued) is answered in one merged
// reply; the killed cursors are gone.
func TestCursorKillCursorsSplitByMember(t *testing.T) {
	mc, ft := routedSet(t, 3)
	addr, p := routedProxy(t, mc, ft, Config{LocalThreshold: time.Millisecond})
	ctx := testCtx(t)
	var uris, names []string
	for _, m := range mc.Members {
		uris, names = append(uris, m.URI()), append(names, m.Name)
	}
	seedBig(t, ctx, uris, names, 50)
	rc := dialRaw(t, addr)
	open := func(mode string) int64 {
		r := rc.command(bsoncore.NewDocumentBuilder().AppendString("find", "big").AppendInt32("batchSize", 2).
			AppendDocument("$readPreference", bsoncore.NewDocumentBuilder().AppendString("mode", mode).Build()).
			AppendString("$db", "app").Build())
		id, ok := r.Lookup("cursor", "id").Int64OK()
		if !isOK(r) || !ok || id == 0 {
			t.Fatalf("find (%s): %v", mode, r)
		}
		return id
	}
	a, b := open("primary"), open("secondary")
	if a == b {
		t.Fatalf("two members' cursors got one proxy id %d", a)
	}
	r := rc.command(bsoncore.NewDocumentBuilder().AppendString("killCursors", "big").
		AppendArray("cursors", bsoncore.NewArrayBuilder().AppendInt64(a).AppendInt64(b).AppendInt64(12345).Build()).
		AppendString("$db", "app").Build())
	killed := r.Lookup("cursorsKilled").String()
	notFound := r.Lookup("cursorsNotFound").String()
	if !isOK(r) || killed != fmt.Sprintf(`[{"$numberLong":"%d"},{"$numberLong":"%d"}]`, a, b) && killed != fmt.Sprintf(`[{"$numberLong":"%d"},{"$numberLong":"%d"}]`, b, a) ||
		notFound != `[{"$numberLong":"12345"}]` {
		t.Fatalf("killCursors: %v", r)
	}
	for _, id := range []int64{a, b} {
		r := rc.command(bsoncore.NewDocumentBuilder().AppendInt64("getMore", id).AppendString("collection", "big").AppendString("$db", "app").Build())
		if replyCode(r) != CodeCursorNotFound.Code {
			t.Fatalf("getMore after killCursors: %v, want CursorNotFound", r)
		}
	}
	if cursors, _ := p.OpenCursors(); cursors != 0 {
		t.Errorf("%d cursors open after killCursors", cursors)
	}
	// The Go driver closing a cursor early sends killCursors with the
	// proxy's id: the cursor and its connection are let go.
	c := connect(t, "mongodb://"+addr+"/")
	cur, err := c.Database("app").Collection("big", options.Collection().SetReadPreference(readpref.Secondary())).
		Find(ctx, bson.D{}, options.Find().SetBatchSize(5))
	if err != nil || !cur.Next(ctx) {
		t.Fatalf("find: %v", err)
	}
	if cursors, _ := p.OpenCursors(); cursors != 1 {
		t.Fatalf("%d cursors open, want the driver's", cursors)
	}
	if err := cur.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	if cursors, _ := p.OpenCursors(); cursors != 0 {
		t.Errorf("%d cursors open after the driver closed its cursor", cursors)
	}
}

// TestCursorWhoseMemberIsKilledIsNotFound: a member killed under an open
// cursor: the next getMore is CursorNotFound at once, not a hang, and the
// driver keeps working against the other members.
func TestCursorWhoseMemberIsKilledIsNotFound(t *testing.T) {
	mc, ft := routedSet(t, 3)
	addr, p := routedProxy(t, mc, ft, Config{LocalThreshold: time.Millisecond})
	ctx := testCtx(t)
	var uris, names []string
	for _, m := range mc.Members {
		uris, names = append(uris, m.URI()), append(names, m.Name)
	}
	seedBig(t, ctx, uris, names, 100)
	c := connect(t, "mongodb://"+addr+"/?retryReads=false")
	coll := c.Database("app").Collection("big", options.Collection().SetReadPreference(readpref.Secondary()))
	cur, err := coll.Find(ctx, bson.D{}, options.Find().SetBatchSize(10))
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close(ctx)
	for range 10 {
		if !cur.Next(ctx) {
			t.Fatalf("first batch: %v", cur.Err())
		}
	}
	if m := cur.Current.Lookup("member").StringValue(); m != mc.Members[1].Name {
		t.Fatalf("secondary cursor on %s, want %s", m, mc.Members[1].Name)
	}
	if err := mc.Members[1].Kill(); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	cur.Next(ctx)
	var se mongo.ServerError
	if err := cur.Err(); !errors.As(err, &se) || !se.HasErrorCode(int(CodeCursorNotFound.Code)) {
		t.Fatalf("getMore with the member killed: %v, want CursorNotFound", err)
	}
	if d := time.Since(began); d > 3*time.Second {
		t.Errorf("CursorNotFound after %s, want it at once", d)
	}
	if cursors, _ := p.OpenCursors(); cursors != 0 {
		t.Errorf("%d cursors still held after their member died", cursors)
	}
	// The same client goes on: the monitor (here, the test) marks the
	// member unreachable and reads go to the other secondary.
	ft.set(0, func(ms []topology.Member) { ms[1].Reachable = false })
	if got := answeredBy(t, ctx, c, readpref.Secondary()); got != mc.Members[2].Name {
		t.Fatalf("read after the kill answered by %s", got)
	}

	// A cursor on a member the topology judges unreachable (paused: its
	// connection would hang until MemberTimeout) is not found at once.
	ft.set(0, func(ms []topology.Member) { ms[1].Reachable = false })
	cur2, err := coll.Find(ctx, bson.D{}, options.Find().SetBatchSize(10))
	if err != nil {
		t.Fatal(err)
	}
	defer cur2.Close(ctx)
	for range 10 {
		cur2.Next(ctx)
	}
	if err := mc.Members[2].Pause(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = mc.Members[2].Resume() }()
	ft.set(0, func(ms []topology.Member) { ms[1].Reachable, ms[2].Reachable = false, false })
	began = time.Now()
	cur2.Next(ctx)
	if err := cur2.Err(); !errors.As(err, &se) || !se.HasErrorCode(int(CodeCursorNotFound.Code)) {
		t.Fatalf("getMore with the member paused and unreachable: %v, want CursorNotFound", err)
	}
	if d := time.Since(began); d > 3*time.Second {
		t.Errorf("CursorNotFound after %s, want it at once", d)
	}
}

// TestCursorIdleTimesOut: an abandoned cursor is dropped after
// CursorTimeout and its connection closed.
func TestCursorIdleTimesOut(t *testing.T) {
	mc, ft := routedSet(t, 1)
	addr, p := routedProxy(t, mc, ft, Config{CursorTimeout: 300 * time.Millisecond})
	ctx := testCtx(t)
	seedBig(t, ctx, []string{mc.Members[0].URI()}, []string{mc.Members[0].Name}, 20)
	rc := dialRaw(t, addr)
	r := rc.command(bsoncore.NewDocumentBuilder().AppendString("find", "big").AppendInt32("batchSize", 2).AppendString("$db", "app").Build())
	id, _ := r.Lookup("cursor", "id").Int64OK()
	if id == 0 {
		t.Fatalf("find: %v", r)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if cursors, _ := p.OpenCursors(); cursors == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the idle cursor was never dropped")
		}
		time.Sleep(20 * time.Millisecond)
	}
	r = rc.command(bsoncore.NewDocumentBuilder().AppendInt64("getMore", id).AppendString("collection", "big").AppendString("$db", "app").Build())
	if replyCode(r) != CodeCursorNotFound.Code {
		t.Fatalf("getMore after the timeout: %v", r)
	}
	// The reaper closes the connection just after forgetting the cursor.
	for st := p.MemberConns()[mc.Members[0].Name]; st.Open != st.Idle; st = p.MemberConns()[mc.Members[0].Name] {
		if time.Now().After(deadline) {
			t.Fatalf("member connections %+v: the cursor's was not closed", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCursorConnsAreBounded: with MaxCursorConns 2, a third open cursor
// on a member drops the least recently used one's (CursorNotFound to its
// client) instead of holding a third connection: forgotten cursors cannot
// take every connection for CursorTimeout.
func TestCursorConnsAreBounded(t *testing.T) {
	mc, ft := routedSet(t, 1)
	addr, p := routedProxy(t, mc, ft, Config{MaxCursorConns: 2})
	ctx := testCtx(t)
	seedBig(t, ctx, []string{mc.Members[0].URI()}, []string{mc.Members[0].Name}, 20)
	var ids []int64
	for range 3 {
		r := dialRaw(t, addr).command(bsoncore.NewDocumentBuilder().AppendString("find", "big").AppendInt32("batchSize", 2).AppendString("$db", "app").Build())
		id, _ := r.Lookup("cursor", "id").Int64OK()
		if id == 0 {
			t.Fatalf("find: %v", r)
		}
		ids = append(ids, id)
		time.Sleep(5 * time.Millisecond)
	}
	if cursors, _ := p.OpenCursors(); cursors != 2 {
		t.Fatalf("%d cursors held, want 2", cursors)
	}
	rc := dialRaw(t, addr)
	getMore := func(id int64) bsoncore.Document {
		return rc.command(bsoncore.NewDocumentBuilder().AppendInt64("getMore", id).AppendString("collection", "big").AppendString("$db", "app").Build())
	}
	if r := getMore(ids[0]); replyCode(r) != CodeCursorNotFound.Code {
		t.Fatalf("getMore of the evicted cursor: %v", r)
	}
	for _, id := range ids[1:] {
		if r := getMore(id); !isOK(r) {
			t.Fatalf("getMore of a kept cursor: %v", r)
		}
	}
}
