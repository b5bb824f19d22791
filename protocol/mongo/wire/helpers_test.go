package wire_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
)

// The messages below are shaped like what the Go driver and PyMongo send:
// the same keys in the same order, with session and cluster-time fields.

func findBody() bsoncore.Document {
	return bsoncore.NewDocumentBuilder().
		AppendString("find", "users").
		StartDocument("filter").
		StartDocument("age").AppendInt32("$gt", 21).FinishDocument().
		AppendString("country", "NL").
		FinishDocument().
		AppendInt64("limit", 10).
		AppendInt32("batchSize", 101).
		StartDocument("lsid").AppendBinary("id", 4, []byte("0123456789abcdef")).FinishDocument().
		StartDocument("$clusterTime").
		AppendTimestamp("clusterTime", 1764650000, 3).
		StartDocument("signature").AppendBinary("hash", 0, make([]byte, 20)).AppendInt64("keyId", 0).FinishDocument().
		FinishDocument().
		StartDocument("$readPreference").AppendString("mode", "secondaryPreferred").FinishDocument().
		AppendString("$db", "app").
		Build()
}

func helloBody() bsoncore.Document {
	return bsoncore.NewDocumentBuilder().
		AppendInt32("hello", 1).
		AppendBoolean("helloOk", true).
		StartDocument("client").
		StartDocument("driver").AppendString("name", "mongo-go-driver").AppendString("version", "v2.10.0").FinishDocument().
		StartDocument("os").AppendString("type", "linux").AppendString("architecture", "amd64").FinishDocument().
		AppendString("platform", "go1.26.8").
		FinishDocument().
		AppendArray("compression", bsoncore.NewArrayBuilder().Build()).
		AppendString("$db", "admin").
		Build()
}

func isMasterQuery() bsoncore.Document {
	return bsoncore.NewDocumentBuilder().
		AppendInt32("isMaster", 1).
		AppendBoolean("helloOk", true).
		StartDocument("client").
		StartDocument("driver").AppendString("name", "PyMongo").AppendString("version", "3.11.4").FinishDocument().
		FinishDocument().
		Build()
}

func insertBody() bsoncore.Document {
	return bsoncore.NewDocumentBuilder().
		AppendString("insert", "users").
		AppendBoolean("ordered", true).
		StartDocument("writeConcern").AppendString("w", "majority").FinishDocument().
		AppendString("$db", "app").
		Build()
}

// docs concatenates n small documents, as an insert's document sequence.
func docs(n int) []byte {
	var out []byte
	for i := 0; i < n; i++ {
		out = append(out, bsoncore.NewDocumentBuilder().
			AppendInt32("_id", int32(i)).AppendString("name", "user").Build()...)
	}
	return out
}

func mustMsg(t testing.TB, flags wire.MsgFlags, body bsoncore.Document, seqs ...wire.Sequence) []byte {
	t.Helper()
	b, err := wire.AppendOpMsg(nil, 7, 0, flags, body, seqs...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixLength rewrites messageLength to len(b), after a test edited the body.
func fixLength(b []byte) []byte {
	binary.LittleEndian.PutUint32(b, uint32(len(b)))
	return b
}

func put32(b []byte, off int, v int32) []byte {
	binary.LittleEndian.PutUint32(b[off:], uint32(v))
	return b
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// wantMessageError checks that err is a *MessageError with the sentinel and
// offset a malformed-input case expects.
func wantMessageError(t *testing.T, err, sentinel error, offset int) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v at offset %d", sentinel, offset)
	}
	if !errors.Is(err, sentinel) {
		t.Fatalf("error %v, want %v", err, sentinel)
	}
	var me *wire.MessageError
	if !errors.As(err, &me) {
		t.Fatalf("error %v is not a *MessageError", err)
	}
	if me.Offset != offset {
		t.Fatalf("error %v at offset %d, want %d", err, me.Offset, offset)
	}
}
