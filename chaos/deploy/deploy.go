// Package deploy runs a whole dbrouter deployment in one process for chaos
// tests and measurements: a real MariaDB cluster (chaos harness), three
// arbiters and some proxies, each a daemon.Run with its own YAML config over
// real loopback sockets, with toxiproxy links where faults are to be
// injected. It also holds the workload that records every acknowledged
// write and the checks run on it.
package deploy

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "github.com/go-sql-driver/mysql" // the workload's driver
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/admin"
	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/config"
	"github.com/dbrouter/dbrouter/daemon"
	"github.com/dbrouter/dbrouter/raftfsm"
)

// Secret is the deployment's cluster secret.
const Secret = "deploy-secret-0123456789"

// Options shapes a deployment.
type Options struct {
	Proxies int
	// Control is extra YAML for the control section (two-space indented
	// lines, e.g. "  lease: 1s\n"); empty keeps every default.
	Control string
	// TopLevel is extra top-level YAML for every node's config (lines at
	// column 0, e.g. "hooks:\n  - {command: [...]}\n").
	TopLevel string
	// ProbeInterval is the clusters' probe_interval ("" for the default).
	ProbeInterval string
	// Cluster is extra YAML for the cluster section of every node (lines
	// indented four spaces, e.g. "    causal_reads: proxy\n").
	Cluster string
	// ArbiterToPrimary: every arbiter reaches db1 through a link named
	// "aN/db1". ProxyToArbiters: proxy p1's connections to the arbiters and
	// the leader's to p1 go through links named "p1/...".
	ArbiterToPrimary bool
	ProxyToArbiters  bool
	// ArbiterToMembers: every arbiter reaches every member through a link
	// named "aN/dbK" (all members, so that a scenario can cut the arbiters
	// from whichever member the set elected). Not with ArbiterToPrimary.
	ArbiterToMembers bool
	// Mongo, when set, makes the deployment's cluster a kind mongodb
	// replica set (chaos.StartReplicaSet with these options) instead of
	// MariaDB; its members are named db1, db2, … and arb. The cluster is
	// still named app.
	Mongo *chaos.ReplicaSetOptions
	// MariaDBTLS, when set, makes the MariaDB members TLS-only
	// (chaos.Options.TLS); give the nodes member_tls in Cluster.
	MariaDBTLS *chaos.Certs
	// Log receives the nodes' logs (nil: discarded).
	Log *zap.Logger
	// DBLog receives the MariaDB harness's progress lines.
	DBLog func(format string, args ...any)
}

// Node is one running routerd.
type Node struct {
	Name   string
	Admin  string
	Listen string // proxies: the MySQL listener
	cancel context.CancelFunc
	done   chan error
	// yaml and opts started it; RestartProxy starts it again with them.
	yaml string
	opts daemon.Options
}

// Deployment is a running deployment.
type Deployment struct {
	DB *chaos.Cluster
	// RS is the replica set of a Mongo deployment (Options.Mongo).
	RS       *chaos.ReplicaSet
	Arbiters []*Node
	Proxies  []*Node
	Links    map[string]*chaos.Link
	dir      string
	log      *zap.Logger
	// arbiterYAML builds an arbiter's config: its name and addresses, the
	// arbiters it lists, and extra control YAML.
	arbiterYAML func(name, raft, admin string, listed []config.Arbiter, extra string) string
	listed      []config.Arbiter
}

func freeAddr() (string, error) {
	p, err := chaos.FreePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
}

// Start brings a deployment up and waits until every proxy holds a write
// lease. On error everything started is stopped.
func Start(ctx context.Context, o Options) (d *Deployment, err error) {
	if o.ArbiterToPrimary && o.ArbiterToMembers {
		return nil, errors.New("deploy: ArbiterToPrimary and ArbiterToMembers both name the links aN/db1: choose one")
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	dir, err := os.MkdirTemp("", "dbrouter-deploy-")
	if err != nil {
		return nil, err
	}
	d = &Deployment{Links: map[string]*chaos.Link{}, dir: dir, log: o.Log}
	defer func() {
		if err != nil {
			d.Close()
			d = nil
		}
	}()
	// MariaDB's default semi-sync timeout (10 s): above the longest a
	// failover takes with default settings, as docs/operations.md asks.
	if o.Mongo != nil {
		ro := *o.Mongo
		if ro.Log == nil {
			ro.Log = o.DBLog
		}
		if d.RS, err = chaos.StartReplicaSet(ctx, ro); err != nil {
			return d, err
		}
	} else if d.DB, err = chaos.Start(ctx, chaos.Options{Members: 3, Log: o.DBLog, SemiSyncTimeout: 10 * time.Second, TLS: o.MariaDBTLS}); err != nil {
		return d, err
	}
	for i := 1; i <= 3; i++ {
		a := config.Arbiter{Name: fmt.Sprintf("a%d", i)}
		if a.Raft, err = freeAddr(); err != nil {
			return d, err
		}
		if a.Admin, err = freeAddr(); err != nil {
			return d, err
		}
		d.listed = append(d.listed, a)
	}
	// controlYAML lists the arbiters, with admins overriding their admin
	// addresses (links), and extra control lines.
	controlYAML := func(listed []config.Arbiter, admins map[string]string, extra string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "  secret: %s\n%s%s  arbiters:\n", Secret, o.Control, extra)
		for _, a := range listed {
			adm := a.Admin
			if admins[a.Name] != "" {
				adm = admins[a.Name]
			}
			fmt.Fprintf(&b, "    - {name: %s, raft: %q, admin: %q}\n", a.Name, a.Raft, adm)
		}
		return b.String()
	}
	var members strings.Builder
	if d.RS != nil {
		for _, m := range d.RS.Members {
			fmt.Fprintf(&members, "      - {name: %s, addr: %q}\n", m.Name, m.Addr())
		}
	} else {
		for _, m := range d.DB.Members {
			fmt.Fprintf(&members, "      - {name: %s, addr: %q}\n", m.Name, m.Addr())
		}
	}
	clusterYAML := func(listen string) string {
		s := fmt.Sprintf("clusters:\n  - name: app\n    monitor: {user: %s, password: %s}\n    replication: {user: %s, password: %s}\n    members:\n%s",
			chaos.AdminUser, chaos.AdminPassword, chaos.ReplUser, chaos.ReplPassword, members.String())
		if d.RS != nil {
			mtls := ""
			if o.Mongo.TLS != nil {
				// TLS-only members: every node reaches them with their CA.
				mtls = fmt.Sprintf(", member_tls: {ca_file: %q}", o.Mongo.TLS.CAFile)
			}
			s = fmt.Sprintf("clusters:\n  - name: app\n    kind: mongodb\n    mongodb: {replica_set: %s%s}\n    members:\n%s", d.RS.Name, mtls, members.String())
		}
		if o.ProbeInterval != "" {
			s += fmt.Sprintf("    probe_interval: %s\n", o.ProbeInterval)
		}
		s += o.Cluster
		if listen != "" && d.RS != nil {
			s += fmt.Sprintf("    listen: %q\n", listen)
		} else if listen != "" {
			s += fmt.Sprintf("    listen: %q\n    users:\n      - {name: %s, password: %s}\n", listen, chaos.AppUser, chaos.AppPassword)
		}
		return s
	}
	d.arbiterYAML = func(name, raft, adm string, listed []config.Arbiter, extra string) string {
		return fmt.Sprintf("role: arbiter\nname: %s\nadmin: {listen: %q}\nlog: {level: warn}\ncontrol:\n  raft_listen: %q\n  dir: %q\n%s%s%s",
			name, adm, raft, filepath.Join(dir, name), controlYAML(listed, nil, extra), clusterYAML(""), o.TopLevel)
	}
	for _, a := range d.listed {
		var dial map[string]string
		if o.ArbiterToPrimary {
			up := ""
			if d.RS != nil {
				up = d.RS.Member("db1").Addr()
			} else {
				up = d.Member("db1").Addr()
			}
			l, err := d.link(a.Name+"/db1", up)
			if err != nil {
				return d, err
			}
			dial = map[string]string{"db1": l}
		}
		if o.ArbiterToMembers {
			dial = map[string]string{}
			for name, addr := range d.memberAddrs() {
				if dial[name], err = d.link(a.Name+"/"+name, addr); err != nil {
					return d, err
				}
			}
		}
		y := d.arbiterYAML(a.Name, a.Raft, a.Admin, d.listed, "")
		n, err := d.run(a.Name, y, a.Admin, "", daemon.Options{Dial: dial})
		if err != nil {
			return d, err
		}
		d.Arbiters = append(d.Arbiters, n)
	}
	for i := 1; i <= o.Proxies; i++ {
		name := fmt.Sprintf("p%d", i)
		var adm, listen, raft string
		for _, p := range []*string{&adm, &listen, &raft} {
			if *p, err = freeAddr(); err != nil {
				return d, err
			}
		}
		admins := map[string]string{}
		advertise := ""
		if o.ProxyToArbiters && i == 1 {
			for _, a := range d.listed {
				if admins[a.Name], err = d.link(name+"/"+a.Name, a.Admin); err != nil {
					return d, err
				}
			}
			l, err := d.link(name+"/raft", raft)
			if err != nil {
				return d, err
			}
			advertise = fmt.Sprintf("  raft_advertise: %q\n", l)
		}
		y := fmt.Sprintf("role: proxy\nname: %s\nadmin: {listen: %q}\nlog: {level: warn}\ncontrol:\n  raft_listen: %q\n%s  dir: %q\n%s%s%s",
			name, adm, raft, advertise, filepath.Join(dir, name), controlYAML(d.listed, admins, ""), clusterYAML(listen), o.TopLevel)
		n, err := d.run(name, y, adm, listen, daemon.Options{})
		if err != nil {
			return d, err
		}
		d.Proxies = append(d.Proxies, n)
	}
	_, err = d.WaitStatus(ctx, 30*time.Second, "every proxy holds a write lease", func(st []admin.Status) bool {
		for _, s := range st[len(d.Arbiters):] {
			if s.Control == nil || !s.Control.LeaseOK || len(s.Clusters) == 0 || s.Clusters[0].Epoch < 1 {
				return false
			}
		}
		return true
	})
	return d, err
}

// memberAddrs maps each database member's name to its address.
func (d *Deployment) memberAddrs() map[string]string {
	out := map[string]string{}
	if d.RS != nil {
		for _, m := range d.RS.Members {
			out[m.Name] = m.Addr()
		}
	} else {
		for _, m := range d.DB.Members {
			out[m.Name] = m.Addr()
		}
	}
	return out
}

func (d *Deployment) link(name, upstream string) (string, error) {
	l, err := chaos.NewLink(fmt.Sprintf("%s-%d", name, time.Now().UnixNano()), upstream)
	if err != nil {
		return "", err
	}
	d.Links[name] = l
	return l.Addr, nil
}

func (d *Deployment) run(name, yaml, adminAddr, listen string, opts daemon.Options) (*Node, error) {
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		return nil, fmt.Errorf("%s config: %w\n%s", name, err, yaml)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan struct{})
	opts.Ready = func(string) { close(ready) }
	go func() { done <- daemon.Run(ctx, cfg, d.log.With(zap.String("node", name)), opts) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		return nil, fmt.Errorf("%s exited at start: %w", name, err)
	}
	return &Node{Name: name, Admin: adminAddr, Listen: listen, cancel: cancel, done: done, yaml: yaml, opts: opts}, nil
}

// RestartProxy stops proxy i and starts it again with its config: the same
// listen, admin and Raft addresses and Raft directory, as a routerd restarted
// by its service manager comes back. It returns once the proxy holds a write
// lease again; clients connected to it have lost their connections.
func (d *Deployment) RestartProxy(ctx context.Context, i int) error {
	old := d.Proxies[i]
	if err := old.Stop(); err != nil {
		return fmt.Errorf("stop %s: %w", old.Name, err)
	}
	n, err := d.run(old.Name, old.yaml, old.Admin, old.Listen, old.opts)
	if err != nil {
		return fmt.Errorf("restart %s: %w", old.Name, err)
	}
	d.Proxies[i] = n
	_, err = d.WaitStatus(ctx, 30*time.Second, old.Name+" holds a write lease after its restart", func(st []admin.Status) bool {
		s := st[len(d.Arbiters)+i]
		return s.Control != nil && s.Control.LeaseOK && len(s.Clusters) > 0 && s.Clusters[0].Epoch >= 1
	})
	return err
}

// AddArbiter starts a new arbiter that joins the running group
// (control.join_existing) in place of replaces: its config lists the
// deployment's arbiters with replaces swapped for it. It is not a voter
// until the leader adds it (admin POST /v1/raft/arbiters).
func (d *Deployment) AddArbiter(name, replaces string) (n *Node, raftAddr string, err error) {
	adm, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	if raftAddr, err = freeAddr(); err != nil {
		return nil, "", err
	}
	var listed []config.Arbiter
	for _, a := range d.listed {
		if a.Name == replaces {
			a = config.Arbiter{Name: name, Raft: raftAddr, Admin: adm}
		}
		listed = append(listed, a)
	}
	n, err = d.run(name, d.arbiterYAML(name, raftAddr, adm, listed, "  join_existing: true\n"), adm, "", daemon.Options{})
	if err != nil {
		return nil, "", err
	}
	d.Arbiters = append(d.Arbiters, n)
	return n, raftAddr, nil
}

// Stop ends a node and waits for it (idempotent).
func (n *Node) Stop() error {
	if n == nil || n.cancel == nil {
		return nil
	}
	n.cancel()
	select {
	case err := <-n.done:
		n.done <- err
		return err
	case <-time.After(20 * time.Second):
		return fmt.Errorf("%s did not stop within 20s", n.Name)
	}
}

// Close stops every node, link and server.
func (d *Deployment) Close() error {
	var errs []error
	for _, n := range append(append([]*Node{}, d.Proxies...), d.Arbiters...) {
		errs = append(errs, n.Stop())
	}
	for _, l := range d.Links {
		l.Close()
	}
	if d.DB != nil {
		errs = append(errs, d.DB.Close())
	}
	if d.RS != nil {
		errs = append(errs, d.RS.Close())
	}
	errs = append(errs, os.RemoveAll(d.dir))
	return errors.Join(errs...)
}

// Cut cuts every link whose name starts with prefix; Restore reopens them.
func (d *Deployment) Cut(prefix string) {
	for name, l := range d.Links {
		if strings.HasPrefix(name, prefix) {
			l.Cut()
		}
	}
}

// Restore reopens the links Cut cut.
func (d *Deployment) Restore(prefix string) error {
	for name, l := range d.Links {
		if strings.HasPrefix(name, prefix) {
			if err := l.Restore(); err != nil {
				return err
			}
		}
	}
	return nil
}

// Statuses returns every node's /status, arbiters first (an empty Status
// for a node that does not answer).
func (d *Deployment) Statuses() []admin.Status {
	var out []admin.Status
	for _, n := range append(append([]*Node{}, d.Arbiters...), d.Proxies...) {
		var st admin.Status
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = (&admin.Client{Addr: n.Admin}).Do(ctx, "GET", "/status", nil, &st)
		cancel()
		out = append(out, st)
	}
	return out
}

// WaitStatus polls Statuses until ok holds.
func (d *Deployment) WaitStatus(ctx context.Context, within time.Duration, what string, ok func([]admin.Status) bool) ([]admin.Status, error) {
	deadline := time.Now().Add(within)
	for {
		st := d.Statuses()
		if ok(st) {
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("timed out after %s waiting for: %s", within, what)
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ProxyDB opens a client pool through proxy i.
func (d *Deployment) ProxyDB(i int) (*sql.DB, error) {
	db, err := sql.Open("mysql", fmt.Sprintf("%s:%s@tcp(%s)/%s?timeout=5s", chaos.AppUser, chaos.AppPassword, d.Proxies[i].Listen, chaos.AppDatabase))
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(8)
	return db, nil
}

// Member returns the named MariaDB member (nil if none).
func (d *Deployment) Member(name string) *chaos.Member {
	if d.DB == nil {
		return nil
	}
	for _, m := range d.DB.Members {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// WritableMembers lists the running members with read_only=OFF.
func (d *Deployment) WritableMembers(ctx context.Context) []string { return d.DB.Writable(ctx) }

// WaitHealthyOnLeader waits until the leading arbiter sees member healthy
// with a known lag: its monitor is the one that judges a switchover target.
func (d *Deployment) WaitHealthyOnLeader(ctx context.Context, member string, within time.Duration) error {
	_, err := d.WaitStatus(ctx, within, member+" healthy on the leader", func(st []admin.Status) bool {
		for _, s := range st[:len(d.Arbiters)] {
			if s.Control == nil || s.Control.Leader != s.Control.Node || len(s.Clusters) == 0 {
				continue
			}
			for _, m := range s.Clusters[0].Members {
				if m.Name == member {
					return m.Healthy && m.LagMs >= 0
				}
			}
		}
		return false
	})
	return err
}

// Promote asks proxy i's admin API (which forwards to the leader) for a
// switchover.
func (d *Deployment) Promote(ctx context.Context, i int, member string, timeout time.Duration) error {
	return (&admin.Client{Addr: d.Proxies[i].Admin, Secret: []byte(Secret)}).Do(ctx, "POST", "/v1/clusters/app/promote",
		admin.PromoteRequest{Member: member, Timeout: timeout.String()}, nil)
}

// Missing returns the acknowledged ids the member's table app.TABLE lacks.
func Missing(ctx context.Context, m *chaos.Member, table string, acked []int) ([]int, error) {
	db, err := m.DB()
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SELECT id FROM app."+table)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	have := map[int]bool{}
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		have[id] = true
	}
	var out []int
	for _, id := range acked {
		if !have[id] {
			out = append(out, id)
		}
	}
	return out, rows.Err()
}

// Writer inserts increasing ids through a proxy and records which were
// acknowledged, when, and every error, until stopped or its bound (200k
// statements, 90 s) is hit.
type Writer struct {
	mu     sync.Mutex
	acked  []int
	times  []time.Time
	errs   []string
	failed []int // ids whose statement got an error
	stop   chan struct{}
	done   chan struct{}
	nextID int
}

// StartWriter starts a writer; txn wraps each insert in BEGIN/COMMIT.
func StartWriter(ctx context.Context, db *sql.DB, table string, firstID int, txn bool) *Writer {
	w := &Writer{stop: make(chan struct{}), done: make(chan struct{}), nextID: firstID}
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
				w.failed = append(w.failed, id)
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

// Finish stops the writer and returns what it recorded.
func (w *Writer) Finish() (acked []int, times []time.Time, errs []string) {
	close(w.stop)
	<-w.done
	return w.acked, w.times, w.errs
}

// Failed returns the ids whose write got an error (call after Finish).
func (w *Writer) Failed() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]int(nil), w.failed...)
}

// Extra returns the ids of table that member m has and member other lacks:
// on an old primary, the writes it took that the new primary never got.
func Extra(ctx context.Context, m, other *chaos.Member, table string) ([]int, error) {
	ids := func(mm *chaos.Member) (map[int]bool, error) {
		db, err := mm.DB()
		if err != nil {
			return nil, err
		}
		defer db.Close()
		rows, err := db.QueryContext(ctx, "SELECT id FROM app."+table)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", mm.Name, err)
		}
		defer rows.Close()
		out := map[int]bool{}
		for rows.Next() {
			var id int
			if err := rows.Scan(&id); err != nil {
				return nil, err
			}
			out[id] = true
		}
		return out, rows.Err()
	}
	a, err := ids(m)
	if err != nil {
		return nil, err
	}
	b, err := ids(other)
	if err != nil {
		return nil, err
	}
	var out []int
	for id := range a {
		if !b[id] {
			out = append(out, id)
		}
	}
	return out, nil
}

// Metric reads one sample of a node's /metrics (arbiters first, then
// proxies): the first series named name whose labels include every
// label=value in labels.
func (d *Deployment) Metric(ctx context.Context, i int, name string, labels map[string]string) (float64, error) {
	nodes := append(append([]*Node{}, d.Arbiters...), d.Proxies...)
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+nodes[i].Admin+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for k, v := range labels {
			if !strings.Contains(line, k+`="`+v+`"`) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		return strconv.ParseFloat(f[len(f)-1], 64)
	}
	return 0, fmt.Errorf("%s: no %s%v", nodes[i].Name, name, labels)
}

// Acked is how many writes were acknowledged so far.
func (w *Writer) Acked() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// Errors is how many writes failed so far.
func (w *Writer) Errors() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.errs)
}

// LongestPause is the longest gap between consecutive acknowledgements.
func LongestPause(times []time.Time) time.Duration {
	var m time.Duration
	for i := 1; i < len(times); i++ {
		m = max(m, times[i].Sub(times[i-1]))
	}
	return m
}

// FirstAfter is the first acknowledgement time after t (zero if none).
func FirstAfter(times []time.Time, t time.Time) time.Time {
	for _, at := range times {
		if at.After(t) {
			return at
		}
	}
	return time.Time{}
}

// History returns the cluster's decisions as node i (arbiters first) has them.
func (d *Deployment) History(ctx context.Context, i int) ([]raftfsm.Decision, error) {
	nodes := append(append([]*Node{}, d.Arbiters...), d.Proxies...)
	var h struct {
		History []raftfsm.Decision `json:"history"`
	}
	err := (&admin.Client{Addr: nodes[i].Admin}).Do(ctx, "GET", "/v1/clusters/app/history", nil, &h)
	return h.History, err
}
