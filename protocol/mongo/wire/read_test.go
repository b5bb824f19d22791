package wire_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
)

func compressedMsg() []byte {
	b := wire.AppendHeader(nil, wire.Header{RequestID: 9, OpCode: wire.OpCodeCompressed})
	b = put32(append(b, 0, 0, 0, 0), 16, int32(wire.OpCodeMsg))
	b = put32(append(b, 0, 0, 0, 0), 20, 100)
	b = append(b, byte(wire.CompressorZlib), 0x78, 0x9c, 1, 2, 3)
	return fixLength(b)
}

func TestReadMessageReadsAStreamInOrder(t *testing.T) {
	q, err := wire.AppendOpQuery(nil, 3, 0, "admin.$cmd", 0, -1, isMasterQuery(), nil)
	if err != nil {
		t.Fatal(err)
	}
	msgs := [][]byte{mustMsg(t, 0, findBody()), q, compressedMsg(), mustMsg(t, wire.ChecksumPresent, helloBody())}
	r := bytes.NewReader(bytes.Join(msgs, nil))
	var buf []byte
	for i, want := range msgs {
		var m wire.Message
		m, buf, err = wire.ReadMessage(r, 0, buf)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(m.Raw, want) || int(m.Header.MessageLength) != len(want) {
			t.Fatalf("message %d differs", i)
		}
	}
	if _, _, err = wire.ReadMessage(r, 0, buf); err != io.EOF {
		t.Fatalf("after the last message: %v, want io.EOF", err)
	}
}

// A session passes its buffer back each time: once it is big enough, the
// message is read into it, not into a new one.
func TestReadMessageReusesTheBuffer(t *testing.T) {
	msg := mustMsg(t, 0, findBody())
	buf := make([]byte, 0, 4096)
	m, out, err := wire.ReadMessage(bytes.NewReader(msg), 0, buf)
	if err != nil {
		t.Fatal(err)
	}
	if &out[:1][0] != &buf[:1][0] || &m.Raw[0] != &buf[:1][0] {
		t.Fatal("a big enough buffer was replaced")
	}
}

func TestReadMessageGrowsForALargeMessage(t *testing.T) {
	msg := mustMsg(t, 0, insertBody(), wire.Sequence{Identifier: "documents", Documents: docs(20000)})
	if len(msg) < 300<<10 {
		t.Fatalf("message of %d bytes is not large", len(msg))
	}
	m, buf, err := wire.ReadMessage(bytes.NewReader(msg), 0, make([]byte, 0, 100))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.Raw, msg) || cap(buf) < len(msg) {
		t.Fatal("large message read wrong")
	}
}

// A peer that claims a large message and sends little gets a buffer sized by
// what it sent, not by what it claimed.
func TestReadMessageMemoryFollowsBytesReceived(t *testing.T) {
	b := wire.AppendHeader(nil, wire.Header{MessageLength: 40_000_000, OpCode: wire.OpCodeMsg})
	b = append(b, make([]byte, 100)...)
	_, buf, err := wire.ReadMessage(bytes.NewReader(b), 0, nil)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("error %v, want io.ErrUnexpectedEOF", err)
	}
	if !strings.Contains(err.Error(), "stream ended after 116") {
		t.Fatalf("error %q does not say how far the read got", err)
	}
	if cap(buf) > 1<<20 {
		t.Fatalf("buffer of %d bytes for 116 received", cap(buf))
	}
}

func TestReadMessageRejectsLengths(t *testing.T) {
	header := func(n int32) []byte {
		return append(wire.AppendHeader(nil, wire.Header{MessageLength: n, OpCode: wire.OpCodeMsg}), make([]byte, 64)...)
	}
	cases := []struct {
		name string
		in   []byte
		max  int
		err  error
	}{
		{"zero", header(0), 0, wire.ErrTooShort},
		{"one below the header", header(15), 0, wire.ErrTooShort},
		{"negative", header(-16), 0, wire.ErrTooShort},
		{"one over the limit", header(65), 64, wire.ErrTooLarge},
		{"one over the default limit", header(wire.DefaultMaxMessageSize + 1), 0, wire.ErrTooLarge},
		{"int32 max", header(1<<31 - 1), 0, wire.ErrTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := wire.ReadMessage(bytes.NewReader(c.in), c.max, nil)
			wantMessageError(t, err, c.err, 0)
		})
	}
	// The limit itself is accepted, and exactly the header is a message.
	for _, n := range []int32{16, 64} {
		m, _, err := wire.ReadMessage(bytes.NewReader(header(n)), 64, nil)
		if err != nil || len(m.Raw) != int(n) {
			t.Fatalf("length %d: %v", n, err)
		}
	}
}

func TestReadMessageTruncatedStream(t *testing.T) {
	msg := mustMsg(t, 0, findBody())
	for _, n := range []int{1, 15, 16, 17, len(msg) - 1} {
		_, _, err := wire.ReadMessage(bytes.NewReader(msg[:n]), 0, nil)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("%d bytes: %v, want io.ErrUnexpectedEOF", n, err)
		}
	}
}

func TestUnsupportedNamesCompression(t *testing.T) {
	m, _, err := wire.ReadMessage(bytes.NewReader(compressedMsg()), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = wire.Unsupported(m)
	wantMessageError(t, err, wire.ErrCompressed, 12)
	for _, s := range []string{"OP_COMPRESSED", "zlib", "wrapping OP_MSG", "compressors="} {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("error %q does not say %q", err, s)
		}
	}
	c, err := wire.DecodeOpCompressed(m.Raw)
	if err != nil || c.OriginalOpCode != wire.OpCodeMsg || c.UncompressedSize != 100 || c.Compressor != wire.CompressorZlib || len(c.Payload) != 5 {
		t.Fatalf("%+v %v", c, err)
	}

	short := fixLength(compressedMsg()[:20])
	if _, err := wire.DecodeOpCompressed(short); !errors.Is(err, wire.ErrTooShort) {
		t.Fatalf("short OP_COMPRESSED: %v", err)
	}
	if err := wire.Unsupported(wire.Message{Header: wire.Header{OpCode: wire.OpCodeCompressed}, Raw: short}); !errors.Is(err, wire.ErrCompressed) {
		t.Fatalf("short OP_COMPRESSED refused with %v", err)
	}

	other := wire.Message{Header: wire.Header{OpCode: 2010}}
	err = wire.Unsupported(other)
	wantMessageError(t, err, wire.ErrUnknownOpCode, 12)
	if !strings.Contains(err.Error(), "opcode 2010") {
		t.Fatalf("error %q does not name the opcode", err)
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	h := wire.Header{MessageLength: 1234, RequestID: -5, ResponseTo: 77, OpCode: wire.OpCodeReply}
	got, err := wire.ParseHeader(wire.AppendHeader(nil, h))
	if err != nil || got != h {
		t.Fatalf("%+v %v", got, err)
	}
	_, err = wire.ParseHeader(make([]byte, 15))
	wantMessageError(t, err, wire.ErrTruncated, 15)
}
