package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
)

// rawMsg lays out an OP_MSG by hand, so that tests can build what the
// encoder refuses to.
func rawMsg(flags uint32, sections ...[]byte) []byte {
	b := wire.AppendHeader(nil, wire.Header{RequestID: 1, OpCode: wire.OpCodeMsg})
	b = binary.LittleEndian.AppendUint32(b, flags)
	for _, s := range sections {
		b = append(b, s...)
	}
	return fixLength(b)
}

func bodySec(doc []byte) []byte { return append([]byte{0}, doc...) }

func seqSec(id string, docs []byte) []byte {
	b := []byte{1}
	b = binary.LittleEndian.AppendUint32(b, uint32(4+len(id)+1+len(docs)))
	b = append(b, id...)
	b = append(b, 0)
	return append(b, docs...)
}

func pingBody() bsoncore.Document {
	return bsoncore.NewDocumentBuilder().AppendInt32("ping", 1).AppendString("$db", "admin").Build()
}

func TestDecodeOpMsgFind(t *testing.T) {
	body := findBody()
	msg := mustMsg(t, wire.ExhaustAllowed, body)
	m, err := wire.DecodeOpMsg(msg)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.MessageLength != int32(len(msg)) || m.Header.RequestID != 7 || m.Header.OpCode != wire.OpCodeMsg {
		t.Fatalf("header %+v", m.Header)
	}
	if m.Flags != wire.ExhaustAllowed {
		t.Fatalf("flags %#x", m.Flags)
	}
	if !bytes.Equal(m.Body(), body) {
		t.Fatal("body differs")
	}
	if got := m.CommandName(); got != "find" {
		t.Fatalf("command %q", got)
	}
	if db, ok := m.DB(); !ok || db != "app" {
		t.Fatalf("$db %q %v", db, ok)
	}
	if m.NumSequences() != 0 {
		t.Fatalf("%d sequences", m.NumSequences())
	}
	if _, ok := m.Sequence("documents"); ok {
		t.Fatal("found a sequence that is not there")
	}
	// The body aliases the message: a reader that keeps a buffer must know.
	if &m.Body()[0] != &msg[21] {
		t.Fatal("body was copied")
	}
}

// Sections may come in any order (the spec says a sequence may precede the
// body); the iterator gives them as they came, so re-encoding in that order
// reproduces the message.
func TestDecodeOpMsgSequenceBeforeBodyKeepsOrder(t *testing.T) {
	seq := docs(3)
	msg := rawMsg(0, seqSec("documents", seq), bodySec(insertBody()), seqSec("", nil))
	m, err := wire.DecodeOpMsg(msg)
	if err != nil {
		t.Fatal(err)
	}
	if m.CommandName() != "insert" || m.NumSequences() != 2 {
		t.Fatalf("command %q, %d sequences", m.CommandName(), m.NumSequences())
	}
	s, ok := m.Sequence("documents")
	if !ok || s.Len() != 3 || !bytes.Equal(s.Documents, seq) {
		t.Fatalf("sequence %+v %v", s, ok)
	}
	it := s.Docs()
	for i := 0; ; i++ {
		d, ok := it.Next()
		if !ok {
			if i != 3 {
				t.Fatalf("%d documents", i)
			}
			break
		}
		if v, err := d.LookupErr("_id"); err != nil || v.Int32() != int32(i) {
			t.Fatalf("document %d: %v %v", i, v, err)
		}
	}
	if e, ok := m.Sequence(""); !ok || e.Len() != 0 {
		t.Fatal("empty sequence with an empty identifier not found")
	}

	var kinds []wire.SectionKind
	start, out := wire.AppendOpMsgStart(nil, 1, 0, m.Flags)
	sit := m.Sections()
	for sec, ok := sit.Next(); ok; sec, ok = sit.Next() {
		kinds = append(kinds, sec.Kind)
		if sec.Kind == wire.SectionBody {
			out, err = wire.AppendBodySection(out, sec.Body)
		} else {
			out, err = wire.AppendSequenceSection(out, sec.Sequence.Identifier, sec.Sequence.Documents)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if out, err = wire.AppendOpMsgEnd(out, start); err != nil {
		t.Fatal(err)
	}
	if want := []wire.SectionKind{1, 0, 1}; !equalKinds(kinds, want) {
		t.Fatalf("section kinds %v, want %v", kinds, want)
	}
	if !bytes.Equal(out, msg) {
		t.Fatalf("re-encoded\n%x\nwant\n%x", out, msg)
	}
}

func equalKinds(a, b []wire.SectionKind) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Unknown optional bits (16–31) are ignored, as the spec requires, and kept
// so that a forwarded message is unchanged.
func TestDecodeOpMsgKeepsUnknownOptionalFlags(t *testing.T) {
	flags := wire.MoreToCome | wire.ExhaustAllowed | 1<<20 | 1<<31
	m, err := wire.DecodeOpMsg(mustMsg(t, flags, pingBody()))
	if err != nil {
		t.Fatal(err)
	}
	if m.Flags != flags {
		t.Fatalf("flags %#x, want %#x", m.Flags, flags)
	}
}

func TestOpMsgChecksumWrittenAndVerified(t *testing.T) {
	msg := mustMsg(t, wire.ChecksumPresent, findBody(), wire.Sequence{Identifier: "documents", Documents: docs(2)})
	n := len(msg) - 4
	if got, want := binary.LittleEndian.Uint32(msg[n:]), crc32.Checksum(msg[:n], crc32.MakeTable(crc32.Castagnoli)); got != want {
		t.Fatalf("checksum %#x, want CRC-32C %#x", got, want)
	}
	m, err := wire.DecodeOpMsg(msg)
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := m.Sequence("documents"); !ok || s.Len() != 2 {
		t.Fatal("sequence lost behind the checksum")
	}
	// The checksum is not a section: the body must end before it.
	if !bytes.Equal(m.Body(), findBody()) {
		t.Fatal("body differs")
	}
}

func TestDecodeOpMsgRejectsMalformed(t *testing.T) {
	ping := pingBody()
	base := rawMsg(0, bodySec(ping))
	bodyEnd := 21 + len(ping)
	dbLen := bytes.Index(base, []byte("$db\x00")) + 4 // the $db string's length field

	many := [][]byte{bodySec(ping)}
	for i := 0; i < wire.MaxSequences+1; i++ {
		many = append(many, seqSec(string([]byte{byte(1 + i)}), nil)) // one-byte identifiers
	}
	seqAt := func(i int) int { return bodyEnd + i*len(seqSec("A", nil)) }

	// A sequence document whose length reaches into the body that follows:
	// inside the message, outside its section.
	overrun := rawMsg(0, seqSec("documents", docs(1)), bodySec(ping))
	put32(overrun, 20+1+4+len("documents")+1, int32(len(docs(1))+3))

	cases := []struct {
		name   string
		msg    []byte
		err    error
		offset int
	}{
		{"opcode is not OP_MSG", put32(clone(base), 12, int32(wire.OpCodeQuery)), wire.ErrWrongOpCode, 12},
		{"messageLength beyond the bytes", base[:len(base)-1], wire.ErrTruncated, 0},
		{"bytes after messageLength", append(clone(base), 0), wire.ErrTrailingBytes, len(base)},
		{"messageLength below the header", put32(clone(base), 0, 8), wire.ErrTooShort, 0},
		{"negative messageLength", put32(clone(base), 0, -1), wire.ErrTooShort, 0},
		{"header cut short", base[:10], wire.ErrTruncated, 10},
		{"ends inside flagBits", fixLength(clone(base[:18])), wire.ErrTooShort, 0},
		{"unknown required flag bit 2", rawMsg(1<<2, bodySec(ping)), wire.ErrUnknownFlags, 16},
		{"unknown required flag bit 15", rawMsg(1<<15, bodySec(ping)), wire.ErrUnknownFlags, 16},
		{"checksum flagged, no room for it", rawMsg(1, []byte{0, 0}), wire.ErrTruncated, 20},
		{"checksum mismatch", func() []byte {
			m := mustMsg(t, wire.ChecksumPresent, ping)
			m[dbLen+5] ^= 1 // a letter of "admin"
			return m
		}(), wire.ErrChecksum, len(base)},
		{"no sections", rawMsg(0), wire.ErrMissingBody, 20},
		{"unknown payload type", rawMsg(0, append([]byte{2}, ping...)), wire.ErrSectionKind, 20},
		{"body length cut", rawMsg(0, []byte{0, 9, 0, 0}), wire.ErrTruncated, 21},
		{"body length overruns the message", put32(clone(base), 21, int32(len(ping)+1)), wire.ErrTruncated, 21},
		{"body length below 5", put32(clone(base), 21, 4), wire.ErrInvalidDocument, 21},
		{"body without its terminator", func() []byte { m := clone(base); m[len(m)-1] = 1; return m }(), wire.ErrInvalidDocument, 21},
		{"body element overruns the body", put32(clone(base), dbLen, 1000), wire.ErrInvalidDocument, 21},
		{"second body", rawMsg(0, bodySec(ping), bodySec(ping)), wire.ErrExtraBody, bodyEnd},
		{"sequence but no body", rawMsg(0, seqSec("documents", docs(1))), wire.ErrMissingBody, 20 + len(seqSec("documents", docs(1)))},
		{"sequence size cut", rawMsg(0, bodySec(ping), []byte{1, 5, 0}), wire.ErrTruncated, bodyEnd + 1},
		{"sequence size below 5", rawMsg(0, bodySec(ping), []byte{1, 4, 0, 0, 0}), wire.ErrTooShort, bodyEnd + 1},
		{"sequence size overruns the message", rawMsg(0, bodySec(ping), []byte{1, 9, 0, 0, 0, 'x', 0}), wire.ErrTruncated, bodyEnd + 1},
		{"sequence identifier without NUL", rawMsg(0, bodySec(ping), []byte{1, 7, 0, 0, 0, 'd', 'o', 'c'}), wire.ErrTruncated, bodyEnd + 5},
		{"sequence document overruns its section", overrun, wire.ErrTruncated, 20 + 1 + 4 + len("documents") + 1},
		{"sequence document invalid", rawMsg(0, bodySec(ping), seqSec("d", []byte{6, 0, 0, 0, 8, 0})), wire.ErrInvalidDocument, bodyEnd + 7},
		{"sequence document length below 5", rawMsg(0, bodySec(ping), seqSec("d", []byte{4, 0, 0, 0})), wire.ErrInvalidDocument, bodyEnd + 7},
		{"sequence with a partial document", rawMsg(0, bodySec(ping), seqSec("d", []byte{5, 0, 0})), wire.ErrTruncated, bodyEnd + 7},
		{"identifier repeated", rawMsg(0, seqSec("documents", nil), bodySec(ping), seqSec("documents", docs(1))),
			wire.ErrDuplicateSequence, 20 + len(seqSec("documents", nil)) + len(bodySec(ping)) + 5},
		{"too many sequences", rawMsg(0, many...), wire.ErrTooManySequences, seqAt(wire.MaxSequences)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := wire.DecodeOpMsg(c.msg)
			wantMessageError(t, err, c.err, c.offset)
		})
	}
}

func TestMessageErrorSaysWhatAndWhere(t *testing.T) {
	_, err := wire.DecodeOpMsg(rawMsg(1<<3, bodySec(pingBody())))
	const want = "mongo wire: OP_MSG: flagBits at offset 16: unknown required OP_MSG flag bits (0x8)"
	if err == nil || err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
}

func TestDBMissingOrNotAString(t *testing.T) {
	for _, body := range []bsoncore.Document{
		bsoncore.NewDocumentBuilder().AppendInt32("ping", 1).Build(),
		bsoncore.NewDocumentBuilder().AppendInt32("ping", 1).AppendInt32("$db", 1).Build(),
	} {
		m, err := wire.DecodeOpMsg(mustMsg(t, 0, body))
		if err != nil {
			t.Fatal(err)
		}
		if db, ok := m.DB(); ok {
			t.Fatalf("$db %q from %v", db, body)
		}
	}
	m, err := wire.DecodeOpMsg(mustMsg(t, 0, bsoncore.NewDocumentBuilder().Build()))
	if err != nil {
		t.Fatal(err)
	}
	if m.CommandName() != "" {
		t.Fatalf("command %q from an empty body", m.CommandName())
	}
}

// The zero OpMsg and hand-made iterators end instead of panicking.
func TestZeroValuesAreSafe(t *testing.T) {
	var m wire.OpMsg
	if m.CommandName() != "" || m.NumSequences() != 0 {
		t.Fatal("zero OpMsg not empty")
	}
	if _, ok := m.DB(); ok {
		t.Fatal("zero OpMsg has a $db")
	}
	it := m.Sections()
	if _, ok := it.Next(); ok {
		t.Fatal("zero OpMsg has sections")
	}
	bad := wire.Sequence{Documents: []byte{200, 0, 0, 0, 1, 2}}
	if bad.Len() != 0 {
		t.Fatal("counted a document that does not fit")
	}
}

func TestAppendOpMsgRejectsBadArguments(t *testing.T) {
	ping := pingBody()
	cases := []struct {
		name   string
		build  func(dst []byte) ([]byte, error)
		err    error
		offset int
	}{
		{"body with bytes after it", func(dst []byte) ([]byte, error) {
			return wire.AppendOpMsg(dst, 1, 0, 0, append(clone(ping), 0))
		}, wire.ErrTrailingBytes, len(ping)},
		{"body not a document", func(dst []byte) ([]byte, error) {
			return wire.AppendOpMsg(dst, 1, 0, 0, bsoncore.Document{5, 0, 0, 0, 1})
		}, wire.ErrInvalidDocument, 0},
		{"nil body", func(dst []byte) ([]byte, error) {
			return wire.AppendOpMsg(dst, 1, 0, 0, nil)
		}, wire.ErrTruncated, 0},
		{"identifier with a NUL", func(dst []byte) ([]byte, error) {
			return wire.AppendOpMsg(dst, 1, 0, 0, ping, wire.Sequence{Identifier: "do\x00cs"})
		}, wire.ErrInvalidCString, 2},
		{"documents with a partial one", func(dst []byte) ([]byte, error) {
			return wire.AppendOpMsg(dst, 1, 0, 0, ping, wire.Sequence{Identifier: "documents", Documents: append(docs(2), 9, 0)})
		}, wire.ErrTruncated, len(docs(2))},
		{"identifier repeated", func(dst []byte) ([]byte, error) {
			s := wire.Sequence{Identifier: "documents", Documents: docs(1)}
			return wire.AppendOpMsg(dst, 1, 0, 0, ping, s, s)
		}, wire.ErrDuplicateSequence, 16 + 4 + 1 + len(ping) + len(seqSec("documents", docs(1))) + 5},
		{"unknown required flag", func(dst []byte) ([]byte, error) {
			return wire.AppendOpMsg(dst, 1, 0, 1<<4, ping)
		}, wire.ErrUnknownFlags, 16},
		{"no body section", func(dst []byte) ([]byte, error) {
			start, dst := wire.AppendOpMsgStart(dst, 1, 0, 0)
			return wire.AppendOpMsgEnd(dst, start)
		}, wire.ErrMissingBody, 20},
		{"two body sections", func(dst []byte) ([]byte, error) {
			start, dst := wire.AppendOpMsgStart(dst, 1, 0, 0)
			dst, _ = wire.AppendBodySection(dst, ping)
			dst, _ = wire.AppendBodySection(dst, ping)
			return wire.AppendOpMsgEnd(dst, start)
		}, wire.ErrExtraBody, 21 + len(ping)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			prefix := []byte("earlier message")
			out, err := c.build(clone(prefix))
			wantMessageError(t, err, c.err, c.offset)
			if !bytes.HasPrefix(out, prefix) {
				t.Fatalf("encoder error damaged dst: %q", out)
			}
		})
	}
}

// The encoder writes into the caller's buffer: once it is big enough, a
// message costs no allocation.
func TestAppendOpMsgAllocatesNothingIntoABigBuffer(t *testing.T) {
	body, seq := insertBody(), docs(10)
	buf := make([]byte, 0, 4096)
	allocs := testing.AllocsPerRun(200, func() {
		var err error
		buf, err = wire.AppendOpMsg(buf[:0], 1, 0, wire.ChecksumPresent, body, wire.Sequence{Identifier: "documents", Documents: seq})
		if err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per message", allocs)
	}
	if _, err := wire.DecodeOpMsg(buf); err != nil {
		t.Fatal(err)
	}
}

// The hot-path accessors allocate nothing for the names drivers send.
func TestAccessorsAllocateNothing(t *testing.T) {
	msg := mustMsg(t, 0, insertBody(), wire.Sequence{Identifier: "documents", Documents: docs(3)})
	allocs := testing.AllocsPerRun(200, func() {
		m, err := wire.DecodeOpMsg(msg)
		if err != nil {
			t.Fatal(err)
		}
		if m.CommandName() != "insert" {
			t.Fatal("command")
		}
		if s, ok := m.Sequence("documents"); !ok || s.Identifier != "documents" {
			t.Fatal("sequence")
		}
		if db, ok := m.DB(); !ok || db != "app" {
			t.Fatal("db")
		}
	})
	// DB copies "app" (not a name every deployment has): one allocation.
	if allocs > 1 {
		t.Fatalf("%v allocs", allocs)
	}
	allocs = testing.AllocsPerRun(200, func() {
		m, _ := wire.DecodeOpMsg(msg)
		_ = m.CommandName()
		_, _ = m.Sequence("documents")
	})
	if allocs != 0 {
		t.Fatalf("%v allocs without DB", allocs)
	}
}

func TestDecodeErrorsAreMessageErrors(t *testing.T) {
	_, err := wire.DecodeOpMsg(nil)
	var me *wire.MessageError
	if !errors.As(err, &me) || me.Op != wire.OpCodeMsg {
		t.Fatalf("%v", err)
	}
}
