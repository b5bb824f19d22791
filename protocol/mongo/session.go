package mongo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
	"github.com/dbrouter/dbrouter/proxy"
)

// session is one client connection: one goroutine reading a message and
// writing its answer, in order, so replies can never be mixed up.
type session struct {
	p  *Proxy
	nc net.Conn
	// state is stateIdle while the session waits for the client's next
	// message and stateBusy while it handles one; a stop (Proxy.drain)
	// moves an idle session to stateClosed and closes its socket.
	state atomic.Int32
	r     *bufio.Reader
	id    int32 // hello's connectionId
	log   *zap.Logger

	// buf is the read buffer ReadMessage fills and hands back; doc and out
	// are the reply document and message, rebuilt in place for every
	// request, so that a session in steady state reads and answers
	// without allocating.
	buf, doc, out []byte
	lastReqID     int32
	// wc is a request rewritten with the default write concern
	// (Config.MajorityWrites), reused.
	wc []byte

	// user is the authenticated user, "" before authentication.
	user     string
	sasl     *conversation
	lastConv int32

	// cur is the member connection a forwarded command is using, for
	// shutdown to unblock a wait on the member.
	cur atomic.Pointer[memberConn]

	// start and kind are the forwarded command's arrival and kind label,
	// for dbrouter_query_duration_seconds.
	start time.Time
	kind  proxy.StmtKind

	// sw sends requests to members with their wait (forward.go).
	sw sendWaiter
	// readDL and writeDL are the deadlines last set on the client socket,
	// which only this session sets (nothing else may: these would go
	// stale): they are moved only when less than the timeout less a
	// slack remains (lazyDeadline), not on every message.
	readDL, writeDL time.Time
}

// lazyDeadline returns the deadline to set, d from now, and true, unless
// the one set (*cur) is still at least d less a slack away: a runtime
// timer update per message is cheap but not free, and a second of slack
// is nothing against an idle timeout of hours or a write timeout of 30 s.
func lazyDeadline(cur *time.Time, d time.Duration) (time.Time, bool) {
	now := time.Now()
	if cur.Sub(now) >= d-min(time.Second, d/10) {
		return time.Time{}, false
	}
	*cur = now.Add(d)
	return *cur, true
}

// readBufSize is the socket read buffer: a hello or a small command fits,
// so most messages cost one read system call.
const readBufSize = 4 << 10

// keepBufMax bounds the read and reply buffers a session keeps between
// messages: one large message must not leave an idle session holding tens
// of megabytes.
const keepBufMax = 1 << 20

func (p *Proxy) newSession(nc net.Conn) *session {
	id := p.nextID.Add(1)
	return &session{
		p:   p,
		nc:  nc,
		r:   bufio.NewReaderSize(nc, readBufSize),
		id:  id,
		log: p.log.With(zap.Int32("conn", id)),
	}
}

// serve runs the session until the client leaves, breaks the protocol, or
// ctx ends (Proxy.shutdown then closes the socket under the blocked read).
func (s *session) serve(ctx context.Context) {
	defer s.nc.Close()
	s.p.metrics.Sessions.Inc()
	defer s.p.metrics.Sessions.Dec()
	// One session's bug must not take the process, and every other client,
	// down with it: the panic is logged and only this connection closes.
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("session panicked; connection closed", zap.Any("panic", r), zap.Stack("stack"))
		}
	}()
	// A session waiting on a member when the proxy shuts down: a past
	// deadline ends that wait (closing the client socket does not).
	stop := context.AfterFunc(ctx, func() {
		if c := s.cur.Load(); c != nil {
			_ = c.nc.SetDeadline(time.Unix(1, 0))
		}
	})
	defer stop()
	for ctx.Err() == nil {
		if s.p.draining.Load() {
			return // between messages: where a stop closes a session
		}
		if dl, ok := lazyDeadline(&s.readDL, s.p.cfg.ClientIdleTimeout); ok {
			if err := s.nc.SetReadDeadline(dl); err != nil {
				return
			}
		}
		m, buf, err := wire.ReadMessage(s.r, maxMessageSize, s.buf)
		s.buf = buf
		if err == nil && !s.state.CompareAndSwap(stateIdle, stateBusy) {
			return // a stop closed the session as the message arrived: it never ran
		}
		if err != nil {
			if s.state.Load() == stateClosed {
				return // closed by a stop while idle: not the client's doing
			}
			s.readFailed(ctx, err)
			return
		}
		if fwd, ok := s.forwardable(m); ok {
			err := s.forward(ctx, m, fwd)
			s.state.Store(stateIdle) // only the session leaves stateBusy
			if err != nil {
				s.log.Debug("write to client failed", zap.Error(err))
				return
			}
			if cap(s.buf) > keepBufMax {
				s.buf = nil
			}
			continue
		}
		reply, herr := s.handle(m)
		if len(reply) > 0 {
			if err := s.write(reply); err != nil {
				s.state.Store(stateIdle)
				s.log.Debug("write to client failed", zap.Error(err))
				return
			}
		}
		s.state.Store(stateIdle)
		if herr != nil {
			s.p.metrics.ClientErrors.Inc()
			s.log.Info("closing client connection", zap.Error(herr))
			return
		}
		if cap(s.buf) > keepBufMax {
			s.buf = nil
		}
		if cap(s.out) > keepBufMax {
			s.out, s.doc = nil, nil
		}
	}
}

// forwardable decodes an OP_MSG that goes to a member. Anything else
// (another opcode, a message the codec refuses, a command the proxy
// answers) is handle's.
func (s *session) forwardable(m wire.Message) (wire.OpMsg, bool) {
	if len(s.p.members) == 0 || m.Header.OpCode != wire.OpCodeMsg {
		return wire.OpMsg{}, false
	}
	msg, err := wire.DecodeOpMsg(m.Raw)
	if err != nil || !s.forwarded(msg.CommandName()) {
		return wire.OpMsg{}, false
	}
	return msg, true
}

// readFailed logs why reading the next message ended the session. A clean
// close, an idle timeout and shutdown are routine; a frame the codec
// refused before its body was read (a length below 16 or over
// maxMessageSizeBytes) is a client bug worth an operator's eye, and cannot
// be answered: the stream is out of step.
func (s *session) readFailed(ctx context.Context, err error) {
	var me *wire.MessageError
	switch {
	case errors.Is(err, io.EOF), ctx.Err() != nil:
	case errors.As(err, &me):
		s.p.metrics.ClientErrors.Inc()
		s.log.Info("closing client connection: malformed message frame", zap.Error(wireError(err)))
	default:
		s.log.Debug("client read ended", zap.Error(err))
	}
}

func (s *session) write(b []byte) error {
	if dl, ok := lazyDeadline(&s.writeDL, s.p.cfg.WriteTimeout); ok {
		if err := s.nc.SetWriteDeadline(dl); err != nil {
			return fmt.Errorf("set write deadline: %w", err)
		}
	}
	if _, err := s.nc.Write(b); err != nil {
		return fmt.Errorf("write reply: %w", err)
	}
	return nil
}

// handle answers one message. It returns the reply to write (nil for none)
// and a non-nil error when the connection must close after it: a message
// the codec refused leaves the stream untrustworthy, so the client is told
// why, in the opcode it expects, and then disconnected.
func (s *session) handle(m wire.Message) ([]byte, error) {
	reqID := m.Header.RequestID
	switch m.Header.OpCode {
	case wire.OpCodeMsg:
		msg, err := wire.DecodeOpMsg(m.Raw)
		if err != nil {
			err = wireError(err)
			return s.replyMsg(reqID, s.errorDoc(codeOf(err), s.errmsg(err))), err
		}
		db, _ := msg.DB()
		doc := s.command(msg.CommandName(), db, msg.Body())
		if msg.Flags&wire.MoreToCome != 0 {
			// The client expects no answer (w:0); writing one would be
			// read as the answer to its next request.
			return nil, nil
		}
		return s.replyMsg(reqID, doc), nil
	case wire.OpCodeQuery:
		q, err := wire.DecodeOpQuery(m.Raw)
		if err != nil {
			err = wireError(err)
			return s.replyQuery(reqID, s.errorDoc(codeOf(err), s.errmsg(err))), err
		}
		return s.replyQuery(reqID, s.legacyCommand(q)), nil
	case wire.OpCodeCompressed:
		// The message is whole and the stream in step: answer in the
		// original opcode's reply form and keep the connection, so the
		// error reaches the application instead of a bare disconnect.
		err := wireError(wire.Unsupported(m))
		doc := s.errorDoc(codeOf(err), s.errmsg(err))
		if c, cerr := wire.DecodeOpCompressed(m.Raw); cerr == nil && c.OriginalOpCode == wire.OpCodeQuery {
			return s.replyQuery(reqID, doc), nil
		}
		return s.replyMsg(reqID, doc), nil
	default:
		// An opcode without a reply form the proxy knows (the legacy
		// OP_INSERT and kin expect none): answering could put the stream
		// out of step, so the connection closes.
		return nil, wireError(wire.Unsupported(m))
	}
}

// legacyCommand answers an OP_QUERY: only the handshake travels that way
// from a driver that knows the server speaks OP_MSG (wire version 6 and
// up, and the proxy announces at least 9).
func (s *session) legacyCommand(q wire.OpQuery) []byte {
	name := q.CommandName()
	if !q.IsCommand() || !isHello(name) {
		return s.errorDoc(CodeProtocolError, "dbrouter: OP_QUERY is accepted only for the hello/isMaster handshake on admin.$cmd, got "+
			quoteName(name)+" on "+q.FullCollectionName+"; other commands go in OP_MSG")
	}
	cmd := q.Query
	if k := firstKey(cmd); k == "$query" || k == "query" {
		if v, ok := wire.Lookup(cmd, k); ok {
			if inner, ok := v.DocumentOK(); ok {
				cmd = inner
			}
		}
	}
	return s.command(name, q.Database(), cmd)
}

func isHello(name string) bool {
	return name == "hello" || name == "isMaster" || name == "ismaster"
}

// preAuth are the commands a session may run before it authenticates,
// mongod's list: the handshake, the SASL exchange, and what drivers send
// on every connection before or without credentials.
func preAuth(name string) bool {
	switch name {
	case "hello", "isMaster", "ismaster", "ping", "buildInfo", "buildinfo",
		"saslStart", "saslContinue", "endSessions":
		return true
	}
	return false
}

// command answers one command and returns the reply document (in s.doc):
// the commands the proxy answers itself, and, when no member is
// configured, CodeNotRoutedYet for the rest (serve forwards them
// otherwise).
func (s *session) command(name, db string, cmd bsoncore.Document) []byte {
	if s.p.auth != nil && s.user == "" && !preAuth(name) {
		s.doc = appendError(s.doc[:0], CodeUnauthorized, "command "+quoteName(name)+" requires authentication")
		return s.doc
	}
	switch name {
	case "hello", "isMaster", "ismaster":
		s.doc = s.appendHello(s.doc[:0], parseHello(cmd, name, db))
	case "ping", "endSessions":
		// endSessions: the proxy holds no server sessions of its own yet,
		// so there is nothing to end; drivers send it on disconnect.
		s.doc = appendOK(s.doc[:0])
	case "buildInfo", "buildinfo":
		s.doc = s.appendBuildInfo(s.doc[:0])
	case "saslStart":
		s.doc = s.saslStart(s.doc[:0], db, cmd)
	case "saslContinue":
		s.doc = s.saslContinue(s.doc[:0], cmd)
	default:
		s.doc = appendError(s.doc[:0], CodeNotRoutedYet, "dbrouter: cluster "+s.p.cfg.Cluster+": command "+quoteName(name)+
			" is not routed yet: no member is configured, so the proxy answers only hello, ping, buildInfo, endSessions and authentication (docs/mongo.md)")
	}
	return s.doc
}

// quoteName shows a client's command name in an error message, empty ones
// and all.
func quoteName(name string) string {
	if name == "" {
		return "(empty document)"
	}
	return name
}

// errmsg is how a client reads a proxy-side error: it starts with
// "dbrouter: cluster NAME:", so an operator can tell the proxy's errors
// from a member's.
func (s *session) errmsg(err error) string {
	return "dbrouter: cluster " + s.p.cfg.Cluster + ": " + err.Error()
}

func (s *session) errorDoc(c Code, errmsg string) []byte {
	s.doc = appendError(s.doc[:0], c, errmsg)
	return s.doc
}

// replyMsg wraps doc in an OP_MSG answering request responseTo.
func (s *session) replyMsg(responseTo int32, doc []byte) []byte {
	s.lastReqID++
	out, err := wire.AppendOpMsg(s.out[:0], s.lastReqID, responseTo, 0, doc)
	if err != nil {
		// The proxy built doc itself: failing to encode it is a bug, and
		// the client is better off disconnected than unanswered.
		panic(fmt.Sprintf("mongo: encode own reply: %v", err))
	}
	s.out = out
	return out
}

// replyQuery wraps doc in an OP_REPLY answering the OP_QUERY responseTo.
func (s *session) replyQuery(responseTo int32, doc []byte) []byte {
	s.lastReqID++
	out, err := wire.AppendOpReply(s.out[:0], s.lastReqID, responseTo, 0, 0, 0, doc)
	if err != nil {
		panic(fmt.Sprintf("mongo: encode own reply: %v", err))
	}
	s.out = out
	return out
}

// firstKey is a command document's first key: its name.
func firstKey(doc bsoncore.Document) string {
	if len(doc) <= 5 {
		return ""
	}
	elem, _, ok := bsoncore.ReadElement(doc[4 : len(doc)-1])
	if !ok {
		return ""
	}
	return elem.Key()
}

// Session states (session.state).
const (
	stateIdle int32 = iota
	stateBusy
	stateClosed
)

// closeIfIdle closes the session's socket if it is waiting for the
// client's next message, and reports whether it did; a busy one closes
// itself after its answer (serve).
func (s *session) closeIfIdle() bool {
	if !s.state.CompareAndSwap(stateIdle, stateClosed) {
		return false
	}
	s.nc.Close()
	return true
}
