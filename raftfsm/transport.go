package raftfsm

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/zap"
)

// ErrAuth: the peer does not hold the cluster secret.
var ErrAuth = errors.New("peer failed cluster-secret authentication")

// Handshake: mutual challenge-response over HMAC-SHA256 of the shared
// cluster secret. Each side proves it holds the secret without sending it,
// and fresh nonces on both sides make a recorded handshake useless. A
// process without the secret cannot open a Raft connection, so it can
// neither vote, nor append entries, nor be added. The stream itself is not
// encrypted: run the control plane over a private network or a tunnel.
const (
	nonceLen         = 32
	macLen           = sha256.Size
	handshakeTimeout = 5 * time.Second
	tagClient        = "dbrouter-raft-v1 client"
	tagServer        = "dbrouter-raft-v1 server"
)

func mac(secret []byte, tag string, a, b []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(tag))
	h.Write(a)
	h.Write(b)
	return h.Sum(nil)
}

// clientHandshake runs on the dialing side.
func clientHandshake(c net.Conn, secret []byte) error {
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	defer c.SetDeadline(time.Time{})
	serverNonce := make([]byte, nonceLen)
	if _, err := io.ReadFull(c, serverNonce); err != nil {
		return fmt.Errorf("read challenge: %w", err)
	}
	msg := make([]byte, nonceLen, nonceLen+macLen)
	if _, err := rand.Read(msg); err != nil {
		return err
	}
	clientNonce := msg[:nonceLen:nonceLen]
	msg = append(msg, mac(secret, tagClient, serverNonce, clientNonce)...)
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("send response: %w", err)
	}
	proof := make([]byte, macLen)
	if _, err := io.ReadFull(c, proof); err != nil {
		return fmt.Errorf("%w: server closed the handshake (%v)", ErrAuth, err)
	}
	if !hmac.Equal(proof, mac(secret, tagServer, clientNonce, serverNonce)) {
		return fmt.Errorf("%w: server's proof does not match", ErrAuth)
	}
	return nil
}

// serverHandshake runs on the accepting side.
func serverHandshake(c net.Conn, secret []byte) error {
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	defer c.SetDeadline(time.Time{})
	serverNonce := make([]byte, nonceLen)
	if _, err := rand.Read(serverNonce); err != nil {
		return err
	}
	if _, err := c.Write(serverNonce); err != nil {
		return fmt.Errorf("send challenge: %w", err)
	}
	msg := make([]byte, nonceLen+macLen)
	if _, err := io.ReadFull(c, msg); err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	clientNonce := msg[:nonceLen]
	if !hmac.Equal(msg[nonceLen:], mac(secret, tagClient, serverNonce, clientNonce)) {
		return fmt.Errorf("%w: client's response does not match", ErrAuth)
	}
	if _, err := c.Write(mac(secret, tagServer, clientNonce, serverNonce)); err != nil {
		return fmt.Errorf("send proof: %w", err)
	}
	return nil
}

// authLayer is a raft.StreamLayer whose connections have passed the
// handshake in both directions.
type authLayer struct {
	ln     net.Listener
	secret []byte
	log    *zap.Logger
	ready  chan net.Conn
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

var _ raft.StreamLayer = (*authLayer)(nil)

func newAuthLayer(ln net.Listener, secret []byte, log *zap.Logger) *authLayer {
	l := &authLayer{ln: ln, secret: secret, log: log, ready: make(chan net.Conn), done: make(chan struct{})}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

// acceptLoop handshakes each connection in its own goroutine, so one slow or
// hostile peer cannot stall the others.
func (l *authLayer) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			l.log.Warn("raft accept", zap.Error(err))
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			if err := serverHandshake(c, l.secret); err != nil {
				l.log.Warn("raft connection refused", zap.Stringer("remote", c.RemoteAddr()), zap.Error(err))
				c.Close()
				return
			}
			select {
			case l.ready <- c:
			case <-l.done:
				c.Close()
			}
		}()
	}
}

func (l *authLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *authLayer) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.ln.Close()
		l.wg.Wait()
	})
	return err
}

func (l *authLayer) Addr() net.Addr { return l.ln.Addr() }

func (l *authLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", string(addr))
	if err != nil {
		return nil, err
	}
	if err := clientHandshake(c, l.secret); err != nil {
		c.Close()
		return nil, fmt.Errorf("raft dial %s: %w", addr, err)
	}
	return c, nil
}
