// Package daemon assembles a routerd from its configuration: the topology
// monitors, and per role either the client-facing proxies and their routers
// (role proxy) or the Raft voter and the per-cluster arbiters (role
// arbiter), the control plane client that joins proxies to the group and
// keeps their write lease, and the admin API. cmd/routerd parses flags and
// calls Run; tests and the sandbox run whole deployments through it.
package daemon

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/admin"
	"github.com/dbrouter/dbrouter/arbiter"
	"github.com/dbrouter/dbrouter/config"
	pmysql "github.com/dbrouter/dbrouter/protocol/mysql"
	"github.com/dbrouter/dbrouter/proxy"
	"github.com/dbrouter/dbrouter/router"
	"github.com/dbrouter/dbrouter/topology"
	"github.com/dbrouter/dbrouter/topology/mariadb"
)

// Options tune Run for tests and the sandbox.
type Options struct {
	// Ready, when set, is called once every listener is open.
	Ready func(adminAddr string)
	// Dial maps member names to the address this node connects to for
	// probes and admin actions, in place of the configured one (which stays
	// the member's identity). Fault-injection tests put links there.
	Dial map[string]string
}

type unit struct {
	cfg   config.Cluster
	mon   *topology.Monitor
	proxy proxy.Server
	ln    net.Listener
	arb   decider
	// excl follows the members the control plane fenced (a router, or a
	// Mongo proxy); nil without a control plane.
	excl interface{ SetExcluded([]string) }
	// closeActs releases the arbiter's member connections (Mongo).
	closeActs func() error
	// failover bounds how long a failover takes (0 without a control plane).
	failover time.Duration
}

// Run serves cfg until ctx ends. Listeners are opened before anything runs,
// so a port in use fails start-up instead of half-starting.
func Run(ctx context.Context, cfg *config.Config, log *zap.Logger, opts Options) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	lagGauge := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dbrouter_replica_lag_ms", Help: "Heartbeat lag per member (-1 unknown)."}, []string{"cluster", "member"})
	rttGauge := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dbrouter_member_rtt_ms", Help: "Smoothed probe RTT per member."}, []string{"cluster", "member"})
	healthy := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dbrouter_member_eligible", Help: "1 when the member may serve reads (replica) or is the primary."}, []string{"cluster", "member"})
	durability := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dbrouter_durability_warning",
		Help: "1 while a member's setting weakens the no-lost-write promise (check: semi_sync_wait_point, semi_sync_master_timeout, replica_semi_sync_off); routerctl status says what to set."},
		[]string{"cluster", "member", "check"})
	reg.MustRegister(lagGauge, rttGauge, healthy, durability, buildInfo())

	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	var ctl *control
	if cfg.Control != nil {
		var err error
		if ctl, err = openControl(cfg, log); err != nil {
			return err
		}
		closers = append(closers, ctl.close)
		reg.MustRegister(newControlMetrics(ctl))
	}
	arbiterRole := cfg.Role == "arbiter"
	runHooks := newHooks(cfg, ctl, log, reg)

	var units []*unit
	var views []admin.Cluster
	for _, cl := range cfg.Clusters {
		u := &unit{cfg: cl}
		var tm []topology.MemberConfig
		dialByAddr := map[string]string{}
		for _, m := range cl.Members {
			tm = append(tm, topology.MemberConfig{Name: m.Name, Addr: m.Addr, Site: m.Site, Dial: opts.Dial[m.Name]})
			if d := opts.Dial[m.Name]; d != "" {
				dialByAddr[m.Addr] = d
			}
		}
		if cl.Kind == config.KindMongoDB {
			// A replica set: the Mongo proxy, and under a control plane
			// the arbiters' decisions (daemon/mongo.go).
			u, view, err := startMongo(cl, tm, cfg, ctl, dialByAddr, log, reg)
			if err != nil {
				closeAll()
				return err
			}
			if u.ln != nil {
				closers = append(closers, func() { u.ln.Close() })
			}
			if u.closeActs != nil {
				closers = append(closers, func() { _ = u.closeActs() })
			}
			units = append(units, u)
			views = append(views, view)
			continue
		}
		hbID := cfg.Name
		if hbID == "" {
			host, _ := os.Hostname()
			hbID = host + "/" + cl.Listen
		}
		// member_tls is every connection to members: the probes', the
		// proxy's and the arbiters'.
		var memberTLS *tls.Config
		if t := cl.MariaDB.MemberTLS; t != nil {
			var err error
			if memberTLS, err = t.ClientConfig(); err != nil {
				closeAll()
				return fmt.Errorf("cluster %s: member_tls: %w", cl.Name, err)
			}
		}
		mc := mariadb.MonitorConfig{Cluster: cl.Name, Members: tm, User: cl.Monitor.User, Password: config.Password(cl.Monitor.Password),
			ProbeInterval: cl.ProbeInterval.D(), MaxReplicaLag: cl.MaxReplicaLag.D(), HeartbeatID: hbID, TLS: memberTLS}
		if ctl != nil {
			mc.HeartbeatGate = ctl.heartbeatGate(cl.Name)
		}
		mon, err := mariadb.NewMonitor(mc, log)
		if err != nil {
			closeAll()
			return fmt.Errorf("cluster %s: %w", cl.Name, err)
		}
		u.mon = mon
		view := admin.Cluster{Name: cl.Name, Kind: cl.Kind, Listen: cl.Listen, Snapshot: mon.Snapshot}
		if ct := cfg.Control; ct != nil {
			view.Failover = failoverBound(ct.FailureThreshold.D(), cl.ProbeInterval.D(), ct.Lease.D(), ct.LeaseMargin.D())
		}
		u.failover = view.Failover
		if ctl != nil {
			view.State = ctl.clusterState(cl.Name)
			ctl.monitors[cl.Name] = mon
		}
		if arbiterRole {
			act := &mariadb.Actions{User: cl.Monitor.User, Password: config.Password(cl.Monitor.Password),
				ReplUser: cl.MariaDB.Replication.User, ReplPassword: config.Password(cl.MariaDB.Replication.Password), Timeout: cl.ConnectTimeout.D() + cl.ProbeInterval.D(),
				// Replicas must hear from an idle primary well within
				// failure_threshold, or a hung one looks like a quiet one.
				HeartbeatPeriod: min(mariadb.DefaultHeartbeatPeriod, cfg.Control.FailureThreshold.D()/4), TLS: memberTLS}
			if len(dialByAddr) > 0 {
				act.Dial = func(addr string) string {
					if d, ok := dialByAddr[addr]; ok {
						return d
					}
					return addr
				}
			}
			ct := cfg.Control
			u.arb = arbiter.New(arbiter.Config{Cluster: cl.Name, Arbiters: len(ct.Arbiters), FailureThreshold: ct.FailureThreshold.D(),
				Cooldown: ct.Cooldown.D(), Lease: ct.Lease.D(), LeaseMargin: ct.LeaseMargin.D(), DrainTimeout: ct.DrainTimeout.D(),
				MaxPromoteLag: cl.MaxPromoteLag.D(), Confirmed: ctl.confirmed, Voters: ctl.voters}, ctl.node, mon, ctl, act, log)
			ctl.arbiters[cl.Name] = u.arb
		} else {
			rc := router.Config{Cluster: cl.Name, Site: cfg.Site, LocalityWindow: cl.LocalityWindow.D(), ReadsWithoutReplica: router.Fallback(cl.ReadsWithoutReplica)}
			if ctl != nil {
				rc.Authority = ctl.authority(cl.Name)
				rc.WriteHold = cfg.Control.WriteHoldTimeout.D()
			}
			rt := router.New(rc, mon)
			if ctl != nil {
				u.excl = rt
			}
			px, ln, err := newProxy(cl, rt, memberTLS, cfg.StopTimeout.D(), log, reg)
			if err != nil {
				closeAll()
				return err
			}
			closers = append(closers, func() { ln.Close() })
			u.proxy, u.ln = px, ln
			view.Proxy = px
		}
		units = append(units, u)
		views = append(views, view)
	}
	aln, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		closeAll()
		return fmt.Errorf("admin: listen: %w", err)
	}
	defer closeAll()
	// A stop (the caller's ctx ending) first drains the proxies, which
	// need the monitors, the control plane and their lease to finish what
	// runs (up to stop_timeout); everything else stops after them. A unit
	// failing stops everything at once.
	stop := ctx
	ctx, cancel := context.WithCancel(context.WithoutCancel(stop))
	defer cancel()
	proxyCtx, stopProxies := context.WithCancel(stop)
	defer stopProxies()
	var wg, proxies sync.WaitGroup
	errc := make(chan error, len(units)+2)
	goRun := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	for _, u := range units {
		goRun(func() { u.mon.Run(ctx) })
		goRun(func() { publishGauges(ctx, u.mon, u.failover, gauges{lagGauge, rttGauge, healthy, durability}) })
		if u.arb != nil {
			goRun(func() { u.arb.Run(ctx) })
		}
		if u.excl != nil {
			goRun(func() { ctl.followFenced(ctx, u.cfg.Name, u.excl) })
		}
		if u.proxy != nil {
			proxies.Add(1)
			go func() {
				defer proxies.Done()
				if err := u.proxy.Serve(proxyCtx, u.ln); err != nil {
					errc <- err
					cancel()
				}
			}()
			log.Info("serving", zap.String("cluster", u.cfg.Name), zap.String("listen", u.ln.Addr().String()))
		}
	}
	goRun(func() { runHooks(ctx) })
	if ctl != nil && !arbiterRole {
		goRun(func() { ctl.joinLoop(ctx) })
		goRun(func() { ctl.leaseLoop(ctx) })
	}
	var adminControl admin.Control
	if ctl != nil {
		adminControl = ctl
	}
	goRun(func() {
		if err := admin.New(views, adminControl, reg, log).
			Configure(admin.Options{Pprof: cfg.Admin.Pprof, Token: []byte(config.Password(cfg.Admin.Token))}).Serve(ctx, aln); err != nil {
			errc <- fmt.Errorf("admin: %w", err)
			cancel()
		}
	})
	log.Info("admin API", zap.String("listen", aln.Addr().String()), zap.String("role", cfg.Role))
	if opts.Ready != nil {
		opts.Ready(aln.Addr().String())
	}
	select {
	case <-stop.Done():
		log.Info("stopping: draining client sessions", zap.Duration("stop_timeout", cfg.StopTimeout.D()))
	case <-ctx.Done():
	}
	stopProxies()
	proxies.Wait()
	cancel()
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	log.Info("stopped")
	return nil
}

func newProxy(cl config.Cluster, rt *router.Router, memberTLS *tls.Config, stopTimeout time.Duration, log *zap.Logger, reg prometheus.Registerer) (*pmysql.Proxy, net.Listener, error) {
	var pm []pmysql.Member
	for _, m := range cl.Members {
		pm = append(pm, pmysql.Member{Name: m.Name, Addr: m.Addr})
	}
	users := map[string]*pmysql.User{}
	for _, u := range cl.Users {
		users[u.Name] = &pmysql.User{Name: u.Name, Password: config.Password(u.Password), BackendUser: u.BackendUser, BackendPassword: config.Password(u.BackendPassword)}
	}
	md := cl.MariaDB
	pc := pmysql.Config{Cluster: cl.Name, Members: pm, Users: users, AuthPlugin: md.AuthPlugin, RequireTLS: cl.TLS.Require,
		MaxConnsPerMember: cl.MaxConnectionsPerMember, PoolTimeout: cl.PoolTimeout.D(), ConnectTimeout: cl.ConnectTimeout.D(),
		QueryTimeout: cl.QueryTimeout.D(), ClientIdleTimeout: cl.ClientIdleTimeout.D(), StopTimeout: stopTimeout, MaxPacket: md.MaxPacket,
		AutoIncrementDelayMultiplex: *md.AutoIncrementDelayMultiplex, CausalReads: pmysql.CausalMode(md.CausalReads), CausalTimeout: md.CausalReadsTimeout.D(),
		MemberTLS: memberTLS}
	if cl.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cl.TLS.CertFile, cl.TLS.KeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("cluster %s: tls: %w", cl.Name, err)
		}
		pc.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	px, err := pmysql.New(pc, rt, log, reg)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster %s: %w", cl.Name, err)
	}
	ln, err := net.Listen("tcp", cl.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster %s: listen: %w", cl.Name, err)
	}
	return px, ln, nil
}

// failoverBound is the longest a primary cut off from its replicas can go
// on having writes acknowledged through a proxy: failure_threshold, plus
// how late the arbiters can see it (a probe's timeout, at least 1 s, and a
// publication), plus a reconcile round, plus the lease of a proxy that does
// not hear of the failover. rpl_semi_sync_master_timeout must be above it.
func failoverBound(threshold, probe, lease, margin time.Duration) time.Duration {
	return threshold + max(probe, time.Second) + probe + 250*time.Millisecond + lease + margin
}

type gauges struct {
	lag, rtt, healthy, durability *prometheus.GaugeVec
}

func publishGauges(ctx context.Context, mon *topology.Monitor, failover time.Duration, g gauges) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-mon.Updated():
		}
		s := mon.Snapshot()
		warned := map[[2]string]bool{}
		for _, w := range topology.DurabilityWarnings(s, failover) {
			warned[[2]string{w.Member, w.Check}] = true
		}
		for i, m := range s.Members {
			g.lag.WithLabelValues(s.Cluster, m.Name).Set(float64(m.Lag.Milliseconds()))
			g.rtt.WithLabelValues(s.Cluster, m.Name).Set(float64(m.RTT.Microseconds()) / 1000)
			v := 0.0
			if m.Eligible || i == s.Primary {
				v = 1
			}
			g.healthy.WithLabelValues(s.Cluster, m.Name).Set(v)
			for _, c := range topology.DurabilityChecks {
				w := 0.0
				if warned[[2]string{m.Name, c}] {
					w = 1
				}
				g.durability.WithLabelValues(s.Cluster, m.Name, c).Set(w)
			}
		}
	}
}
