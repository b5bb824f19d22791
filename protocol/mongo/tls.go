package mongo

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// MongoDB has no STARTTLS: a TLS client starts with its ClientHello, a
// plaintext one with a message header. One byte cannot tell them apart (a
// message of 278 bytes starts with 0x16, a handshake record's type), so
// the proxy reads helloSniffLen bytes, fewer than either sends first, and
// checks the ClientHello's shape (mongod's preferTLS/allowTLS also look at
// more than the record type):
//
//	0      record type 0x16 (handshake)    message length, low byte
//	1-2    record version 3.x              message length
//	5      handshake type 1 (ClientHello)  requestID
//	9-10   client version 3.x              responseTo: 0 in a request
//
// A request's responseTo is 0, so byte 9 is never 3 in a Mongo request.
const helloSniffLen = 11

func isClientHello(b []byte) bool {
	return len(b) >= helloSniffLen && b[0] == 0x16 && b[1] == 3 && b[2] <= 4 && b[5] == 1 && b[9] == 3 && b[10] <= 4
}

// defaultTLSHandshakeTimeout bounds the wait for a client's first bytes
// and its TLS handshake when Config.TLSHandshakeTimeout is unset.
const defaultTLSHandshakeTimeout = 10 * time.Second

// clientConn is the connection a session reads: nc itself without client
// TLS; otherwise the TLS connection, or under preferTLS the plaintext one
// with its first bytes given back. The first bytes and the handshake share
// one deadline, so a client that connects and sends nothing holds a
// goroutine no longer than that; ctx ending (the proxy stopping) ends the
// wait at once.
func (p *Proxy) clientConn(ctx context.Context, nc net.Conn) (net.Conn, error) {
	if p.cfg.TLS == nil {
		return nc, nil
	}
	if err := nc.SetDeadline(time.Now().Add(p.cfg.TLSHandshakeTimeout)); err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	first := make([]byte, helloSniffLen)
	if _, err := io.ReadFull(nc, first); err != nil {
		return nil, fmt.Errorf("waiting for the client's first bytes: %w", err)
	}
	pc := &peekedConn{Conn: nc, prefix: first}
	var out net.Conn = pc
	if !isClientHello(first) {
		if p.cfg.RequireTLS {
			// Only logged: the client gets no reply, as from mongod.
			return nil, errors.New("plaintext client refused: tls.require is set (connect with tls=true)")
		}
	} else {
		tc := tls.Server(pc, p.cfg.TLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("tls handshake: %w", err)
		}
		out = tc
	}
	if !stop() {
		return nil, ctx.Err()
	}
	// The session sets its own deadlines on every read and write.
	if err := nc.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	return out, nil
}

// peekedConn gives back the bytes read to tell TLS from plaintext before
// the rest of the stream.
type peekedConn struct {
	net.Conn
	prefix []byte
}

func (c *peekedConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		// Only what is in hand: reading more could block on a client
		// that sent no more yet.
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
