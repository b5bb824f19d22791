package mysql

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"strconv"
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
	// The pool's bookkeeping: its key, whether it is idle, when it was
	// handed back; Epoch is the control plane epoch this connection was
	// chosen as the primary under (0: not a primary route, or no control
	// plane). An OK arriving after that epoch ended is not passed on as a
	// success, and the proxy resets the connection when the epoch ends
	// (Proxy.resetStale reads it from another goroutine); Aborted: reset
	// by abort, and its owner has yet to discard it.
	proxy.Pooled[poolKey]

	// Session state this connection carries, compared with the session's
	// before each use and replayed when they differ.
	setsHash uint64
	db       string
	multi    bool
	stmts    map[string]uint32 // SQL -> member statement id, valid for db
	version  string
	threadID uint32        // the member's id for this connection, for KILL QUERY
	stw      *sendThenWait // nil: a connection without a raw socket
	// tls: the connection runs over TLS (Config.MemberTLS). Reads and
	// writes then go through nc, a *tls.Conn; stw, on the TCP socket
	// under it, only serves the idle probe (sendThenWait.closed).
	tls bool

	// tracked: the connection negotiated CLIENT_SESSION_TRACK, so its OK
	// packets may carry session-state info (never passed on to clients
	// that did not ask for it: relay strips it). trackGTID: last_gtid is
	// among the variables it tracks, so each commit's OK reports its GTID.
	tracked   bool
	trackGTID bool

	deadline   time.Time
	lastStatus uint16 // status flags of the last response
}

// memberPool is one member's connections (proxy.Pool: bounded, idle ones
// per key on a LIFO stack, waiters served in arrival order) and how this
// protocol opens them.
type memberPool struct {
	*proxy.Pool[*backendConn, poolKey]
	idx     int
	name    string
	addr    string
	connect time.Duration
	maxPkt  int
	log     *zap.Logger
	// tls, when set, is the client side of TLS to this member, its
	// ServerName filled in (memberTLS): every connection asks for TLS after
	// the member's greeting and fails rather than go on in plaintext.
	tls *tls.Config

	// confirmed is the newest Proxy.latest version this member is known
	// to have applied (causal_reads: proxy): reads skip the wait until a
	// newer write.
	confirmed atomic.Uint64
}

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
	p := &memberPool{idx: idx, name: name, addr: addr, connect: connect, maxPkt: maxPkt, log: log}
	p.Pool = proxy.NewPool(proxy.PoolConfig[*backendConn, poolKey]{
		Member: name, Max: max, Dial: p.dial, Limit: p.readLimit,
		Fallback: withNoDB, Refile: refile, PinNames: pinNames[:],
	})
	return p
}

// withNoDB: a session with a database may also take an idle connection
// without one (sync selects the database); never the reverse, since there
// is no command to deselect one.
func withNoDB(k poolKey) (poolKey, bool) {
	if k.noDB {
		return k, false
	}
	k.noDB = true
	return k, true
}

// refile files a connection handed back under the database state it was
// left in.
func refile(bc *backendConn, k poolKey) poolKey {
	k.noDB = bc.db == ""
	return k
}

// countPins adds delta sessions pinned for the reasons in pin.
func (p *memberPool) countPins(pin Pin, delta int32) {
	p.CountPins(uint64(pin), delta)
}

// readLimit reads the member's max_connections on bc and returns the
// pool's limit (limitFromMaxConnections). A member that cannot tell gets
// defaultMaxConns; only a failed connection is an error (the limit is
// learned on the next one).
func (p *memberPool) readLimit(bc *backendConn) (int, error) {
	vb, null, err := bc.queryValue(append([]byte{gm.COM_QUERY}, "SELECT @@max_connections"...), nil)
	v := string(vb)
	var se *ServerError
	if err != nil && !errors.As(err, &se) {
		return 0, fmt.Errorf("member %s: read max_connections: %w", p.name, err)
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
	return limit, nil
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
	bc.Aborted.Store(true)
	nc := bc.nc
	if tc, ok := nc.(*tls.Conn); ok {
		// The socket itself: no close_notify, which could wait on a
		// write blocked towards a hung member.
		nc = tc.NetConn()
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	nc.Close()
}

// Close closes the connection at once.
func (bc *backendConn) Close() error { return bc.nc.Close() }

// Alive checks without blocking whether the member closed the connection:
// a read that times out at once means the socket is healthy and quiet.
func (bc *backendConn) Alive() bool {
	_ = bc.nc.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, err := bc.r.Peek(1)
	bc.deadline = time.Time{}
	_ = bc.nc.SetReadDeadline(time.Time{})
	return err != nil && errors.Is(err, os.ErrDeadlineExceeded)
}

// dial opens a connection to the member for key, logged in as login (the
// pool's Dial).
func (p *memberPool) dial(ctx context.Context, key poolKey, login proxy.Login) (*backendConn, error) {
	d := net.Dialer{Timeout: p.connect}
	nc, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, fmt.Errorf("member %s (%s): %w: %v", p.name, p.addr, proxy.ErrBackendDown, err)
	}
	bc := &backendConn{nc: nc, w: bufio.NewWriterSize(nc, bufSize), pool: p, multi: true, stmts: map[string]uint32{}}
	if bc.stw = newSendThenWait(nc, bc.w); bc.stw != nil {
		bc.r = bufio.NewReaderSize(bc.stw, bufSize)
	} else {
		bc.r = bufio.NewReaderSize(nc, bufSize)
	}
	bc.pr = packetReader{r: bc.r, max: p.maxPkt}
	_ = nc.SetDeadline(time.Now().Add(p.connect + 5*time.Second))
	if err := bc.handshake(ctx, login, key); err != nil {
		nc.Close()
		var se *ServerError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("member %s: %w: login as %s: %w", p.name, proxy.ErrBackendDown, login.User, err)
		}
		return nil, fmt.Errorf("member %s: %w: handshake: %v", p.name, proxy.ErrBackendDown, err)
	}
	if err := bc.startTracking(); err != nil {
		bc.nc.Close()
		return nil, fmt.Errorf("member %s: %w: track last_gtid: %v", p.name, proxy.ErrBackendDown, err)
	}
	_ = bc.nc.SetDeadline(time.Time{})
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

func (bc *backendConn) handshake(ctx context.Context, login proxy.Login, key poolKey) error {
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
	auth, err := scrambleFor(h.plugin, h.scramble, login.Password)
	if err != nil {
		return err
	}
	out := make([]byte, 0, 128)
	if cfg := bc.pool.tls; cfg != nil {
		if h.caps&gm.CLIENT_SSL == 0 {
			return errors.New("member_tls is set but the member does not offer TLS (no CLIENT_SSL in its greeting: start it with ssl_cert and ssl_key); not going on in plaintext")
		}
		caps |= gm.CLIENT_SSL
		if err := bc.startTLS(ctx, cfg, caps, key.collation); err != nil {
			return err
		}
	}
	out = appendUint32(out, caps)
	out = appendUint32(out, 1<<30)
	out = append(out, key.collation)
	out = append(out, make([]byte, 23)...)
	out = append(out, login.User...)
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
			if reply, err = scrambleFor(plugin, scramble, login.Password); err != nil {
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
			if reply, err = encryptWithPEM(b[1:], login.Password, scramble); err != nil {
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

// startTLS sends the SSLRequest (the first 32 bytes of a handshake
// response, CLIENT_SSL set) and runs the TLS handshake, verifying the
// member's certificate; the handshake response follows over TLS, in the
// next sequence id. The proxy's hot path (send, then the read that flushes)
// needs a raw socket, so a TLS connection writes each command at once.
func (bc *backendConn) startTLS(ctx context.Context, cfg *tls.Config, caps uint32, collation uint8) error {
	req := make([]byte, 0, 32)
	req = appendUint32(req, caps)
	req = appendUint32(req, 1<<30)
	req = append(req, collation)
	req = append(req, make([]byte, 23)...)
	seq, err := writePacket(bc.w, bc.pr.seq, req)
	if err != nil {
		return err
	}
	if err := bc.w.Flush(); err != nil {
		return err
	}
	tc := tls.Client(bc.nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("TLS: %w", err)
	}
	bc.nc, bc.tls = tc, true
	bc.w.Reset(tc)
	bc.r.Reset(tc)
	bc.pr.seq = seq
	return nil
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
	if bc.stw == nil || bc.tls || bc.r.Buffered() > 0 || 4+len(payload) > bc.w.Available() {
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
