package mongo

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
	"github.com/dbrouter/dbrouter/proxy"
	"github.com/dbrouter/dbrouter/router"
	"github.com/dbrouter/dbrouter/topology"
)

// proxyAnswered are the commands the proxy answers itself even when it has
// members: the handshake must describe the proxy (a mongos), not a member;
// authentication is terminated here; endSessions has nothing to end on a
// member that keeps no sessions (FerretDB has no endSessions, and a
// mongod's sessions expire on their own after logicalSessionTimeoutMinutes);
// ping is the driver's check of the proxy, answered without a member round
// trip.
func proxyAnswered(name string) bool {
	switch name {
	case "hello", "isMaster", "ismaster", "ping", "buildInfo", "buildinfo",
		"saslStart", "saslContinue", "endSessions":
		return true
	}
	return false
}

// forwarded reports whether a command goes to a member: the proxy has
// members, the session passed the auth gate, and the proxy does not answer
// it itself.
func (s *session) forwarded(name string) bool {
	return len(s.p.members) > 0 && !proxyAnswered(name) && (s.p.auth == nil || s.user != "")
}

// Error labels (retryable-writes and transactions specs).
const (
	// errorLabelRetryableWrite: drivers send the write again once, with
	// the same lsid and txnNumber.
	errorLabelRetryableWrite = "RetryableWriteError"
	// errorLabelNoWritesPerformed: the attempt did not reach a server.
	errorLabelNoWritesPerformed = "NoWritesPerformed"
	// errorLabelTransient: the transaction was aborted; drivers
	// (WithTransaction) run it again from the start.
	errorLabelTransient = "TransientTransactionError"
	// errorLabelUnknownCommit: a commit whose outcome is not known;
	// drivers retry the commit.
	errorLabelUnknownCommit = "UnknownTransactionCommitResult"
)

// Server codes the proxy answers with where they mean the same thing.
var (
	CodeCursorNotFound    = Code{43, "CursorNotFound"}
	CodeNoSuchTransaction = Code{251, "NoSuchTransaction"}
	// CodeIllegalOperation: a transaction on a member that cannot run
	// one, as a standalone mongod answers.
	CodeIllegalOperation = Code{20, "IllegalOperation"}
)

// prepareRequest readies a client's OP_MSG, in place, to go to a member:
// its checksum is stripped (the header it covered will change, and TCP
// guards the bytes between proxy and member) and exhaustAllowed cleared, so
// the member answers each request once. The requestID is set per attempt
// (send).
func prepareRequest(raw []byte, flags wire.MsgFlags) []byte {
	flags &^= wire.ExhaustAllowed
	if flags&wire.ChecksumPresent != 0 {
		raw = raw[:len(raw)-4]
		flags &^= wire.ChecksumPresent
	}
	binary.LittleEndian.PutUint32(raw[0:], uint32(len(raw)))
	binary.LittleEndian.PutUint32(raw[8:], 0)
	binary.LittleEndian.PutUint32(raw[16:], uint32(flags))
	return raw
}

// forward routes one client OP_MSG to a member and writes the member's
// reply back to the client itself, because the reply lives in the member
// connection's buffer, which is reused once the connection is handed back.
// It returns an error only when the client connection failed.
//
// The loop body is select → send → settle (the Caddy reverse proxy's
// shape): a member's state-change error, a member that is down or a
// connection lost under a read sends the command round again, elsewhere
// or later, within WriteHold; what cannot go round again is answered with
// one of the proxy's codes (errors.go), never with an error that makes a
// driver drop its pool.
func (s *session) forward(ctx context.Context, m wire.Message, msg wire.OpMsg) error {
	p := s.p
	s.start = time.Now()
	reqID := m.Header.RequestID
	moreToCome := msg.Flags&wire.MoreToCome != 0
	raw := prepareRequest(m.Raw, msg.Flags)
	body := msg.Body()
	name := msg.CommandName()
	rt := classify(name, body)
	s.kind = stmtKind(name, rt)
	switch rt {
	case routeGetMore:
		return s.getMore(ctx, reqID, raw, body)
	case routeKillCursors:
		return s.killCursors(ctx, reqID, body)
	}
	tx := txnOf(body)
	if tx.inTxn() {
		if handled, err := s.txnCommand(ctx, reqID, raw, name, tx); handled {
			return err
		}
		rt = routePrimary // a commit or abort the proxy no longer tracks
	}
	var rp ReadPref
	if rt == routeRead && p.topo != nil {
		var err error
		if rp, err = parseReadPref(body, p.heartbeat()); err != nil {
			return s.answerError(reqID, moreToCome, err)
		}
	}
	write := rt == routePrimary
	if write && p.cfg.MajorityWrites && !moreToCome && !tx.inTxn() && defaultsWriteConcern(name) {
		if _, has := wire.Lookup(body, "writeConcern"); !has {
			s.wc = withMajority(s.wc[:0], raw)
			raw = s.wc
			defer func() {
				if cap(s.wc) > keepBufMax {
					s.wc = nil // one large insert must not stay held
				}
			}()
		}
	}
	retryable := write && tx.retryableWrite()
	deadline := time.Now().Add(p.cfg.WriteHold)
	var avoid memberSet
	for attempt := 0; ; attempt++ {
		idx, epoch, route, err := s.target(ctx, write, rp, avoid, deadline)
		if err != nil {
			return s.forwardFailed(reqID, moreToCome, retryable, err)
		}
		mp := p.members[idx]
		var g *primaryGuard
		if write && p.topo != nil {
			g = &primaryGuard{p: p, idx: idx, deadline: deadline}
		}
		c, reply, sent, err := s.send(ctx, mp, raw, moreToCome, g)
		if errors.Is(err, errRetarget) {
			continue
		}
		if err != nil {
			switch {
			case moreToCome:
				return nil // unacknowledged: the client reads no answer
			case !sent && write && p.topo != nil && proxy.KindOf(err) == proxy.KindBackendDown && s.awaitPrimary(ctx, idx, deadline):
				// Nothing reached the member, which is down: hold the
				// write for the next primary, as a refused one. (Without
				// a topology there is no next primary to wait for.)
				continue
			case !write && (proxy.MayRetry(err, attempt, true, false) ||
				!sent && proxy.KindOf(err) == proxy.KindBackendDown && attempt < len(p.members)):
				// A read whose connection was lost goes once more; one
				// whose member is down tries the others. Elsewhere when
				// there is an elsewhere.
				avoid |= one(idx)
				continue
			case sent && write:
				err = fmt.Errorf("%w: %w", proxy.ErrOutcomeUnknown, err)
			}
			return s.forwardFailed(reqID, moreToCome, retryable, err)
		}
		if moreToCome {
			return nil
		}
		ri := inspectReply(reply)
		if ri.change != scNone {
			s.release(mp, c, true)
			s.log.Debug("member state change kept from the client", zap.String("member", mp.name),
				zap.Int32("code", ri.code), zap.Bool("write_concern", ri.wce), zap.Bool("write", write))
			switch {
			case write && (ri.change == scInterrupted || ri.wce):
				// It may have run: only the driver's retry (a real
				// member deduplicates it by txnNumber) may run it again.
				return s.forwardFailed(reqID, false, retryable, fmt.Errorf("member %s: state changed while it ran the write (code %d): %w",
					mp.name, ri.code, proxy.ErrOutcomeUnknown))
			case (write || rp.Mode == ModePrimary) && s.awaitPrimary(ctx, idx, deadline):
				continue
			case !write && rp.Mode != ModePrimary && attempt < len(p.members):
				avoid |= one(idx)
				continue
			case write:
				return s.forwardFailed(reqID, false, retryable, fmt.Errorf("member %s refused the write (code %d) and no other primary was named within %s: %w",
					mp.name, ri.code, p.cfg.WriteHold, router.ErrNoPrimary))
			}
			if rp.Mode == ModePrimary {
				return s.forwardFailed(reqID, false, false, fmt.Errorf("member %s refused the read (code %d) and no other primary was named within %s: %w",
					mp.name, ri.code, p.cfg.WriteHold, router.ErrNoPrimary))
			}
			return s.forwardFailed(reqID, false, false, fmt.Errorf("member %s refused the read (code %d) and no other member could serve it: %w",
				mp.name, ri.code, router.ErrNoReplica))
		}
		if write && !p.router.Current(epoch) {
			// Answered by a primary whose epoch has ended since: the
			// write may not survive the new primary, so it is not
			// reported as done.
			s.release(mp, c, false)
			return s.forwardFailed(reqID, false, retryable, fmt.Errorf("member %s answered after its epoch %d ended: %w",
				mp.name, epoch, proxy.ErrOutcomeUnknown))
		}
		s.observe(route)
		return s.deliver(ctx, reqID, mp, c, reply, ri)
	}
}

// deliver writes a member's reply to the client, after giving a cursor it
// opened the proxy's id, and hands c back (or leaves it to the cursor
// table).
func (s *session) deliver(ctx context.Context, reqID int32, mp *memberPool, c *memberConn, reply []byte, ri replyInfo) error {
	locked := false
	if ri.ok && ri.cursorOff >= 0 && ri.cursorID != 0 {
		// The cursor pins c; its lock is taken before the table makes it
		// visible to other sessions.
		if err := s.lockConn(ctx, c); err != nil {
			s.release(mp, c, false)
			return s.forwardFailed(reqID, false, false, fmt.Errorf("member %s: %w: %v", mp.name, proxy.ErrBackendLost, err))
		}
		locked = true
		if v := s.p.pins.evictFor(mp, s.p.cfg.MaxCursorConns); v != nil {
			s.log.Info("member connections held by cursors at their limit: the least recently used one's cursors dropped",
				zap.String("member", mp.name), zap.Int("max_cursor_conns", s.p.cfg.MaxCursorConns))
			unlockConn(v.c)
			v.mp.Discard(v.c)
		}
		id := s.p.pins.addCursor(mp, c, ri.cursorID)
		binary.LittleEndian.PutUint64(reply[ri.cursorOff:], uint64(id))
	}
	werr := s.writeReply(reqID, reply)
	if cap(c.buf) > keepBufMax && !locked {
		c.buf = nil
	}
	if locked {
		s.cur.Store(nil)
		unlockConn(c)
		return werr
	}
	s.release(mp, c, true)
	return werr
}

// writeReply gives a member's reply the client's ids and writes it.
func (s *session) writeReply(reqID int32, reply []byte) error {
	s.lastReqID++
	binary.LittleEndian.PutUint32(reply[4:], uint32(s.lastReqID))
	binary.LittleEndian.PutUint32(reply[8:], uint32(reqID))
	return s.write(reply)
}

// target is the member a command goes to: a read's by its read
// preference, a write's (and a read on the primary's) the primary the
// router names, held while none is. Its route (primary or replica) is the
// metrics' label.
func (s *session) target(ctx context.Context, write bool, rp ReadPref, avoid memberSet, deadline time.Time) (int, uint64, proxy.Route, error) {
	p := s.p
	if p.topo == nil {
		return 0, 0, proxy.RoutePrimary, nil
	}
	if !write {
		snap := p.topo.Snapshot()
		// A (re)started proxy's first snapshot has every member unknown:
		// a read arriving before the first observation waits for it
		// rather than failing with "no member" on a healthy set.
		for snap.Taken.IsZero() && s.pause(ctx, deadline) {
			snap = p.topo.Snapshot()
		}
		primary := p.namedPrimary(snap)
		i, err := p.sel.selectRead(snap, primary, rp, avoid|memberSet(p.excluded.Load()), p.rr.Add(1))
		if err != nil {
			return -1, 0, proxy.RoutePrimary, err
		}
		if i == primary {
			return i, 0, proxy.RoutePrimary, nil
		}
		if i != toPrimary {
			return i, 0, proxy.RouteReplica, nil
		}
	}
	for {
		i, epoch, err := p.router.Primary(ctx)
		if err == nil && i >= 0 && i < len(p.members) {
			if !write && avoid.has(i) && s.awaitPrimary(ctx, i, deadline) {
				continue
			}
			return i, epoch, proxy.RoutePrimary, nil
		}
		if err == nil {
			err = fmt.Errorf("%w: primary index %d of %d members", router.ErrNoPrimary, i, len(p.members))
		}
		// Without a control plane the router does not hold: an election
		// (no primary) or two claimants (a conflict, until the deposed one
		// learns) is waited out here, within WriteHold.
		if !errors.Is(err, router.ErrNoPrimary) && !errors.Is(err, router.ErrWritableConflict) || !s.pause(ctx, deadline) {
			return -1, 0, proxy.RoutePrimary, err
		}
	}
}

// pause waits a poll interval, or less before deadline; false when the
// deadline or ctx has passed.
func (s *session) pause(ctx context.Context, deadline time.Time) bool {
	d := time.Until(deadline)
	if d <= 0 {
		return false
	}
	t := time.NewTimer(min(d, 50*time.Millisecond))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// awaitPrimary waits, until deadline, for a primary other than failed
// (which refused a write or is down) to be named, or for a newer
// observation of the members, in case failed is primary again; false when
// deadline passed first.
func (s *session) awaitPrimary(ctx context.Context, failed int, deadline time.Time) bool {
	p := s.p
	since := time.Now()
	for s.pause(ctx, deadline) {
		if p.topo == nil {
			return true // nothing to watch: try again after the pause
		}
		snap := p.topo.Snapshot()
		if named := p.namedPrimary(snap); named >= 0 && (named != failed || snap.Taken.After(since)) {
			return true
		}
	}
	return false
}

// primaryGuard keeps a write to the member it was routed to (idx) only
// while that member is the named primary.
type primaryGuard struct {
	p        *Proxy
	idx      int
	deadline time.Time // WriteHold from the write's arrival
	// fired: another member was named primary while the write waited.
	fired atomic.Bool
	// conn is the member connection the write uses, once it has one.
	conn atomic.Pointer[memberConn]
	stop func()
}

// still: the member is still named primary, or WriteHold has passed (then
// the write goes where it was routed). Getting a connection can take long
// (a new one's handshake waits for a frozen member up to
// MemberConnectTimeout): the primary it was chosen for may have been
// replaced meanwhile, and a deposed primary that has not heard yet would
// still take a w:1 write the set then rolls back.
func (g *primaryGuard) still() bool {
	return g.p.namedPrimary(g.p.topo.Snapshot()) == g.idx || !time.Now().Before(g.deadline)
}

// watch ends the write's wait once another member is named primary: the
// context it returns (for getting a connection) is cancelled, and the
// connection in g.conn gets a past read deadline. A write sent to a
// primary that then froze (SIGSTOP, a hung VM) would otherwise wait for it
// for MemberTimeout, though the set has elected another. Its outcome is
// unknown (9510, with RetryableWriteError when it carries a txnNumber): if
// it committed, it is in the new primary's history and the driver's retry
// is answered from the record of (lsid, txnNumber); if not, the old
// primary rolls it back when it returns, its term having ended. stop (also
// g.stop; idempotent) returns once the watcher no longer touches anything.
func (g *primaryGuard) watch(ctx context.Context) (context.Context, func()) {
	wctx, cancel := context.WithCancel(ctx)
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
			}
			if n := g.p.namedPrimary(g.p.topo.Snapshot()); n >= 0 && n != g.idx {
				g.fired.Store(true)
				cancel()
				if c := g.conn.Load(); c != nil {
					_ = c.nc.SetReadDeadline(time.Unix(1, 0))
				}
				return
			}
		}
	}()
	var once sync.Once
	g.stop = func() {
		once.Do(func() {
			close(quit)
			<-done
			cancel()
		})
	}
	return wctx, g.stop
}

// errRetarget: the member a write was routed to stopped being the named
// primary while the write waited for a connection to it; nothing was sent.
var errRetarget = errors.New("the primary changed before the write was sent")

// send takes a connection to mp and exchanges raw on it (sendOn). sent
// reports whether any of raw may have reached the member.
// A write's guard g (nil for anything else) watches the member while the
// write waits for a connection and for its reply (primaryGuard.watch); a
// member no longer named primary once the connection is in hand gets
// nothing (errRetarget).
func (s *session) send(ctx context.Context, mp *memberPool, raw []byte, moreToCome bool, g *primaryGuard) (*memberConn, []byte, bool, error) {
	getCtx := ctx
	if g != nil {
		var stop func()
		getCtx, stop = g.watch(ctx)
		defer stop()
	}
	c, err := mp.Get(getCtx, poolKey{}, s.p.login, s.p.cfg.MemberWait, nil)
	if err != nil {
		if g != nil && g.fired.Load() && ctx.Err() == nil {
			return nil, nil, false, errRetarget // replaced while connecting
		}
		return nil, nil, false, err
	}
	if g != nil {
		g.conn.Store(c)
		if !g.still() {
			g.stop()
			s.release(mp, c, true)
			return nil, nil, false, errRetarget
		}
	}
	s.p.metrics.Queries(mp.idx, false).Inc()
	reply, sent, err := s.sendOn(ctx, mp, c, raw, moreToCome, g)
	if g != nil {
		g.stop() // the watcher no longer touches c
	}
	if err != nil {
		s.release(mp, c, false)
		if c.Reused() {
			// A pooled connection found dead: its idle siblings most
			// likely died with it (the member restarted), and each would
			// cost a command the same failure.
			mp.CloseIdle()
		}
		return nil, nil, sent, err
	}
	if moreToCome {
		// The client expects no reply. mongod sends none, FerretDB sends
		// one anyway; draining it would hang on mongod and waiting for it
		// would cost a round trip. The connection is discarded instead:
		// nothing can then read that stray reply as another request's
		// answer.
		s.release(mp, c, false)
		return nil, nil, true, nil
	}
	return c, reply, true, nil
}

// sendOn sends raw on c with the connection's next requestID and reads the
// reply (nil when moreToCome), which aliases c.buf. Only the header is
// rewritten; sections travel as they came: lsid, $clusterTime, txnNumber,
// $readPreference. On error the caller discards c.
func (s *session) sendOn(ctx context.Context, mp *memberPool, c *memberConn, raw []byte, moreToCome bool, g *primaryGuard) ([]byte, bool, error) {
	// The deadlines are set before c is published in s.cur: shutdown's
	// past deadline (serve's AfterFunc) must not be overwritten by a later
	// one. Storing c before checking ctx means either this check or that
	// callback sees the other. A request sent with its wait (sendWaiter)
	// takes no write deadline: its one write never blocks; the ordinary
	// way, after it, sets one and checks ctx again.
	now := time.Now()
	waits := !moreToCome && s.sw.ready(c)
	if !waits {
		_ = c.nc.SetWriteDeadline(now.Add(s.p.cfg.WriteTimeout))
	}
	_ = c.nc.SetReadDeadline(now.Add(s.p.cfg.MemberTimeout))
	if g != nil && g.fired.Load() {
		// Replaced as primary just now: the watcher's past deadline must
		// not be lost under the one above.
		_ = c.nc.SetReadDeadline(time.Unix(1, 0))
	}
	s.cur.Store(c)
	if ctx.Err() != nil {
		return nil, false, fmt.Errorf("%w: proxy shutting down", proxy.ErrBackendDown)
	}
	c.nextID++
	id := c.nextID
	binary.LittleEndian.PutUint32(raw[4:], uint32(id))
	mp.AddInFlight(1)
	defer mp.AddInFlight(-1)
	rest, waitErr := raw, error(nil)
	if waits {
		var err error
		if rest, waitErr, err = s.sw.send(raw); err != nil {
			return nil, true, fmt.Errorf("member %s: send: %w: %v", mp.name, proxy.ErrBackendLost, err)
		}
		if len(rest) > 0 {
			// What the socket would not take at once goes the ordinary
			// way, under a write deadline.
			_ = c.nc.SetWriteDeadline(time.Now().Add(s.p.cfg.WriteTimeout))
			if ctx.Err() != nil {
				if len(rest) == len(raw) {
					return nil, false, fmt.Errorf("%w: proxy shutting down", proxy.ErrBackendDown)
				}
				return nil, true, fmt.Errorf("%w: proxy shutting down", proxy.ErrBackendLost)
			}
		}
	}
	if len(rest) > 0 {
		if _, err := c.nc.Write(rest); err != nil {
			return nil, true, fmt.Errorf("member %s: send: %w: %v", mp.name, proxy.ErrBackendLost, err)
		}
	}
	if moreToCome {
		return nil, true, nil
	}
	rm, err := wire.Message{}, waitErr
	if err == nil {
		rm, err = c.readReply(id)
	}
	if err != nil {
		if g != nil && g.fired.Load() {
			return nil, true, fmt.Errorf("member %s: replaced as primary while the write awaited its reply: %w: %v", mp.name, proxy.ErrBackendLost, err)
		}
		return nil, true, fmt.Errorf("member %s: awaiting reply: %w: %v", mp.name, proxy.ErrBackendLost, err)
	}
	reply := rm.Raw
	if len(reply) < wire.HeaderLen+4 {
		return nil, true, fmt.Errorf("member %s: reply of %d bytes: %w", mp.name, len(reply), proxy.ErrBackendLost)
	}
	rflags := wire.MsgFlags(binary.LittleEndian.Uint32(reply[16:]))
	if rflags&wire.MoreToCome != 0 {
		// An exhaust stream the proxy did not ask for: out of step.
		return nil, true, fmt.Errorf("member %s: unrequested moreToCome reply: %w", mp.name, proxy.ErrBackendLost)
	}
	if rflags&wire.ChecksumPresent != 0 {
		reply = reply[:len(reply)-4]
		binary.LittleEndian.PutUint32(reply[0:], uint32(len(reply)))
		binary.LittleEndian.PutUint32(reply[16:], uint32(rflags&^wire.ChecksumPresent))
	}
	return reply, true, nil
}

// release hands c back (keep) or discards it, after unpublishing it from
// s.cur: once another session holds it, this session's shutdown must not
// touch its deadlines. A kept connection's deadlines are left as they
// are: the next command sets its own before using it.
func (s *session) release(mp *memberPool, c *memberConn, keep bool) {
	s.cur.Store(nil)
	if keep {
		if cap(c.buf) > keepBufMax {
			c.buf = nil
		}
		mp.Put(c)
	} else {
		mp.Discard(c)
	}
}

// forwardFailed answers a command no member answered (or whose answer the
// proxy may not pass on) with the proxy's code for err's kind. A retryable
// write (txnNumber outside a transaction, so the driver has retryWrites
// on) gets RetryableWriteError, the label a 4.4+ server puts on a
// retryable error: the driver retries once with the same txnNumber, which
// a real mongod deduplicates. When nothing reached a member it also gets
// NoWritesPerformed, which tells the driver this attempt's error is not
// the one to report if the retry fails too. A read gets no label (the
// spec has none for reads); the application sees the error.
func (s *session) forwardFailed(reqID int32, moreToCome, retryable bool, err error) error {
	s.log.Debug("forward failed", zap.Error(err))
	if moreToCome {
		return nil // unacknowledged: the client reads no answer
	}
	var labels []string
	if retryable {
		switch proxy.KindOf(err) {
		case proxy.KindBackendDown, proxy.KindNoPrimary, proxy.KindNoLease, proxy.KindChanging,
			proxy.KindPoolTimeout, proxy.KindWritableConflict:
			labels = []string{errorLabelRetryableWrite, errorLabelNoWritesPerformed}
		default:
			labels = []string{errorLabelRetryableWrite}
		}
	}
	return s.answerErr(reqID, err, labels...)
}

// answer writes an error reply with code and labels.
func (s *session) answer(reqID int32, c Code, errmsg string, labels ...string) error {
	doc := appendError(s.doc[:0], c, errmsg)
	if len(labels) > 0 {
		doc = appendLabels(doc, labels...)
	}
	s.doc = doc
	return s.write(s.replyMsg(reqID, doc))
}

// answerError answers a request the proxy refuses before routing it.
func (s *session) answerError(reqID int32, moreToCome bool, err error) error {
	if moreToCome {
		return nil
	}
	var rpe *ReadPrefError
	if errors.As(err, &rpe) {
		return s.answer(reqID, CodeBadValue, s.errmsg(err))
	}
	return s.answer(reqID, codeOf(err), s.errmsg(err))
}

// txnInfo is what a command says of its session and transaction.
type txnInfo struct {
	lsid         []byte // lsid.id's bytes; nil: no session
	txnNumber    int64
	hasTxnNumber bool
	autocommit   bool // the field is present (only false is valid)
	start        bool // startTransaction: true
}

// inTxn: the command belongs to a transaction (autocommit: false comes
// only with one).
func (t txnInfo) inTxn() bool { return t.autocommit && t.hasTxnNumber && t.lsid != nil }

// retryableWrite: the driver sent a txnNumber outside a transaction, so it
// will retry the write.
func (t txnInfo) retryableWrite() bool { return t.hasTxnNumber && !t.autocommit }

// txnOf reads lsid, txnNumber, autocommit and startTransaction in one pass,
// without allocating.
func txnOf(body bsoncore.Document) txnInfo {
	var t txnInfo
	rest, ok := elements(body)
	if !ok {
		return t
	}
	for len(rest) > 0 {
		elem, r, ok := bsoncore.ReadElement(rest)
		if !ok {
			return t
		}
		rest = r
		switch string(elem.KeyBytes()) {
		case "lsid":
			if d, ok := elem.Value().DocumentOK(); ok {
				if v, ok := wire.Lookup(d, "id"); ok {
					if _, b, ok := v.BinaryOK(); ok {
						t.lsid = b
					}
				}
			}
		case "txnNumber":
			t.txnNumber, t.hasTxnNumber = elem.Value().AsInt64OK()
		case "autocommit":
			t.autocommit = true
		case "startTransaction":
			t.start, _ = elem.Value().BooleanOK()
		}
	}
	return t
}

// appendLabels adds errorLabels: [labels...] to the error document doc,
// which starts at doc[0].
func appendLabels(doc []byte, labels ...string) []byte {
	doc = doc[:len(doc)-1] // reopen: drop the terminating 0
	aidx, doc := bsoncore.AppendArrayElementStart(doc, "errorLabels")
	for i, l := range labels {
		doc = bsoncore.AppendStringElement(doc, strconv.Itoa(i), l)
	}
	doc, _ = bsoncore.AppendArrayEnd(doc, aidx)
	doc = append(doc, 0)
	binary.LittleEndian.PutUint32(doc[0:], uint32(len(doc)))
	return doc
}

// namedPrimary is the primary's index in snap without waiting: the one
// the control plane names (never a snapshot's that lags it), or the
// snapshot's without a control plane; -1 when none is named.
func (p *Proxy) namedPrimary(snap *topology.Snapshot) int {
	if p.cfg.Authority == nil {
		return snap.Primary
	}
	name, _, err := p.cfg.Authority.Writer()
	if err != nil {
		return -1
	}
	for i := range snap.Members {
		if snap.Members[i].Name == name {
			return i
		}
	}
	return -1
}

// defaultsWriteConcern: the commands Config.MajorityWrites gives a write
// concern when they carry none. Only CRUD writes: other commands either
// take none (most reads and admin commands refuse an unknown field) or are
// rare enough to say their own.
func defaultsWriteConcern(name string) bool {
	switch name {
	case "insert", "update", "delete", "findAndModify", "findandmodify":
		return true
	}
	return false
}

// majorityElem is the BSON element writeConcern: {w: "majority"}.
var majorityElem = func() []byte {
	wc := bsoncore.NewDocumentBuilder().AppendString("w", "majority").Build()
	return bsoncore.AppendDocumentElement(nil, "writeConcern", wc)
}()

// withMajority appends to dst the prepared request raw (header, flags,
// sections; no checksum) with writeConcern {w: "majority"} added at the end
// of its body (the kind-0 section); document sequences are copied as they
// are. raw was decoded by wire.DecodeOpMsg, so its sections are well
// formed; the lengths are still checked, and a request that does not parse
// is returned unchanged (the member will refuse it as it would have).
func withMajority(dst, raw []byte) []byte {
	const head = 20 // header and flags
	if len(raw) < head {
		return append(dst, raw...)
	}
	start := len(dst)
	dst = append(dst, raw[:head]...)
	for rest := raw[head:]; len(rest) > 0; {
		if len(rest) < 5 {
			return append(dst[:start], raw...)
		}
		n := int(binary.LittleEndian.Uint32(rest[1:]))
		if n < 5 || 1+n > len(rest) {
			return append(dst[:start], raw...)
		}
		sec := rest[:1+n]
		rest = rest[1+n:]
		if sec[0] != 0 { // a document sequence: as it came
			dst = append(dst, sec...)
			continue
		}
		// The body, less its terminating 0, the element, a new 0.
		dst = append(dst, 0)
		body := len(dst)
		dst = append(dst, sec[1:len(sec)-1]...)
		dst = append(dst, majorityElem...)
		dst = append(dst, 0)
		binary.LittleEndian.PutUint32(dst[body:], uint32(len(dst)-body))
	}
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(dst)-start))
	return dst
}

// sendWaiter sends a request to a member and waits for its answer in one
// RawConn.Read, as protocol/mysql's sendThenWait does: the write happens
// inside the read's callback, which then asks to wait for readability,
// instead of a read that returns EAGAIN first (the answer needs the member
// to run the command): one system call less per command on the hot path.
// The bytes are read afterwards by the connection's bufio.Reader, whose
// read then finds them there.
//
// Skipping that first read is safe because the write comes after the
// read readiness was reset (RawConn.Read resets it before calling back):
// an answer arriving later always signals anew. A member sends nothing
// unprompted, and ready refuses a connection whose reader holds bytes
// already; a member closing the connection signals too.
//
// One per session: the session's last member socket's RawConn is kept, so
// that a session going back to the connection it used last (the pool's most
// recently used) allocates nothing.
type sendWaiter struct {
	nc  net.Conn // whose raw is kept; nil before the first
	raw syscall.RawConn
	fn  func(fd uintptr) bool // w.step, made once per session

	p    []byte // what is still to write
	sent bool   // all of it is written
	err  error  // the write failed
}

// ready prepares w for c, and reports whether a request to c may be sent
// with its wait.
func (w *sendWaiter) ready(c *memberConn) bool {
	if c.r.Buffered() > 0 {
		return false
	}
	if w.nc != c.nc {
		sc, ok := c.nc.(syscall.Conn)
		if !ok {
			return false
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			return false
		}
		w.nc, w.raw = c.nc, raw
	}
	if w.fn == nil {
		w.fn = w.step
	}
	return true
}

// send writes p and waits for the member's answer to be readable. It
// returns what is still to be written the ordinary way (the socket took
// part of it only, or the wait could not begin: then all of p) and, when
// all of p was written, the error that ended the wait (a read deadline);
// err is the write's failure.
func (w *sendWaiter) send(p []byte) (rest []byte, waitErr, err error) {
	w.p, w.sent, w.err = p, false, nil
	rerr := w.raw.Read(w.fn)
	rest, w.p = w.p, nil
	switch {
	case w.err != nil:
		return nil, nil, w.err
	case rerr != nil && w.sent:
		return nil, rerr, nil
	case rerr != nil:
		return p, nil, nil // nothing written: the ordinary way says why
	}
	return rest, nil, nil
}

func (w *sendWaiter) step(fd uintptr) bool {
	if w.sent {
		return true // readable (or closed): the reader takes it from here
	}
	for len(w.p) > 0 {
		n, err := syscall.Write(int(fd), w.p)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return true // the socket is full: the rest the ordinary way
		case err != nil:
			w.err = err
			return true
		}
		w.p = w.p[n:]
	}
	w.sent = true
	return false // wait for the answer
}
