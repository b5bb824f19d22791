package mysql

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/proxy"
)

const capLocalFiles = gm.CLIENT_LOCAL_FILES

// setEntry is one replayable SET statement.
type setEntry struct {
	key string // variable it sets, "" when it cannot be told
	sql string
	// tracking: it may set session_track_system_variables, so after it
	// a connection may no longer report last_gtid (backendConn.trackGTID).
	tracking bool
}

// stmt is a client-visible prepared statement. Member-side statements are
// cached per backend connection by SQL text, so the same client statement can
// run on any member.
type stmt struct {
	id       uint32
	sql      []byte
	class    Class
	params   uint16
	types    []byte // last parameter types the client bound
	longData bool
}

// session is one client connection: one goroutine, one request/response loop.
type session struct {
	p    *Proxy
	nc   net.Conn
	raw  net.Conn // the accepted socket, closed by shutdown (nc may become TLS)
	r    *bufio.Reader
	w    *bufio.Writer
	pr   packetReader
	id   uint32
	log  *zap.Logger
	user *User
	caps uint32
	key  poolKey
	cred proxy.Login
	tls  bool

	db       string
	sets     []setEntry
	setsHash uint64
	multi    bool

	pinned   *backendConn
	pin      Pin
	held     *backendConn
	holdLeft int

	// autocommitOff: the server's last status for the session said
	// autocommit is off. acReplayed: a replayed SET of autocommit turned
	// it off, so every connection the session gets has it off too, and
	// between transactions the session needs no connection of its own.
	// Otherwise (a procedure turned it off, say) autocommit=0 pins.
	autocommitOff bool
	acReplayed    bool

	// What dbrouter_pinned_sessions counts for this session now: its pins
	// on acctPool's member (see account).
	acctPin  Pin
	acctPool *memberPool

	// state is stateIdle while the session waits for the client's next
	// command (or is in its handshake) and stateBusy while it runs one;
	// a stop (Proxy.drain) moves an idle session to stateClosed and
	// closes its socket. txnOpen: the session holds a transaction open,
	// so a stop waits for it even while idle.
	state   atomic.Int32
	txnOpen atomic.Bool

	// killMu guards owner and busy, which a session that KILLs this one
	// reads; busy is the connection the current statement runs on.
	killMu sync.Mutex
	owner  string
	busy   *backendConn

	// Affinity without ownership: the member this session last read from
	// and the connection it last handed back. The next statement asks for
	// them first; another session may have taken them meanwhile.
	reader int
	last   *backendConn
	// onReplica: the current statement's member was chosen as a replica
	// (Router.Replica), decided when it was chosen: the read set may have
	// changed by the time the statement runs.
	onReplica bool

	causal causalState // read-your-writes position (CausalReads)

	stmts    map[uint32]*stmt
	nextStmt uint32

	scratch  []byte
	execBuf  []byte
	deadline time.Time
	scramble []byte
}

func (s *session) close() {
	s.resetSession() // hands pinned and held connections back, reset if dirty
	s.account()
	s.nc.Close()
}

// account keeps the pool's pin counts (dbrouter_pinned_sessions, the pool
// timeout's message) in step with the session's pins, after each command:
// nothing to do, and no allocation, unless they changed.
func (s *session) account() {
	var pool *memberPool
	pin := s.pin
	if s.pinned != nil {
		pool = s.pinned.pool
	}
	if pool == nil || pin == 0 {
		pool, pin = nil, 0
	}
	if pool == s.acctPool && pin == s.acctPin {
		return
	}
	if s.acctPool != nil {
		s.acctPool.countPins(s.acctPin, -1)
	}
	if pool != nil {
		pool.countPins(pin, 1)
	}
	s.acctPool, s.acctPin = pool, pin
}

// pins is the session's pins plus autocommit=0 (PinNoAutocommit), pinning
// or not: what a statement's lost connection may have taken with it.
func (s *session) pins() Pin {
	if s.autocommitOff {
		return s.pin | PinNoAutocommit
	}
	return s.pin
}

// serve runs the session until the client quits or fails.
func (s *session) serve(ctx context.Context) {
	defer s.close()
	if err := s.handshake(); err != nil {
		s.log.Debug("handshake failed", zap.Error(err))
		return
	}
	for {
		if ctx.Err() != nil {
			return
		}
		if s.p.draining.Load() && !s.txnOpen.Load() {
			return // a statement boundary outside a transaction: where a stop closes
		}
		setDeadlineLazy(s.nc, &s.deadline, s.p.cfg.ClientIdleTimeout)
		pkt, err := s.pr.readPacket()
		if err == nil && !s.state.CompareAndSwap(stateIdle, stateBusy) {
			return // a stop closed the session as the command arrived: it never ran
		}
		if err != nil {
			if errors.Is(err, ErrPacketTooLarge) {
				s.writeErr(s.pr.seq, &ServerError{Code: CodePacketTooLarge, State: "08S01",
					Message: fmt.Sprintf("dbrouter: cluster %s: %v", s.p.cfg.Cluster, err)})
				s.p.metrics.ClientErrors.Inc()
			}
			return
		}
		if len(pkt) == 0 {
			s.writeErr(s.pr.seq, &ServerError{Code: CodeMalformedPacket, State: "HY000", Message: "dbrouter: malformed packet: empty command"})
			s.p.metrics.ClientErrors.Inc()
			return
		}
		err = s.dispatch(ctx, pkt)
		s.account()
		s.txnOpen.Store(s.pin&PinTxn != 0)
		s.state.Store(stateIdle) // only the session leaves stateBusy
		if err != nil {
			if !errors.Is(err, errClientGone) && !errors.Is(err, io.EOF) {
				s.log.Debug("session ended", zap.Error(err))
			}
			return
		}
		s.pr.shrink()
	}
}

// Session states (session.state).
const (
	stateIdle int32 = iota
	stateBusy
	stateClosed
)

// closeIfIdle closes the session's socket if it is waiting for a command
// outside a transaction, and reports whether it did; a busy one closes
// itself at its next boundary (serve).
func (s *session) closeIfIdle() bool {
	if s.txnOpen.Load() || !s.state.CompareAndSwap(stateIdle, stateClosed) {
		return false
	}
	s.raw.Close()
	return true
}

var errQuit = errors.New("client quit")

func (s *session) dispatch(ctx context.Context, pkt []byte) error {
	switch pkt[0] {
	case gm.COM_QUERY:
		return s.comQuery(ctx, pkt)
	case gm.COM_STMT_EXECUTE:
		return s.comStmtExecute(ctx, pkt)
	case gm.COM_STMT_PREPARE:
		return s.comStmtPrepare(ctx, pkt)
	case gm.COM_STMT_CLOSE:
		return s.comStmtClose(pkt)
	case gm.COM_STMT_SEND_LONG_DATA:
		return s.comStmtLongData(ctx, pkt)
	case gm.COM_STMT_RESET:
		return s.comStmtReset(ctx, pkt)
	case gm.COM_STMT_FETCH:
		return s.comStmtFetch(ctx, pkt)
	case gm.COM_PING:
		return s.writeOK(s.pr.seq, 0, 0)
	case gm.COM_QUIT:
		return errQuit
	case gm.COM_INIT_DB:
		return s.comInitDB(ctx, pkt)
	case gm.COM_FIELD_LIST:
		return s.run(ctx, pkt, Class{Kind: KindRead, KeepsTxn: true}, respFieldList)
	case gm.COM_SET_OPTION:
		return s.comSetOption(ctx, pkt)
	case gm.COM_RESET_CONNECTION:
		s.resetSession()
		return s.writeOK(s.pr.seq, 0, 0)
	case gm.COM_CHANGE_USER:
		return s.comChangeUser(pkt)
	case gm.COM_PROCESS_KILL:
		if len(pkt) < 5 {
			return s.writeErr(s.pr.seq, &ServerError{Code: CodeMalformedPacket, State: "HY000", Message: "dbrouter: malformed COM_PROCESS_KILL"})
		}
		id, _, _ := readUint32(pkt, 1)
		return s.kill(ctx, id, false)
	case gm.COM_STATISTICS, gm.COM_DEBUG, gm.COM_REFRESH:
		return s.run(ctx, pkt, Class{Kind: KindWrite}, respSingle)
	case gm.COM_PROCESS_INFO:
		return s.run(ctx, pkt, Class{Kind: KindWrite}, respResult)
	default:
		return s.writeErr(s.pr.seq, &ServerError{Code: CodeUnknownCommand, State: "08S01",
			Message: fmt.Sprintf("dbrouter: command 0x%02x is not supported through the proxy", pkt[0])})
	}
}

func (s *session) comQuery(ctx context.Context, pkt []byte) error {
	c := Classify(pkt[1:])
	switch c.Kind {
	case KindSet:
		if c.Pin == 0 {
			return s.runSet(ctx, pkt)
		}
	case KindUse:
		return s.runUse(ctx, pkt)
	case KindWrite:
		if id, query, ok := KillTarget(pkt[1:]); ok {
			return s.kill(ctx, id, query)
		}
	case KindUnlockTables:
		err := s.run(ctx, pkt, c, respResult)
		if s.pin&PinLockTables != 0 {
			s.unpin(PinLockTables)
		}
		return err
	}
	return s.run(ctx, pkt, c, respResult)
}

// target decides which member a statement goes to. The connection the
// session holds wins: pinned state must not be split across connections.
// With autocommit=0 any statement may begin a transaction (a SELECT from
// a table does), so every statement goes to the primary; so does every
// statement of a session whose replayed SETs turn autocommit off, even if
// its status says otherwise (a procedure turned it back on): on a replica
// the replay would open a transaction there, and pin the session to it.
func (s *session) target(ctx context.Context, c Class, avoid int) (int, uint64, error) {
	rt := s.p.router
	switch {
	case c.Hint == HintPrimary, c.Kind == KindRead && s.causal.primary:
		return rt.Primary(ctx)
	case c.Kind == KindRead && s.pin == 0 && !s.autocommitOff && !s.acReplayed && (c.Hint == HintReplica || !c.ReadsSession && c.Pin == 0):
		m, replica, err := rt.Replica(ctx, avoid, s.reader)
		if err == nil {
			s.reader = m
		}
		s.onReplica = replica
		return m, 0, err
	default:
		return rt.Primary(ctx)
	}
}

// acquire returns the connection a statement of class c runs on, and the
// member chosen (-1 when routing itself failed).
func (s *session) acquire(ctx context.Context, c Class, avoid int) (*backendConn, int, error) {
	s.onReplica = false
	if s.pinned != nil {
		if e := s.pinned.Epoch.Load(); e != 0 {
			if err := s.leaveOldPrimary(ctx, e); err != nil {
				return nil, -1, err
			}
		}
	}
	if s.pinned != nil {
		return s.pinned, s.pinned.pool.idx, nil
	}
	if s.held != nil && c.ReadsSession {
		return s.held, s.held.pool.idx, nil
	}
	m, epoch, err := s.target(ctx, c, avoid)
	if err != nil {
		return nil, -1, err
	}
	if s.held != nil && s.held.pool.idx == m {
		s.held.Epoch.Store(epoch)
		return s.held, m, nil
	}
	bc, err := s.fresh(ctx, m, c.Kind != KindRead)
	if bc != nil {
		bc.Epoch.Store(epoch)
	}
	return bc, m, err
}

// leaveOldPrimary runs before a statement on the session's pinned
// connection, chosen as the primary at epoch. After a failover (epoch no
// longer acknowledgeable) or a completed change (a newer epoch serves), the
// statement must not run on the old primary: the connection is reset and
// dropped. The session's server-side state there (an open transaction,
// locks, temporary tables, user variables, SQL prepared statements...) is
// gone, and the client is told so (9011). A session with autocommit=0
// between transactions is not pinned (its autocommit=0 is replayed), so it
// never comes here: its next statement goes through Primary, which holds
// it during a switchover like any other write, and reaches the new
// primary with autocommit=0 and nothing lost. While a switchover is in
// progress, an open transaction finishes where it began (that is the
// drain: the old primary is fenced only after drain_timeout). Without a
// write lease the proxy cannot tell whether the primary changed: the
// statement is held as a write is, then judged again.
func (s *session) leaveOldPrimary(ctx context.Context, epoch uint64) error {
	rt := s.p.router
	current := rt.Current(epoch)
	moved, changing := rt.Moved(epoch)
	if current && !moved && !changing {
		return nil
	}
	if !current && !moved && !changing {
		if _, _, err := rt.Primary(ctx); err != nil {
			return err // the session keeps its connection and state
		}
		current = rt.Current(epoch)
		moved, changing = rt.Moved(epoch)
		if current && !moved && !changing {
			return nil
		}
	}
	if current && !moved {
		return nil // the drain
	}
	bc, pin := s.pinned, s.pin
	bc.abort()
	s.dropConn(bc) // the next statement goes to the new primary, with the replayed state
	how := "a failover"
	if current {
		how = "a switchover"
	}
	return fmt.Errorf("%w: the primary changed from %s (%s, after epoch %d) while this session had server-side state there (%s): it was rolled back on the old primary with its locks, temporary tables and variables, and nothing of an open transaction was committed; the session continues on the new primary: retry the whole transaction",
		proxy.ErrTxnLost, bc.pool.name, how, epoch, pin)
}

// fresh takes a connection to member m from the pool and gives it the
// session's state. With probe, a pooled connection is first checked for a
// close by the member while it sat idle (see sendThenWait.closed): a
// statement that is not safe to run twice, sent on such a connection, would
// have an unknown outcome, though it never reached the member.
func (s *session) fresh(ctx context.Context, m int, probe bool) (*backendConn, error) {
	key := s.key
	key.noDB = s.db == ""
	bc, err := s.p.pools[m].Get(ctx, key, s.cred, s.p.cfg.PoolTimeout, s.last)
	for i := 0; err == nil && probe && i < maxStaleConns && bc.stw != nil && bc.Reused() && bc.stw.closed(); i++ {
		bc.pool.Discard(bc)
		bc, err = s.p.pools[m].Get(ctx, key, s.cred, s.p.cfg.PoolTimeout, nil)
	}
	if err != nil {
		return nil, err
	}
	if err := s.sync(bc); err != nil {
		var se *ServerError
		if errors.As(err, &se) {
			// The member refused the session's state: the connection is
			// fine but carries partial state; reset it on the way back.
			s.releaseDirty(bc)
			return nil, fmt.Errorf("%w on %s: %w", proxy.ErrSessionState, bc.pool.name, err)
		}
		bc.pool.Discard(bc)
		return nil, err
	}
	return bc, nil
}

// sync makes a pooled connection carry this session's state.
func (s *session) sync(bc *backendConn) error {
	setDeadlineLazy(bc.nc, &bc.deadline, s.p.cfg.QueryTimeout)
	if bc.setsHash != s.setsHash {
		if bc.setsHash != 0 {
			if err := bc.reset(); err != nil {
				return err
			}
		}
		for _, e := range s.sets {
			if err := bc.query(e.sql); err != nil {
				return err
			}
			if e.tracking {
				bc.trackGTID = false
			}
		}
		bc.setsHash = s.setsHash
	}
	if bc.db != s.db && s.db != "" {
		s.scratch = append(s.scratch[:0], gm.COM_INIT_DB)
		s.scratch = append(s.scratch, s.db...)
		if _, err := bc.exec(s.scratch); err != nil {
			return err
		}
		if err := bc.forgetStmts(); err != nil {
			return err
		}
		bc.db = s.db
	}
	if bc.multi != s.multi {
		opt := byte(1)
		if s.multi {
			opt = 0
		}
		if _, err := bc.exec([]byte{gm.COM_SET_OPTION, opt, 0}); err != nil {
			return err
		}
		bc.multi = s.multi
	}
	return nil
}

// reset clears a connection's session state on the member. That puts
// session_track_system_variables back to the member's default too, so
// last_gtid tracking is turned on again in the same round trip (both
// commands sent together, then both answers read).
func (bc *backendConn) reset() error {
	if !bc.tracked {
		if _, err := bc.exec([]byte{gm.COM_RESET_CONNECTION}); err != nil {
			return err
		}
		clear(bc.stmts)
		bc.setsHash = 0
		return nil
	}
	_, err := writePacket(bc.w, 0, []byte{gm.COM_RESET_CONNECTION})
	if err == nil {
		_, err = writePacket(bc.w, 0, trackLastGTID)
	}
	if err == nil {
		err = bc.w.Flush()
	}
	if err != nil {
		return fmt.Errorf("%w: %v", proxy.ErrBackendLost, err)
	}
	_, err = bc.reply()
	_, terr := bc.reply() // read even after an error: it is on its way
	if err != nil {
		return err
	}
	var se *ServerError
	bc.trackGTID = terr == nil
	if terr != nil && !errors.As(terr, &se) {
		return terr
	}
	clear(bc.stmts)
	bc.setsHash = 0
	return nil
}

func (s *session) release(bc *backendConn) {
	s.last = bc
	bc.pool.Put(bc)
}

// releaseDirty resets a connection that may carry state (locks, temporary
// tables, an open transaction) before other sessions can get it.
func (s *session) releaseDirty(bc *backendConn) {
	if err := bc.reset(); err != nil {
		bc.pool.Discard(bc)
		return
	}
	bc.pool.Put(bc)
}

func (s *session) unpin(p Pin) {
	s.pin &^= p
	if s.pin == 0 && s.pinned != nil {
		bc := s.pinned
		s.pinned = nil
		if s.held != bc {
			s.release(bc)
		}
	}
}

// run executes one command: pick, send, relay, settle. An autocommit read that
// fails before any byte reached the client is retried once elsewhere.
func (s *session) run(ctx context.Context, pkt []byte, c Class, kind respKind) error {
	return s.runOn(ctx, pkt, c, kind, nil)
}

// runOn executes one command; st is the prepared statement of a
// COM_STMT_EXECUTE (its id is rewritten per connection) or of a
// COM_STMT_PREPARE (the response carries the proxy's id and is recorded).
func (s *session) runOn(ctx context.Context, pkt []byte, c Class, kind respKind, st *stmt) error {
	start := time.Now()
	avoid := -1
	stale := 0
	var downSince time.Time
	for attempt := 0; ; attempt++ {
		bc, m, err := s.acquire(ctx, c, avoid)
		if err != nil {
			// A member that refuses connections before the monitor has
			// noticed: a read goes elsewhere.
			if m >= 0 && retryable(err, attempt, c, s) {
				avoid = m
				continue
			}
			// The primary refuses connections: the statement reached no
			// server, so it can wait for a failover and go to the new one.
			if m >= 0 && errors.Is(err, proxy.ErrBackendDown) {
				if downSince.IsZero() {
					downSince = time.Now()
				}
				if s.p.router.RetryWrite(ctx, m, downSince) {
					continue
				}
			}
			s.p.metrics.CountError(err)
			return s.writeErr(s.pr.seq, toServerError(s.p.cfg.Cluster, err))
		}
		shared := bc != s.pinned && bc != s.held
		if pos, version := s.causalPos(bc, m, c, kind); pos != nil {
			ok, err := s.causalWait(bc, m, pos, version)
			if err != nil {
				s.dropConn(bc)
				if retryable(err, attempt, c, s) {
					avoid = m
					continue
				}
				s.p.metrics.CountError(err)
				return s.writeErr(s.pr.seq, s.memberError(bc, err))
			}
			if !ok {
				// The replica is behind the session's writes: the
				// primary has them.
				s.p.metrics.CausalFallback.Inc()
				s.release(bc)
				c.Hint = HintPrimary
				continue
			}
			s.p.metrics.CausalWaited.Inc()
		}
		out := pkt
		var proxyID uint32
		if st != nil && kind == respPrepare {
			proxyID = st.id
		} else if st != nil {
			if out, err = s.executePacket(bc, st, pkt); err != nil {
				var se *ServerError
				if errors.As(err, &se) { // the member refused to prepare it
					s.settle(bc, Class{Kind: KindWrite}, relayOut{serverErr: true}, kind)
					return s.writeErr(s.pr.seq, se)
				}
				pin := s.pins()
				s.dropConn(bc)
				if shared && retryable(err, attempt, c, s) {
					avoid = bc.pool.idx
					continue
				}
				err = s.lost(bc, c, kind, pin, false, err)
				s.p.metrics.CountError(err)
				return s.writeErr(s.pr.seq, s.memberError(bc, err))
			}
		}
		setDeadlineLazy(bc.nc, &bc.deadline, s.p.cfg.QueryTimeout)
		s.p.metrics.Queries(bc.pool.idx, !shared).Inc()
		var res relayOut
		pin := s.pins() // what a lost connection takes with it
		s.setBusy(bc)
		if err = bc.send(out); err == nil {
			// Only what may change data is fenced: reads acknowledge
			// nothing, and a prepare runs nothing.
			res, err = s.relay(bc, kind, proxyID, c.Kind != KindRead && kind != respPrepare, c.Kind == KindWrite && kind == respResult)
		} else {
			err = fmt.Errorf("%w: %v", proxy.ErrBackendLost, err)
		}
		s.setBusy(nil)
		if err != nil {
			s.dropConn(bc)
			if errors.Is(err, errClientGone) {
				return err
			}
			if !res.sent && shared && retryable(err, 0, c, s) && bc.Reused() && stale < maxStaleConns {
				// A pooled connection the member closed while it sat
				// idle (a KILL, a restart): not a failure of the member
				// or of the statement, and not the one retry.
				stale++
				attempt--
				continue
			}
			if !res.sent && shared && retryable(err, attempt, c, s) {
				avoid = bc.pool.idx
				continue
			}
			err = s.lost(bc, c, kind, pin, true, err)
			s.p.metrics.CountError(err)
			se := s.memberError(bc, err)
			seq := s.pr.seq
			if res.sent {
				seq = res.seq
			}
			return s.writeErr(seq, se)
		}
		if kind == respPrepare && st != nil && !res.serverErr {
			s.recordPrepared(bc, st, res)
		}
		if res.dropAfter {
			s.dropConn(bc) // the statement itself succeeded
			return nil
		}
		s.observe(bc, c, kind, start)
		s.settle(bc, c, res, kind)
		return nil
	}
}

// maxStaleConns bounds how many dead pooled connections one read may run
// into before the next failure counts as its retry.
const maxStaleConns = 8

// retryable: only an autocommit read that no byte of reached the client may
// run again, and only once (proxy.MayRetry); the caller knows whether a
// byte reached the client.
func retryable(err error, attempt int, c Class, s *session) bool {
	return proxy.MayRetry(err, attempt, c.Kind == KindRead, s.pin != 0)
}

// dropConn forgets a connection that failed mid-command. One chosen at an
// epoch that has ended is reset, not just closed (see backendConn.abort).
func (s *session) dropConn(bc *backendConn) {
	if e := bc.Epoch.Load(); e != 0 && !s.p.router.Current(e) {
		bc.abort()
	}
	if s.pinned == bc {
		s.pinned = nil
		// The member rolled the transaction back with the connection, and
		// dropped its locks and temporary tables. autocommit=0 is replayed
		// on the next connection if it was set by a SET; until a status
		// says otherwise, the session's statements stay on the primary.
		s.pin = 0
	}
	if s.held == bc {
		s.held = nil
		s.holdLeft = 0
	}
	if s.last == bc {
		s.last = nil
	}
	bc.pool.Discard(bc)
}

// settle updates pins and holds after a command and releases the connection
// when nothing ties the session to it.
//
// The server says when a transaction is open (IN_TRANS): with autocommit=0
// that is not every statement (SELECT 1 opens none, a SELECT from a table
// does, COMMIT ends it), so such a session keeps its connection only while
// one is open, and its autocommit=0 is replayed like any SET on the
// connection it gets next.
func (s *session) settle(bc *backendConn, c Class, res relayOut, kind respKind) {
	if !res.serverErr {
		s.pin |= c.Pin
	}
	if res.haveStatus {
		setPin(&s.pin, PinTxn, res.status&statusInTrans != 0)
		s.autocommitOff = res.status&statusAutocommit == 0
		setPin(&s.pin, PinNoAutocommit, s.autocommitOff && !s.acReplayed)
	}
	if res.serverErr && s.autocommitOff && kind != respPrepare && kind != respFieldList && c.Kind != KindUse {
		// An error carries no status, and with autocommit=0 the failed
		// statement may have begun a transaction (a duplicate key leaves
		// the INSERT's transaction open): keep the connection until a
		// status says none is open.
		s.pin |= PinTxn
	}
	if s.pin != 0 {
		if s.pinned == nil {
			s.pinned = bc
		}
		if s.held != nil && s.held != s.pinned {
			s.release(s.held)
		}
		s.held, s.holdLeft = nil, 0
		return
	}
	if s.pinned == bc {
		s.pinned = nil
	}
	// Soft hold: keep the connection for a few statements after one that left
	// per-connection results (an auto-increment id, warnings, found rows),
	// as ProxySQL does with auto_increment_delay_multiplex.
	hold := 0
	if res.lastInsertID != 0 {
		hold = s.p.cfg.AutoIncrementDelayMultiplex
	}
	if (res.warnings > 0 || c.CalcFoundRows) && hold < 1 {
		hold = 1
	}
	switch {
	case hold > 0:
		if s.held != nil && s.held != bc {
			s.release(s.held)
		}
		s.held, s.holdLeft = bc, hold
	case s.held == bc:
		s.holdLeft--
		if s.holdLeft <= 0 {
			s.held = nil
			s.release(bc)
		}
	default:
		if s.held != nil {
			s.holdLeft--
			if s.holdLeft <= 0 {
				s.release(s.held)
				s.held = nil
			}
		}
		s.release(bc)
	}
}

func setPin(p *Pin, bit Pin, on bool) {
	if on {
		*p |= bit
	} else {
		*p &^= bit
	}
}

// runSet runs a session SET on the primary and, when the member accepts it,
// adds it to the state replayed on every connection the session uses.
func (s *session) runSet(ctx context.Context, pkt []byte) error {
	entry := setEntry{key: SetKey(pkt[1:]), sql: string(pkt[1:])}
	entry.tracking = containsFold(entry.sql, "session_track_system_variables")
	next := make([]setEntry, 0, len(s.sets)+1)
	for _, e := range s.sets {
		if (entry.key != "" && e.key == entry.key) || e.sql == entry.sql {
			continue
		}
		next = append(next, e)
	}
	next = append(next, entry)
	if len(next) > maxReplayedSets {
		// Too much state to replay cheaply: keep the session on one
		// connection instead.
		return s.run(ctx, pkt, Class{Kind: KindWrite, Pin: PinUnknown}, respResult)
	}
	return s.runStateChange(ctx, pkt, KindSet, func(bc *backendConn, res relayOut) error {
		s.sets = next
		s.setsHash = hashSets(next)
		bc.setsHash = s.setsHash
		if entry.tracking {
			bc.trackGTID = false // until a reset turns it on again
		}
		if entry.key == "autocommit" && res.haveStatus {
			// Replaying this SET turns autocommit off (or on) on any
			// connection: autocommit=0 need not pin.
			s.acReplayed = res.status&statusAutocommit == 0
		}
		return nil
	})
}

// runStateChange runs a statement that changes replayed session state (SET,
// USE, COM_INIT_DB) on the primary, and applies the change to the session only
// when the member accepted it.
func (s *session) runStateChange(ctx context.Context, pkt []byte, kind Kind, apply func(bc *backendConn, res relayOut) error) error {
	bc, _, err := s.acquire(ctx, Class{Kind: KindWrite}, -1)
	if err != nil {
		s.p.metrics.CountError(err)
		return s.writeErr(s.pr.seq, toServerError(s.p.cfg.Cluster, err))
	}
	res, err := s.execOn(bc, pkt, respResult, Class{Kind: kind})
	if err != nil {
		return ignoreHandled(err)
	}
	if !res.serverErr {
		if err := apply(bc, res); err != nil {
			s.dropConn(bc)
			return nil
		}
	}
	s.settle(bc, Class{Kind: kind}, res, respResult)
	return nil
}

// maxReplayedSets bounds the replay list; past it the session pins.
const maxReplayedSets = 64

// execOn forwards a command of class c on a chosen connection (no retry).
func (s *session) execOn(bc *backendConn, pkt []byte, kind respKind, c Class) (relayOut, error) {
	start := time.Now()
	setDeadlineLazy(bc.nc, &bc.deadline, s.p.cfg.QueryTimeout)
	var res relayOut
	pin := s.pins()
	s.setBusy(bc)
	err := bc.command(pkt)
	if err == nil {
		res, err = s.relay(bc, kind, 0, c.Kind != KindRead, false)
	} else {
		err = fmt.Errorf("%w: %v", proxy.ErrBackendLost, err)
	}
	s.setBusy(nil)
	if err != nil {
		s.dropConn(bc)
		if errors.Is(err, errClientGone) {
			return res, err
		}
		err = s.lost(bc, c, kind, pin, true, err)
		s.p.metrics.CountError(err)
		seq := s.pr.seq
		if res.sent {
			seq = res.seq
		}
		return res, s.writeErrAnd(seq, s.memberError(bc, err))
	}
	s.observe(bc, c, kind, start)
	return res, nil
}

// observe records how long a command a member answered on bc took since
// start (dbrouter_query_duration_seconds), under the route it took.
func (s *session) observe(bc *backendConn, c Class, kind respKind, start time.Time) {
	route := proxy.RoutePrimary
	switch {
	case bc == s.pinned || bc == s.held:
		route = proxy.RoutePinned
	case s.onReplica:
		route = proxy.RouteReplica
	}
	s.p.metrics.Duration(route, stmtKindOf(c, kind)).Observe(time.Since(start).Seconds())
}

// writeErrAnd writes the error and reports the statement as handled (nil)
// unless the client is gone.
func (s *session) writeErrAnd(seq uint8, se *ServerError) error {
	if err := s.writeErr(seq, se); err != nil {
		return err
	}
	return errHandled
}

var errHandled = errors.New("handled")

func (s *session) runUse(ctx context.Context, pkt []byte) error {
	db, ok := UseTarget(pkt[1:])
	if !ok {
		return s.run(ctx, pkt, Class{Kind: KindWrite}, respResult)
	}
	return s.changeDB(ctx, pkt, db)
}

func (s *session) comInitDB(ctx context.Context, pkt []byte) error {
	return s.changeDB(ctx, pkt, string(pkt[1:]))
}

func (s *session) changeDB(ctx context.Context, pkt []byte, db string) error {
	return s.runStateChange(ctx, pkt, KindUse, func(bc *backendConn, _ relayOut) error {
		s.db = db
		if bc.db != db {
			// Cached statements name tables relative to the old database.
			if err := bc.forgetStmts(); err != nil {
				return err
			}
			bc.db = db
		}
		return nil
	})
}

func (s *session) comSetOption(ctx context.Context, pkt []byte) error {
	if len(pkt) < 3 || pkt[1] > 1 {
		return s.writeErr(s.pr.seq, &ServerError{Code: CodeMalformedPacket, State: "HY000", Message: "dbrouter: malformed COM_SET_OPTION"})
	}
	s.multi = pkt[1] == 0
	// Answer as the server does (an EOF packet); the member connections pick
	// the option up when they are next synced.
	return s.writeEOF(1, statusAutocommit)
}

// resetSession is COM_RESET_CONNECTION: the session goes back to a fresh
// state with the same user and database.
func (s *session) resetSession() {
	if s.pinned != nil {
		s.releaseDirty(s.pinned)
		s.pinned = nil
	}
	if s.held != nil {
		s.release(s.held)
		s.held = nil
	}
	s.pin, s.holdLeft = 0, 0
	s.autocommitOff, s.acReplayed = false, false
	s.sets, s.setsHash = nil, 0
	clear(s.stmts)
}

func (s *session) writeOK(seq uint8, affected, lastID uint64) error {
	status := statusAutocommit
	if s.pin&PinTxn != 0 {
		status |= statusInTrans
	}
	if s.autocommitOff {
		status &^= statusAutocommit
	}
	s.scratch = appendOK(s.scratch[:0], affected, lastID, status, 0)
	return s.writeFlush(seq, s.scratch)
}

func (s *session) writeEOF(seq uint8, status uint16) error {
	s.scratch = append(s.scratch[:0], 0xfe, 0, 0)
	s.scratch = appendUint16(s.scratch, status)
	return s.writeFlush(seq, s.scratch)
}

func (s *session) writeErr(seq uint8, se *ServerError) error {
	s.scratch = appendErr(s.scratch[:0], se)
	return s.writeFlush(seq, s.scratch)
}

func (s *session) writeFlush(seq uint8, payload []byte) error {
	if _, err := writePacket(s.w, seq, payload); err != nil {
		return fmt.Errorf("%w: %v", errClientGone, err)
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("%w: %v", errClientGone, err)
	}
	return nil
}

// upgradeTLS switches the client connection to TLS after an SSLRequest. The
// client may already have sent its ClientHello, which then sits in the
// session's read buffer: TLS reads through that buffer, not the bare socket.
func (s *session) upgradeTLS(cfg *tls.Config) error {
	tc := tls.Server(&bufferedConn{Conn: s.nc, r: s.r}, cfg)
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("tls handshake: %w", err)
	}
	_ = tc.SetDeadline(time.Time{})
	s.deadline = time.Time{}
	s.nc = tc
	s.r = bufio.NewReaderSize(tc, bufSize)
	s.pr.r = s.r
	s.w.Reset(tc)
	s.tls = true
	return nil
}

// bufferedConn reads from a bufio.Reader that wraps the connection.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
