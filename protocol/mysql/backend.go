package mysql

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/proxy"
)

const bufSize = 16 << 10

// poolKey separates connections whose packets or semantics differ.
type poolKey struct {
	user      string
	collation uint8
	foundRows bool
	// noDB: the connection has no default database. A session without one
	// must not run on a connection another session left in a database
	// (there is no command to deselect it), or an unqualified table name
	// would resolve there instead of failing with "No database selected".
	noDB bool
}

// backendConn is one authenticated connection to a member.
type backendConn struct {
	nc   net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	pr   packetReader
	pool *memberPool
	key  poolKey

	// Session state this connection carries, compared with the session's
	// before each use and replayed when they differ.
	setsHash uint64
	db       string
	multi    bool
	stmts    map[string]uint32 // SQL -> member statement id, valid for db
	version  string
	threadID uint32        // the member's id for this connection, for KILL QUERY
	stw      *sendThenWait // nil: a connection without a raw socket

	// tracked: the connection negotiated CLIENT_SESSION_TRACK, so its OK
	// packets may carry session-state info (never passed on to clients
	// that did not ask for it: relay strips it). trackGTID: last_gtid is
	// among the variables it tracks, so each commit's OK reports its GTID.
	tracked   bool
	trackGTID bool

	lastUsed   time.Time
	deadline   time.Time
	lastStatus uint16 // status flags of the last response
	// epoch is the control plane epoch this connection was chosen as the
	// primary under (0: not a primary route, or no control plane). An OK
	// arriving after that epoch ended is not passed on as a success, and
	// the proxy resets the connection when the epoch ends (Proxy.resetStale
	// reads it from another goroutine).
	epoch atomic.Uint64
	// aborted: reset by abort; its owner has yet to discard it.
	aborted atomic.Bool
	// idle: on its pool's idle stack (guarded by the pool's mu).
	idle bool
}

// memberPool holds one member's connections. Open connections are bounded per
// member; idle ones are kept per key on a LIFO stack so the hottest connection
// (warm statement cache) is reused first.
type memberPool struct {
	idx     int
	name    string
	addr    string
	connect time.Duration
	maxPkt  int
	log     *zap.Logger

	// inflight counts statements sent on this member's connections and
	// not yet answered (Proxy.InFlight).
	inflight atomic.Int64
	// confirmed is the newest Proxy.latest version this member is known
	// to have applied (causal_reads: proxy): reads skip the wait until a
	// newer write.
	confirmed atomic.Uint64
	// pins counts the sessions pinned to one of this member's connections,
	// by reason (dbrouter_pinned_sessions, and the pool timeout's message).
	pins pinCounts

	mu sync.Mutex
	// max bounds open connections. derive: it was not configured, and is
	// learned from the member's max_connections at the first connection
	// (learned); until then only that one connection may open, so the
	// limit only ever rises.
	max      int
	derive   bool
	learned  bool
	learning bool
	open     int
	idle     map[poolKey][]*backendConn
	conns    map[*backendConn]struct{} // every open connection, idle or in use
	// queue holds the sessions waiting for a connection, in arrival order.
	// A connection handed back, or the room a closed one leaves, goes to
	// the first of them: while anyone waits nothing is idle, and a session
	// that arrives later queues behind them instead of taking it first.
	queue []*poolWaiter
}

// poolWaiter is a session waiting for a connection: it receives one, or
// (nil) room to open one.
type poolWaiter struct {
	ch chan *backendConn
}

// pinCounts: sessions pinned to a member's connections, in all and by
// reason. Updated when a session's pins change (session.account), read at
// scrape time and in the pool timeout's message.
type pinCounts struct {
	sessions atomic.Int32
	byReason [numPins]atomic.Int32
}

// countPins adds delta sessions pinned for the reasons in pin.
func (p *memberPool) countPins(pin Pin, delta int32) {
	p.pins.sessions.Add(delta)
	for i := range p.pins.byReason {
		if pin&(1<<i) != 0 {
			p.pins.byReason[i].Add(delta)
		}
	}
}

// Member, Stats, InFlight and Pinned are what the metrics read
// (proxy.PoolStats).
func (p *memberPool) Member() string { return p.name }

func (p *memberPool) Stats() proxy.ConnStats {
	o, i := p.stats()
	return proxy.ConnStats{Open: o, Idle: i}
}

func (p *memberPool) InFlight() int64 { return p.inflight.Load() }

func (p *memberPool) Pinned(reason int) int { return int(p.pins.byReason[reason].Load()) }

// defaultMaxConns is the limit when it is neither configured nor learned
// (a member that does not answer SELECT @@max_connections).
const defaultMaxConns = 64

// limitFromMaxConnections is the default connection limit for a member
// whose max_connections is n: a tenth of n and 10 more are left to
// others — administrators, the monitor and arbiters, replicas' binlog
// connections, other tools — so the proxy alone never exhausts the member
// (docs/config.md). With several proxies in front of one member, set
// max_connections_per_member to share it.
func limitFromMaxConnections(n int) int {
	return max(1, n-n/10-10)
}

// newMemberPool: max <= 0 derives the limit from the member's
// max_connections.
func newMemberPool(idx int, name, addr string, max int, connect time.Duration, maxPkt int, log *zap.Logger) *memberPool {
	p := &memberPool{idx: idx, name: name, addr: addr, max: max, connect: connect, maxPkt: maxPkt, log: log,
		idle: map[poolKey][]*backendConn{}, conns: map[*backendConn]struct{}{}}
	if max <= 0 {
		p.derive, p.max = true, 1
	}
	return p
}

type credentials struct {
	user, password string
}

// staleAfter: an idle connection unused for this long is checked before use,
// so a member restart costs no client an error.
const staleAfter = time.Second

// get returns an idle connection for key or opens one, waiting up to wait
// when the member is at its connection limit. The wait timer is only created
// when waiting is needed: the common case allocates nothing. prefer (may be
// nil) is the connection the session used last: if it is idle, it is the one
// returned, because a client that keeps talking to the same member thread
// wakes fewer threads on the member, and on a busy host that is measurable
// (bench/NOTES.md). Waiting sessions are served in arrival order.
func (p *memberPool) get(ctx context.Context, key poolKey, cred credentials, wait time.Duration, prefer *backendConn) (*backendConn, error) {
	for {
		p.mu.Lock()
		if len(p.queue) > 0 {
			break // others were first
		}
		if bc := p.popIdleLocked(key, prefer); bc != nil {
			prefer = nil
			p.mu.Unlock()
			if time.Since(bc.lastUsed) > staleAfter && !bc.alive() {
				p.discard(bc)
				continue
			}
			return bc, nil
		}
		if p.open < p.max {
			p.open++
			p.mu.Unlock()
			return p.dialInto(ctx, key, cred)
		}
		// At the limit: an idle connection of another key is cheaper to close
		// than to wait for.
		if victim := p.popOtherLocked(key); victim != nil {
			p.mu.Unlock()
			p.discard(victim)
			continue
		}
		break
	}
	w := &poolWaiter{ch: make(chan *backendConn, 1)}
	p.queue = append(p.queue, w)
	p.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	var err error
	select {
	case bc := <-w.ch:
		return p.served(ctx, key, cred, bc)
	case <-ctx.Done():
		err = ctx.Err()
	case <-t.C:
		err = p.timeoutError(wait)
	}
	p.mu.Lock()
	if i := slices.Index(p.queue, w); i >= 0 {
		p.queue = slices.Delete(p.queue, i, i+1)
		p.mu.Unlock()
		return nil, err
	}
	p.mu.Unlock()
	// Served as it gave up: pass the connection (or the room) on.
	if bc := <-w.ch; bc != nil {
		p.put(bc)
	} else {
		p.mu.Lock()
		p.releaseLocked()
		p.mu.Unlock()
	}
	return nil, err
}

// served takes what a waiter was handed: a connection, or room to open
// one (nil). A connection of a key the waiter cannot use is closed and
// its room used: waiters are served in order, whatever they wait for.
func (p *memberPool) served(ctx context.Context, key poolKey, cred credentials, bc *backendConn) (*backendConn, error) {
	if bc != nil && (bc.key == key || !key.noDB && bc.key.noDB && bc.key == withNoDB(key)) {
		return bc, nil
	}
	if bc != nil {
		p.mu.Lock()
		delete(p.conns, bc)
		p.mu.Unlock()
		bc.nc.Close()
	}
	return p.dialInto(ctx, key, cred)
}

func withNoDB(k poolKey) poolKey {
	k.noDB = true
	return k
}

// dialInto opens a connection in room already counted in open, and gives
// the room back if it fails. The first connection of a pool whose limit
// is derived reads the member's max_connections.
func (p *memberPool) dialInto(ctx context.Context, key poolKey, cred credentials) (*backendConn, error) {
	bc, err := p.dial(ctx, key, cred)
	p.mu.Lock()
	if err != nil {
		p.releaseLocked()
		p.mu.Unlock()
		return nil, err
	}
	p.conns[bc] = struct{}{}
	learn := p.derive && !p.learned && !p.learning
	if learn {
		p.learning = true
	}
	p.mu.Unlock()
	if learn {
		if err := p.learnLimit(bc); err != nil {
			p.discard(bc)
			return nil, err
		}
	}
	return bc, nil
}

// learnLimit sets the pool's limit from the member's max_connections, read
// on bc. A member that cannot tell gets defaultMaxConns; only a failed
// connection is an error (the limit is learned on the next one).
func (p *memberPool) learnLimit(bc *backendConn) error {
	vb, null, err := bc.queryValue(append([]byte{gm.COM_QUERY}, "SELECT @@max_connections"...), nil)
	v := string(vb)
	var se *ServerError
	if err != nil && !errors.As(err, &se) {
		p.mu.Lock()
		p.learning = false
		p.mu.Unlock()
		return fmt.Errorf("member %s: read max_connections: %w", p.name, err)
	}
	limit := defaultMaxConns
	n, perr := strconv.Atoi(v)
	switch {
	case err != nil || null || perr != nil || n <= 0:
		p.log.Warn("cannot read the member's max_connections: the connection limit is the default",
			zap.String("member", p.name), zap.Int("limit", limit), zap.String("max_connections", v), zap.NamedError("reason", err))
	default:
		limit = limitFromMaxConnections(n)
		p.log.Info("connection limit from the member's max_connections", zap.String("member", p.name),
			zap.Int("max_connections", n), zap.Int("limit", limit))
	}
	p.mu.Lock()
	p.max, p.learned, p.learning = limit, true, false
	// Room for those who waited for the limit.
	for len(p.queue) > 0 && p.open < p.max {
		p.open++
		p.handLocked(nil)
	}
	p.mu.Unlock()
	return nil
}

// timeoutError says that every connection stayed busy for wait, and, when
// sessions pin some of them, how many and why: more connections will not
// help sessions that keep theirs for a long time, ending what pins them
// will (an open transaction, a lock, a temporary table...).
func (p *memberPool) timeoutError(wait time.Duration) error {
	p.mu.Lock()
	limit := p.max
	p.mu.Unlock()
	n := p.pins.sessions.Load()
	if n <= 0 {
		return fmt.Errorf("member %s: %w: all %d connections in use for %v", p.name, proxy.ErrPoolTimeout, limit, wait)
	}
	var why strings.Builder
	for i := range p.pins.byReason {
		if c := p.pins.byReason[i].Load(); c > 0 {
			if why.Len() > 0 {
				why.WriteString(", ")
			}
			fmt.Fprintf(&why, "%s %d", pinNames[i], c)
		}
	}
	return fmt.Errorf("member %s: %w: all %d connections in use for %v; %d sessions pin one, keeping it between statements (%s)",
		p.name, proxy.ErrPoolTimeout, limit, wait, n, why.String())
}

// handLocked gives bc (nil: room to open one) to the first waiter.
func (p *memberPool) handLocked(bc *backendConn) {
	w := p.queue[0]
	p.queue[0] = nil
	p.queue = p.queue[1:]
	w.ch <- bc
}

// releaseLocked frees the room of a connection that closed (or was never
// opened): the first waiter may open one, else the count drops.
func (p *memberPool) releaseLocked() {
	if len(p.queue) > 0 {
		p.handLocked(nil)
		return
	}
	p.open--
}

// popIdleLocked takes prefer if it is idle under key, else the most recently
// used idle connection of key. A session with a database may also take a
// connection without one (sync selects the database); never the reverse.
func (p *memberPool) popIdleLocked(key poolKey, prefer *backendConn) *backendConn {
	st := p.idle[key]
	if len(st) == 0 && !key.noDB {
		key.noDB = true
		st = p.idle[key]
	}
	if len(st) == 0 {
		return nil
	}
	i := len(st) - 1
	if prefer != nil && prefer.pool == p && prefer.key == key {
		for j := i; j >= 0; j-- {
			if st[j] == prefer {
				i = j
				break
			}
		}
	}
	bc := st[i]
	copy(st[i:], st[i+1:])
	st[len(st)-1] = nil
	p.idle[key] = st[:len(st)-1]
	bc.idle = false
	return bc
}

func (p *memberPool) popOtherLocked(key poolKey) *backendConn {
	for k, st := range p.idle {
		if k != key && len(st) > 0 {
			bc := st[0] // the coldest
			p.idle[k] = st[1:]
			bc.idle = false
			return bc
		}
	}
	return nil
}

// put returns a healthy connection: to the first waiter, else to the idle
// stack.
func (p *memberPool) put(bc *backendConn) {
	bc.lastUsed = time.Now()
	p.mu.Lock()
	// Under the lock: another session may be looking at this connection as
	// the one it would prefer (popIdleLocked reads its key).
	bc.key.noDB = bc.db == ""
	if len(p.queue) > 0 {
		p.handLocked(bc)
		p.mu.Unlock()
		return
	}
	bc.idle = true
	p.idle[bc.key] = append(p.idle[bc.key], bc)
	p.mu.Unlock()
}

// discard closes a connection that must not be reused.
func (p *memberPool) discard(bc *backendConn) {
	bc.nc.Close()
	p.mu.Lock()
	delete(p.conns, bc)
	p.releaseLocked()
	p.mu.Unlock()
}

// waiting is the number of sessions waiting for a connection.
func (p *memberPool) waiting() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue)
}

// abort resets the connection (SO_LINGER 0, then close: the kernel sends
// RST and drops what it has not yet sent). A member that wakes (SIGCONT, a
// healed partition) then fails the connection at its next read or write
// and rolls back what it had open, instead of finishing a command whose
// tail never left this host. A command the member's kernel has already
// received is another matter: Linux still hands it to the process after
// the RST, so a stopped server runs it when it wakes (tested:
// TestStoppedMemberRunsWhatItReceivedDespiteTheReset). Such a statement is
// never acknowledged, and the control plane finds it as an errant
// transaction on the old primary.
// Safe to call while another goroutine uses the connection: its read or
// write fails at once.
func (bc *backendConn) abort() {
	bc.aborted.Store(true)
	if tc, ok := bc.nc.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	bc.nc.Close()
}

// takeStale finds the connections chosen as the primary at an epoch for
// which stale is true. Idle ones leave the pool (the caller resets them);
// the caller resets the ones in use too, and their sessions discard them
// when their read or write fails.
func (p *memberPool) takeStale(stale func(epoch uint64) bool) []*backendConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*backendConn
	verdict := map[uint64]bool{}
	for bc := range p.conns {
		e := bc.epoch.Load()
		if e == 0 || bc.aborted.Load() {
			continue
		}
		gone, ok := verdict[e]
		if !ok {
			gone = stale(e)
			verdict[e] = gone
		}
		if !gone {
			continue
		}
		out = append(out, bc)
		if bc.idle {
			st := p.idle[bc.key]
			for i := range st {
				if st[i] == bc {
					copy(st[i:], st[i+1:])
					st[len(st)-1] = nil
					p.idle[bc.key] = st[:len(st)-1]
					break
				}
			}
			bc.idle = false
			delete(p.conns, bc)
			p.releaseLocked()
		}
	}
	return out
}

// stats returns open and idle connection counts.
func (p *memberPool) stats() (open, idle int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, st := range p.idle {
		idle += len(st)
	}
	return p.open, idle
}

// closeIdle closes every idle connection (shutdown).
func (p *memberPool) closeIdle() {
	p.mu.Lock()
	var all []*backendConn
	for k, st := range p.idle {
		all = append(all, st...)
		delete(p.idle, k)
	}
	for _, bc := range all {
		delete(p.conns, bc)
		p.releaseLocked()
	}
	p.mu.Unlock()
	for _, bc := range all {
		bc.nc.Close()
	}
}

// alive checks without blocking whether the member closed the connection:
// a read that times out at once means the socket is healthy and quiet.
func (bc *backendConn) alive() bool {
	_ = bc.nc.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, err := bc.r.Peek(1)
	bc.deadline = time.Time{}
	_ = bc.nc.SetReadDeadline(time.Time{})
	return err != nil && errors.Is(err, os.ErrDeadlineExceeded)
}

func (p *memberPool) dial(ctx context.Context, key poolKey, cred credentials) (*backendConn, error) {
	d := net.Dialer{Timeout: p.connect}
	nc, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, fmt.Errorf("member %s (%s): %w: %v", p.name, p.addr, proxy.ErrBackendDown, err)
	}
	bc := &backendConn{nc: nc, w: bufio.NewWriterSize(nc, bufSize), pool: p, key: key, multi: true, stmts: map[string]uint32{}}
	if bc.stw = newSendThenWait(nc, bc.w); bc.stw != nil {
		bc.r = bufio.NewReaderSize(bc.stw, bufSize)
	} else {
		bc.r = bufio.NewReaderSize(nc, bufSize)
	}
	bc.pr = packetReader{r: bc.r, max: p.maxPkt}
	_ = nc.SetDeadline(time.Now().Add(p.connect + 5*time.Second))
	if err := bc.handshake(cred, key); err != nil {
		nc.Close()
		var se *ServerError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("member %s: %w: login as %s: %w", p.name, proxy.ErrBackendDown, cred.user, err)
		}
		return nil, fmt.Errorf("member %s: %w: handshake: %v", p.name, proxy.ErrBackendDown, err)
	}
	if err := bc.startTracking(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("member %s: %w: track last_gtid: %v", p.name, proxy.ErrBackendDown, err)
	}
	_ = nc.SetDeadline(time.Time{})
	return bc, nil
}

// trackLastGTID makes the member report, in the OK packet of each commit,
// the commit's GTID (MariaDB 10.3+ tracks last_gtid), so read-your-writes
// learns it without a query per write. Only last_gtid: the other
// variables tracked by default (autocommit, character sets, time zone) are
// replayed session state the proxy already knows.
var trackLastGTID = append([]byte{gm.COM_QUERY}, "SET session_track_system_variables = 'last_gtid'"...)

// startTracking turns last_gtid tracking on for a connection that
// negotiated session tracking. A member that refuses (MySQL, an older
// MariaDB) is not an error: the GTID of each write is then asked for
// (session.noteWrite).
func (bc *backendConn) startTracking() error {
	bc.trackGTID = false
	if !bc.tracked {
		return nil
	}
	_, err := bc.exec(trackLastGTID)
	var se *ServerError
	if errors.As(err, &se) {
		return nil
	}
	bc.trackGTID = err == nil
	return err
}

func (bc *backendConn) handshake(cred credentials, key poolKey) error {
	b, err := bc.pr.readPacket()
	if err != nil {
		return err
	}
	h, err := parseServerHello(b)
	if err != nil {
		return err
	}
	bc.version = h.version
	bc.threadID = h.connID
	// No database in the handshake: the session's is applied by sync.
	caps := backendCaps & h.caps &^ gm.CLIENT_CONNECT_WITH_DB
	// Session tracking: each write's OK packet then carries the write's
	// GTID (last_gtid, see startTracking), so read-your-writes costs no
	// round trip per write. Clients are not offered it (handshake.go):
	// relay strips the session state from what they receive.
	caps |= h.caps & gm.CLIENT_SESSION_TRACK
	bc.tracked = caps&gm.CLIENT_SESSION_TRACK != 0
	if key.foundRows {
		caps |= gm.CLIENT_FOUND_ROWS
	}
	auth, err := scrambleFor(h.plugin, h.scramble, cred.password)
	if err != nil {
		return err
	}
	out := make([]byte, 0, 128)
	out = appendUint32(out, caps)
	out = appendUint32(out, 1<<30)
	out = append(out, key.collation)
	out = append(out, make([]byte, 23)...)
	out = append(out, cred.user...)
	out = append(out, 0)
	out = appendLenEncString(out, auth)
	out = append(out, h.plugin...)
	out = append(out, 0)
	seq := bc.pr.seq
	if _, err := writePacket(bc.w, seq, out); err != nil {
		return err
	}
	if err := bc.w.Flush(); err != nil {
		return err
	}
	plugin, scramble := h.plugin, h.scramble
	for {
		b, err := bc.pr.readPacket()
		if err != nil {
			return err
		}
		var reply []byte
		switch {
		case len(b) > 0 && b[0] == 0x00:
			return nil
		case len(b) > 0 && b[0] == 0xff:
			return parseErr(b)
		case len(b) > 0 && b[0] == 0xfe: // auth switch
			pl, pos, ok := readNulString(b, 1)
			if !ok {
				return errors.New("malformed auth switch request")
			}
			plugin = string(pl)
			scramble = bytes20(b[pos:])
			if reply, err = scrambleFor(plugin, scramble, cred.password); err != nil {
				return err
			}
			if reply == nil {
				reply = []byte{}
			}
		case len(b) >= 2 && b[0] == 0x01 && plugin == pluginSHA2:
			switch b[1] {
			case 3: // fast auth success; OK follows
				continue
			case 4: // full authentication: ask for the RSA key
				reply = []byte{2}
			default:
				return fmt.Errorf("unexpected caching_sha2 state %d", b[1])
			}
		case len(b) > 1 && b[0] == 0x01: // RSA public key
			if reply, err = encryptWithPEM(b[1:], cred.password, scramble); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unexpected packet 0x%02x during authentication", firstByte(b))
		}
		if _, err := writePacket(bc.w, bc.pr.seq, reply); err != nil {
			return err
		}
		if err := bc.w.Flush(); err != nil {
			return err
		}
	}
}

func bytes20(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return append([]byte(nil), b...)
}

func firstByte(b []byte) byte {
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

// setDeadline refreshes the connection deadline at most once a second: the
// runtime timer is cheap but not free, and a second of slack is irrelevant
// against timeouts measured in minutes.
func setDeadlineLazy(nc net.Conn, cur *time.Time, d time.Duration) {
	if d <= 0 {
		return
	}
	now := time.Now()
	if cur.Sub(now) > d-time.Second {
		return
	}
	*cur = now.Add(d)
	_ = nc.SetDeadline(*cur)
}

// send writes a command whose answer is read next: the read sends it (see
// sendThenWait). A command that does not fit the writer's buffer is written
// at once, as bufio would anyway, and its answer read the usual way: were
// any of it on the wire before the read readiness is reset, an answer that
// came back in between would never signal.
func (bc *backendConn) send(payload []byte) error {
	if bc.stw == nil || bc.r.Buffered() > 0 || 4+len(payload) > bc.w.Available() {
		return bc.command(payload)
	}
	if _, err := writePacket(bc.w, 0, payload); err != nil {
		return err
	}
	bc.stw.pending = true
	return nil
}

// command sends one command packet (sequence 0) and flushes.
func (bc *backendConn) command(payload []byte) error {
	if _, err := writePacket(bc.w, 0, payload); err != nil {
		return err
	}
	return bc.w.Flush()
}

// exec runs a command whose answer is a single OK, EOF or ERR packet (used for
// the proxy's own SET/INIT_DB/RESET/SET_OPTION).
func (bc *backendConn) exec(payload []byte) (okInfo, error) {
	if err := bc.command(payload); err != nil {
		return okInfo{}, fmt.Errorf("%w: %v", proxy.ErrBackendLost, err)
	}
	return bc.reply()
}

// reply reads the answer to a command that is a single OK, EOF or ERR
// packet.
func (bc *backendConn) reply() (okInfo, error) {
	b, err := bc.pr.readPacket()
	if err != nil {
		return okInfo{}, fmt.Errorf("%w: %v", proxy.ErrBackendLost, err)
	}
	switch {
	case len(b) > 0 && b[0] == 0xff:
		return okInfo{}, parseErr(b)
	case len(b) > 0 && b[0] == 0xfe:
		return okInfo{status: eofStatus(b, false)}, nil
	}
	o, ok := parseOK(b)
	if !ok {
		return o, fmt.Errorf("%w: unexpected reply 0x%02x", proxy.ErrBackendLost, firstByte(b))
	}
	return o, nil
}

func (bc *backendConn) query(sql string) error {
	buf := make([]byte, 0, len(sql)+1)
	buf = append(buf, gm.COM_QUERY)
	buf = append(buf, sql...)
	_, err := bc.exec(buf)
	return err
}

// prepare prepares sql on this connection, consuming the response, and returns
// the member's statement id.
func (bc *backendConn) prepare(sql []byte, scratch []byte) (uint32, []byte, error) {
	scratch = append(scratch[:0], gm.COM_STMT_PREPARE)
	scratch = append(scratch, sql...)
	if err := bc.command(scratch); err != nil {
		return 0, scratch, fmt.Errorf("%w: %v", proxy.ErrBackendLost, err)
	}
	b, err := bc.pr.readPacket()
	if err != nil {
		return 0, scratch, fmt.Errorf("%w: %v", proxy.ErrBackendLost, err)
	}
	if len(b) > 0 && b[0] == 0xff {
		return 0, scratch, parseErr(b)
	}
	if len(b) < 12 || b[0] != 0 {
		return 0, scratch, fmt.Errorf("%w: malformed prepare response", proxy.ErrBackendLost)
	}
	id, _, _ := readUint32(b, 1)
	cols, _, _ := readUint16(b, 5)
	params, _, _ := readUint16(b, 7)
	skip := 0
	if params > 0 {
		skip += int(params) + 1
	}
	if cols > 0 {
		skip += int(cols) + 1
	}
	for i := 0; i < skip; i++ {
		if _, err := bc.pr.readPacket(); err != nil {
			return 0, scratch, fmt.Errorf("%w: %v", proxy.ErrBackendLost, err)
		}
	}
	return id, scratch, nil
}

// closeStmt frees a member statement; COM_STMT_CLOSE has no reply.
func (bc *backendConn) closeStmt(id uint32) error {
	var b [5]byte
	b[0] = gm.COM_STMT_CLOSE
	b[1], b[2], b[3], b[4] = byte(id), byte(id>>8), byte(id>>16), byte(id>>24)
	return bc.command(b[:])
}

// maxCachedStmts bounds each connection's statement cache; past it the cache
// is dropped whole (statements are re-prepared on demand).
const maxCachedStmts = 256

func (bc *backendConn) forgetStmts() error {
	for sql, id := range bc.stmts {
		delete(bc.stmts, sql)
		if err := bc.closeStmt(id); err != nil {
			return err
		}
	}
	return nil
}

func hashSets(sets []setEntry) uint64 {
	if len(sets) == 0 {
		return 0
	}
	h := fnv.New64a()
	for _, s := range sets {
		h.Write([]byte(s.sql))
		h.Write([]byte{0})
	}
	v := h.Sum64()
	if v == 0 {
		v = 1
	}
	return v
}
