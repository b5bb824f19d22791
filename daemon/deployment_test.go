package daemon

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/dbrouter/dbrouter/admin"
	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/config"
)

const testSecret = "test-secret-0123456789"

// deployment is a whole control plane in one process: three arbiters and
// some proxies, each a daemon.Run with its own config, over real loopback
// sockets, in front of a real MariaDB cluster.
type deployment struct {
	t        *testing.T
	db       *chaos.Cluster
	arbiters []node
	proxies  []node
	links    map[string]*chaos.Link
}

type node struct {
	name   string
	admin  string
	listen string // proxies: the MySQL listener
	cancel context.CancelFunc
	done   chan error
}

func freeAddr(t *testing.T) string {
	t.Helper()
	p, err := chaos.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
}

// faults says which of a deployment's connections go through links.
type faults struct {
	// arbiterToPrimary: every arbiter reaches db1 (probes, actions) through
	// a link, links["a1/db1"] etc.
	arbiterToPrimary bool
	// proxyToArbiters: proxy p1's connections to the arbiters (admin) and
	// the leader's to p1 (raft) go through links, links["p1/..."].
	proxyToArbiters bool
}

func startDeployment(t *testing.T, proxies int) *deployment {
	return startDeploymentWith(t, proxies, faults{})
}

func (d *deployment) link(name, upstream string) string {
	l, err := chaos.NewLink(fmt.Sprintf("%s-%d", name, time.Now().UnixNano()), upstream)
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { l.Close() })
	d.links[name] = l
	return l.Addr
}

// cut cuts every link whose name starts with prefix.
func (d *deployment) cut(prefix string) {
	for name, l := range d.links {
		if strings.HasPrefix(name, prefix) {
			l.Cut()
		}
	}
}

func (d *deployment) restore(prefix string) {
	for name, l := range d.links {
		if strings.HasPrefix(name, prefix) {
			if err := l.Restore(); err != nil {
				d.t.Fatal(err)
			}
		}
	}
}

func startDeploymentWith(t *testing.T, proxies int, f faults) *deployment {
	d := &deployment{t: t, db: chaos.StartT(t, chaos.Options{Members: 3}), links: map[string]*chaos.Link{}}
	type arb struct{ name, raft, admin string }
	var arbs []arb
	for i := 1; i <= 3; i++ {
		arbs = append(arbs, arb{fmt.Sprintf("a%d", i), freeAddr(t), freeAddr(t)})
	}
	controlYAML := func(admins map[string]string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "  secret: %s\n  lease: 1s\n  lease_margin: 200ms\n  failure_threshold: 1s\n  cooldown: 2s\n  drain_timeout: 2s\n  write_hold_timeout: 10s\n  arbiters:\n", testSecret)
		for _, a := range arbs {
			adm := a.admin
			if admins[a.name] != "" {
				adm = admins[a.name]
			}
			fmt.Fprintf(&b, "    - {name: %s, raft: %q, admin: %q}\n", a.name, a.raft, adm)
		}
		return b.String()
	}
	var members strings.Builder
	for _, m := range d.db.Members {
		fmt.Fprintf(&members, "      - {name: %s, addr: %q}\n", m.Name, m.Addr())
	}
	clusterYAML := func(listen string) string {
		s := fmt.Sprintf("clusters:\n  - name: app\n    probe_interval: 100ms\n    monitor: {user: %s, password: %s}\n    replication: {user: %s, password: %s}\n    members:\n%s",
			chaos.AdminUser, chaos.AdminPassword, chaos.ReplUser, chaos.ReplPassword, members.String())
		if listen != "" {
			s += fmt.Sprintf("    listen: %q\n    users:\n      - {name: %s, password: %s}\n", listen, chaos.AppUser, chaos.AppPassword)
		}
		return s
	}
	for _, a := range arbs {
		var dial map[string]string
		if f.arbiterToPrimary {
			dial = map[string]string{"db1": d.link(a.name+"/db1", d.member("db1").Addr())}
		}
		y := fmt.Sprintf("role: arbiter\nname: %s\nadmin: {listen: %q}\nlog: {level: warn}\ncontrol:\n  raft_listen: %q\n  dir: %q\n%s%s",
			a.name, a.admin, a.raft, filepath.Join(t.TempDir(), a.name), controlYAML(nil), clusterYAML(""))
		d.arbiters = append(d.arbiters, d.run(a.name, y, a.admin, "", Options{Dial: dial}))
	}
	for i := 1; i <= proxies; i++ {
		name, adm, listen, raft := fmt.Sprintf("p%d", i), freeAddr(t), freeAddr(t), freeAddr(t)
		admins := map[string]string{}
		advertise := ""
		if f.proxyToArbiters && i == 1 {
			for _, a := range arbs {
				admins[a.name] = d.link(name+"/"+a.name, a.admin)
			}
			advertise = fmt.Sprintf("  raft_advertise: %q\n", d.link(name+"/raft", raft))
		}
		y := fmt.Sprintf("role: proxy\nname: %s\nadmin: {listen: %q}\nlog: {level: warn}\ncontrol:\n  raft_listen: %q\n%s  dir: %q\n%s%s",
			name, adm, raft, advertise, filepath.Join(t.TempDir(), name), controlYAML(admins), clusterYAML(listen))
		d.proxies = append(d.proxies, d.run(name, y, adm, listen, Options{}))
	}
	// Ready: every proxy holds a lease and has applied the first epoch.
	d.waitStatus(20*time.Second, "proxies hold a lease", func(st []admin.Status) bool {
		for _, s := range st[len(d.arbiters):] {
			if s.Control == nil || !s.Control.LeaseOK || len(s.Clusters) == 0 || s.Clusters[0].Epoch < 1 {
				return false
			}
		}
		return true
	})
	return d
}

func (d *deployment) run(name, yaml, adminAddr, listen string, opts Options) node {
	t := d.t
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("%s config: %v\n%s", name, err, yaml)
	}
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).With(zap.String("node", name))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan struct{})
	opts.Ready = func(string) { close(ready) }
	go func() { done <- Run(ctx, cfg, log, opts) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("%s exited at start: %v", name, err)
	}
	n := node{name: name, admin: adminAddr, listen: listen, cancel: cancel, done: done}
	t.Cleanup(func() { d.stop(n) })
	return n
}

// stop ends a node and waits for it (idempotent).
func (d *deployment) stop(n node) {
	n.cancel()
	select {
	case <-n.done:
	case <-time.After(20 * time.Second):
		d.t.Errorf("%s did not stop within 20s", n.name)
	}
	n.done <- nil // later stops return at once
}

func (d *deployment) statuses() []admin.Status {
	var out []admin.Status
	for _, n := range append(append([]node{}, d.arbiters...), d.proxies...) {
		var st admin.Status
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = (&admin.Client{Addr: n.admin}).Do(ctx, "GET", "/status", nil, &st)
		cancel()
		out = append(out, st)
	}
	return out
}

func (d *deployment) waitStatus(within time.Duration, what string, ok func([]admin.Status) bool) []admin.Status {
	d.t.Helper()
	deadline := time.Now().Add(within)
	for {
		st := d.statuses()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *deployment) proxyDB(i int) *sql.DB {
	db, err := sql.Open("mysql", fmt.Sprintf("%s:%s@tcp(%s)/%s?timeout=5s", chaos.AppUser, chaos.AppPassword, d.proxies[i].listen, chaos.AppDatabase))
	if err != nil {
		d.t.Fatal(err)
	}
	db.SetMaxOpenConns(8)
	d.t.Cleanup(func() { db.Close() })
	return db
}

// writer inserts increasing ids through a proxy and records which were
// acknowledged, when, and every error, until stopped or the bound is hit.
type writer struct {
	mu     sync.Mutex
	acked  []int
	times  []time.Time
	errs   []string
	stop   chan struct{}
	done   chan struct{}
	nextID int
}

func startWriter(ctx context.Context, db *sql.DB, table string, firstID int, txn bool) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan struct{}), nextID: firstID}
	go func() {
		defer close(w.done)
		deadline := time.Now().Add(90 * time.Second)
		for n := 0; n < 200000 && time.Now().Before(deadline); n++ {
			select {
			case <-w.stop:
				return
			case <-ctx.Done():
				return
			default:
			}
			id := w.nextID
			w.nextID++
			var err error
			if txn {
				err = insertTxn(ctx, db, table, id)
			} else {
				_, err = db.ExecContext(ctx, "INSERT INTO "+table+" (id) VALUES (?)", id)
			}
			w.mu.Lock()
			if err == nil {
				w.acked = append(w.acked, id)
				w.times = append(w.times, time.Now())
			} else {
				w.errs = append(w.errs, fmt.Sprintf("%s id %d: %v", time.Now().Format("15:04:05.000"), id, err))
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func insertTxn(ctx context.Context, db *sql.DB, table string, id int) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO "+table+" (id) VALUES (?)", id); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

func (w *writer) finish() (acked []int, times []time.Time, errs []string) {
	close(w.stop)
	<-w.done
	return w.acked, w.times, w.errs
}

func (w *writer) ackedCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// longestPause is the longest gap between consecutive acknowledgements.
func longestPause(times []time.Time) time.Duration {
	var m time.Duration
	for i := 1; i < len(times); i++ {
		m = max(m, times[i].Sub(times[i-1]))
	}
	return m
}

func (d *deployment) member(name string) *chaos.Member {
	for _, m := range d.db.Members {
		if m.Name == name {
			return m
		}
	}
	d.t.Fatalf("no member %s", name)
	return nil
}

// missing returns the acknowledged ids a member's table lacks.
func missing(t *testing.T, ctx context.Context, m *chaos.Member, table string, acked []int) []int {
	t.Helper()
	db, err := m.DB()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SELECT id FROM app."+table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	have := map[int]bool{}
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		have[id] = true
	}
	var out []int
	for _, id := range acked {
		if !have[id] {
			out = append(out, id)
		}
	}
	return out
}

// writableMembers lists the running members with read_only=OFF.
func (d *deployment) writableMembers(ctx context.Context) []string {
	var out []string
	for _, m := range d.db.Members {
		if !m.Running() {
			continue
		}
		db, err := m.DB()
		if err != nil {
			continue
		}
		var ro int
		if db.QueryRowContext(ctx, "SELECT @@read_only").Scan(&ro) == nil && ro == 0 {
			out = append(out, m.Name)
		}
		db.Close()
	}
	return out
}

func TestKillPrimaryUnderWriteLoad(t *testing.T) {
	d := startDeployment(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	db := d.proxyDB(0)
	if _, err := db.ExecContext(ctx, "CREATE TABLE acked (id INT PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	w := startWriter(ctx, db, "acked", 1, false)
	if err := chaos.Poll(ctx, 20*time.Second, func() (bool, error) { return w.ackedCount() >= 200, nil }); err != nil {
		t.Fatal("writes through the proxy did not start")
	}
	killed := time.Now()
	if err := d.member("db1").Kill(); err != nil {
		t.Fatal(err)
	}
	before := w.ackedCount()
	if err := chaos.Poll(ctx, 30*time.Second, func() (bool, error) { return w.ackedCount() >= before+200, nil }); err != nil {
		t.Fatal("writes did not resume after the failover")
	}
	acked, times, errs := w.finish()
	var resumed time.Time
	for i, at := range times {
		if at.After(killed) && i >= before {
			resumed = at
			break
		}
	}
	t.Logf("kill -9 of the primary: writes through the proxy resumed after %s; %d acknowledged, %d errors (in flight at the kill)",
		resumed.Sub(killed).Round(time.Millisecond), len(acked), len(errs))
	for _, e := range errs {
		t.Log(e)
	}
	st := d.statuses()[0].Clusters[0]
	if st.Primary == "db1" || st.Epoch < 2 || st.Phase != "serving" {
		t.Fatalf("control plane after failover: %+v", st)
	}
	if w := d.writableMembers(ctx); len(w) != 1 || w[0] != st.Primary {
		t.Fatalf("writable members %v, want only %s", w, st.Primary)
	}
	// Invariant: every acknowledged write survived.
	if lost := missing(t, ctx, d.member(st.Primary), "acked", acked); len(lost) > 0 {
		t.Fatalf("%d acknowledged writes lost, e.g. %v", len(lost), lost[:min(10, len(lost))])
	}
	// A write in flight at the kill may fail; later ones must not.
	if len(errs) > 8 {
		t.Fatalf("%d write errors; only those in flight at the kill (at most one per connection) may fail", len(errs))
	}
}

func TestSwitchoverUnderLoadShowsNoErrors(t *testing.T) {
	d := startDeployment(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	db := d.proxyDB(0)
	for _, q := range []string{"CREATE TABLE auto (id INT PRIMARY KEY)", "CREATE TABLE txn (id INT PRIMARY KEY)"} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	// Replicas must be healthy (lag known) for a switchover to be accepted.
	d.waitStatus(20*time.Second, "db2 healthy on the leader", func(st []admin.Status) bool {
		for _, s := range st[:3] {
			if s.Control != nil && s.Control.Leader == s.Control.Node {
				for _, m := range s.Clusters[0].Members {
					if m.Name == "db2" {
						return m.Healthy && m.LagMs >= 0
					}
				}
			}
		}
		return false
	})
	wa := startWriter(ctx, db, "auto", 1, false)
	wt := startWriter(ctx, d.proxyDB(1), "txn", 1, true)
	if err := chaos.Poll(ctx, 20*time.Second, func() (bool, error) { return wa.ackedCount() > 100 && wt.ackedCount() > 50, nil }); err != nil {
		t.Fatal("writes did not start")
	}
	// Ask the first proxy's admin API: it forwards to the leader.
	start := time.Now()
	err := (&admin.Client{Addr: d.proxies[0].admin, Secret: []byte(testSecret)}).Do(ctx, "POST", "/v1/clusters/app/promote",
		admin.PromoteRequest{Member: "db2", Timeout: "30s"}, nil)
	if err != nil {
		t.Fatalf("promote: %v", err)
	}
	took := time.Since(start)
	n := wa.ackedCount()
	if err := chaos.Poll(ctx, 20*time.Second, func() (bool, error) { return wa.ackedCount() > n+100, nil }); err != nil {
		t.Fatal("writes did not continue after the switchover")
	}
	ackA, timesA, errsA := wa.finish()
	ackT, timesT, errsT := wt.finish()
	t.Logf("switchover took %s; longest write pause: autocommit %s, transactions %s; errors %d + %d",
		took.Round(time.Millisecond), longestPause(timesA).Round(time.Millisecond), longestPause(timesT).Round(time.Millisecond), len(errsA), len(errsT))
	for _, e := range append(errsA, errsT...) {
		t.Error("client saw an error during the switchover: " + e)
	}
	if w := d.writableMembers(ctx); len(w) != 1 || w[0] != "db2" {
		t.Fatalf("writable members %v, want only db2", w)
	}
	if lost := missing(t, ctx, d.member("db2"), "auto", ackA); len(lost) > 0 {
		t.Fatalf("lost autocommit writes %v", lost)
	}
	if lost := missing(t, ctx, d.member("db2"), "txn", ackT); len(lost) > 0 {
		t.Fatalf("lost transactions %v", lost)
	}
	if p := max(longestPause(timesA), longestPause(timesT)); p > 3*time.Second {
		t.Fatalf("writes paused %s", p)
	}
}

// A proxy cut off from every arbiter stops writing within its lease: its
// writes are held, then fail with 9008, and none is acknowledged after the
// lease ran out. The other proxy and the primary are unaffected.
func TestProxyCutOffFromArbitersStopsWriting(t *testing.T) {
	d := startDeploymentWith(t, 2, faults{proxyToArbiters: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	db1, db2 := d.proxyDB(0), d.proxyDB(1)
	if _, err := db1.ExecContext(ctx, "CREATE TABLE cut (id INT PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	w1 := startWriter(ctx, db1, "cut", 1, false)
	w2 := startWriter(ctx, db2, "cut", 1_000_000, false)
	if err := chaos.Poll(ctx, 20*time.Second, func() (bool, error) { return w1.ackedCount() > 100 && w2.ackedCount() > 100, nil }); err != nil {
		t.Fatal("writes did not start")
	}
	cut := time.Now()
	d.cut("p1/")
	// Give p1 its lease and the hold, and p2 time to keep writing.
	n2 := w2.ackedCount()
	if err := chaos.Poll(ctx, 30*time.Second, func() (bool, error) {
		w1.mu.Lock()
		errs := len(w1.errs)
		w1.mu.Unlock()
		return errs > 0 && w2.ackedCount() > n2+200, nil
	}); err != nil {
		t.Fatal("p1's writes never failed, or p2's stopped")
	}
	ack1, times1, errs1 := w1.finish()
	ack2, _, errs2 := w2.finish()
	var last time.Time
	if len(times1) > 0 {
		last = times1[len(times1)-1]
	}
	t.Logf("p1 cut off: last write acknowledged %s after the cut (lease 1s); first error: %s", last.Sub(cut).Round(time.Millisecond), errs1[0])
	if last.Sub(cut) > 1500*time.Millisecond {
		t.Fatalf("p1 acknowledged a write %s after it was cut off (lease 1s)", last.Sub(cut))
	}
	// Held writes fail with 9008 (no lease); a write in flight when the
	// lease ran out gets 9010 (outcome unknown), never a success.
	saw9008 := false
	for _, e := range errs1 {
		saw9008 = saw9008 || strings.Contains(e, "9008")
		if !strings.Contains(e, "9008") && !strings.Contains(e, "9010") {
			t.Errorf("p1 error %q, want 9008 or 9010", e)
		}
	}
	if !saw9008 {
		t.Fatalf("p1's writes never failed with 9008 (no write lease): %v", errs1)
	}
	if len(errs2) > 0 {
		t.Fatalf("p2 saw errors: %v", errs2[:min(3, len(errs2))])
	}
	st := d.statuses()[0].Clusters[0]
	if st.Epoch != 1 || st.Primary != "db1" {
		t.Fatalf("a proxy's partition changed the primary: %+v", st)
	}
	for _, ack := range [][]int{ack1, ack2} {
		if lost := missing(t, ctx, d.member("db1"), "cut", ack); len(lost) > 0 {
			t.Fatalf("acknowledged writes missing: %v", lost[:min(5, len(lost))])
		}
	}
	// Reconnected, p1 writes again.
	d.restore("p1/")
	if err := chaos.Poll(ctx, 20*time.Second, func() (bool, error) {
		_, err := db1.ExecContext(ctx, "INSERT INTO cut (id) VALUES (?)", 5_000_000+time.Now().Nanosecond())
		return err == nil, nil
	}); err != nil {
		t.Fatal("p1 did not write again after the partition healed")
	}
}

// The primary is cut off from every arbiter and its replicas lose it too,
// but a proxy still reaches it: the arbiters fail over, the proxy follows
// the new epoch, and a write that was stuck on the old primary (waiting
// for a semi-sync ack that never comes) is not acknowledged when it
// finally commits there. The old primary comes back fenced with its
// stray transaction reported.
func TestPrimaryCutOffFromArbitersButNotFromProxy(t *testing.T) {
	d := startDeploymentWith(t, 1, faults{arbiterToPrimary: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	db := d.proxyDB(0)
	if _, err := db.ExecContext(ctx, "CREATE TABLE part (id INT PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	w := startWriter(ctx, db, "part", 1, false)
	if err := chaos.Poll(ctx, 20*time.Second, func() (bool, error) { return w.ackedCount() > 100, nil }); err != nil {
		t.Fatal("writes did not start")
	}
	// The replicas lose the primary (their IO threads stop), and so do the
	// arbiters; the proxy does not.
	for _, m := range []string{"db2", "db3"} {
		adm, err := d.member(m).DB()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := adm.ExecContext(ctx, "STOP SLAVE IO_THREAD"); err != nil {
			t.Fatal(err)
		}
		adm.Close()
	}
	d.cut("a")
	st := d.waitStatus(30*time.Second, "failover away from db1", func(st []admin.Status) bool {
		c := st[0].Clusters
		return len(c) > 0 && c[0].Epoch >= 2 && c[0].Phase == "serving" && c[0].Primary != "db1"
	})[0].Clusters[0]
	n := w.ackedCount()
	if err := chaos.Poll(ctx, 30*time.Second, func() (bool, error) { return w.ackedCount() > n+100, nil }); err != nil {
		t.Fatal("writes did not resume on the new primary")
	}
	acked, _, errs := w.finish()
	t.Logf("failover to %s at epoch %d; %d acknowledged, errors: %v", st.Primary, st.Epoch, len(acked), errs)
	// Every acknowledged write is on the new primary: none was acknowledged
	// by db1 after it stopped being the primary.
	if lost := missing(t, ctx, d.member(st.Primary), "part", acked); len(lost) > 0 {
		t.Fatalf("%d acknowledged writes are not on the new primary %s: %v", len(lost), st.Primary, lost[:min(5, len(lost))])
	}
	for _, e := range errs {
		if !strings.Contains(e, "9010") && !strings.Contains(e, "9005") {
			t.Errorf("unexpected client error %s", e)
		}
	}
	// Heal: the arbiters see db1 again, writable but not the primary: they
	// fence it, and it stays out because it has a transaction the new
	// primary lacks (the one that waited out semi-sync), or rejoins clean.
	d.restore("a")
	d.waitStatus(30*time.Second, "db1 fenced or rejoined", func(st []admin.Status) bool {
		for _, m := range st[0].Clusters[0].Members {
			if m.Name == "db1" {
				return m.ReadOnly && (m.Errant != "" || (m.Role == "replica" && !m.Fenced))
			}
		}
		return false
	})
	if w := d.writableMembers(ctx); len(w) != 1 || w[0] != st.Primary {
		t.Fatalf("writable members after healing: %v", w)
	}
}
