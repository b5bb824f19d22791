package mongo

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/xdg-go/scram"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
	"github.com/dbrouter/dbrouter/proxy"
)

// Member is a Mongo-wire server the proxy forwards commands to.
type Member struct {
	Name string
	Addr string // host:port
}

// poolKey: every connection to a member is alike (same account, no
// per-connection state the proxy sets), so the pool has a single key.
type poolKey struct{}

// memberPool is one member's connections. The generic proxy.Pool fits:
// a Mongo member connection carries no session state (the database
// travels in each command's $db, sessions in its lsid), so one key, a
// fixed limit and the pool's stale check are all it needs.
type memberPool struct {
	*proxy.Pool[*memberConn, poolKey]
	name, addr string
	idx        int // in Config.Members and the topology's snapshots
	connect    time.Duration
	tls        *tls.Config // nil: plaintext
}

func newMemberPool(m Member, max int, connect time.Duration) *memberPool {
	mp := &memberPool{name: m.Name, addr: m.Addr, connect: connect}
	mp.Pool = proxy.NewPool(proxy.PoolConfig[*memberConn, poolKey]{
		Member: m.Name, Max: max, Dial: mp.dial,
	})
	return mp
}

// memberConn is one authenticated connection to a member. One session uses
// it at a time, for one request and its reply, so the stream can never
// hold another session's answer.
type memberConn struct {
	proxy.Pooled[poolKey]
	nc     net.Conn
	r      *bufio.Reader
	nextID int32
	// buf is the reply read buffer, reused for every reply on the
	// connection (trimmed by the session after a large one).
	buf []byte
	out []byte // handshake requests

	// lock serializes the sessions using the connection while the pins
	// table holds it (a cursor's getMore, a transaction's commands); a
	// pooled connection has one user and its lock is free.
	lock chan struct{}
	// holds counts the cursors and transactions living on the connection
	// and gone says it was dropped (guarded by the pins table's mu).
	holds int
	gone  bool
}

func (c *memberConn) Close() error { return c.nc.Close() }

// Alive peeks for a millisecond: a member that closed an idle connection
// shows EOF, a live one shows nothing. Any byte waiting is a reply nobody
// asked for, so that connection is not alive either. The pool calls it only
// for connections idle over a second.
func (c *memberConn) Alive() bool {
	if c.r.Buffered() > 0 {
		return false
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, err := c.r.Peek(1)
	_ = c.nc.SetReadDeadline(time.Time{})
	return err != nil && errors.Is(err, os.ErrDeadlineExceeded)
}

// dial opens a connection, says hello and, when the proxy has a member
// account, authenticates with SCRAM-SHA-256 (the pool's Dial). Any failure
// is ErrBackendDown: nothing of a client's was sent yet.
func (mp *memberPool) dial(ctx context.Context, _ poolKey, login proxy.Login) (*memberConn, error) {
	d := net.Dialer{Timeout: mp.connect}
	nc, err := d.DialContext(ctx, "tcp", mp.addr)
	if err != nil {
		return nil, fmt.Errorf("member %s (%s): %w: %v", mp.name, mp.addr, proxy.ErrBackendDown, err)
	}
	// The handshake as a whole (TLS's and Mongo's) gets the connect
	// timeout: a member that accepts and then says nothing (SIGSTOP) must
	// not hold the session.
	_ = nc.SetDeadline(time.Now().Add(mp.connect))
	// ctx ending ends the handshake too (a write whose primary was
	// replaced meanwhile, the proxy shutting down).
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	if mp.tls != nil {
		tc := tls.Client(nc, mp.tls)
		// The certificate's verdict (x509: ... unknown authority) is in
		// err, and so in the pool's error and the client's: a member
		// with the wrong CA is an error that says so, not a hang.
		if err = tc.Handshake(); err != nil {
			stop()
			nc.Close()
			return nil, fmt.Errorf("member %s (%s): tls: %w: %v", mp.name, mp.addr, proxy.ErrBackendDown, err)
		}
		nc = tc
	}
	c := &memberConn{nc: nc, r: bufio.NewReaderSize(nc, readBufSize), lock: make(chan struct{}, 1)}
	err = c.handshake(login)
	if !stop() {
		err = errors.Join(err, ctx.Err())
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("member %s (%s): handshake: %w: %v", mp.name, mp.addr, proxy.ErrBackendDown, err)
	}
	_ = nc.SetDeadline(time.Time{})
	c.buf = c.buf[:0]
	return c, nil
}

func (c *memberConn) handshake(login proxy.Login) error {
	doc := bsoncore.NewDocumentBuilder().AppendInt32("hello", 1).AppendString("$db", "admin").Build()
	if _, err := c.roundTrip(doc); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	if login.User == "" {
		return nil
	}
	return c.authenticate(login)
}

// authenticate runs a SCRAM-SHA-256 conversation as login against admin,
// with xdg-go/scram's client: the proxy writes no crypto of its own.
func (c *memberConn) authenticate(login proxy.Login) error {
	client, err := scram.SHA256.NewClient(login.User, login.Password, "")
	if err != nil {
		return fmt.Errorf("scram client for %s: %w", login.User, err)
	}
	conv := client.NewConversation()
	first, err := conv.Step("")
	if err != nil {
		return fmt.Errorf("scram: %w", err)
	}
	reply, err := c.roundTrip(bsoncore.NewDocumentBuilder().
		AppendInt32("saslStart", 1).
		AppendString("mechanism", "SCRAM-SHA-256").
		AppendBinary("payload", 0, []byte(first)).
		AppendDocument("options", bsoncore.NewDocumentBuilder().AppendBoolean("skipEmptyExchange", true).Build()).
		AppendString("$db", "admin").Build())
	// A bounded exchange: SCRAM takes two server messages, a third empty
	// step when the server does not skip it.
	for range 4 {
		if err != nil {
			return fmt.Errorf("authenticate as %s: %w", login.User, err)
		}
		payload, done, id, perr := saslReply(reply)
		if perr != nil {
			return fmt.Errorf("authenticate as %s: %w", login.User, perr)
		}
		if done {
			// With skipEmptyExchange the server-final message (its
			// signature) comes in the reply that says done.
			if !conv.Done() {
				if _, serr := conv.Step(payload); serr != nil {
					return fmt.Errorf("authenticate as %s: %w", login.User, serr)
				}
			}
			if !conv.Valid() {
				// The member proved nothing: it may not know the password.
				return fmt.Errorf("authenticate as %s: member's SCRAM signature not verified", login.User)
			}
			return nil
		}
		next, serr := conv.Step(payload)
		if serr != nil {
			return fmt.Errorf("authenticate as %s: %w", login.User, serr)
		}
		reply, err = c.roundTrip(bsoncore.NewDocumentBuilder().
			AppendInt32("saslContinue", 1).
			AppendInt32("conversationId", id).
			AppendBinary("payload", 0, []byte(next)).
			AppendString("$db", "admin").Build())
	}
	return fmt.Errorf("authenticate as %s: SCRAM conversation did not finish", login.User)
}

func saslReply(doc bsoncore.Document) (payload string, done bool, id int32, err error) {
	v, ok := wire.Lookup(doc, "payload")
	if !ok {
		return "", false, 0, errors.New("sasl reply without payload")
	}
	_, data, ok := v.BinaryOK()
	if !ok {
		return "", false, 0, errors.New("sasl payload is not binary")
	}
	if v, ok := wire.Lookup(doc, "done"); ok {
		done, _ = v.BooleanOK()
	}
	if v, ok := wire.Lookup(doc, "conversationId"); ok {
		id, _ = v.AsInt32OK()
	}
	return string(data), done, id, nil
}

// roundTrip sends a command the proxy itself issues and returns the reply's
// body (aliasing c.buf), or the member's error.
func (c *memberConn) roundTrip(doc bsoncore.Document) (bsoncore.Document, error) {
	c.nextID++
	out, err := wire.AppendOpMsg(c.out[:0], c.nextID, 0, 0, doc)
	if err != nil {
		return nil, err
	}
	c.out = out
	if _, err := c.nc.Write(out); err != nil {
		return nil, err
	}
	m, err := c.readReply(c.nextID)
	if err != nil {
		return nil, err
	}
	msg, err := wire.DecodeOpMsg(m.Raw)
	if err != nil {
		return nil, err
	}
	body := msg.Body()
	if !replyOK(body) {
		errmsg := "command failed"
		if v, ok := wire.Lookup(body, "errmsg"); ok {
			if s, ok := stringValue(v); ok {
				errmsg = s
			}
		}
		return nil, fmt.Errorf("member: %s", errmsg)
	}
	return body, nil
}

// readReply reads the member's answer to request id into c.buf. A reply to
// any other request means the stream is out of step: an error, and the
// connection is discarded.
func (c *memberConn) readReply(id int32) (wire.Message, error) {
	m, buf, err := wire.ReadMessage(c.r, maxMessageSize, c.buf)
	c.buf = buf
	if err != nil {
		return m, err
	}
	if m.Header.ResponseTo != id {
		return m, fmt.Errorf("reply to request %d while waiting for %d", m.Header.ResponseTo, id)
	}
	if m.Header.OpCode != wire.OpCodeMsg {
		return m, fmt.Errorf("reply in %v, want OP_MSG", m.Header.OpCode)
	}
	return m, nil
}

// replyOK reads a reply's ok field, whatever its numeric type.
func replyOK(doc bsoncore.Document) bool {
	v, ok := wire.Lookup(doc, "ok")
	return ok && okValue(v)
}
