package mongo

import (
	"encoding/binary"
	"testing"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
)

// TestStateChangeCodes is the table of the SDAM spec's state-change
// errors and what the proxy makes of them: every one is kept from the
// client; those refused before running go elsewhere (a write to the next
// primary), those interrupted while running are an unknown outcome for a
// write.
func TestStateChangeCodes(t *testing.T) {
	for _, tc := range []struct {
		code   int32
		errmsg string
		want   stateChange
	}{
		{10107, "", scRefused},     // NotWritablePrimary
		{13435, "", scRefused},     // NotPrimaryNoSecondaryOk
		{10058, "", scRefused},     // LegacyNotPrimary
		{13436, "", scRefused},     // NotPrimaryOrSecondary
		{91, "", scRefused},        // ShutdownInProgress
		{11602, "", scInterrupted}, // InterruptedDueToReplStateChange
		{11600, "", scInterrupted}, // InterruptedAtShutdown
		{189, "", scInterrupted},   // PrimarySteppedDown
		{0, "not master", scRefused},
		{0, "node is recovering", scRefused},
		{0, "not master or secondary; cannot currently read from this replSet member", scRefused},
		{11000, "E11000 duplicate key", scNone},
		{43, "cursor not found", scNone},
		{59, "no such command", scNone},
		{0, "something else", scNone},
	} {
		if got := stateChangeOf(tc.code, []byte(tc.errmsg)); got != tc.want {
			t.Errorf("code %d %q: %d, want %d", tc.code, tc.errmsg, got, tc.want)
		}
	}
}

func replyMsg(t *testing.T, body bsoncore.Document) []byte {
	t.Helper()
	msg, err := wire.AppendOpMsg(nil, 1, 2, 0, body)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func TestInspectReply(t *testing.T) {
	b := bsoncore.NewDocumentBuilder
	cursor := func(id int64) bsoncore.Document {
		return b().AppendDocument("cursor", b().AppendArray("firstBatch", bsoncore.NewArrayBuilder().Build()).
			AppendInt64("id", id).AppendString("ns", "app.x").Build()).AppendDouble("ok", 1).Build()
	}
	for _, tc := range []struct {
		name       string
		body       bsoncore.Document
		ok         bool
		change     stateChange
		wce        bool
		cursorID   int64
		noCursorID bool
	}{
		{name: "ok", body: b().AppendInt32("n", 1).AppendDouble("ok", 1).Build(), ok: true, noCursorID: true},
		{name: "cursor", body: cursor(77), ok: true, cursorID: 77},
		{name: "exhausted cursor", body: cursor(0), ok: true},
		{name: "not writable primary", body: b().AppendDouble("ok", 0).AppendString("errmsg", "not primary").
			AppendInt32("code", 10107).AppendString("codeName", "NotWritablePrimary").Build(), change: scRefused, noCursorID: true},
		{name: "interrupted", body: b().AppendInt32("ok", 0).AppendInt32("code", 11602).Build(), change: scInterrupted, noCursorID: true},
		{name: "write concern error", body: b().AppendInt32("n", 1).AppendDocument("writeConcernError",
			b().AppendInt32("code", 91).AppendString("errmsg", "shutting down").Build()).AppendDouble("ok", 1).Build(),
			ok: true, change: scRefused, wce: true, noCursorID: true},
		{name: "duplicate key", body: b().AppendDouble("ok", 0).AppendInt32("code", 11000).Build(), noCursorID: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := replyMsg(t, tc.body)
			ri := inspectReply(msg)
			if ri.ok != tc.ok || ri.change != tc.change || ri.wce != tc.wce {
				t.Fatalf("got %+v", ri)
			}
			if tc.noCursorID {
				if ri.cursorOff >= 0 {
					t.Fatalf("cursor offset %d in a reply without a cursor", ri.cursorOff)
				}
				return
			}
			if ri.cursorID != tc.cursorID || ri.cursorOff < 0 {
				t.Fatalf("cursor id %d at %d, want %d", ri.cursorID, ri.cursorOff, tc.cursorID)
			}
			// The offset is where the id is: rewriting it there gives a
			// reply with the new id and nothing else changed.
			binary.LittleEndian.PutUint64(msg[ri.cursorOff:], 4242)
			m, err := wire.DecodeOpMsg(msg)
			if err != nil {
				t.Fatal(err)
			}
			if id, _ := m.Body().Lookup("cursor", "id").Int64OK(); id != 4242 {
				t.Fatalf("after the rewrite the id is %d: %v", id, m.Body())
			}
		})
	}
}

// FuzzInspectReply: any member reply is read without a panic, and a
// cursor offset, when reported, points at 8 bytes inside the message.
func FuzzInspectReply(f *testing.F) {
	b := bsoncore.NewDocumentBuilder
	for _, body := range []bsoncore.Document{
		b().AppendDocument("cursor", b().AppendInt64("id", 5).Build()).AppendDouble("ok", 1).Build(),
		b().AppendDouble("ok", 0).AppendInt32("code", 10107).Build(),
		b().AppendDocument("writeConcernError", b().AppendInt32("code", 11602).Build()).AppendDouble("ok", 1).Build(),
	} {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		msg := opMsg(1, 0, body)
		ri := inspectReply(msg)
		if ri.cursorOff >= 0 && ri.cursorOff+8 > len(msg) {
			t.Fatalf("cursor offset %d beyond a %d-byte message", ri.cursorOff, len(msg))
		}
		_ = txnOf(body) // the request side's reader of the same bytes
		if len(body) >= 5 && bsoncore.Document(body).Validate() == nil {
			_ = classify("aggregate", body)
			_ = classify("mapReduce", body)
		}
	})
}
