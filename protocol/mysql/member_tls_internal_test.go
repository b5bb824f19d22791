package mysql

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/proxy"
	"github.com/dbrouter/dbrouter/topology"
)

// TestMemberTLSRefusesAMemberWithoutTLS: with MemberTLS set, a member
// whose greeting does not offer TLS (no CLIENT_SSL) is refused with that
// reason, and nothing is sent to it after its greeting: no plaintext
// handshake response, so no login name or password hash on the wire.
func TestMemberTLSRefusesAMemberWithoutTLS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
		w := bufio.NewWriter(nc)
		hello := appendHandshakeV10(nil, "10.11.0-fake", 7, []byte("0123456789abcdefghij"), proxyCaps&^gm.CLIENT_SSL, pluginNative)
		if _, err := writePacket(w, 0, hello); err == nil {
			_ = w.Flush()
		}
		b, _ := io.ReadAll(nc) // until the proxy closes
		got <- b
	}()
	pool := newMemberPool(0, "db1", ln.Addr().String(), 1, time.Second, 1<<24, zap.NewNop())
	pool.tls = topology.MemberTLS(&tls.Config{MinVersion: tls.VersionTLS12}, ln.Addr().String())
	_, err = pool.Get(context.Background(), poolKey{user: "app", collation: defaultCollationID}, proxy.Login{User: "app", Password: "secret"}, time.Second, nil)
	if err == nil || !strings.Contains(err.Error(), "the member does not offer TLS") {
		t.Fatalf("dial a member without TLS: %v, want the refusal", err)
	}
	if b := <-got; len(b) != 0 {
		t.Fatalf("the member received %d bytes after its greeting: %q", len(b), b)
	}
}
