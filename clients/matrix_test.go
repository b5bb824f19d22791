package clients_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/chaos/deploy"
)

// The checks of each mode, in the order the matrix reports them.
var (
	workloadChecks = []string{"connect", "write_read", "rollback", "prepared", "big_row", "dup_key", "oltp_read_write"}
	restartChecks  = []string{"reconnect"}
	promoteChecks  = []string{"promote"}
	allChecks      = slices.Concat(workloadChecks, restartChecks, promoteChecks)
	// appChecks are an application's: every check but sysbench's own.
	appChecks = []string{"connect", "write_read", "rollback", "prepared", "big_row", "dup_key", "reconnect", "promote"}
)

// target is where a client connects and the table it owns.
type target struct {
	host, port, user, password, database string
	table                                string // id INT PRIMARY KEY, v VARCHAR(64), b LONGBLOB
	stopFile                             string // promote: the loop ends once it exists
}

func (tg target) addr() string { return net.JoinHostPort(tg.host, tg.port) }

func (tg target) env() []string {
	return append(os.Environ(), "DBR_HOST="+tg.host, "DBR_PORT="+tg.port, "DBR_USER="+tg.user, "DBR_PASSWORD="+tg.password,
		"DBR_DATABASE="+tg.database, "DBR_TABLE="+tg.table, "DBR_STOP_FILE="+tg.stopFile)
}

// runFunc runs a client in one mode. It reports through emit, in the
// protocol of the package doc, and in restart mode waits for resume before
// reconnecting. An error means the client itself broke (a crash, a
// non-zero exit), beyond the checks it reported.
type runFunc func(ctx context.Context, mode string, tg target, resume <-chan struct{}, emit func(string)) error

// client is one column of the matrix.
type client struct {
	name   string
	checks []string
	// missing says how to install the client; "" when it is there.
	missing func() string
	// setup runs once before the client's first run (dir is its own).
	setup func(ctx context.Context, dir string) error
	run   runFunc
}

func matrix() []*client {
	return []*client{
		goSQLDriver(), goMySQLClient(), pyClient("pymysql", "pymysql", "python3-pymysql"),
		pyClient("mysqlclient", "MySQLdb", "python3-mysqldb"), connectorJ(), nodeMySQL2(), mariadbCLI(), sysbench(),
	}
}

// results holds what every client reported: check -> "" (passed) or why it
// failed.
type results struct {
	mu sync.Mutex
	m  map[string]map[string]string
}

func (r *results) set(client, check, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m[client] == nil {
		r.m[client] = map[string]string{}
	}
	if old, ok := r.m[client][check]; ok && old != "" {
		return // the first failure is the one to show
	}
	r.m[client][check] = why
}

func (r *results) get(client, check string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	why, ok := r.m[client][check]
	return why, ok
}

// run is one client running in one mode in the background.
type run struct {
	c      *client
	ready  chan struct{} // closed at "ready"
	resume chan struct{}
	done   chan struct{}
	cancel context.CancelFunc
	err    error // the client's own failure, once done
	mu     sync.Mutex
	ticks  int
}

func (r *run) tickCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ticks
}

func start(ctx context.Context, t *testing.T, c *client, mode string, tg target, res *results) *run {
	ctx, cancel := context.WithCancel(ctx)
	r := &run{c: c, ready: make(chan struct{}), resume: make(chan struct{}), done: make(chan struct{}), cancel: cancel}
	var once sync.Once
	emit := func(line string) {
		switch {
		case line == "ready":
			once.Do(func() { close(r.ready) })
		case line == "tick":
			r.mu.Lock()
			r.ticks++
			r.mu.Unlock()
		case strings.HasPrefix(line, "ok "):
			check, _, _ := strings.Cut(strings.TrimPrefix(line, "ok "), " ")
			res.set(c.name, check, "")
		case strings.HasPrefix(line, "fail "):
			check, why, _ := strings.Cut(strings.TrimPrefix(line, "fail "), ": ")
			res.set(c.name, check, why)
		default:
			t.Logf("%s %s: %s", c.name, mode, line)
		}
	}
	go func() {
		defer close(r.done)
		r.err = c.run(ctx, mode, tg, r.resume, emit)
	}()
	return r
}

// finish waits for the run, for up to four minutes (then it is ended), and
// records every check of the mode it did not report as failed.
func (r *run) finish(res *results, checks []string) {
	defer r.cancel()
	select {
	case <-r.done:
	case <-time.After(4 * time.Minute):
		r.cancel()
		<-r.done
		for _, ch := range checks {
			res.set(r.c.name, ch, "did not end within four minutes")
		}
	}
	for _, ch := range checks {
		if _, ok := res.get(r.c.name, ch); !ok {
			why := "the client reported nothing"
			if r.err != nil {
				why += ": " + r.err.Error()
			}
			res.set(r.c.name, ch, why)
		} else if r.err != nil {
			res.set(r.c.name, ch, r.err.Error())
		}
	}
}

// TestClientMatrix runs every client of the matrix, at its default settings,
// through one proxy of one deployment: first each client's workload, then
// all of them holding connections across a restart of the proxy, then all
// of them writing and reading back through a planned switchover.
func TestClientMatrix(t *testing.T) {
	began := time.Now()
	// Bounds for a loaded machine; the matrix takes under two minutes on an
	// idle one.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res := &results{m: map[string]map[string]string{}}
	clients := installed(matrix(), res)
	// The phases run in a subtest so that a fatal step still leaves the
	// matrix reported (and the deployment closed) below.
	t.Run("deployment", func(t *testing.T) { phases(ctx, t, clients, res) })
	report(t, "client matrix", res, matrix(), allChecks, began)
}

// installed is the clients of cs that are there; every check of a client
// that is missing fails with how to install it.
func installed(cs []*client, res *results) []*client {
	var out []*client
	for _, c := range cs {
		if how := c.missing(); how != "" {
			for _, ch := range c.checks {
				res.set(c.name, ch, "not installed: "+how)
			}
			continue
		}
		out = append(out, c)
	}
	return out
}

// setUp runs the set-up of each client of cs that has one, in its own dir
// under dir, and returns the clients ready to run; every check of a client
// whose set-up failed fails with why.
func setUp(ctx context.Context, t *testing.T, cs []*client, dir string, res *results) []*client {
	var ready []*client
	for _, c := range cs {
		if c.setup != nil {
			cdir := filepath.Join(dir, c.name)
			if err := os.MkdirAll(cdir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := c.setup(ctx, cdir); err != nil {
				for _, ch := range c.checks {
					res.set(c.name, ch, "set-up: "+err.Error())
				}
				continue
			}
		}
		ready = append(ready, c)
	}
	return ready
}

func phases(ctx context.Context, t *testing.T, clients []*client, res *results) {
	d := startDeployment(t)
	host, port, err := net.SplitHostPort(d.Proxies[0].Listen)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	targets := map[string]target{}
	db, err := d.ProxyDB(0)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, c := range clients {
		tg := target{host: host, port: port, user: chaos.AppUser, password: chaos.AppPassword, database: chaos.AppDatabase,
			table: "mx_" + strings.ReplaceAll(c.name, "-", "_"), stopFile: filepath.Join(dir, "stop")}
		if _, err := db.ExecContext(ctx, "CREATE TABLE "+tg.table+" (id INT PRIMARY KEY, v VARCHAR(64), b LONGBLOB)"); err != nil {
			t.Fatalf("create %s: %v", tg.table, err)
		}
		targets[c.name] = tg
	}
	clients = setUp(ctx, t, clients, dir, res)
	if len(clients) == 0 {
		return
	}

	phase := time.Now()
	for _, c := range clients {
		began := time.Now()
		start(ctx, t, c, "workload", targets[c.name], res).finish(res, only(c, workloadChecks))
		t.Logf("%s workload: %s", c.name, time.Since(began).Round(time.Millisecond))
	}
	t.Logf("workloads: %s", time.Since(phase).Round(time.Millisecond))

	phase = time.Now()
	restartPhase(ctx, t, d, clients, targets, res)
	t.Logf("proxy restart: %s", time.Since(phase).Round(time.Millisecond))

	phase = time.Now()
	promotePhase(ctx, t, d, clients, targets, res)
	t.Logf("switchover: %s", time.Since(phase).Round(time.Millisecond))
}

func startDeployment(t *testing.T) *deploy.Deployment {
	t.Helper()
	// The control plane's defaults but for the lease: a loaded test
	// machine does not lose the longer leases (a lost lease holds writes,
	// and one lost mid-statement is an error).
	return deploy.StartT(t, deploy.Options{
		Proxies: 1,
		// A 5 s lease instead of 2 s: the whole deployment runs in this
		// test process, and under -race a 20 MiB row (big_row) held its
		// CPU long enough for the proxy's lease to lapse mid-insert in one
		// CI run (answered 9010, outcome unknown: correct, but not what
		// this matrix tests). The lease's own timing is tested in daemon.
		Control: "  lease: 5s\n",
		// The default probe interval (500 ms): reads follow the control
		// plane's primary, not a snapshot that lags it
		// (TestReadYourWritesThroughSwitchovers).
	})
}

// only is the checks of a mode that client c reports.
func only(c *client, mode []string) []string {
	var out []string
	for _, ch := range mode {
		if slices.Contains(c.checks, ch) {
			out = append(out, ch)
		}
	}
	return out
}

// waitReady waits until every run said "ready" or ended; a run that does
// neither within a minute fails every check of its mode.
func waitReady(ctx context.Context, runs []*run, res *results, checks []string) {
	timeout := time.After(time.Minute)
	for _, r := range runs {
		select {
		case <-r.ready:
		case <-r.done:
		case <-timeout:
			for _, ch := range only(r.c, checks) {
				res.set(r.c.name, ch, "never ready: no connection within a minute")
			}
		case <-ctx.Done():
			return
		}
	}
}

// restartPhase: every client holds a connection while the proxy restarts
// on the same address, then reconnects.
func restartPhase(ctx context.Context, t *testing.T, d *deploy.Deployment, clients []*client, targets map[string]target, res *results) {
	var runs []*run
	for _, c := range clients {
		if len(only(c, restartChecks)) > 0 {
			runs = append(runs, start(ctx, t, c, "restart", targets[c.name], res))
		}
	}
	waitReady(ctx, runs, res, restartChecks)
	err := d.RestartProxy(ctx, 0)
	for _, r := range runs {
		close(r.resume)
	}
	for _, r := range runs {
		r.finish(res, restartChecks)
	}
	if err != nil {
		t.Fatalf("restart the proxy: %v", err)
	}
}

// promotePhase: every client writes and reads back in a loop while the
// control plane switches the primary from db1 to db2; no client may see an
// error, and every write a client counted is on the new primary.
func promotePhase(ctx context.Context, t *testing.T, d *deploy.Deployment, clients []*client, targets map[string]target, res *results) {
	var runs []*run
	for _, c := range clients {
		runs = append(runs, start(ctx, t, c, "promote", targets[c.name], res))
	}
	stopFile := targets[clients[0].name].stopFile
	stop := func() {
		if err := os.WriteFile(stopFile, nil, 0o644); err != nil {
			t.Errorf("stop file: %v", err)
		}
		for _, r := range runs {
			r.finish(res, promoteChecks)
		}
	}
	waitReady(ctx, runs, res, promoteChecks)
	if err := d.WaitHealthyOnLeader(ctx, "db2", 20*time.Second); err != nil {
		stop()
		t.Fatal(err)
	}
	began := time.Now()
	if err := d.Promote(ctx, 0, "db2", 30*time.Second); err != nil {
		stop()
		t.Fatalf("promote db2: %v", err)
	}
	t.Logf("switchover to db2 took %s", time.Since(began).Round(time.Millisecond))
	// Each client goes on writing on the new primary before it stops.
	after := make([]int, len(runs))
	for i, r := range runs {
		after[i] = r.tickCount()
	}
	err := chaos.Poll(ctx, 30*time.Second, func() (bool, error) {
		for i, r := range runs {
			select {
			case <-r.done:
				continue
			default:
			}
			if r.tickCount() < after[i]+5 {
				return false, nil
			}
		}
		return true, nil
	})
	stop()
	if err != nil {
		t.Errorf("clients writing after the switchover: %v", err)
	}
	// What each client counted as written is on db2.
	m, err := d.Member("db2").DB()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, r := range runs {
		if r.c.name == "sysbench" {
			continue
		}
		var n int
		if err := m.QueryRowContext(ctx, "SELECT COUNT(*) FROM app."+targets[r.c.name].table+" WHERE id >= 1000").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n < r.tickCount() {
			res.set(r.c.name, "promote", fmt.Sprintf("%d writes acknowledged, %d on the new primary", r.tickCount(), n))
		}
	}
}

// report prints the matrix (a column per check of checks) and turns every
// check into a subtest named client/check, so a failure names both.
func report(t *testing.T, title string, res *results, clients []*client, checks []string, began time.Time) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s):\n%-12s", title, time.Since(began).Round(time.Second), "")
	for _, ch := range checks {
		fmt.Fprintf(&b, " %-11s", ch)
	}
	for _, c := range clients {
		fmt.Fprintf(&b, "\n%-12s", c.name)
		for _, ch := range checks {
			cell := "-"
			if slices.Contains(c.checks, ch) {
				why, ok := res.get(c.name, ch)
				switch {
				case !ok:
					cell = "not run"
				case why == "":
					cell = "pass"
				default:
					cell = "FAIL"
				}
			}
			fmt.Fprintf(&b, " %-11s", cell)
		}
	}
	t.Log(b.String())
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			for _, ch := range c.checks {
				t.Run(ch, func(t *testing.T) {
					why, ok := res.get(c.name, ch)
					if !ok {
						t.Fatal("not run: an earlier step of the test failed")
					}
					if why != "" {
						t.Fatal(why)
					}
				})
			}
		})
	}
}

// lines calls emit with every line of r.
func lines(r io.Reader, emit func(string)) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		emit(sc.Text())
	}
}
