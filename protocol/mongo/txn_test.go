package mongo

import (
	"context"
	"errors"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/topology"
	tmongo "github.com/dbrouter/dbrouter/topology/mongo"
)

// TestTransactionOnStandaloneIsRefused: FerretDB is a standalone (no
// setName) without transactions; a transaction there would run each
// command on its own. The driver's WithTransaction gets IllegalOperation
// (20) at the first command, and nothing was written.
func TestTransactionOnStandaloneIsRefused(t *testing.T) {
	mc, ft := routedSet(t, 1)
	ft.set(0, func(ms []topology.Member) {
		d, _ := tmongo.DetailOf(ms[0])
		d.SetName = "" // what FerretDB's hello says
	})
	addr, _ := routedProxy(t, mc, ft, Config{})
	c := connect(t, "mongodb://"+addr+"/")
	ctx := testCtx(t)
	sess, err := c.StartSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.EndSession(ctx)
	coll := c.Database("app").Collection("txn")
	_, err = sess.WithTransaction(ctx, func(ctx context.Context) (any, error) {
		_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
		return nil, err
	})
	var se mongo.ServerError
	if !errors.As(err, &se) || !se.HasErrorCode(int(CodeIllegalOperation.Code)) || !errorsContains(err, "standalone") {
		t.Fatalf("transaction on a standalone: %v, want IllegalOperation naming the standalone", err)
	}
	t.Logf("the driver says: %v", err)
	if n, err := connect(t, mc.Members[0].URI()).Database("app").Collection("txn").CountDocuments(ctx, bson.D{}); err != nil || n != 0 {
		t.Fatalf("documents written by the refused transaction: %d %v", n, err)
	}
}

func txnCmd(b *bsoncore.DocumentBuilder, lsid []byte, txn int64, start bool) bsoncore.Document {
	b.AppendDocument("lsid", bsoncore.NewDocumentBuilder().AppendBinary("id", 4, lsid).Build()).
		AppendInt64("txnNumber", txn).AppendBoolean("autocommit", false)
	if start {
		b.AppendBoolean("startTransaction", true)
	}
	return b.AppendString("$db", "app").Build()
}

// TestTransactionIsPinnedToItsMember: the members are FerretDB
// standalones the topology calls a replica set (FerretDB runs each
// command on its own, so what is tested is where they go; find and
// whatsmyuri are the commands it accepts with transaction fields, and
// whatsmyuri names the member connection that ran it). A transaction's
// commands, sent on different client connections, all reach the member
// and the member connection it started on; when that member stops being
// the primary, the next command gets TransientTransactionError with
// DbrouterTransactionLost, never a state-change code.
func TestTransactionIsPinnedToItsMember(t *testing.T) {
	mc, ft := routedSet(t, 3)
	addr, p := routedProxy(t, mc, ft, Config{})
	lsid := []byte("0123456789abcdef")
	a, b := dialRaw(t, addr), dialRaw(t, addr)
	markerOf := func(r bsoncore.Document) string {
		t.Helper()
		batch, _ := r.Lookup("cursor", "firstBatch").ArrayOK()
		vals, _ := batch.Values()
		if !isOK(r) || len(vals) != 1 {
			t.Fatalf("find marker: %v", r)
		}
		return vals[0].Document().Lookup("member").StringValue()
	}
	findMarker := func(c *rawConn, txn int64, start bool) bsoncore.Document {
		return c.command(txnCmd(bsoncore.NewDocumentBuilder().AppendString("find", "marker"), lsid, txn, start))
	}
	whoAmI := func(c *rawConn, txn int64) string {
		t.Helper()
		r := c.command(txnCmd(bsoncore.NewDocumentBuilder().AppendInt32("whatsmyuri", 1), lsid, txn, false))
		if !isOK(r) {
			t.Fatalf("whatsmyuri in the transaction: %v", r)
		}
		return r.Lookup("you").StringValue()
	}
	if got := markerOf(findMarker(a, 1, true)); got != mc.Members[0].Name {
		t.Fatalf("startTransaction ran on %s, want the primary %s", got, mc.Members[0].Name)
	}
	if _, txns := p.OpenCursors(); txns != 1 {
		t.Fatalf("%d transactions held, want 1", txns)
	}
	// Busy the pool: other clients' commands take other connections.
	for range 3 {
		dialRaw(t, addr).command(bsoncore.NewDocumentBuilder().AppendInt32("whatsmyuri", 1).AppendString("$db", "app").Build())
	}
	first := whoAmI(a, 1)
	for _, c := range []*rawConn{b, a, b} {
		if got := whoAmI(c, 1); got != first {
			t.Fatalf("the transaction's commands ran on member connections %s and %s", first, got)
		}
	}
	// The transaction's connection is out of the pool: a command outside
	// it, right after, gets another one (the pool is LIFO, so it would get
	// that one if it had been handed back).
	r := b.command(bsoncore.NewDocumentBuilder().AppendInt32("whatsmyuri", 1).AppendString("$db", "app").Build())
	if other := r.Lookup("you").StringValue(); !isOK(r) || other == first {
		t.Fatalf("a command outside the transaction ran on %s (%v), the transaction's connection", other, r)
	}
	if got := markerOf(findMarker(b, 1, false)); got != mc.Members[0].Name {
		t.Fatalf("find in the transaction on another client connection ran on %s", got)
	}
	// Another transaction number on the same session is not this one.
	r = findMarker(b, 7, false)
	if replyCode(r) != CodeNoSuchTransaction.Code || r.Lookup("errorLabels").String() != `["TransientTransactionError"]` {
		t.Fatalf("a command of an unknown transaction: %v", r)
	}

	ft.set(1, nil)
	r = findMarker(a, 1, false)
	if replyCode(r) != CodeTxnLost.Code || r.Lookup("errorLabels").String() != `["TransientTransactionError"]` {
		t.Fatalf("after the primary moved: %v, want %s with TransientTransactionError", r, CodeTxnLost.Name)
	}
	if _, txns := p.OpenCursors(); txns != 0 {
		t.Fatalf("%d transactions held after the primary moved", txns)
	}
	// The driver runs the transaction again: it starts on the new primary.
	if got := markerOf(findMarker(a, 2, true)); got != mc.Members[1].Name {
		t.Fatalf("the retried transaction started on %s, want the new primary %s", got, mc.Members[1].Name)
	}
	// commitTransaction goes to the transaction's connection; FerretDB has
	// no such command, and says so (its error, not a state change,
	// reaches the client), and the transaction is over.
	r = b.command(txnCmd(bsoncore.NewDocumentBuilder().AppendInt32("commitTransaction", 1), lsid, 2, false))
	if isOK(r) || replyCode(r) != 59 {
		t.Fatalf("commitTransaction on FerretDB: %v, want its CommandNotFound", r)
	}
	if _, txns := p.OpenCursors(); txns != 0 {
		t.Fatalf("%d transactions held after commit", txns)
	}
	// endSessions is answered by the proxy.
	if r := a.command(bsoncore.NewDocumentBuilder().AppendArray("endSessions", bsoncore.NewArrayBuilder().
		AppendDocument(bsoncore.NewDocumentBuilder().AppendBinary("id", 4, lsid).Build()).Build()).AppendString("$db", "admin").Build()); !isOK(r) {
		t.Fatalf("endSessions: %v", r)
	}
}
