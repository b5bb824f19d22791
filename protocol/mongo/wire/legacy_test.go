package wire_test

import (
	"bytes"
	"testing"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
)

func TestDecodeOpQueryLegacyHandshake(t *testing.T) {
	query := isMasterQuery()
	msg, err := wire.AppendOpQuery(nil, 11, wire.QuerySecondaryOK, "admin.$cmd", 0, -1, query, nil)
	if err != nil {
		t.Fatal(err)
	}
	q, err := wire.DecodeOpQuery(msg)
	if err != nil {
		t.Fatal(err)
	}
	if q.Header.RequestID != 11 || q.Flags != wire.QuerySecondaryOK || q.FullCollectionName != "admin.$cmd" ||
		q.NumberToSkip != 0 || q.NumberToReturn != -1 || !bytes.Equal(q.Query, query) || q.ReturnFieldsSelector != nil {
		t.Fatalf("%+v", q)
	}
	if q.Database() != "admin" || !q.IsCommand() || q.CommandName() != "isMaster" {
		t.Fatalf("db %q command %v name %q", q.Database(), q.IsCommand(), q.CommandName())
	}
}

// Legacy drivers wrap a command in $query when they add $readPreference.
func TestOpQueryCommandNameInsideQueryWrapper(t *testing.T) {
	wrapped := bsoncore.NewDocumentBuilder().
		AppendDocument("$query", bsoncore.NewDocumentBuilder().AppendInt32("ismaster", 1).Build()).
		StartDocument("$readPreference").AppendString("mode", "secondaryPreferred").FinishDocument().
		Build()
	selector := bsoncore.NewDocumentBuilder().AppendInt32("ok", 1).Build()
	msg, err := wire.AppendOpQuery(nil, 1, 0, "admin.$cmd", 0, 1, wrapped, selector)
	if err != nil {
		t.Fatal(err)
	}
	q, err := wire.DecodeOpQuery(msg)
	if err != nil {
		t.Fatal(err)
	}
	if q.CommandName() != "ismaster" || !bytes.Equal(q.ReturnFieldsSelector, selector) {
		t.Fatalf("name %q selector %v", q.CommandName(), q.ReturnFieldsSelector)
	}
	again, err := wire.AppendOpQuery(nil, q.Header.RequestID, q.Flags, q.FullCollectionName, q.NumberToSkip, q.NumberToReturn, q.Query, q.ReturnFieldsSelector)
	if err != nil || !bytes.Equal(again, msg) {
		t.Fatalf("re-encoded differently: %v", err)
	}
}

func TestDecodeOpQueryRejectsMalformed(t *testing.T) {
	query := isMasterQuery()
	good, err := wire.AppendOpQuery(nil, 1, 0, "admin.$cmd", 0, -1, query, nil)
	if err != nil {
		t.Fatal(err)
	}
	qpos := 20 + len("admin.$cmd\x00") + 8
	raw := func(tail ...byte) []byte {
		b := wire.AppendHeader(nil, wire.Header{OpCode: wire.OpCodeQuery})
		return fixLength(append(b, tail...))
	}
	cases := []struct {
		name   string
		msg    []byte
		err    error
		offset int
	}{
		{"opcode is not OP_QUERY", put32(clone(good), 12, int32(wire.OpCodeMsg)), wire.ErrWrongOpCode, 12},
		{"messageLength beyond the bytes", good[:len(good)-2], wire.ErrTruncated, 0},
		{"ends inside flags", raw(0, 0), wire.ErrTooShort, 0},
		{"collection name without NUL", raw(0, 0, 0, 0, 'a', 'd'), wire.ErrTruncated, 20},
		{"ends inside numberToSkip", raw(0, 0, 0, 0, 'a', 0, 1, 2, 3), wire.ErrTruncated, 22},
		{"no query document", raw(0, 0, 0, 0, 'a', 0, 0, 0, 0, 0, 0, 0, 0, 0), wire.ErrTruncated, 30},
		{"query overruns the message", put32(clone(good), qpos, int32(len(query)+1)), wire.ErrTruncated, qpos},
		{"query invalid", func() []byte { b := clone(good); b[len(b)-1] = 7; return b }(), wire.ErrInvalidDocument, qpos},
		{"selector invalid", fixLength(append(clone(good), 5, 0, 0, 0, 1)), wire.ErrInvalidDocument, len(good)},
		{"bytes after the selector", fixLength(append(append(clone(good), query...), 0)), wire.ErrTrailingBytes, len(good) + len(query)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := wire.DecodeOpQuery(c.msg)
			wantMessageError(t, err, c.err, c.offset)
		})
	}
}

func TestAppendOpQueryRejectsBadArguments(t *testing.T) {
	if _, err := wire.AppendOpQuery(nil, 1, 0, "admin\x00.$cmd", 0, -1, isMasterQuery(), nil); err == nil {
		t.Fatal("NUL in the collection name accepted")
	}
	if _, err := wire.AppendOpQuery(nil, 1, 0, "admin.$cmd", 0, -1, bsoncore.Document{1, 2}, nil); err == nil {
		t.Fatal("bad query accepted")
	}
	if _, err := wire.AppendOpQuery(nil, 1, 0, "admin.$cmd", 0, -1, isMasterQuery(), bsoncore.Document{5, 0, 0, 0, 0, 0}); err == nil {
		t.Fatal("selector with trailing bytes accepted")
	}
}

func TestOpReplyRoundTrip(t *testing.T) {
	reply := bsoncore.NewDocumentBuilder().
		AppendBoolean("ismaster", true).
		AppendString("msg", "isdbgrid").
		AppendInt32("maxWireVersion", 21).
		AppendDouble("ok", 1).
		Build()
	msg, err := wire.AppendOpReply(nil, 100, 11, wire.ReplyAwaitCapable, 0, 0, reply)
	if err != nil {
		t.Fatal(err)
	}
	r, err := wire.DecodeOpReply(msg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Header.ResponseTo != 11 || r.Header.RequestID != 100 || r.Flags != wire.ReplyAwaitCapable || r.NumberReturned != 1 {
		t.Fatalf("%+v", r)
	}
	it := r.Docs()
	d, ok := it.Next()
	if !ok || !bytes.Equal(d, reply) {
		t.Fatal("document lost")
	}
	if _, ok := it.Next(); ok {
		t.Fatal("a second document")
	}
	if _, err := wire.AppendOpReply(nil, 1, 1, 0, 0, 0, bsoncore.Document{9}); err == nil {
		t.Fatal("bad document accepted")
	}
}

func TestDecodeOpReplyRejectsMalformed(t *testing.T) {
	doc := bsoncore.NewDocumentBuilder().AppendDouble("ok", 1).Build()
	good, err := wire.AppendOpReply(nil, 1, 1, 0, 0, 0, doc, doc)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		msg    []byte
		err    error
		offset int
	}{
		{"fixed fields cut", fixLength(clone(good[:30])), wire.ErrTooShort, 0},
		{"numberReturned too high", put32(clone(good), 32, 3), wire.ErrCountMismatch, 32},
		{"document overruns the message", put32(clone(good), 36+len(doc), int32(len(doc)+1)), wire.ErrTruncated, 36 + len(doc)},
		{"partial document", fixLength(append(clone(good), 1, 2)), wire.ErrTruncated, len(good)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := wire.DecodeOpReply(c.msg)
			wantMessageError(t, err, c.err, c.offset)
		})
	}
}
