package mongo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
	"github.com/dbrouter/dbrouter/proxy"
)

// forwardingProxy starts one FerretDB member and a proxy forwarding to it.
func forwardingProxy(t *testing.T, cfg Config) (string, *Proxy, *chaos.MongoCluster) {
	t.Helper()
	mc := chaos.StartMongoT(t, 1)
	m := mc.Members[0]
	cfg.Cluster = "c1"
	cfg.Members = []Member{{Name: m.Name, Addr: m.Addr()}}
	addr, p := startProxy(t, cfg)
	return addr, p, mc
}

func TestForwardCRUDThroughGoDriver(t *testing.T) {
	addr, p, mc := forwardingProxy(t, Config{})
	c := connect(t, "mongodb://"+addr+"/")
	ctx := testCtx(t)
	coll := c.Database("app").Collection("users")

	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}, {Key: "name", Value: "ada"}}); err != nil {
		t.Fatalf("insert: %v", err)
	}
	var got bson.M
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: 1}}).Decode(&got); err != nil || got["name"] != "ada" {
		t.Fatalf("find: %v %v", got, err)
	}
	ur, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "$set", Value: bson.D{{Key: "name", Value: "grace"}}}})
	if err != nil || ur.ModifiedCount != 1 {
		t.Fatalf("update: %+v %v", ur, err)
	}
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: 1}}).Decode(&got); err != nil || got["name"] != "grace" {
		t.Fatalf("find after update: %v %v", got, err)
	}
	dr, err := coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: 1}})
	if err != nil || dr.DeletedCount != 1 {
		t.Fatalf("delete: %+v %v", dr, err)
	}
	if n, err := coll.CountDocuments(ctx, bson.D{}); err != nil || n != 0 {
		t.Fatalf("count after delete: %d %v", n, err)
	}
	// A member's own error reaches the client unchanged.
	_, err = coll.InsertMany(ctx, []any{bson.D{{Key: "_id", Value: 2}}, bson.D{{Key: "_id", Value: 2}}})
	if !mongo.IsDuplicateKeyError(err) {
		t.Fatalf("duplicate insert: %v, want the member's duplicate key error", err)
	}
	if st := p.MemberConns(); len(st) != 1 || st[mc.Members[0].Name].Open == 0 {
		t.Errorf("MemberConns() = %+v, want open connections to %s", st, mc.Members[0].Name)
	}
}

func TestForwardLargeFindReturnsEveryBatch(t *testing.T) {
	addr, _, _ := forwardingProxy(t, Config{})
	c := connect(t, "mongodb://"+addr+"/")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	coll := c.Database("app").Collection("big")
	const n = 10_000
	docs := make([]any, n)
	for i := range docs {
		docs[i] = bson.D{{Key: "_id", Value: i}, {Key: "pad", Value: "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}
	}
	if _, err := coll.InsertMany(ctx, docs); err != nil {
		t.Fatalf("insertMany: %v", err)
	}
	cur, err := coll.Find(ctx, bson.D{}, options.Find().SetBatchSize(500).SetSort(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		t.Fatalf("find: %v", err)
	}
	defer cur.Close(ctx)
	seen := 0
	for cur.Next(ctx) {
		id, _ := cur.Current.Lookup("_id").AsInt64OK()
		if int(id) != seen {
			t.Fatalf("document %d has _id %d", seen, id)
		}
		seen++
	}
	if err := cur.Err(); err != nil || seen != n {
		t.Fatalf("read %d of %d documents: %v", seen, n, err)
	}
}

func TestForwardInsertManyOf100000SmallDocuments(t *testing.T) {
	addr, _, _ := forwardingProxy(t, Config{})
	c := connect(t, "mongodb://"+addr+"/")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	coll := c.Database("app").Collection("many")
	const n = 100_000
	docs := make([]any, n)
	for i := range docs {
		docs[i] = bson.D{{Key: "_id", Value: i}, {Key: "v", Value: int32(i % 7)}}
	}
	began := time.Now()
	res, err := coll.InsertMany(ctx, docs)
	if err != nil || len(res.InsertedIDs) != n {
		t.Fatalf("insertMany: %v", err)
	}
	t.Logf("insertMany of %d documents through the proxy: %s", n, time.Since(began).Round(time.Millisecond))
	if got, err := coll.CountDocuments(ctx, bson.D{}); err != nil || got != n {
		t.Fatalf("count: %d %v", got, err)
	}
}

// TestForwardUnacknowledgedWriteKeepsRepliesInStep: FerretDB answers a
// moreToCome insert anyway; the proxy must not pass that stray reply off
// as the answer to the client's next command.
func TestForwardUnacknowledgedWriteKeepsRepliesInStep(t *testing.T) {
	addr, _, _ := forwardingProxy(t, Config{})
	c := connect(t, "mongodb://"+addr+"/?maxPoolSize=1")
	ctx := testCtx(t)
	w0 := c.Database("app").Collection("w0", options.Collection().SetWriteConcern(writeconcern.Unacknowledged()))
	acked := c.Database("app").Collection("w0")
	for i := range 20 {
		if _, err := w0.InsertOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
			t.Fatalf("w:0 insert %d: %v", i, err)
		}
		// The next command on the same single connection must get its
		// own reply: a find, not the insert's {n: 1, ok: 1}.
		var got bson.M
		err := acked.FindOne(ctx, bson.D{{Key: "_id", Value: -1}}).Decode(&got)
		if !errors.Is(err, mongo.ErrNoDocuments) {
			t.Fatalf("find after w:0 insert %d: %v %v", i, got, err)
		}
	}
	// w:0 writes are unordered with the next command's connection: poll.
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := acked.CountDocuments(ctx, bson.D{})
		if err == nil && n == 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("count of w:0 inserts: %d %v, want 20", n, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestForwardKillCursors(t *testing.T) {
	addr, _, _ := forwardingProxy(t, Config{})
	rc := dialRaw(t, addr)
	docs := bsoncore.NewArrayBuilder()
	for i := range 10 {
		docs.AppendDocument(bsoncore.NewDocumentBuilder().AppendInt32("_id", int32(i)).Build())
	}
	if r := rc.command(bsoncore.NewDocumentBuilder().AppendString("insert", "k").AppendArray("documents", docs.Build()).
		AppendString("$db", "app").Build()); !isOK(r) {
		t.Fatalf("insert: %v", r)
	}
	r := rc.command(bsoncore.NewDocumentBuilder().AppendString("find", "k").AppendInt32("batchSize", 2).
		AppendString("$db", "app").Build())
	id, ok := r.Lookup("cursor", "id").Int64OK()
	if !isOK(r) || !ok || id == 0 {
		t.Fatalf("find: %v, want an open cursor", r)
	}
	r = rc.command(bsoncore.NewDocumentBuilder().AppendString("killCursors", "k").
		AppendArray("cursors", bsoncore.NewArrayBuilder().AppendInt64(id).Build()).AppendString("$db", "app").Build())
	killed, _ := r.Lookup("cursorsKilled").ArrayOK()
	if !isOK(r) || killed.String() != fmt.Sprintf("[{\"$numberLong\":\"%d\"}]", id) {
		t.Fatalf("killCursors: %v, want cursor %d killed", r, id)
	}
	r = rc.command(bsoncore.NewDocumentBuilder().AppendInt64("getMore", id).AppendString("collection", "k").
		AppendString("$db", "app").Build())
	if isOK(r) {
		t.Fatalf("getMore after killCursors: %v, want an error", r)
	}
}

// TestFerretCursorContinuesOnAnotherConnection: a FerretDB cursor is
// found by a getMore on another connection to the same member while the
// connection that opened it is open; FerretDB closes it when that
// connection closes (its registry binds the cursor to the connection's
// context), which is why the proxy keeps that connection, and sends the
// getMore on it, for as long as the cursor lives (pins.go).
func TestFerretCursorContinuesOnAnotherConnection(t *testing.T) {
	mc := chaos.StartMongoT(t, 1)
	a, b := dialRaw(t, mc.Members[0].Addr()), dialRaw(t, mc.Members[0].Addr())
	docs := bsoncore.NewArrayBuilder()
	for i := range 10 {
		docs.AppendDocument(bsoncore.NewDocumentBuilder().AppendInt32("_id", int32(i)).Build())
	}
	if r := a.command(bsoncore.NewDocumentBuilder().AppendString("insert", "x").AppendArray("documents", docs.Build()).
		AppendString("$db", "app").Build()); !isOK(r) {
		t.Fatalf("insert: %v", r)
	}
	r := a.command(bsoncore.NewDocumentBuilder().AppendString("find", "x").AppendInt32("batchSize", 2).
		AppendString("$db", "app").Build())
	id, _ := r.Lookup("cursor", "id").Int64OK()
	if id == 0 {
		t.Fatalf("find: %v, want an open cursor", r)
	}
	r = b.command(bsoncore.NewDocumentBuilder().AppendInt64("getMore", id).AppendString("collection", "x").
		AppendString("$db", "app").Build())
	batch, _ := r.Lookup("cursor", "nextBatch").ArrayOK()
	vals, _ := batch.Values()
	if !isOK(r) || len(vals) == 0 {
		t.Fatalf("getMore on another connection: %v", r)
	}
}

// TestForwardMemberKilledIsAnErrorThenRecovers: kill -9 gives the client a
// proxy error at once (connect refused, not a hang); after a restart the
// same client works again.
func TestForwardMemberKilledIsAnErrorThenRecovers(t *testing.T) {
	addr, _, mc := forwardingProxy(t, Config{MemberConnectTimeout: time.Second})
	c := connect(t, "mongodb://"+addr+"/?retryWrites=false&retryReads=false")
	ctx := testCtx(t)
	coll := c.Database("app").Collection("k9")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatalf("insert: %v", err)
	}
	if err := mc.Members[0].Kill(); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	err := coll.FindOne(ctx, bson.D{}).Err()
	var se mongo.ServerError
	if !errors.As(err, &se) || !(se.HasErrorCode(int(CodeBackendDown.Code)) || se.HasErrorCode(int(CodeBackendLost.Code))) {
		t.Fatalf("find with the member killed: %v, want %s or %s", err, CodeBackendDown.Name, CodeBackendLost.Name)
	}
	if d := time.Since(began); d > 3*time.Second {
		t.Errorf("error after %s: want it within the connect timeout", d)
	}
	t.Logf("the driver says: %v", err)
	// The pooled connection was lost with the member; the next command
	// dials, and the refusal is BackendDown, at once.
	began = time.Now()
	err = coll.FindOne(ctx, bson.D{}).Err()
	if !errors.As(err, &se) || !se.HasErrorCode(int(CodeBackendDown.Code)) {
		t.Fatalf("second find with the member killed: %v, want %s", err, CodeBackendDown.Name)
	}
	if d := time.Since(began); d > 3*time.Second {
		t.Errorf("error after %s: want it within the connect timeout", d)
	}
	if err := mc.Members[0].Restart(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got bson.M
		err := coll.FindOne(ctx, bson.D{}).Decode(&got)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("find after restart: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestForwardRetryableWriteGetsLabelWhenMemberDown: a write the driver
// would retry (txnNumber) gets RetryableWriteError; a read does not.
func TestForwardRetryableWriteGetsLabelWhenMemberDown(t *testing.T) {
	addr, _ := startProxy(t, Config{Cluster: "c1", MemberConnectTimeout: time.Second,
		Members: []Member{{Name: "gone", Addr: closedAddr(t)}}})
	rc := dialRaw(t, addr)
	lsid := bsoncore.NewDocumentBuilder().AppendBinary("id", 4, make([]byte, 16)).Build()
	r := rc.command(bsoncore.NewDocumentBuilder().AppendString("insert", "x").
		AppendArray("documents", bsoncore.NewArrayBuilder().AppendDocument(bsoncore.NewDocumentBuilder().AppendInt32("_id", 1).Build()).Build()).
		AppendDocument("lsid", lsid).AppendInt64("txnNumber", 1).AppendString("$db", "app").Build())
	if replyCode(r) != CodeBackendDown.Code || r.Lookup("errorLabels").String() != `["RetryableWriteError","NoWritesPerformed"]` {
		t.Fatalf("retryable insert with the member down: %v", r)
	}
	r = rc.command(bsoncore.NewDocumentBuilder().AppendString("find", "x").AppendString("$db", "app").Build())
	if replyCode(r) != CodeBackendDown.Code {
		t.Fatalf("find with the member down: %v", r)
	}
	if _, ok := r.Lookup("errorLabels").ArrayOK(); ok {
		t.Fatalf("find got error labels: %v", r)
	}
}

// closedAddr is a local port nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestForwardStripsChecksum: a request with a checksum is forwarded with
// its header rewritten; the checksum is stripped, not left stale.
func TestForwardStripsChecksum(t *testing.T) {
	addr, _, _ := forwardingProxy(t, Config{})
	rc := dialRaw(t, addr)
	rc.id++
	msg, err := wire.AppendOpMsg(nil, rc.id, 0, wire.ChecksumPresent,
		bsoncore.NewDocumentBuilder().AppendString("find", "none").AppendString("$db", "app").Build())
	if err != nil {
		t.Fatal(err)
	}
	rc.send(msg)
	if r := rc.replyBody(wire.OpCodeMsg); !isOK(r) {
		t.Fatalf("find with a checksum: %v", r)
	}
}

// TestMemberConnAuthenticatesWithSCRAM runs the member side's SCRAM client
// against the proxy's own SCRAM server, standing in for a member.
func TestMemberConnAuthenticatesWithSCRAM(t *testing.T) {
	addr, _ := startProxy(t, Config{Cluster: "member", Users: testUsers})
	mp := newMemberPool(Member{Name: "m", Addr: addr}, 2, 5*time.Second)
	ctx := testCtx(t)
	c, err := mp.dial(ctx, poolKey{}, proxy.Login{User: "alice", Password: "s3cret pass"})
	if err != nil {
		t.Fatalf("dial as alice: %v", err)
	}
	// Authenticated: a command past the auth gate is not Unauthorized.
	if _, err := c.roundTrip(cmd("find")); err == nil || !errorsContains(err, "not routed yet") {
		t.Errorf("find after auth: %v, want not routed yet", err)
	}
	c.Close()
	_, err = mp.dial(ctx, poolKey{}, proxy.Login{User: "alice", Password: "wrong"})
	if !errors.Is(err, proxy.ErrBackendDown) || !errorsContains(err, "Authentication failed") {
		t.Fatalf("dial with a wrong password: %v", err)
	}
}

func errorsContains(err error, s string) bool {
	return err != nil && strings.Contains(err.Error(), s)
}

// TestForwardPausedMember: a member that accepts but says nothing
// (SIGSTOP) costs a new connection the connect timeout, not a hang; and a
// session waiting on its reply does not hold up shutdown.
func TestForwardPausedMember(t *testing.T) {
	mc := chaos.StartMongoT(t, 1)
	m := mc.Members[0]
	p, err := New(Config{Cluster: "c1", MemberConnectTimeout: 500 * time.Millisecond,
		Members: []Member{{Name: m.Name, Addr: m.Addr()}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()

	waiting := dialRaw(t, ln.Addr().String())
	if r := waiting.command(bsoncore.NewDocumentBuilder().AppendString("find", "p").AppendString("$db", "app").Build()); !isOK(r) {
		t.Fatalf("find: %v", r)
	}
	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Resume() }()

	// A second client needs a second connection: its handshake times out.
	fresh := dialRaw(t, ln.Addr().String())
	go func() {
		// Hold the pooled connection with a find the paused member never
		// answers, so the fresh client must dial.
		waiting.id++
		msg, _ := wire.AppendOpMsg(nil, waiting.id, 0, 0,
			bsoncore.NewDocumentBuilder().AppendString("find", "p").AppendString("$db", "app").Build())
		_, _ = waiting.nc.Write(msg)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for p.members[0].InFlight() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the waiting find never reached the member")
		}
		time.Sleep(5 * time.Millisecond)
	}
	began := time.Now()
	r := fresh.command(bsoncore.NewDocumentBuilder().AppendString("find", "p").AppendString("$db", "app").Build())
	if replyCode(r) != CodeBackendDown.Code {
		t.Fatalf("find with the member paused: %v, want %s", r, CodeBackendDown.Name)
	}
	if d := time.Since(began); d > 3*time.Second {
		t.Errorf("answered after %s, want about the connect timeout", d)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return with a session waiting on a paused member")
	}
}

// TestLargeMessagesGoThroughWhole: an insert of a document larger than a
// loopback socket takes in one write (8 MiB) reaches the member whole, and
// its reply and the find that reads it back come through. A request is
// written from inside the read that waits for its answer (sendWaiter);
// what the socket does not take at once must then go the ordinary way,
// not be dropped or waited for.
func TestLargeMessagesGoThroughWhole(t *testing.T) {
	addr, _, _ := forwardingProxy(t, Config{})
	c := connect(t, "mongodb://"+addr+"/")
	ctx := testCtx(t)
	coll := c.Database("app").Collection("large")
	big := strings.Repeat("0123456789abcdef", 8<<20/16)
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}, {Key: "big", Value: big}}); err != nil {
		t.Fatalf("insert 8 MiB: %v", err)
	}
	var got struct{ Big string }
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: 1}}).Decode(&got); err != nil || got.Big != big {
		t.Fatalf("find 8 MiB: %d bytes back, %v", len(got.Big), err)
	}
	// And the connection is still in step for a small one.
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 2}}); err != nil {
		t.Fatalf("insert after: %v", err)
	}
}
