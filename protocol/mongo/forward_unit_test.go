package mongo

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
)

// fakeMember answers hello, then records the next request it gets and
// answers it with a checksummed reply: the bytes the proxy sends, and what
// it does with a reply it must rewrite, are then checked exactly.
func fakeMember(t *testing.T) (addr string, got <-chan []byte) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan []byte, 1)
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
		ok := bsoncore.NewDocumentBuilder().AppendDouble("ok", 1).Build()
		var buf []byte
		for i := 0; i < 2; i++ {
			m, b, err := wire.ReadMessage(nc, 0, buf)
			buf = b
			if err != nil {
				return
			}
			flags := wire.MsgFlags(0)
			if i == 1 {
				ch <- append([]byte(nil), m.Raw...)
				flags = wire.ChecksumPresent
			}
			reply, _ := wire.AppendOpMsg(nil, 1000+int32(i), m.Header.RequestID, flags, ok)
			if _, err := nc.Write(reply); err != nil {
				return
			}
		}
	}()
	return ln.Addr().String(), ch
}

// TestForwardPassesSectionsUnchanged: lsid, txnNumber, $clusterTime,
// $readPreference and a document sequence reach the member byte for byte;
// only requestID, responseTo and the checksum flag (with its 4 bytes)
// change, and the member's checksummed reply reaches the client as an
// answer to the client's request, its checksum stripped.
func TestForwardPassesSectionsUnchanged(t *testing.T) {
	memberAddr, got := fakeMember(t)
	addr, _ := startProxy(t, Config{Cluster: "c1", Members: []Member{{Name: "fake", Addr: memberAddr}}})
	body := bsoncore.NewDocumentBuilder().AppendString("insert", "x").
		AppendDocument("lsid", bsoncore.NewDocumentBuilder().AppendBinary("id", 4, bytes.Repeat([]byte{7}, 16)).Build()).
		AppendInt64("txnNumber", 42).
		AppendDocument("$clusterTime", bsoncore.NewDocumentBuilder().AppendTimestamp("clusterTime", 5, 1).Build()).
		AppendDocument("$readPreference", bsoncore.NewDocumentBuilder().AppendString("mode", "primary").Build()).
		AppendString("$db", "app").Build()
	seq := wire.Sequence{Identifier: "documents", Documents: append(
		bsoncore.NewDocumentBuilder().AppendInt32("_id", 1).Build(),
		bsoncore.NewDocumentBuilder().AppendInt32("_id", 2).Build()...)}
	sent, err := wire.AppendOpMsg(nil, 77, 0, wire.ChecksumPresent, body, seq)
	if err != nil {
		t.Fatal(err)
	}
	rc := dialRaw(t, addr)
	rc.id = 77
	rc.send(sent)
	r := rc.replyBody(wire.OpCodeMsg) // checks responseTo = 77 and decodes
	if !isOK(r) {
		t.Fatalf("reply: %v", r)
	}

	var fwd []byte
	select {
	case fwd = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("the member got no request")
	}
	h, _ := wire.ParseHeader(fwd)
	if h.RequestID == 77 || h.ResponseTo != 0 || int(h.MessageLength) != len(fwd) {
		t.Errorf("forwarded header %+v", h)
	}
	if flags := binary.LittleEndian.Uint32(fwd[16:]); flags != 0 {
		t.Errorf("forwarded flags %#x, want the checksum flag cleared", flags)
	}
	if want := sent[20 : len(sent)-4]; !bytes.Equal(fwd[20:], want) {
		t.Errorf("sections changed on the way:\n got %x\nwant %x", fwd[20:], want)
	}
}

// TestForwardNotRoutedBeforeAuthentication: with users configured, a
// session that has not authenticated is refused by the proxy and nothing
// reaches the member.
func TestForwardNotRoutedBeforeAuthentication(t *testing.T) {
	memberAddr, got := fakeMember(t)
	addr, _ := startProxy(t, Config{Cluster: "c1", Users: testUsers, Members: []Member{{Name: "fake", Addr: memberAddr}}})
	rc := dialRaw(t, addr)
	if r := rc.command(cmd("find")); replyCode(r) != CodeUnauthorized.Code {
		t.Fatalf("find before authentication: %v", r)
	}
	select {
	case b := <-got:
		t.Fatalf("the member got %x", b)
	default:
	}
}
