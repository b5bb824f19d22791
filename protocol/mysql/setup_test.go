package mysql_test

import (
	"context"
	"crypto/tls"
	"database/sql"
	"fmt"
	"net"
	"testing"
	"time"

	driver "github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/dbrouter/dbrouter/chaos"
	pmysql "github.com/dbrouter/dbrouter/protocol/mysql"
	"github.com/dbrouter/dbrouter/router"
	"github.com/dbrouter/dbrouter/topology"
	"github.com/dbrouter/dbrouter/topology/mariadb"
)

// env is a real three-member cluster with a proxy in front of it.
type env struct {
	cluster *chaos.Cluster
	mon     *topology.Monitor
	proxy   *pmysql.Proxy
	// stop ends the proxy's Serve (a graceful stop); served is closed
	// when Serve has returned.
	stop   context.CancelFunc
	served chan struct{}
	addr   string
	reg    *prometheus.Registry
	links  map[int]*chaos.Link // the links of opts.remote, by member index
}

type envOpts struct {
	members int
	// semiSync is the members' rpl_semi_sync_master_timeout (0: the
	// harness's default).
	semiSync time.Duration
	// remote: member indexes reached through a link adding this latency
	// each way, in site "remote" (the others are in "local").
	remote   map[int]time.Duration
	mutate   func(*pmysql.Config)
	routerFn func(*router.Config)
	// wrap, when set, stands between the proxy and the router.
	wrap   func(*router.Router) pmysql.Router
	maxLag time.Duration // the monitor's max_replica_lag (default 1 s)
	// tls, when set, makes the members TLS-only (chaos.Options.TLS) and
	// the monitor probe them over TLS; the proxy's MemberTLS is mutate's.
	tls *chaos.Certs
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	if o.members == 0 {
		o.members = 3
	}
	c := chaos.StartT(t, chaos.Options{Members: o.members, SemiSyncTimeout: o.semiSync, TLS: o.tls})
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	var members []topology.MemberConfig
	var pm []pmysql.Member
	links := map[int]*chaos.Link{}
	for i, m := range c.Members {
		addr, site := m.Addr(), "local"
		if d, ok := o.remote[i]; ok {
			l, err := chaos.NewLink(t.Name()+"/"+m.Name, addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(l.Close)
			if err := l.SetLatency(d); err != nil {
				t.Fatal(err)
			}
			addr, site = l.Addr, "remote"
			links[i] = l
		}
		members = append(members, topology.MemberConfig{Name: m.Name, Addr: addr, Site: site})
		pm = append(pm, pmysql.Member{Name: m.Name, Addr: addr})
	}
	if o.maxLag == 0 {
		o.maxLag = time.Second
	}
	mon, err := mariadb.NewMonitor(mariadb.MonitorConfig{Cluster: "app", Members: members, User: chaos.AdminUser, Password: chaos.AdminPassword,
		ProbeInterval: 100 * time.Millisecond, MaxReplicaLag: o.maxLag, HeartbeatID: t.Name(), TLS: memberTLS(o.tls)}, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	monDone := make(chan struct{})
	go func() { defer close(monDone); mon.Run(ctx) }()
	rc := router.Config{Cluster: "app", LocalityWindow: 50 * time.Millisecond}
	if o.routerFn != nil {
		o.routerFn(&rc)
	}
	rt := router.New(rc, mon)
	var prt pmysql.Router = rt
	if o.wrap != nil {
		prt = o.wrap(rt)
	}
	cfg := pmysql.Config{
		Cluster: "app",
		Members: pm,
		Users: map[string]*pmysql.User{
			chaos.AppUser: {Name: chaos.AppUser, Password: chaos.AppPassword, BackendUser: chaos.AppUser, BackendPassword: chaos.AppPassword},
		},
		MaxConnsPerMember:           32,
		AutoIncrementDelayMultiplex: 5,
	}
	if o.mutate != nil {
		o.mutate(&cfg)
	}
	reg := prometheus.NewRegistry()
	p, err := pmysql.New(cfg, prt, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveDone := make(chan struct{})
	serveCtx, stopServe := context.WithCancel(ctx)
	go func() { defer close(serveDone); _ = p.Serve(serveCtx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-serveDone
		<-monDone
	})
	e := &env{cluster: c, mon: mon, proxy: p, addr: ln.Addr().String(), reg: reg, links: links, stop: stopServe, served: serveDone}
	e.waitHealthy(t, o.members-1)
	return e
}

// waitHealthy polls until the monitor sees a primary and n eligible replicas.
func (e *env) waitHealthy(t *testing.T, n int) {
	t.Helper()
	err := chaos.Poll(context.Background(), 15*time.Second, func() (bool, error) {
		s := e.mon.Snapshot()
		el := 0
		for _, m := range s.Members {
			if m.Eligible {
				el++
			}
		}
		return s.Primary >= 0 && el >= n, nil
	})
	if err != nil {
		t.Fatalf("cluster never became healthy: %v (snapshot %+v)", err, e.mon.Snapshot())
	}
}

// memberTLS is the client side of TLS to members certified by certs (nil:
// plaintext).
func memberTLS(certs *chaos.Certs) *tls.Config {
	if certs == nil {
		return nil
	}
	return certs.ClientTLS()
}

func (e *env) dsn(params string) string {
	return fmt.Sprintf("%s:%s@tcp(%s)/%s?timeout=5s&readTimeout=30s&writeTimeout=30s%s", chaos.AppUser, chaos.AppPassword, e.addr, chaos.AppDatabase, params)
}

func (e *env) db(t *testing.T, params string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", e.dsn(params))
	if err != nil {
		t.Fatal(err)
	}
	// Closed connections really close: a later test must never inherit a
	// session some earlier test pinned.
	db.SetMaxIdleConns(0)
	t.Cleanup(func() { db.Close() })
	return db
}

// conn returns one dedicated client connection (one proxy session).
func (e *env) conn(t *testing.T, db *sql.DB) *sql.Conn {
	t.Helper()
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func serverID(t *testing.T, q querier, query string, args ...any) int {
	t.Helper()
	var id int
	if err := q.QueryRowContext(context.Background(), query, args...).Scan(&id); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return id
}

func mustExec(t *testing.T, c interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, q string, args ...any) sql.Result {
	t.Helper()
	r, err := c.ExecContext(context.Background(), q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return r
}

var _ = driver.ErrInvalidConn

// counter sums a counter's samples whose labels include all of want.
func (e *env) counter(t *testing.T, name string, want map[string]string) float64 {
	t.Helper()
	sum := 0.0
	for _, v := range e.samples(t, name, want) {
		sum += v
	}
	return sum
}

// gauge reads the one gauge sample whose labels include all of want.
func (e *env) gauge(t *testing.T, name string, want map[string]string) float64 {
	t.Helper()
	vs := e.samples(t, name, want)
	if len(vs) != 1 {
		t.Fatalf("%d samples of %s%v, want 1", len(vs), name, want)
	}
	return vs[0]
}

// samples returns the values of the samples of counter or gauge name whose
// labels include all of want.
func (e *env) samples(t *testing.T, name string, want map[string]string) []float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue next
				}
			}
			out = append(out, m.GetCounter().GetValue()+m.GetGauge().GetValue()) // one is nil: 0
		}
	}
	return out
}

// adminExec runs statements on member m directly, as the admin user.
func adminExec(t *testing.T, m *chaos.Member, qs ...string) {
	t.Helper()
	db, err := m.DB()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range qs {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s on %s: %v", q, m.Name, err)
		}
	}
}

// killIdleProxyConns kills, on member m, the proxy's connections (user app)
// that sit idle, and reports how many it killed.
func killIdleProxyConns(t *testing.T, m *chaos.Member) int {
	t.Helper()
	db, err := m.DB()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ? AND COMMAND = 'Sleep'", chaos.AppUser)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	killed := 0
	for _, id := range ids {
		if _, err := db.Exec(fmt.Sprintf("KILL CONNECTION %d", id)); err == nil {
			killed++
		}
	}
	return killed
}
