package rssim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
)

// Server is one simulated member: it listens where clients and peers
// reach the member and talks to its FerretDB at Config.Backend.
type Server struct {
	cfg  Config
	log  *slog.Logger
	node *node

	connIDs atomic.Int64
	replyID atomic.Int32
}

// New checks cfg and returns a server; Open loads its state.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	log = log.With("member", cfg.Self)
	return &Server{cfg: cfg, log: log, node: newNode(cfg, log)}, nil
}

// Serve loads the member's state from its FerretDB, then runs the member
// (heartbeats, elections, replication) and serves ln until ctx ends;
// ready, when not nil, is called once the state is loaded. It closes ln
// and returns after every goroutine it started has ended.
func (s *Server) Serve(ctx context.Context, ln net.Listener, ready func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer s.node.close()
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	if err := s.node.open(ctx); err != nil {
		ln.Close()
		return err
	}
	if ready != nil {
		ready()
	}
	if s.cfg.TLS != nil {
		// TLS only: the handshake runs on each connection's first read,
		// in its own goroutine; a plaintext client fails it and is closed.
		ln = tls.NewListener(ln, s.cfg.TLS)
	}
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				wait(ctx, nil, delay)
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		delay = 0
		wg.Go(func() { s.serveConn(ctx, nc) })
	}
}

// conn is one client connection and its own FerretDB connection for what
// passes through (cursors live on a FerretDB connection).
type conn struct {
	s       *Server
	id      int64
	nc      net.Conn
	backend net.Conn
	bbuf    []byte
}

func (s *Server) serveConn(ctx context.Context, nc net.Conn) {
	c := &conn{s: s, id: s.connIDs.Add(1), nc: nc}
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer func() {
		stop()
		nc.Close()
		if c.backend != nil {
			c.backend.Close()
		}
		if r := recover(); r != nil {
			s.log.Error("connection panicked", "conn", c.id, "panic", r)
		}
	}()
	var buf []byte
	for {
		m, b, err := wire.ReadMessage(nc, 0, buf)
		buf = b
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				s.log.Info("bad frame; closing the connection", "conn", c.id, "err", err)
			}
			return
		}
		if err := c.serveMessage(ctx, m); err != nil {
			if ctx.Err() == nil {
				s.log.Info("closing the connection", "conn", c.id, "err", err)
			}
			return
		}
	}
}

func (c *conn) serveMessage(ctx context.Context, m wire.Message) error {
	switch m.Header.OpCode {
	case wire.OpCodeMsg:
		msg, err := wire.DecodeOpMsg(m.Raw)
		if err != nil {
			_ = c.writeMsg(m.Header.RequestID, errf(codeFailedToParse, "rssim: bad OP_MSG: %v", err).reply())
			return err
		}
		doc, err := flatten(msg)
		if err != nil {
			_ = c.writeMsg(m.Header.RequestID, errf(codeFailedToParse, "rssim: %v", err).reply())
			return err
		}
		db, _ := msg.DB()
		reply, pass := c.s.node.handle(ctx, c.id, msg.CommandName(), db, doc)
		if pass {
			return c.forward(ctx, msg, m.Raw)
		}
		if msg.Flags&wire.MoreToCome != 0 {
			return nil // the client asked for no reply
		}
		return c.writeMsg(m.Header.RequestID, reply)
	case wire.OpCodeQuery:
		q, err := wire.DecodeOpQuery(m.Raw)
		if err != nil {
			return err
		}
		name := q.CommandName()
		var reply bson.Raw
		if q.IsCommand() && (name == "hello" || name == "isMaster" || name == "ismaster") {
			body := bson.Raw(q.Query)
			if inner, ok := body.Lookup("$query").DocumentOK(); ok {
				body = inner
			}
			reply = c.s.node.hello(body, name != "hello", c.id)
		} else {
			reply = errf(codeUnsupportedOpQuery, "Unsupported OP_QUERY command: %s. The client driver may require an upgrade.", name).reply()
		}
		out, err := wire.AppendOpReply(nil, c.s.replyID.Add(1), m.Header.RequestID, 0, 0, 0, bsoncore.Document(reply))
		if err != nil {
			return err
		}
		return c.write(out)
	default:
		err := wire.Unsupported(m)
		_ = c.writeMsg(m.Header.RequestID, errf(codeFailedToParse, "rssim: %v", err).reply())
		return err
	}
}

func (c *conn) writeMsg(responseTo int32, body bson.Raw) error {
	out, err := wire.AppendOpMsg(nil, c.s.replyID.Add(1), responseTo, 0, bsoncore.Document(body))
	if err != nil {
		return fmt.Errorf("encode reply: %w", err)
	}
	return c.write(out)
}

func (c *conn) write(b []byte) error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err := c.nc.Write(b)
	return err
}

// forward passes a request to FerretDB on the connection's own backend
// connection and its reply back: the request keeps its id, so the reply
// answers it; checksums are dropped (and exhaust is not offered, so one
// request has one reply); a moreToCome request's reply, which FerretDB
// sends anyway, is read and dropped.
func (c *conn) forward(ctx context.Context, msg wire.OpMsg, raw []byte) error {
	if c.backend == nil {
		var d net.Dialer
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		nc, err := d.DialContext(dctx, "tcp", c.s.cfg.Backend)
		cancel()
		if err != nil {
			_ = c.writeMsg(msg.Header.RequestID, errf(codeInternalError, "rssim: FerretDB unreachable: %v", err).reply())
			return err
		}
		c.backend = nc
	}
	out := raw
	if msg.Flags&(wire.ChecksumPresent|wire.ExhaustAllowed) != 0 {
		var err error
		if out, err = reencode(msg, msg.Header.RequestID, msg.Header.ResponseTo, msg.Flags&^(wire.ChecksumPresent|wire.ExhaustAllowed)); err != nil {
			return err
		}
	}
	be := c.backend
	stop := context.AfterFunc(ctx, func() { be.Close() })
	defer stop()
	_ = c.backend.SetDeadline(time.Now().Add(10 * time.Minute))
	if _, err := c.backend.Write(out); err != nil {
		return fmt.Errorf("to FerretDB: %w", err)
	}
	if msg.Flags&wire.MoreToCome != 0 {
		// FerretDB answers anyway; wait for that answer a short while so
		// that the next request's reply is not mistaken for it.
		_ = c.backend.SetReadDeadline(time.Now().Add(5 * time.Second))
	}
	r, b, err := wire.ReadMessage(c.backend, 0, c.bbuf)
	c.bbuf = b
	if err != nil {
		if msg.Flags&wire.MoreToCome != 0 {
			c.backend.Close()
			c.backend = nil
			return nil
		}
		return fmt.Errorf("from FerretDB: %w", err)
	}
	if msg.Flags&wire.MoreToCome != 0 {
		return nil
	}
	reply := r.Raw
	if r.Header.OpCode == wire.OpCodeMsg {
		rm, err := wire.DecodeOpMsg(r.Raw)
		if err != nil {
			return fmt.Errorf("from FerretDB: %w", err)
		}
		if rm.Flags&(wire.ChecksumPresent|wire.MoreToCome) != 0 {
			if reply, err = reencode(rm, rm.Header.RequestID, rm.Header.ResponseTo, rm.Flags&^(wire.ChecksumPresent|wire.MoreToCome)); err != nil {
				return err
			}
		}
	}
	return c.write(reply)
}

// reencode writes msg again with other flags, its sections in order.
func reencode(msg wire.OpMsg, requestID, responseTo int32, flags wire.MsgFlags) ([]byte, error) {
	start, out := wire.AppendOpMsgStart(nil, requestID, responseTo, flags)
	it := msg.Sections()
	var err error
	for s, ok := it.Next(); ok; s, ok = it.Next() {
		if s.Kind == wire.SectionBody {
			out, err = wire.AppendBodySection(out, s.Body)
		} else {
			out, err = wire.AppendSequenceSection(out, s.Sequence.Identifier, s.Sequence.Documents)
		}
		if err != nil {
			return nil, err
		}
	}
	return wire.AppendOpMsgEnd(out, start)
}

// flatten makes one document of an OP_MSG: the body with each document
// sequence as an array under its identifier (drivers send insert's
// documents, update's updates and delete's deletes that way).
func flatten(msg wire.OpMsg) (bson.Raw, error) {
	if msg.NumSequences() == 0 {
		return bson.Raw(msg.Body()), nil
	}
	idx, dst := bsoncore.AppendDocumentStart(nil)
	elems, err := msg.Body().Elements()
	if err != nil {
		return nil, fmt.Errorf("body: %w", err)
	}
	have := map[string]bool{}
	for _, e := range elems {
		have[e.Key()] = true
		dst = append(dst, e...)
	}
	it := msg.Sections()
	for s, ok := it.Next(); ok; s, ok = it.Next() {
		if s.Kind != wire.SectionSequence {
			continue
		}
		if have[s.Sequence.Identifier] {
			return nil, fmt.Errorf("document sequence %q repeats a body field", s.Sequence.Identifier)
		}
		aidx, d := bsoncore.AppendArrayElementStart(dst, s.Sequence.Identifier)
		dst = d
		docs := s.Sequence.Docs()
		for i := 0; ; i++ {
			doc, ok := docs.Next()
			if !ok {
				break
			}
			dst = bsoncore.AppendDocumentElement(dst, strconv.Itoa(i), doc)
		}
		if dst, err = bsoncore.AppendArrayEnd(dst, aidx); err != nil {
			return nil, err
		}
	}
	dst, err = bsoncore.AppendDocumentEnd(dst, idx)
	if err != nil {
		return nil, err
	}
	return bson.Raw(dst), nil
}
