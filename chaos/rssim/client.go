package rssim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
)

// defaultCallTimeout bounds a call whose context has no deadline: a member
// that hangs (SIGSTOP) must never hold a caller forever.
const defaultCallTimeout = 30 * time.Second

// client runs commands on one address over OP_MSG: the member's own
// FerretDB, or a peer's shim. It keeps a few idle connections; a connection
// that saw any error is closed, so a stream never gets out of step.
type client struct {
	addr string
	tls  *tls.Config // nil: plaintext

	mu     sync.Mutex
	idle   []net.Conn
	closed bool
	reqID  atomic.Int32
}

const maxIdle = 8

func newClient(addr string, tc *tls.Config) *client { return &client{addr: addr, tls: tc} }

// wconn is one checked-out connection.
type wconn struct {
	c   *client
	nc  net.Conn
	buf []byte
	bad bool
}

func (c *client) get(ctx context.Context) (*wconn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errors.New("client closed")
	}
	if n := len(c.idle); n > 0 {
		nc := c.idle[n-1]
		c.idle = c.idle[:n-1]
		c.mu.Unlock()
		return &wconn{c: c, nc: nc}, nil
	}
	c.mu.Unlock()
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	nc, err := d.DialContext(dctx, "tcp", c.addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", c.addr, err)
	}
	if c.tls != nil {
		tc := tls.Client(nc, c.tls)
		if err := tc.HandshakeContext(dctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("tls to %s: %w", c.addr, err)
		}
		nc = tc
	}
	return &wconn{c: c, nc: nc}, nil
}

func (w *wconn) put() {
	if w.bad {
		w.nc.Close()
		return
	}
	c := w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || len(c.idle) >= maxIdle {
		w.nc.Close()
		return
	}
	c.idle = append(c.idle, w.nc)
}

// close closes the idle connections; those checked out close when put back.
func (c *client) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, nc := range c.idle {
		nc.Close()
	}
	c.idle = nil
}

// roundTrip writes msg and reads one reply, within ctx's deadline (or the
// default one) and ending early when ctx is cancelled.
func (w *wconn) roundTrip(ctx context.Context, msg []byte, wantReply bool) (wire.Message, error) {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(defaultCallTimeout)
	}
	_ = w.nc.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = w.nc.SetDeadline(time.Now()) })
	defer stop()
	if _, err := w.nc.Write(msg); err != nil {
		w.bad = true
		return wire.Message{}, fmt.Errorf("write to %s: %w", w.c.addr, err)
	}
	if !wantReply {
		return wire.Message{}, nil
	}
	m, buf, err := wire.ReadMessage(w.nc, 0, w.buf)
	w.buf = buf
	if err != nil {
		w.bad = true
		if ctx.Err() != nil {
			return wire.Message{}, fmt.Errorf("read from %s: %w", w.c.addr, ctx.Err())
		}
		return wire.Message{}, fmt.Errorf("read from %s: %w", w.c.addr, err)
	}
	return m, nil
}

// command runs one command (body carries its $db) and returns the reply
// body, copied. A reply with ok != 1 is a *cmdError.
func (w *wconn) command(ctx context.Context, body bsoncore.Document) (bson.Raw, error) {
	id := w.c.reqID.Add(1)
	msg, err := wire.AppendOpMsg(nil, id, 0, 0, body)
	if err != nil {
		return nil, fmt.Errorf("encode command for %s: %w", w.c.addr, err)
	}
	m, err := w.roundTrip(ctx, msg, true)
	if err != nil {
		return nil, err
	}
	if m.Header.OpCode != wire.OpCodeMsg || m.Header.ResponseTo != id {
		w.bad = true
		return nil, fmt.Errorf("reply from %s: %v answering %d, want OP_MSG answering %d", w.c.addr, m.Header.OpCode, m.Header.ResponseTo, id)
	}
	r, err := wire.DecodeOpMsg(m.Raw)
	if err != nil {
		w.bad = true
		return nil, fmt.Errorf("reply from %s: %w", w.c.addr, err)
	}
	out := bson.Raw(append([]byte(nil), r.Body()...))
	return out, replyError(out)
}

// replyError is the *cmdError a reply with ok != 1 carries, or nil.
func replyError(r bson.Raw) error {
	if okValue(r) {
		return nil
	}
	e := &cmdError{Code: codeInternalError, Msg: "command failed"}
	if v, ok := r.Lookup("code").AsInt64OK(); ok {
		e.Code = int32(v)
	}
	if s, ok := r.Lookup("errmsg").StringValueOK(); ok {
		e.Msg = s
	}
	return e
}

func okValue(r bson.Raw) bool {
	v, err := r.LookupErr("ok")
	if err != nil {
		return false
	}
	switch v.Type {
	case bson.TypeDouble:
		return v.Double() == 1
	case bson.TypeInt32:
		return v.Int32() == 1
	case bson.TypeInt64:
		return v.Int64() == 1
	case bson.TypeBoolean:
		return v.Boolean()
	}
	return false
}

// run runs cmd in db on a pooled connection.
func (c *client) run(ctx context.Context, db string, cmd bson.D) (bson.Raw, error) {
	body, err := bson.Marshal(append(cmd[:len(cmd):len(cmd)], bson.E{Key: "$db", Value: db}))
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", cmd[0].Key, err)
	}
	w, err := c.get(ctx)
	if err != nil {
		return nil, err
	}
	defer w.put()
	return w.command(ctx, body)
}

// findAll runs find and every getMore on one connection (a cursor lives
// on the connection's server) and returns every document.
func (c *client) findAll(ctx context.Context, db, coll string, filter any, opts ...bson.E) ([]bson.Raw, error) {
	w, err := c.get(ctx)
	if err != nil {
		return nil, err
	}
	defer w.put()
	cmd := bson.D{{Key: "find", Value: coll}, {Key: "filter", Value: filter}, {Key: "batchSize", Value: int32(10000)}}
	cmd = append(cmd, opts...)
	cmd = append(cmd, bson.E{Key: "$db", Value: db})
	body, err := bson.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("encode find: %w", err)
	}
	var out []bson.Raw
	for range 100000 { // bounded: a cursor of more batches than this is a bug
		r, err := w.command(ctx, body)
		if err != nil {
			return nil, fmt.Errorf("find %s.%s on %s: %w", db, coll, c.addr, err)
		}
		cur := r.Lookup("cursor").Document()
		batch, ok := cur.Lookup("firstBatch").ArrayOK()
		if !ok {
			batch, _ = cur.Lookup("nextBatch").ArrayOK()
		}
		vals, _ := batch.Values()
		for _, v := range vals {
			out = append(out, v.Document())
		}
		id, _ := cur.Lookup("id").AsInt64OK()
		if id == 0 {
			return out, nil
		}
		if body, err = bson.Marshal(bson.D{{Key: "getMore", Value: id}, {Key: "collection", Value: coll}, {Key: "batchSize", Value: int32(10000)}, {Key: "$db", Value: db}}); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("find %s.%s on %s: too many batches", db, coll, c.addr)
}
