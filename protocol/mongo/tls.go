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

// MongoDB has no STARTTLS: a TLS client's first byte is its ClientHello's
// record type, a plaintext client's the first byte of a message header
// (the low byte of its length). mongod's preferTLS/allowTLS tell them apart
// by that byte, and so does the proxy when TLS is not required.
const tlsHandshakeRecord = 0x16

// defaultTLSHandshakeTimeout bounds the wait for a client's first byte and
// its TLS handshake when Config.TLSHandshakeTimeout is unset.
const defaultTLSHandshakeTimeout = 10 * time.Second

// clientConn is the connection a session reads: nc itself without client
// TLS; otherwise the TLS connection, or under preferTLS the plaintext one
// with its first byte given back. The first byte and the handshake share
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
	var first [1]byte
	if _, err := io.ReadFull(nc, first[:]); err != nil {
		return nil, fmt.Errorf("waiting for the client's first byte: %w", err)
	}
	pc := &peekedConn{Conn: nc, first: first[0], pending: true}
	var out net.Conn = pc
	if first[0] != tlsHandshakeRecord {
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

// peekedConn gives back the byte read to tell TLS from plaintext before
// the rest of the stream.
type peekedConn struct {
	net.Conn
	first   byte
	pending bool
}

func (c *peekedConn) Read(b []byte) (int, error) {
	if c.pending && len(b) > 0 {
		c.pending = false
		b[0] = c.first
		// One byte alone: reading more could block on a client that sent
		// no more yet, with a byte in hand.
		return 1, nil
	}
	return c.Conn.Read(b)
}

// memberTLS is the tls.Config for one member: the configured one with the
// host of the member's address as ServerName when none is set, as a driver
// verifies the host it was given.
func memberTLS(cfg *tls.Config, m Member) *tls.Config {
	if cfg == nil {
		return nil
	}
	c := cfg.Clone()
	if c.ServerName == "" {
		if host, _, err := net.SplitHostPort(m.Addr); err == nil {
			c.ServerName = host
		}
	}
	return c
}
