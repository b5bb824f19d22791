package wire_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"testing"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
)

var update = flag.Bool("update", false, "rewrite the seed corpus in testdata/fuzz")

// seed is a message a driver or server really sends, built with the encoder
// and bsoncore's builders.
type seed struct {
	name string
	msg  []byte
}

func opMsgSeeds(t testing.TB) []seed {
	getMore := bsoncore.NewDocumentBuilder().
		AppendInt64("getMore", 8521490245).AppendString("collection", "users").
		AppendInt32("batchSize", 101).AppendString("$db", "app").Build()
	bulk := bsoncore.NewDocumentBuilder().
		AppendInt32("bulkWrite", 1).AppendBoolean("ordered", false).AppendString("$db", "admin").Build()
	ns := bsoncore.NewDocumentBuilder().AppendString("ns", "app.users").Build()
	ops := bsoncore.NewDocumentBuilder().AppendInt32("insert", 0).
		AppendDocument("document", bsoncore.NewDocumentBuilder().AppendInt32("_id", 1).Build()).Build()
	return []seed{
		{"find", mustMsg(t, 0, findBody())},
		{"hello-exhaust", mustMsg(t, wire.ExhaustAllowed, helloBody())},
		{"insert-sequence-checksum", mustMsg(t, wire.ChecksumPresent, insertBody(),
			wire.Sequence{Identifier: "documents", Documents: docs(3)})},
		{"insert-sequence-first", rawMsg(0, seqSec("documents", docs(2)), bodySec(insertBody()))},
		{"getmore-moretocome", mustMsg(t, wire.MoreToCome, getMore)},
		{"bulkwrite-two-sequences", mustMsg(t, 0, bulk,
			wire.Sequence{Identifier: "ops", Documents: append(clone(ops), ops...)},
			wire.Sequence{Identifier: "nsInfo", Documents: ns})},
	}
}

func opQuerySeeds(t testing.TB) []seed {
	ismaster, err := wire.AppendOpQuery(nil, 1, 0, "admin.$cmd", 0, -1, isMasterQuery(), nil)
	if err != nil {
		t.Fatal(err)
	}
	wrapped := bsoncore.NewDocumentBuilder().
		AppendDocument("$query", bsoncore.NewDocumentBuilder().AppendInt32("ismaster", 1).Build()).
		StartDocument("$readPreference").AppendString("mode", "nearest").FinishDocument().Build()
	withSelector, err := wire.AppendOpQuery(nil, 2, wire.QuerySecondaryOK, "admin.$cmd", 0, 1, wrapped,
		bsoncore.NewDocumentBuilder().AppendInt32("ismaster", 1).Build())
	if err != nil {
		t.Fatal(err)
	}
	return []seed{{"ismaster", ismaster}, {"query-wrapper-selector", withSelector}}
}

func streamSeeds(t testing.TB) []seed {
	reply, err := wire.AppendOpReply(nil, 5, 1, 0, 0, 0,
		bsoncore.NewDocumentBuilder().AppendBoolean("ismaster", true).AppendString("msg", "isdbgrid").AppendDouble("ok", 1).Build())
	if err != nil {
		t.Fatal(err)
	}
	var all []byte
	var out []seed
	for _, s := range append(append(opMsgSeeds(t), opQuerySeeds(t)...), seed{"reply", reply}, seed{"compressed", compressedMsg()}) {
		all = append(all, s.msg...)
		out = append(out, s)
	}
	return append(out, seed{"stream", all})
}

// checkMessage decodes m by its opcode and holds the properties every fuzz
// target shares: an error is a *MessageError, and what decodes re-encodes to
// the same bytes.
func checkMessage(t *testing.T, msg []byte) {
	h, err := wire.ParseHeader(msg)
	if err != nil {
		t.Fatalf("header: %v", err)
	}
	switch h.OpCode {
	case wire.OpCodeMsg:
		m, err := wire.DecodeOpMsg(msg)
		if err != nil {
			requireMessageError(t, err)
			return
		}
		_ = m.CommandName()
		_, _ = m.DB()
		if out := reencodeOpMsg(t, m); !bytes.Equal(out, msg) {
			t.Fatalf("OP_MSG re-encoded differently\n got %x\nwant %x", out, msg)
		}
	case wire.OpCodeQuery:
		q, err := wire.DecodeOpQuery(msg)
		if err != nil {
			requireMessageError(t, err)
			return
		}
		_, _, _ = q.CommandName(), q.Database(), q.IsCommand()
		out, err := wire.AppendOpQuery(nil, q.Header.RequestID, q.Flags, q.FullCollectionName,
			q.NumberToSkip, q.NumberToReturn, q.Query, q.ReturnFieldsSelector)
		if err != nil {
			t.Fatalf("a decoded OP_QUERY does not encode: %v", err)
		}
		copy(out[8:12], msg[8:12]) // responseTo, which a request does not set
		if !bytes.Equal(out, msg) {
			t.Fatalf("OP_QUERY re-encoded differently\n got %x\nwant %x", out, msg)
		}
	case wire.OpCodeReply:
		r, err := wire.DecodeOpReply(msg)
		if err != nil {
			requireMessageError(t, err)
			return
		}
		var ds []bsoncore.Document
		it := r.Docs()
		for d, ok := it.Next(); ok; d, ok = it.Next() {
			ds = append(ds, d)
		}
		out, err := wire.AppendOpReply(nil, r.Header.RequestID, r.Header.ResponseTo, r.Flags, r.CursorID, r.StartingFrom, ds...)
		if err != nil || !bytes.Equal(out, msg) {
			t.Fatalf("OP_REPLY re-encoded differently: %v", err)
		}
	default:
		requireMessageError(t, wire.Unsupported(wire.Message{Header: h, Raw: msg}))
	}
}

func reencodeOpMsg(t *testing.T, m wire.OpMsg) []byte {
	start, out := wire.AppendOpMsgStart(nil, m.Header.RequestID, m.Header.ResponseTo, m.Flags)
	it := m.Sections()
	var err error
	for s, ok := it.Next(); ok; s, ok = it.Next() {
		if s.Kind == wire.SectionBody {
			out, err = wire.AppendBodySection(out, s.Body)
		} else {
			out, err = wire.AppendSequenceSection(out, s.Sequence.Identifier, s.Sequence.Documents)
			if s2, ok := m.Sequence(s.Sequence.Identifier); !ok || !bytes.Equal(s2.Documents, s.Sequence.Documents) {
				t.Fatalf("Sequence(%q) does not find what Sections gave", s.Sequence.Identifier)
			}
		}
		if err != nil {
			t.Fatalf("a decoded section does not encode: %v", err)
		}
	}
	if out, err = wire.AppendOpMsgEnd(out, start); err != nil {
		t.Fatalf("a decoded OP_MSG does not encode: %v", err)
	}
	return out
}

func requireMessageError(t *testing.T, err error) {
	var me *wire.MessageError
	if !errors.As(err, &me) || me.Err == nil || me.Offset < 0 {
		t.Fatalf("error %v is not a *MessageError with a sentinel and offset", err)
	}
	_ = err.Error()
}

// FuzzReadMessage: any byte stream yields messages, a typed length error, or
// an end of stream, never a panic; every message decodes cleanly or with a
// *MessageError, and what decodes re-encodes to the same bytes.
func FuzzReadMessage(f *testing.F) {
	for _, s := range streamSeeds(f) {
		f.Add(s.msg)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		var buf []byte
		for i := 0; i < 32; i++ {
			var m wire.Message
			var err error
			m, buf, err = wire.ReadMessage(r, 1<<16, buf)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) &&
					!errors.Is(err, wire.ErrTooShort) && !errors.Is(err, wire.ErrTooLarge) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(m.Raw) != int(m.Header.MessageLength) || len(m.Raw) > 1<<16 {
				t.Fatalf("message of %d bytes, header says %d", len(m.Raw), m.Header.MessageLength)
			}
			checkMessage(t, m.Raw)
		}
	})
}

// FuzzOpMsg: the OP_MSG decoder on any flagBits and sections (the header is
// made to fit, and the checksum fixed when asked, so that the fuzzer gets
// past both): no panic, and a decoded message re-encodes to its bytes.
func FuzzOpMsg(f *testing.F) {
	for _, s := range opMsgSeeds(f) {
		f.Add(s.msg[wire.HeaderLen:], true)
	}
	f.Add([]byte{0, 0, 0, 0}, false)
	f.Fuzz(func(t *testing.T, payload []byte, fixChecksum bool) {
		msg := wire.AppendHeader(nil, wire.Header{MessageLength: int32(wire.HeaderLen + len(payload)), RequestID: 1, OpCode: wire.OpCodeMsg})
		msg = append(msg, payload...)
		if fixChecksum && len(payload) >= 8 && payload[0]&1 != 0 {
			n := len(msg) - 4
			put32(msg, n, int32(crc32.Checksum(msg[:n], crc32.MakeTable(crc32.Castagnoli))))
		}
		checkMessage(t, msg)
	})
}

// FuzzOpQuery: the OP_QUERY decoder on any body after a fitting header: no
// panic, and a decoded query re-encodes to its bytes.
func FuzzOpQuery(f *testing.F) {
	for _, s := range opQuerySeeds(f) {
		f.Add(s.msg[wire.HeaderLen:])
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		msg := wire.AppendHeader(nil, wire.Header{MessageLength: int32(wire.HeaderLen + len(payload)), RequestID: 1, OpCode: wire.OpCodeQuery})
		checkMessage(t, append(msg, payload...))
	})
}

// TestSeedCorpus keeps testdata/fuzz in step with the encoder: the files
// are the seeds above in the fuzzer's format (regenerate with -update), so
// a change to the encoder shows up as a diff in the corpus.
func TestSeedCorpus(t *testing.T) {
	corpus := map[string][]string{}
	for _, s := range streamSeeds(t) {
		corpus["FuzzReadMessage/"+s.name] = []string{fmt.Sprintf("[]byte(%q)", s.msg)}
	}
	for _, s := range opMsgSeeds(t) {
		corpus["FuzzOpMsg/"+s.name] = []string{fmt.Sprintf("[]byte(%q)", s.msg[wire.HeaderLen:]), "bool(true)"}
	}
	for _, s := range opQuerySeeds(t) {
		corpus["FuzzOpQuery/"+s.name] = []string{fmt.Sprintf("[]byte(%q)", s.msg[wire.HeaderLen:])}
	}
	for name, values := range corpus {
		path := filepath.Join("testdata", "fuzz", name)
		want := "go test fuzz v1\n"
		for _, v := range values {
			want += v + "\n"
		}
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -run TestSeedCorpus -update)", err)
		}
		if string(got) != want {
			t.Fatalf("%s is stale: run go test -run TestSeedCorpus -update", path)
		}
	}
}
