// Command routerd is the dbrouter daemon: with role proxy it serves the
// clusters of its config file to local applications.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dbrouter/dbrouter/admin"
	"github.com/dbrouter/dbrouter/config"
	pmysql "github.com/dbrouter/dbrouter/protocol/mysql"
	"github.com/dbrouter/dbrouter/router"
	"github.com/dbrouter/dbrouter/topology"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("routerd", flag.ContinueOnError)
	path := fs.String("config", "", "config file (YAML); see docs/config.md")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: routerd --config FILE")
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "routerd: config %s:\n%v\n", *path, err)
		return 2
	}
	log, err := newLogger(cfg.Log.Level)
	if err != nil {
		fmt.Fprintf(os.Stderr, "routerd: %v\n", err)
		return 2
	}
	defer log.Sync() //nolint:errcheck
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("routerd stopped", zap.Error(err))
		return 1
	}
	return 0
}

func newLogger(level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, err
	}
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.Encoding = "console"
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	zc.DisableStacktrace = true
	return zc.Build()
}

// serve wires monitors, routers, proxies and the admin API, and runs them
// until ctx ends. Listeners are opened before anything runs, so a port in use
// fails start-up instead of half-starting.
func serve(ctx context.Context, cfg *config.Config, log *zap.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	lagGauge := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dbrouter_replica_lag_ms", Help: "Heartbeat lag per member (-1 unknown)."}, []string{"cluster", "member"})
	rttGauge := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dbrouter_member_rtt_ms", Help: "Smoothed probe RTT per member."}, []string{"cluster", "member"})
	healthy := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dbrouter_member_eligible", Help: "1 when the member may serve reads (replica) or is the primary."}, []string{"cluster", "member"})
	reg.MustRegister(lagGauge, rttGauge, healthy)

	var listeners []net.Listener
	closeAll := func() {
		for _, l := range listeners {
			l.Close()
		}
	}
	type unit struct {
		mon   *topology.Monitor
		proxy *pmysql.Proxy
		ln    net.Listener
	}
	var units []unit
	var views []admin.Cluster
	for _, cl := range cfg.Clusters {
		var tm []topology.MemberConfig
		var pm []pmysql.Member
		for _, m := range cl.Members {
			tm = append(tm, topology.MemberConfig{Name: m.Name, Addr: m.Addr, Site: m.Site})
			pm = append(pm, pmysql.Member{Name: m.Name, Addr: m.Addr})
		}
		hbID := cfg.Name
		if hbID == "" {
			host, _ := os.Hostname()
			hbID = host + "/" + cl.Listen
		}
		mon, err := topology.New(topology.Config{Cluster: cl.Name, Members: tm, User: cl.Monitor.User, Password: config.Password(cl.Monitor.Password),
			ProbeInterval: cl.ProbeInterval.D(), MaxReplicaLag: cl.MaxReplicaLag.D(), HeartbeatID: hbID}, log)
		if err != nil {
			closeAll()
			return fmt.Errorf("cluster %s: %w", cl.Name, err)
		}
		rt := router.New(router.Config{Cluster: cl.Name, Site: cfg.Site, LocalityWindow: cl.LocalityWindow.D(), ReadsWithoutReplica: router.Fallback(cl.ReadsWithoutReplica)}, mon)
		users := map[string]*pmysql.User{}
		for _, u := range cl.Users {
			users[u.Name] = &pmysql.User{Name: u.Name, Password: config.Password(u.Password), BackendUser: u.BackendUser, BackendPassword: config.Password(u.BackendPassword)}
		}
		pc := pmysql.Config{Cluster: cl.Name, Members: pm, Users: users, AuthPlugin: cl.AuthPlugin, RequireTLS: cl.TLS.Require,
			MaxConnsPerMember: cl.MaxConnectionsPerMember, PoolTimeout: cl.PoolTimeout.D(), ConnectTimeout: cl.ConnectTimeout.D(),
			QueryTimeout: cl.QueryTimeout.D(), ClientIdleTimeout: cl.ClientIdleTimeout.D(), MaxPacket: cl.MaxPacket,
			AutoIncrementDelayMultiplex: *cl.AutoIncrementDelayMultiplex}
		if cl.TLS.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(cl.TLS.CertFile, cl.TLS.KeyFile)
			if err != nil {
				closeAll()
				return fmt.Errorf("cluster %s: tls: %w", cl.Name, err)
			}
			pc.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
		px, err := pmysql.New(pc, rt, log, reg)
		if err != nil {
			closeAll()
			return fmt.Errorf("cluster %s: %w", cl.Name, err)
		}
		ln, err := net.Listen("tcp", cl.Listen)
		if err != nil {
			closeAll()
			return fmt.Errorf("cluster %s: listen: %w", cl.Name, err)
		}
		listeners = append(listeners, ln)
		units = append(units, unit{mon: mon, proxy: px, ln: ln})
		views = append(views, admin.Cluster{Name: cl.Name, Kind: cl.Kind, Listen: cl.Listen, Snapshot: mon.Snapshot, Conns: px.MemberConns, Sessions: px.Sessions})
	}
	aln, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		closeAll()
		return fmt.Errorf("admin: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(units)+1)
	for _, u := range units {
		wg.Add(3)
		go func() { defer wg.Done(); u.mon.Run(ctx) }()
		go func() {
			defer wg.Done()
			if err := u.proxy.Serve(ctx, u.ln); err != nil {
				errc <- err
				cancel()
			}
		}()
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case <-u.mon.Updated():
				}
				s := u.mon.Snapshot()
				for i, m := range s.Members {
					lagGauge.WithLabelValues(s.Cluster, m.Name).Set(float64(m.Lag.Milliseconds()))
					rttGauge.WithLabelValues(s.Cluster, m.Name).Set(float64(m.RTT.Microseconds()) / 1000)
					v := 0.0
					if m.Eligible || i == s.Primary {
						v = 1
					}
					healthy.WithLabelValues(s.Cluster, m.Name).Set(v)
				}
			}
		}()
		log.Info("serving", zap.String("cluster", u.mon.Snapshot().Cluster), zap.String("listen", u.ln.Addr().String()))
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := admin.New(views, nil, reg, log).Serve(ctx, aln); err != nil {
			errc <- fmt.Errorf("admin: %w", err)
			cancel()
		}
	}()
	log.Info("admin API", zap.String("listen", aln.Addr().String()))
	<-ctx.Done()
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	if errors.Is(context.Cause(ctx), context.Canceled) {
		log.Info("stopped")
	}
	return nil
}
