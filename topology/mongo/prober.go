package mongo

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	mongodrv "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/topology"
)

// MonitorConfig is what a MongoDB replica set's monitor needs: the neutral
// settings of topology.Config and Mongo's own.
type MonitorConfig struct {
	Cluster       string
	Members       []topology.MemberConfig
	ProbeInterval time.Duration
	MaxReplicaLag time.Duration
	// ReplicaSet is the set's name; members reporting another are not
	// counted. Empty: the first name a member reports is adopted, as a
	// driver does, and until one does the members count as standalones.
	ReplicaSet string
	// User and Password, when User is set, authenticate every probe
	// connection (SCRAM, against AuthSource, default admin).
	User       string
	Password   string
	AuthSource string
	// TLS, when set, is the client side of every probe connection
	// (config mongodb.member_tls); the driver verifies each member's
	// certificate for the host it dials unless ServerName is set.
	TLS *tls.Config
}

// NewMonitor returns a monitor probing cfg's members as MongoDB servers;
// its first snapshot has every member unreachable.
func NewMonitor(cfg MonitorConfig, log *zap.Logger) (*topology.Monitor, error) {
	tc := topology.Config{Cluster: cfg.Cluster, Members: cfg.Members, ProbeInterval: cfg.ProbeInterval, MaxReplicaLag: cfg.MaxReplicaLag}.WithDefaults()
	p, err := newProber(tc, cfg, log.Named("topology").With(zap.String("cluster", cfg.Cluster)))
	if err != nil {
		return nil, err
	}
	mon, err := topology.New(tc, p, log)
	if err != nil {
		_ = p.Close()
		return nil, err
	}
	return mon, nil
}

// prober runs hello on MongoDB members for a topology.Monitor and elects
// their primary (topology.Elector).
type prober struct {
	elector
	cfg     topology.Config
	members []*member
}

var (
	_ topology.Prober  = (*prober)(nil)
	_ topology.Elector = (*prober)(nil)
)

// member is one member's client; warm belongs to the member's probe loop.
type member struct {
	cfg    topology.MemberConfig
	client *mongodrv.Client
	// warm: the client holds a connection that answered; until then a
	// probe pings first, so setting up a connection is never counted as
	// RTT.
	warm bool
}

func newProber(tc topology.Config, cfg MonitorConfig, log *zap.Logger) (*prober, error) {
	p := &prober{cfg: tc, elector: elector{setName: cfg.ReplicaSet, log: log}}
	for _, mc := range tc.Members {
		addr := mc.Addr
		if mc.Dial != "" {
			addr = mc.Dial
		}
		// One client per member, connected directly: the driver must talk
		// to this member alone and never go looking for the set's primary,
		// which is what this monitor decides. Timeouts are the probe's,
		// not the driver's 30 s defaults, so a dead member fails its probe
		// in time for the failure count.
		cl, err := mongodrv.Connect(directOptions(addr, tc.ProbeTimeout(), 1, "dbrouter-topology", cfg.User, cfg.Password, cfg.AuthSource, cfg.TLS))
		if err != nil {
			_ = p.Close()
			return nil, fmt.Errorf("member %s: client: %w", mc.Name, err)
		}
		p.members = append(p.members, &member{cfg: mc, client: cl})
	}
	return p, nil
}

// directOptions are a client's to one member alone (it never looks for
// the set's primary), with timeouts of d rather than the driver's 30 s,
// SCRAM on authSource (default admin) when user is set, and TLS when tc is
// set. A certificate the member's CA does not verify then fails the
// connection at once with the x509 reason (in the probe's error, and so in
// the member's probe_error), never a wait for a timeout.
func directOptions(addr string, d time.Duration, pool uint64, app, user, password, authSource string, tc *tls.Config) *options.ClientOptions {
	opts := options.Client().SetHosts([]string{addr}).SetDirect(true).
		SetConnectTimeout(d).SetServerSelectionTimeout(d).SetMaxPoolSize(pool).SetAppName(app)
	if tc != nil {
		opts.SetTLSConfig(tc.Clone())
	}
	if user != "" {
		if authSource == "" {
			authSource = "admin"
		}
		opts.SetAuth(options.Credential{Username: user, Password: password, AuthSource: authSource})
	}
	return opts
}

// Close disconnects every member's client.
func (p *prober) Close() error {
	var errs []error
	for _, m := range p.members {
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ProbeTimeout())
		if err := m.client.Disconnect(ctx); err != nil {
			errs = append(errs, fmt.Errorf("member %s: disconnect: %w", m.cfg.Name, err))
		}
		cancel()
	}
	return errors.Join(errs...)
}

// Run has nothing to do beside the probes: lag comes from the members'
// own lastWrite dates, not from heartbeats this monitor writes.
func (p *prober) Run(ctx context.Context, _ func() *topology.Snapshot) { <-ctx.Done() }

var helloCmd = bson.D{{Key: "hello", Value: 1}}

// Probe runs hello on member i.
func (p *prober) Probe(ctx context.Context, i int) (topology.Probe, error) {
	m := p.members[i]
	db := m.client.Database("admin")
	if !m.warm {
		if err := db.RunCommand(ctx, bson.D{{Key: "ping", Value: 1}}).Err(); err != nil {
			return topology.Probe{}, fmt.Errorf("ping %s: %w", m.cfg.Name, err)
		}
		m.warm = true
	}
	t0 := time.Now()
	raw, err := db.RunCommand(ctx, helloCmd).Raw()
	if err != nil {
		// The next probe may need a new connection: keep its set-up out
		// of RTT again.
		m.warm = false
		return topology.Probe{}, fmt.Errorf("hello %s: %w", m.cfg.Name, err)
	}
	answered := time.Now()
	st, err := parseHello(raw)
	if err != nil {
		return topology.Probe{}, fmt.Errorf("member %s: %w", m.cfg.Name, err)
	}
	// parseHello built a fresh Detail: nothing published aliases it yet.
	if d, ok := DetailOf(st); ok {
		d.Observed, d.Heartbeat = answered, p.cfg.ProbeInterval
	}
	return topology.Probe{Member: st, RTT: answered.Sub(t0), Answered: answered}, nil
}
