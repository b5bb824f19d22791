// Package mongo owns the MongoDB proxy's sessions: the client-facing half
// that any unmodified driver connects to and sees one always-writable
// mongos. It answers the handshake (hello, isMaster) itself, in the opcode
// the driver used, terminates SCRAM-SHA-256 authentication against the
// users of its Config, and holds every session to the auth gate. The bytes
// of each message are the wire package's job; what the proxy shares with
// the MySQL proxy (error kinds, the Server lifecycle) is package proxy's.
//
// Every command the proxy does not answer itself is forwarded, unchanged
// but for its header, to the first configured member (forward.go); routing
// by role and read preference comes later. With no members configured, such
// commands are answered with CodeNotRoutedYet (docs/mongo.md).
package mongo

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
	"github.com/dbrouter/dbrouter/proxy"
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
	// MaxWireVersion announced in hello (0: MinMaxWireVersion). Members
	// will lower it to the smallest among them, never below the floor.
	MaxWireVersion int32
	// ClientIdleTimeout closes a session that sends nothing this long
	// (default 8h): the deadline on every client read.
	ClientIdleTimeout time.Duration
	// WriteTimeout bounds every write to a client (default 30s), so a
	// client that stops reading cannot hold its session forever. Writes to
	// members take it too.
	WriteTimeout time.Duration

	// Members receive the commands the proxy does not answer itself; for
	// now all of them go to the first. None: CodeNotRoutedYet.
	Members []Member
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

	members []*memberPool // pools, in Config.Members order
	login   proxy.Login

	mu       sync.Mutex
	sessions map[*session]struct{}
	wg       sync.WaitGroup
}

// New builds a proxy. Passwords are turned into SCRAM credentials here and
// not kept: the Proxy holds salted keys only.
func New(cfg Config, log *zap.Logger) (*Proxy, error) {
	switch {
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
	if log == nil {
		log = zap.NewNop()
	}
	p := &Proxy{
		log:      log.Named("mongo").With(zap.String("cluster", cfg.Cluster)),
		build:    buildVersionFor(cfg.MaxWireVersion),
		sessions: map[*session]struct{}{},
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
		p.members = append(p.members, newMemberPool(m, cfg.MaxMemberConns, cfg.MemberConnectTimeout))
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
	for {
		nc, err := proxy.Accept(ctx, ln)
		if err != nil {
			p.shutdown()
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
		go func() {
			defer p.wg.Done()
			s.serve(ctx)
			p.mu.Lock()
			delete(p.sessions, s)
			p.mu.Unlock()
		}()
	}
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
	// Every session has handed back or discarded its member connection.
	for _, mp := range p.members {
		mp.CloseIdle()
	}
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
