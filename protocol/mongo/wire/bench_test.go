package wire_test

import (
	"bytes"
	"testing"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
)

// BenchmarkReadOpMsg is the proxy's read path for a typical find: read the
// message off a stream into the session's buffer, decode it (checksum-free,
// every section and document bounds-checked and validated), and take the
// command name. It must stay at 0 allocs/op.
func BenchmarkReadOpMsg(b *testing.B) {
	benchRead(b, mustMsg(b, 0, findBody()), func(m wire.OpMsg) bool { return m.CommandName() == "find" })
}

// BenchmarkReadOpMsgChecksum adds the CRC-32C check and a document sequence.
func BenchmarkReadOpMsgChecksum(b *testing.B) {
	msg := mustMsg(b, wire.ChecksumPresent, insertBody(), wire.Sequence{Identifier: "documents", Documents: docs(10)})
	benchRead(b, msg, func(m wire.OpMsg) bool { _, ok := m.Sequence("documents"); return ok })
}

// benchRead reads msg again and again into one buffer, as a session does.
func benchRead(b *testing.B, msg []byte, check func(wire.OpMsg) bool) {
	r := bytes.NewReader(msg)
	buf := make([]byte, 0, 4096)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(msg)
		m, out, err := wire.ReadMessage(r, 0, buf)
		if err != nil {
			b.Fatal(err)
		}
		buf = out
		op, err := wire.DecodeOpMsg(m.Raw)
		if err != nil {
			b.Fatal(err)
		}
		if !check(op) {
			b.Fatal("decoded message fails its check")
		}
	}
}

// BenchmarkAppendOpMsg encodes a find into a reused buffer.
func BenchmarkAppendOpMsg(b *testing.B) {
	body := findBody()
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = wire.AppendOpMsg(buf[:0], 1, 0, 0, body); err != nil {
			b.Fatal(err)
		}
	}
}
