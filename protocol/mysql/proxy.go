package mysql

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/proxy"
	"github.com/dbrouter/dbrouter/router"
	"github.com/dbrouter/dbrouter/topology"
)

// Router is what the proxy asks where a statement goes. Members are indexes
// into Config.Members.
type Router interface {
	Primary(ctx context.Context) (int, uint64, error)
	// Current reports whether a write routed at epoch may still be
	// acknowledged.
	Current(epoch uint64) bool
	// Moved reports whether a newer epoch than epoch is serving (moved)
	// and whether a primary change is in progress (changing).
	Moved(epoch uint64) (moved, changing bool)
	// Changed is closed at the next change of the control plane's state
	// (nil without a control plane).
	Changed() <-chan struct{}
	// RetryWrite says whether a write whose member refused the connection
	// should be tried again (waiting for a new primary first).
	RetryWrite(ctx context.Context, failed int, first time.Time) bool
	// Replica picks the member an autocommit read goes to and says
	// whether it is a replica (not the primary a read fell back to);
	// prefer is the member the session read from last (-1 for none).
	Replica(ctx context.Context, avoid, prefer int) (m int, replica bool, err error)
}

// User is a client account and the member account its statements run as.
type User struct {
	Name            string
	Password        string
	BackendUser     string
	BackendPassword string
}

// Member is a member's name and address.
type Member struct {
	Name string
	Addr string
}

// Config is one cluster's MySQL-protocol listener.
type Config struct {
	Cluster    string
	Members    []Member
	Users      map[string]*User
	AuthPlugin string // mysql_native_password (default) or caching_sha2_password
	TLS        *tls.Config
	RequireTLS bool
	// MemberTLS, when set, is the client side of every connection to a
	// member (config member_tls): the proxy asks for TLS after the
	// member's greeting (SSLRequest), verifies its certificate (against
	// RootCAs, for ServerName or else the host of the member's Addr), and
	// fails the connection rather than go on in plaintext.
	MemberTLS *tls.Config
	// MaxConnsPerMember bounds open connections to each member; 0 derives
	// it from the member's max_connections (limitFromMaxConnections).
	MaxConnsPerMember int
	// PoolTimeout: how long a statement waits for a free connection.
	PoolTimeout    time.Duration
	ConnectTimeout time.Duration
	// QueryTimeout bounds every read from and write to a member.
	QueryTimeout time.Duration
	// ClientIdleTimeout closes client sessions idle this long.
	ClientIdleTimeout time.Duration
	// StopTimeout bounds a graceful stop (Serve's ctx ending): sessions
	// close at their next statement boundary outside a transaction, and
	// the ones still running a statement or holding a transaction open
	// this long after the stop began are cut (0: cut at once).
	StopTimeout time.Duration
	// MaxPacket is the largest client packet accepted.
	MaxPacket int
	// AutoIncrementDelayMultiplex: statements a session keeps its connection
	// after one that generated an auto-increment id (for LAST_INSERT_ID()).
	AutoIncrementDelayMultiplex int
	// CausalReads is read-your-writes (docs/routing.md, "Causal reads"):
	// before a read on a replica, the replica waits (MASTER_GTID_WAIT, up
	// to CausalTimeout) for the GTID of the session's last write
	// (CausalSession, the default) or of the last write of any session of
	// this proxy (CausalProxy), and the read goes to the primary if the
	// replica does not get there in time. CausalOff reads replicas as they
	// are.
	CausalReads   CausalMode
	CausalTimeout time.Duration
	// ServerVersion announced to clients; learned from a member when empty.
	ServerVersion string
}

// CausalMode is a causal_reads setting.
type CausalMode string

// The causal_reads modes; "" is CausalSession.
const (
	CausalOff     CausalMode = "off"
	CausalSession CausalMode = "session"
	CausalProxy   CausalMode = "proxy"
)

// causalMode is CausalMode resolved once, for the hot path.
type causalMode uint8

const (
	causalOff causalMode = iota
	causalSession
	causalProxy
)

// Proxy serves one cluster's MySQL clients.
type Proxy struct {
	cfg    Config
	causal causalMode
	// latest is the newest write of any session (causal_reads: proxy);
	// nil until the first.
	latest  atomic.Pointer[latestWrites]
	router  Router
	pools   []*memberPool
	log     *zap.Logger
	metrics *proxy.Metrics
	nextID  atomic.Uint32
	version atomic.Pointer[string]

	mu       sync.Mutex
	sessions map[*session]struct{}
	wg       sync.WaitGroup
	// draining: Serve's ctx ended; sessions close at their next statement
	// boundary outside a transaction (drain).
	draining atomic.Bool
}

// New builds a proxy; reg may be nil.
func New(cfg Config, rt Router, log *zap.Logger, reg prometheus.Registerer) (*Proxy, error) {
	if len(cfg.Members) == 0 {
		return nil, errors.New("no members")
	}
	if cfg.AuthPlugin == "" {
		cfg.AuthPlugin = pluginNative
	}
	if cfg.AuthPlugin != pluginNative && cfg.AuthPlugin != pluginSHA2 {
		return nil, fmt.Errorf("auth plugin %q: want %s or %s", cfg.AuthPlugin, pluginNative, pluginSHA2)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.PoolTimeout, 5*time.Second)
	def(&cfg.ConnectTimeout, 2*time.Second)
	def(&cfg.QueryTimeout, time.Hour)
	def(&cfg.ClientIdleTimeout, 8*time.Hour)
	def(&cfg.CausalTimeout, time.Second)
	if cfg.MaxConnsPerMember < 0 {
		cfg.MaxConnsPerMember = 0
	}
	if cfg.MaxPacket <= 0 {
		cfg.MaxPacket = 64 << 20
	}
	if cfg.AutoIncrementDelayMultiplex < 0 {
		cfg.AutoIncrementDelayMultiplex = 0
	}
	var causal causalMode
	switch cfg.CausalReads {
	case CausalSession, "":
		causal = causalSession
	case CausalOff:
		causal = causalOff
	case CausalProxy:
		causal = causalProxy
	default:
		return nil, fmt.Errorf("causal reads %q: want %s, %s or %s", cfg.CausalReads, CausalOff, CausalSession, CausalProxy)
	}
	p := &Proxy{cfg: cfg, causal: causal, router: rt, log: log.Named("mysql").With(zap.String("cluster", cfg.Cluster)), sessions: map[*session]struct{}{}}
	for i, m := range cfg.Members {
		pool := newMemberPool(i, m.Name, m.Addr, cfg.MaxConnsPerMember, cfg.ConnectTimeout, cfg.MaxPacket+(1<<20), p.log)
		pool.tls = topology.MemberTLS(cfg.MemberTLS, m.Addr)
		p.pools = append(p.pools, pool)
	}
	stats := make([]proxy.PoolStats, len(p.pools))
	for i, pool := range p.pools {
		stats[i] = pool
	}
	var err error
	if p.metrics, err = proxy.NewMetrics(reg, cfg.Cluster, stats, pinLabels[:]); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", cfg.Cluster, err)
	}
	p.nextID.Store(firstSessionID - 1)
	if cfg.ServerVersion != "" {
		v := cfg.ServerVersion
		p.version.Store(&v)
	}
	return p, nil
}

func (p *Proxy) serverVersion() string {
	if v := p.version.Load(); v != nil {
		return *v
	}
	// Learn it from a member once, so clients that branch on the version
	// (MariaDB vs MySQL) see the real thing.
	for _, pool := range p.pools {
		if bc, ok := pool.AnyIdle(); ok {
			v := bc.version
			p.version.Store(&v)
			return v
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ConnectTimeout)
	defer cancel()
	for _, pool := range p.pools {
		for _, u := range p.cfg.Users {
			bc, err := pool.Get(ctx, poolKey{user: u.BackendUser, collation: defaultCollationID}, proxy.Login{User: u.BackendUser, Password: u.BackendPassword}, p.cfg.PoolTimeout, nil)
			if err != nil {
				continue
			}
			v := bc.version
			pool.Put(bc)
			p.version.Store(&v)
			return v
		}
	}
	return "5.5.5-10.11.0-MariaDB-dbrouter"
}

// Serve accepts clients on ln until ctx ends, then closes every session and
// waits for them.
//
// The stop is graceful: the listener closes at once, idle sessions close,
// and a session running a statement or holding a transaction open is
// closed at its next statement boundary outside a transaction, so a
// COMMIT in flight is never cut; after Config.StopTimeout whatever still
// runs is cut. Statements keep running on their own context (run) until
// then: ending ctx must not cancel them.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	run, cut := context.WithCancel(context.WithoutCancel(ctx))
	defer cut()
	wctx, stopWatch := context.WithCancel(run)
	watchDone := make(chan struct{})
	go func() { defer close(watchDone); p.watchEpochs(wctx) }()
	defer func() { stopWatch(); <-watchDone }()
	for {
		nc, err := proxy.Accept(ctx, ln)
		if err != nil {
			p.drain(cut)
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		s := p.newSession(nc)
		p.mu.Lock()
		p.sessions[s] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(1)
		p.metrics.Sessions.Inc()
		go func() {
			defer p.wg.Done()
			defer p.metrics.Sessions.Dec()
			s.serve(run)
			p.mu.Lock()
			delete(p.sessions, s)
			p.mu.Unlock()
		}()
	}
}

func (p *Proxy) newSession(nc net.Conn) *session {
	id := p.nextID.Add(1)
	s := &session{
		p:      p,
		nc:     nc,
		raw:    nc,
		r:      bufio.NewReaderSize(nc, bufSize),
		w:      bufio.NewWriterSize(nc, bufSize),
		id:     id,
		log:    p.log.With(zap.Uint32("conn", id)),
		reader: -1,
	}
	s.pr = packetReader{r: s.r, max: p.cfg.MaxPacket}
	return s
}

// watchEpochs resets, at every change of the control plane's state, the
// connections chosen as the primary at an epoch that has been superseded by
// a failover (it is no longer acknowledgeable, and a newer epoch serves or
// is failing over).
//
// This is what ends a statement stuck on a primary that failed over: a
// hung or partitioned server never answers nor closes, so only the control
// plane's word ends the wait, and the session sees its connection fail at
// once (outcome unknown). Idle pooled connections go too: nothing may
// reuse them, and the old primary rolls back what they had open when it
// sees the reset (see backendConn.abort for what a reset cannot undo). A
// switchover leaves earlier epochs acknowledgeable: its drain keeps
// running.
//
// Without a write lease no epoch is acknowledgeable, yet the primary may be
// fine: a lapse must not cost every open transaction its connection (no
// answer is acknowledged meanwhile anyway). Such connections are undecided,
// and checked again every pollUndecided, since the lease coming back is not
// a change of state: the failover this proxy may have applied without a
// lease is then acted on.
func (p *Proxy) watchEpochs(ctx context.Context) {
	for {
		changed := p.router.Changed() // before the check: no change is missed
		var poll *time.Timer
		var pollC <-chan time.Time
		if p.resetStale() {
			poll = time.NewTimer(pollUndecided)
			pollC = poll.C
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-pollC:
		}
		if poll != nil {
			poll.Stop()
		}
	}
}

const pollUndecided = 50 * time.Millisecond

// resetStale resets the connections of superseded epochs and reports
// whether some epoch is undecided (see watchEpochs).
func (p *Proxy) resetStale() (undecided bool) {
	superseded := func(epoch uint64) bool {
		if p.router.Current(epoch) {
			return false
		}
		moved, changing := p.router.Moved(epoch)
		if !moved && !changing {
			undecided = true
			return false
		}
		return true
	}
	for _, pool := range p.pools {
		stale := pool.TakeStale(superseded)
		for _, bc := range stale {
			bc.abort()
		}
		if len(stale) > 0 {
			p.log.Info("reset connections to a primary that failed over", zap.String("member", pool.name), zap.Int("connections", len(stale)))
		}
	}
	return undecided
}

// drain closes every session at a statement boundary outside a
// transaction, waits up to StopTimeout for the busy ones to get there, then
// cuts the rest (cut cancels their statements), and closes the idle member
// connections.
func (p *Proxy) drain(cut context.CancelFunc) {
	p.draining.Store(true)
	p.mu.Lock()
	busy := 0
	for s := range p.sessions {
		if !s.closeIfIdle() {
			busy++
		}
	}
	p.mu.Unlock()
	if busy > 0 {
		p.log.Info("stopping: waiting for sessions running a statement or holding a transaction", zap.Int("sessions", busy), zap.Duration("stop_timeout", p.cfg.StopTimeout))
	}
	proxy.WaitOrCut(&p.wg, p.cfg.StopTimeout, func() {
		p.mu.Lock()
		n := len(p.sessions)
		for s := range p.sessions {
			s.raw.Close()
		}
		p.mu.Unlock()
		if n > 0 {
			p.log.Warn("stop_timeout reached: cutting sessions still running a statement or holding a transaction", zap.Int("sessions", n))
		}
		cut()
	})
	for _, pool := range p.pools {
		pool.CloseIdle()
	}
}

// MemberConns reports open and idle backend connections per member name.
func (p *Proxy) MemberConns() map[string]proxy.ConnStats {
	out := make(map[string]proxy.ConnStats, len(p.pools))
	for _, pool := range p.pools {
		out[pool.name] = pool.Stats()
	}
	return out
}

// InFlight reports, per member name, the statements sent to that member
// and waiting for its answer now.
func (p *Proxy) InFlight() map[string]int {
	out := make(map[string]int, len(p.pools))
	for _, pool := range p.pools {
		out[pool.name] = int(pool.InFlight())
	}
	return out
}

// Sessions is the number of connected clients.
func (p *Proxy) Sessions() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.sessions)
}

func clientHost(nc net.Conn) string {
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return "localhost"
}

var (
	_ Router       = (*router.Router)(nil)
	_ proxy.Server = (*Proxy)(nil)
)
