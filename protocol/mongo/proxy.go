// Package mongo owns the MongoDB proxy's sessions: the client-facing half
// that any unmodified driver connects to and sees one always-writable
// mongos. It answers the handshake (hello, isMaster) itself, in the opcode
// the driver used, terminates SCRAM-SHA-256 authentication against the
// users of its Config, and holds every session to the auth gate. The bytes
// of each message are the wire package's job; what the proxy shares with
// the MySQL proxy (error kinds, the Server lifecycle) is package proxy's.
//
// Every command the proxy does not answer itself is forwarded, unchanged
// but for its header (and a cursor id), to a member chosen as a mongos
// chooses one in front of a replica set (forward.go): writes to the
// primary the router names, reads by their $readPreference (select.go),
// cursors and transactions to the member connection holding them
// (pins.go), and never a member's state-change error to the client
// (statechange.go). With no members configured, such commands are
// answered with CodeNotRoutedYet (docs/mongo.md).
package mongo

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
	"github.com/dbrouter/dbrouter/proxy"
	"github.com/dbrouter/dbrouter/router"
	"github.com/dbrouter/dbrouter/topology"
	tmongo "github.com/dbrouter/dbrouter/topology/mongo"
)

// Wire versions the proxy may announce. MinMaxWireVersion is the floor:
// the Go driver v2 refuses a server below 9 (MongoDB 4.4), and PyMongo 3.11
// accepts 9 (its range reaches 9, and minWireVersion 0 overlaps it).
// MaxMaxWireVersion is the newest the proxy knows a buildInfo version for
// (MongoDB 8.0): announcing more would promise features nobody checked.
const (
	MinMaxWireVersion = 9
	MaxMaxWireVersion = 25
)

// User is a client account. Its source database is always admin, as in the
// URI's authSource=admin.
type User struct {
	Name     string
	Password string
}

// Config is one cluster's Mongo-protocol listener.
type Config struct {
	Cluster string
	// Users may authenticate with SCRAM-SHA-256. With none, the proxy
	// requires no authentication.
	Users []User
	// MaxWireVersion caps the wire version announced in hello (0:
	// MaxMaxWireVersion with a Topology, MinMaxWireVersion without). With
	// a Topology the proxy announces the smallest maxWireVersion among
	// the members it has observed, within [MinMaxWireVersion, this cap].
	MaxWireVersion int32
	// ClientIdleTimeout closes a session that sends nothing this long
	// (default 8h): the deadline on every client read.
	ClientIdleTimeout time.Duration
	// WriteTimeout bounds every write to a client (default 30s), so a
	// client that stops reading cannot hold its session forever. Writes to
	// members take it too.
	WriteTimeout time.Duration
	// StopTimeout bounds a graceful stop (Serve's ctx ending): idle
	// sessions close at once, a command in flight finishes and its session
	// closes after its answer; what still runs this long after the stop
	// began is cut (0: cut at once).
	StopTimeout time.Duration

	// TLS, when set, terminates client TLS (config tls:). MongoDB's TLS
	// starts at the first byte, so with RequireTLS a client that sends
	// anything else is closed (mongod's requireTLS); without it TLS and
	// plaintext clients share the port, told apart by their first bytes
	// (preferTLS). TLSHandshakeTimeout bounds the wait for that byte and
	// the handshake (default 10s).
	TLS                 *tls.Config
	RequireTLS          bool
	TLSHandshakeTimeout time.Duration
	// MemberTLS, when set, is the client side of every connection to a
	// member (config mongodb.member_tls); ServerName defaults to the host
	// of each member's Addr.
	MemberTLS *tls.Config

	// Members receive the commands the proxy does not answer itself. None:
	// CodeNotRoutedYet.
	Members []Member
	// Topology supplies the replica set's observed state; Members[i] and
	// Topology().Snapshot().Members[i] are the same member (same order, same Name).
	// nil: every command goes to Members[0], as before.
	Topology interface{ Snapshot() *topology.Snapshot }
	// Authority is the control plane's word on the primary (nil: the snapshot's primary).
	Authority      router.Authority
	Site           string        // the proxy's site: its members are preferred for "nearest"
	LocalThreshold time.Duration // localThresholdMS, default 15ms
	WriteHold      time.Duration // how long a write waits for a primary (default 10s)
	// CursorTimeout drops a cursor idle this long (default 10m, mongod's
	// cursorTimeoutMillis) and TxnTimeout a transaction (default 60s,
	// mongod's transactionLifetimeLimitSeconds): each holds a member
	// connection out of the pool (pins.go).
	CursorTimeout time.Duration
	TxnTimeout    time.Duration
	// MaxCursorConns bounds the connections per member that cursors hold
	// out of the pool (default half of MaxMemberConns): past it, the
	// least recently used one's cursors are dropped, so forgotten cursors
	// cannot starve other commands for CursorTimeout.
	MaxCursorConns int
	// MajorityWrites adds writeConcern {w: "majority"} to the CRUD writes
	// (insert, update, delete, findAndModify) that carry no write concern
	// of their own (config mongodb.write_concern: majority): a set with an
	// arbiter acknowledges w:1 writes a failover can roll back.
	MajorityWrites bool
	// MemberUser and MemberPassword are the account the proxy
	// authenticates as on members (SCRAM-SHA-256 on admin); no user: no
	// authentication.
	MemberUser, MemberPassword string
	// MemberConnectTimeout bounds connecting to a member and its handshake
	// (default 5s): a member that is down is an error, not a hang.
	MemberConnectTimeout time.Duration
	// MemberTimeout bounds the wait for a member's reply (default 10m, for
	// long aggregations); past it the connection is dropped.
	MemberTimeout time.Duration
	// MaxMemberConns bounds the proxy's connections per member (default 64).
	MaxMemberConns int
	// MemberWait bounds the wait for a free member connection (default 5s).
	MemberWait time.Duration
}

// Proxy serves one cluster's Mongo clients.
type Proxy struct {
	cfg   Config
	log   *zap.Logger
	auth  *authenticator // nil when no users are configured
	build buildVersion

	nextID atomic.Int32
	// draining: a stop began; sessions close after the command they run.
	draining atomic.Bool

	members []*memberPool // pools, in Config.Members order
	login   proxy.Login

	// topo is Config.Topology; router decides the primary from it and
	// the Authority; sel chooses reads; rr spreads them.
	topo   interface{ Snapshot() *topology.Snapshot }
	router *router.Router
	sel    selector
	rr     atomic.Uint32
	// pins holds the cursors and transactions and their connections.
	pins *pins
	// excluded are the members the control plane fenced (SetExcluded):
	// they serve no reads.
	excluded atomic.Uint64
	// wireCap caps the announced wire version; builds are the buildInfo
	// versions by wire version, made once so hello allocates nothing.
	wireCap int32
	builds  [MaxMaxWireVersion + 1]buildVersion

	// metrics are the cluster's proxy metrics (metrics.go).
	metrics *proxy.Metrics

	mu       sync.Mutex
	sessions map[*session]struct{}
	wg       sync.WaitGroup
}

// New builds a proxy whose metrics are registered nowhere. Passwords are
// turned into SCRAM credentials here and not kept: the Proxy holds salted
// keys only.
func New(cfg Config, log *zap.Logger) (*Proxy, error) { return NewWithMetrics(cfg, log, nil) }

// NewWithMetrics is New with the proxy's metrics registered on reg
// (routerd's registry; nil: none).
func NewWithMetrics(cfg Config, log *zap.Logger, reg prometheus.Registerer) (*Proxy, error) {
	switch {
	case cfg.MaxWireVersion == 0 && cfg.Topology != nil:
		cfg.MaxWireVersion = MaxMaxWireVersion
	case cfg.MaxWireVersion == 0:
		cfg.MaxWireVersion = MinMaxWireVersion
	case cfg.MaxWireVersion < MinMaxWireVersion:
		return nil, fmt.Errorf("max wire version %d: below %d (MongoDB 4.4), the least the Go driver v2 accepts",
			cfg.MaxWireVersion, MinMaxWireVersion)
	case cfg.MaxWireVersion > MaxMaxWireVersion:
		return nil, fmt.Errorf("max wire version %d: above %d (MongoDB 8.0), the newest this proxy knows",
			cfg.MaxWireVersion, MaxMaxWireVersion)
	}
	if cfg.ClientIdleTimeout <= 0 {
		cfg.ClientIdleTimeout = 8 * time.Hour
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.MemberConnectTimeout <= 0 {
		cfg.MemberConnectTimeout = 5 * time.Second
	}
	if cfg.MemberTimeout <= 0 {
		cfg.MemberTimeout = 10 * time.Minute
	}
	if cfg.MaxMemberConns <= 0 {
		cfg.MaxMemberConns = 64
	}
	if cfg.MemberWait <= 0 {
		cfg.MemberWait = 5 * time.Second
	}
	if cfg.LocalThreshold <= 0 {
		cfg.LocalThreshold = 15 * time.Millisecond
	}
	if cfg.WriteHold <= 0 {
		cfg.WriteHold = 10 * time.Second
	}
	if cfg.MaxCursorConns <= 0 {
		cfg.MaxCursorConns = max(cfg.MaxMemberConns/2, 1)
	}
	if cfg.CursorTimeout <= 0 {
		cfg.CursorTimeout = 10 * time.Minute
	}
	if cfg.TxnTimeout <= 0 {
		cfg.TxnTimeout = 60 * time.Second
	}
	if cfg.TLSHandshakeTimeout <= 0 {
		cfg.TLSHandshakeTimeout = defaultTLSHandshakeTimeout
	}
	if cfg.RequireTLS && cfg.TLS == nil {
		return nil, fmt.Errorf("cluster %s: TLS required but no certificate configured", cfg.Cluster)
	}
	if len(cfg.Members) > maxMembers {
		return nil, fmt.Errorf("cluster %s: %d members: at most %d", cfg.Cluster, len(cfg.Members), maxMembers)
	}
	if log == nil {
		log = zap.NewNop()
	}
	p := &Proxy{
		log:      log.Named("mongo").With(zap.String("cluster", cfg.Cluster)),
		build:    buildVersionFor(cfg.MaxWireVersion),
		sessions: map[*session]struct{}{},
		topo:     cfg.Topology,
		sel:      selector{site: cfg.Site, localThreshold: cfg.LocalThreshold},
		pins:     newPins(len(cfg.Members)),
		wireCap:  cfg.MaxWireVersion,
	}
	for w := range p.builds {
		p.builds[w] = buildVersionFor(int32(w))
	}
	if cfg.Topology != nil {
		p.router = router.New(router.Config{Cluster: cfg.Cluster, Site: cfg.Site, Authority: cfg.Authority, WriteHold: cfg.WriteHold}, cfg.Topology)
	} else {
		// Without a topology there is one route (Members[0]); the router
		// only answers "may this write be acknowledged", always yes.
		p.router = router.New(router.Config{Cluster: cfg.Cluster, WriteHold: cfg.WriteHold}, nil)
	}
	if len(cfg.Users) > 0 {
		a, err := newAuthenticator(cfg.Users)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: %w", cfg.Cluster, err)
		}
		p.auth = a
	}
	for i, m := range cfg.Members {
		if m.Name == "" || m.Addr == "" {
			return nil, fmt.Errorf("cluster %s: members[%d]: name and addr are required", cfg.Cluster, i)
		}
		mp := newMemberPool(m, cfg.MaxMemberConns, cfg.MemberConnectTimeout)
		mp.idx, mp.tls = i, topology.MemberTLS(cfg.MemberTLS, m.Addr)
		p.members = append(p.members, mp)
	}
	var err error
	if p.metrics, err = newMetrics(reg, cfg.Cluster, p.members, p.pins); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", cfg.Cluster, err)
	}
	// The member password must be kept: new connections authenticate with
	// it. It lives in the login, not in the Config a caller may print.
	p.login = proxy.Login{User: cfg.MemberUser, Password: cfg.MemberPassword}
	cfg.MemberPassword = ""
	cfg.Users = nil // the passwords are not kept
	p.cfg = cfg
	return p, nil
}

// Serve accepts clients on ln until ctx ends, then closes every session and
// waits for them. It returns nil when ctx ended, or the accept error that
// stopped it (after closing the sessions all the same).
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	// Closing the listener is what unblocks Accept when ctx ends; AfterFunc
	// does it without a goroutine that could outlive Serve.
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	// The reaper stops with Serve, also when Accept fails for another
	// reason than ctx.
	rctx, stopReap := context.WithCancel(ctx)
	reaped := make(chan struct{})
	go func() {
		defer close(reaped)
		p.reap(rctx)
	}()
	// Sessions run on their own context, which ends only when a stop's
	// StopTimeout has passed (drain): ending ctx must not cut the command
	// a session is running.
	run, cut := context.WithCancel(context.WithoutCancel(ctx))
	defer cut()
	for {
		nc, err := proxy.Accept(ctx, ln)
		if err != nil {
			stopReap()
			<-reaped
			p.drain(cut)
			p.shutdown()
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			// TLS (or the first-byte sniff) runs here, not in the accept
			// loop: a slow client must not delay the next one. rctx ends
			// before shutdown, so a handshake still running then is cut
			// short, and a session it would open is not registered.
			cc, err := p.clientConn(rctx, nc)
			if err != nil {
				if rctx.Err() == nil {
					p.log.Info("client connection closed before its session", zap.Stringer("remote", nc.RemoteAddr()), zap.Error(err))
				}
				nc.Close()
				return
			}
			s := p.newSession(cc)
			p.mu.Lock()
			if rctx.Err() != nil {
				p.mu.Unlock()
				cc.Close()
				return
			}
			p.sessions[s] = struct{}{}
			p.mu.Unlock()
			s.serve(run)
			p.mu.Lock()
			delete(p.sessions, s)
			p.mu.Unlock()
		}()
	}
}

// drain is the graceful part of a stop: it closes the sessions waiting for
// a client's next command, lets the ones running a command finish it (each
// closes after its answer, serve), and after StopTimeout cuts what still
// runs (cut ends their waits on members). shutdown does the rest.
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
	if busy == 0 {
		return
	}
	p.log.Info("stopping: waiting for sessions running a command", zap.Int("sessions", busy), zap.Duration("stop_timeout", p.cfg.StopTimeout))
	proxy.WaitOrCut(&p.wg, p.cfg.StopTimeout, func() {
		p.log.Warn("stop_timeout reached: cutting sessions still running a command")
		p.mu.Lock()
		for s := range p.sessions {
			s.nc.Close()
		}
		p.mu.Unlock()
		cut()
	})
}

// shutdown closes every session's socket, which ends its blocked read, and
// waits for the session goroutines. Serve calls it from its own goroutine
// after Accept failed, so no session is added meanwhile.
func (p *Proxy) shutdown() {
	p.mu.Lock()
	for s := range p.sessions {
		s.nc.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	// Every session has handed back or discarded its member connection;
	// the cursors' and transactions' connections are closed with the rest.
	for _, h := range p.pins.all() {
		h.mp.Discard(h.c)
	}
	for _, mp := range p.members {
		mp.CloseIdle()
	}
}

// SetExcluded names the members that must serve no reads (fenced by the
// control plane: an errant member has data the primary never had); it
// takes effect at the next routing decision. Names not configured are
// ignored.
func (p *Proxy) SetExcluded(members []string) {
	var set memberSet
	for _, n := range members {
		for _, mp := range p.members {
			if mp.name == n {
				set |= one(mp.idx)
			}
		}
	}
	p.excluded.Store(uint64(set))
	p.router.SetExcluded(members)
}

// OpenCursors reports the cursors and transactions the proxy holds, each
// keeping a member connection out of the pool.
func (p *Proxy) OpenCursors() (cursors, txns int) { return p.pins.counts() }

// heartbeat is the monitor's probe interval, as the members' details
// report it (the spec's heartbeatFrequencyMS); the monitor's default
// before any is observed.
func (p *Proxy) heartbeat() time.Duration {
	if p.topo == nil {
		return topology.DefaultProbeInterval
	}
	snap := p.topo.Snapshot()
	hb := time.Duration(0)
	for i := range snap.Members {
		if d, ok := tmongo.DetailOf(snap.Members[i]); ok && d.Heartbeat > hb {
			hb = d.Heartbeat
		}
	}
	if hb == 0 {
		return topology.DefaultProbeInterval
	}
	return hb
}

// wireVersion is the maxWireVersion to announce: without a topology the
// configured one; with one, the smallest among the members observed,
// within [MinMaxWireVersion, the cap] (the floor when none is observed
// yet), so a driver never uses a feature one member lacks.
func (p *Proxy) wireVersion() int32 {
	if p.topo == nil {
		return p.wireCap
	}
	snap := p.topo.Snapshot()
	v := int32(0)
	for i := range snap.Members {
		if d, ok := tmongo.DetailOf(snap.Members[i]); ok && d.MaxWireVersion > 0 && (v == 0 || d.MaxWireVersion < v) {
			v = d.MaxWireVersion
		}
	}
	if v == 0 {
		return MinMaxWireVersion
	}
	return min(max(v, MinMaxWireVersion), p.wireCap)
}

// Sessions is the number of connected clients.
func (p *Proxy) Sessions() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.sessions)
}

// MemberConns reports member connections per member name.
func (p *Proxy) MemberConns() map[string]proxy.ConnStats {
	out := make(map[string]proxy.ConnStats, len(p.members))
	for _, mp := range p.members {
		out[mp.name] = mp.Stats()
	}
	return out
}

var _ proxy.Server = (*Proxy)(nil)

// maxMessageSize is the maxMessageSizeBytes the proxy announces and the
// most a session reads in one message: announcing one limit and enforcing
// another would let a driver send what the proxy then refuses.
const maxMessageSize = wire.DefaultMaxMessageSize
