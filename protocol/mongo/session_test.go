package mongo

import (
	"context"
	"encoding/binary"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
)

// compressed is an OP_COMPRESSED with request id id, wrapping op with zlib,
// as a driver sends once it thinks compression was negotiated.
func compressed(id int32, op wire.OpCode) []byte {
	b := wire.AppendHeader(nil, wire.Header{MessageLength: 28, RequestID: id, OpCode: wire.OpCodeCompressed})
	b = binary.LittleEndian.AppendUint32(b, uint32(op))
	b = binary.LittleEndian.AppendUint32(b, 100)
	return append(b, byte(wire.CompressorZlib), 0x78, 0x9c, 0)
}

// TestOpCompressedIsRefusedClearly: the client is told, in the reply form
// of the opcode it wrapped, that compression was not negotiated and which
// URI option to drop; the stream is intact, so the session goes on.
func TestOpCompressedIsRefusedClearly(t *testing.T) {
	addr, _ := startProxy(t, Config{Cluster: "c1"})
	for _, tc := range []struct {
		name    string
		wrapped wire.OpCode
		reply   wire.OpCode
	}{
		{"OP_MSG", wire.OpCodeMsg, wire.OpCodeMsg},
		{"OP_QUERY", wire.OpCodeQuery, wire.OpCodeReply},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			c.id = 77
			c.send(compressed(c.id, tc.wrapped))
			r := c.replyBody(tc.reply)
			msg := r.Lookup("errmsg").StringValue()
			if replyCode(r) != CodeProtocolError.Code || !strings.Contains(msg, "OP_COMPRESSED") || !strings.Contains(msg, "compressors=") {
				t.Fatalf("OP_COMPRESSED answered %v, want ProtocolError naming OP_COMPRESSED and compressors=", r)
			}
			if r := c.command(cmd("ping")); !isOK(r) {
				t.Fatalf("ping after: %v", r)
			}
		})
	}
}

// TestMalformedMessagesCloseTheConnection: a frame the codec refuses
// leaves the stream untrustworthy. When the message was read whole, the
// client is told why first; when the frame's length itself is wrong there
// is nothing to answer. Never a panic, and the proxy serves others.
func TestMalformedMessagesCloseTheConnection(t *testing.T) {
	addr, _ := startProxy(t, Config{Cluster: "c1"})
	goodPing, err := wire.AppendOpMsg(nil, 3, 0, wire.ChecksumPresent, cmd("ping"))
	if err != nil {
		t.Fatal(err)
	}
	badChecksum := append([]byte(nil), goodPing...)
	badChecksum[len(badChecksum)-1] ^= 0xff
	unknownFlag := append([]byte(nil), goodPing[:len(goodPing)-4]...)
	binary.LittleEndian.PutUint32(unknownFlag[16:], 1<<5)
	binary.LittleEndian.PutUint32(unknownFlag, uint32(len(unknownFlag)))
	twoBodies := append([]byte(nil), unknownFlag...)
	binary.LittleEndian.PutUint32(twoBodies[16:], 0)
	twoBodies = append(twoBodies, 0)
	twoBodies = append(twoBodies, cmd("ping")...)
	binary.LittleEndian.PutUint32(twoBodies, uint32(len(twoBodies)))
	badQuery, err := wire.AppendOpQuery(nil, 3, 0, "admin.$cmd", 0, -1, cmd("isMaster"), nil)
	if err != nil {
		t.Fatal(err)
	}
	badQuery[len(badQuery)-1] = 7 // the document's terminator

	for _, tc := range []struct {
		name  string
		msg   []byte
		reply wire.OpCode // 0: closed without a reply
		want  string
	}{
		{"bad checksum", badChecksum, wire.OpCodeMsg, "checksum"},
		{"unknown required flag", unknownFlag, wire.OpCodeMsg, "flag"},
		{"two body sections", twoBodies, wire.OpCodeMsg, "more than one body"},
		{"broken OP_QUERY document", badQuery, wire.OpCodeReply, "invalid BSON"},
		{"length below the header", wire.AppendHeader(nil, wire.Header{MessageLength: 5, RequestID: 3, OpCode: wire.OpCodeMsg}), 0, ""},
		{"length over maxMessageSizeBytes", wire.AppendHeader(nil, wire.Header{MessageLength: 48_000_001, RequestID: 3, OpCode: wire.OpCodeMsg}), 0, ""},
		{"legacy OP_INSERT", append(wire.AppendHeader(nil, wire.Header{MessageLength: 20, RequestID: 3, OpCode: 2002}), 0, 0, 0, 0), 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			c.id = 3
			c.send(tc.msg)
			if tc.reply != 0 {
				r := c.replyBody(tc.reply)
				if replyCode(r) != CodeProtocolError.Code || !strings.Contains(r.Lookup("errmsg").StringValue(), tc.want) {
					t.Fatalf("answered %v, want ProtocolError saying %q", r, tc.want)
				}
			}
			c.wantClosed()
			// The proxy still serves everyone else.
			other := dialRaw(t, addr)
			if r := other.command(cmd("ping")); !isOK(r) {
				t.Fatalf("ping on another connection: %v", r)
			}
		})
	}
}

// TestMoreToComeGetsNoReply: a request flagged moreToCome (w:0) expects
// no answer; one would be read as the answer to the next request.
func TestMoreToComeGetsNoReply(t *testing.T) {
	addr, _ := startProxy(t, Config{Cluster: "c1"})
	c := dialRaw(t, addr)
	msg, err := wire.AppendOpMsg(nil, 1, 0, wire.MoreToCome, cmd("ping"))
	if err != nil {
		t.Fatal(err)
	}
	c.send(msg)
	c.id = 1
	if r := c.command(cmd("buildInfo")); r.Lookup("version").StringValue() == "" {
		t.Fatalf("the reply to buildInfo is %v", r)
	}
}

// TestServeEndsEverySessionWithItsContext: ending Serve's ctx closes the
// listener and every session (a client blocked in a read sees the
// connection end), and Serve returns only after the sessions are gone.
func TestServeEndsEverySessionWithItsContext(t *testing.T) {
	p, err := New(Config{Cluster: "c1"}, nil)
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
	var conns []*rawConn
	for range 3 {
		c := dialRaw(t, ln.Addr().String())
		if r := c.command(cmd("ping")); !isOK(r) {
			t.Fatalf("ping: %v", r)
		}
		conns = append(conns, c)
	}
	if n := p.Sessions(); n != 3 {
		t.Fatalf("Sessions() = %d, want 3", n)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its ctx ended")
	}
	if n := p.Sessions(); n != 0 {
		t.Fatalf("Sessions() = %d after Serve returned", n)
	}
	for _, c := range conns {
		c.wantClosed()
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("the listener still accepts after Serve returned")
	}
}

// TestSessionsGetDistinctConnectionIDs: hello's connectionId tells a
// session's log lines apart.
func TestSessionsGetDistinctConnectionIDs(t *testing.T) {
	addr, _ := startProxy(t, Config{Cluster: "c1"})
	seen := map[int32]bool{}
	for range 3 {
		c := dialRaw(t, addr)
		id := c.command(cmd("hello")).Lookup("connectionId").Int32()
		if seen[id] {
			t.Fatalf("connectionId %d given twice", id)
		}
		seen[id] = true
	}
}
