// Package chaos owns the real-server harness: it starts MariaDB instances with
// GTID and semi-sync replication wired, and Mongo-wire members (embedded
// FerretDB processes, mongo.go), on free loopback ports in a work dir of its
// own, and breaks them on demand (kill -9, SIGSTOP/SIGCONT, restart). Every
// integration test and the sandbox (`make run`) go through it, so the servers
// the tests prove things on are the servers users run.
package chaos

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/dbrouter/dbrouter/topology/mariadb"
)

// Fixed credentials every harness member carries. They are loopback-only test
// credentials; the sandbox documents them.
const (
	ReplUser      = "repl"
	ReplPassword  = "repl"
	AdminUser     = "admin"
	AdminPassword = "admin"
	AppUser       = "app"
	AppPassword   = "app"
	AppDatabase   = "app"
)

// ErrNoMariaDB is returned when mariadbd or mariadb-install-db is not on PATH.
// Its message says how to install them; callers must not turn it into a skip.
var ErrNoMariaDB = errors.New("mariadbd not found: install it with `sudo apt-get install -y mariadb-server mariadb-client` (or run `make test`, which does)")

// Options shapes a replicated MariaDB group.
type Options struct {
	// Members is the number of servers; member 0 starts as the primary.
	Members int
	// Dir is the work dir; a temp dir is created when empty.
	Dir string
	// SemiSyncTimeout is rpl_semi_sync_master_timeout (default 5s). Semi-sync is
	// switched on only once every replica is attached (a primary without replicas
	// would otherwise wait this long on every commit).
	SemiSyncTimeout time.Duration
	// SlaveNetTimeout, when set, is the members' slave_net_timeout; by
	// default they keep MariaDB's (60 s), as most servers in the field do:
	// the arbiters must detect a hung primary without relying on it.
	SlaveNetTimeout time.Duration
	// TLS, when set, makes every member TLS-only over TCP: its
	// certificate is TLS.CertFile (127.0.0.1 and localhost, signed by
	// TLS.CAFile) and require_secure_transport=ON refuses plaintext TCP
	// clients (the unix socket, which the harness's own admin connections
	// use, stays open). Replication runs over TLS too (MASTER_SSL=1), as
	// the arbiters set it up under member_tls.
	TLS *Certs
	// ExtraConfig lines are appended to every member's [mariadbd] section.
	ExtraConfig []string
	// Log receives progress lines; nil discards them.
	Log func(format string, args ...any)
}

// Cluster is a running replicated MariaDB group.
type Cluster struct {
	Members []*Member
	dir     string
	ownDir  bool
	opts    Options
}

// Member is one mariadbd process.
type Member struct {
	Name     string
	ServerID int
	Port     int
	Socket   string
	DataDir  string
	dir      string
	confPath string
	tls      bool // TLS-only (Options.TLS): replication uses MASTER_SSL

	proc
}

var (
	templateOnce sync.Once
	templateDir  string
	templateErr  error
)

// memberConf carries settings that must match between template and members.
var innodbArgs = []string{"--innodb-log-file-size=8M", "--innodb-buffer-pool-size=32M"}

const usersSQL = `FLUSH PRIVILEGES;
CREATE USER '` + ReplUser + `'@'%' IDENTIFIED BY '` + ReplPassword + `';
GRANT REPLICATION SLAVE, REPLICATION CLIENT, SLAVE MONITOR ON *.* TO '` + ReplUser + `'@'%';
CREATE USER '` + AdminUser + `'@'%' IDENTIFIED BY '` + AdminPassword + `';
GRANT ALL PRIVILEGES ON *.* TO '` + AdminUser + `'@'%' WITH GRANT OPTION;
CREATE DATABASE ` + AppDatabase + `;
CREATE DATABASE sbtest;
CREATE USER '` + AppUser + `'@'%' IDENTIFIED BY '` + AppPassword + `';
GRANT ALL PRIVILEGES ON ` + AppDatabase + `.* TO '` + AppUser + `'@'%';
GRANT ALL PRIVILEGES ON sbtest.* TO '` + AppUser + `'@'%';
GRANT PROCESS ON *.* TO '` + AppUser + `'@'%';
`

// buildTemplate bootstraps one data dir with the users every member needs, so
// each member is a 20 ms copy instead of a 2 s install. Users are created with
// the binlog off: all members then start from identical, empty GTID state.
func buildTemplate() (string, error) {
	templateOnce.Do(func() {
		if _, err := exec.LookPath("mariadbd"); err != nil {
			if _, err2 := os.Stat("/usr/sbin/mariadbd"); err2 != nil {
				templateErr = ErrNoMariaDB
				return
			}
		}
		if _, err := exec.LookPath("mariadb-install-db"); err != nil {
			templateErr = ErrNoMariaDB
			return
		}
		dir, err := os.MkdirTemp("", "dbrouter-template-")
		if err != nil {
			templateErr = err
			return
		}
		data := filepath.Join(dir, "data")
		// A private tmpdir: test binaries bootstrap in parallel, and their
		// temporary tables must not meet in /tmp.
		tmp := filepath.Join(dir, "tmp")
		if err := os.MkdirAll(tmp, 0o755); err != nil {
			templateErr = err
			return
		}
		args := append([]string{"--no-defaults", "--datadir=" + data, "--tmpdir=" + tmp, "--auth-root-authentication-method=normal", "--skip-test-db"}, innodbArgs...)
		args = append(args, userArg()...)
		if out, err := exec.Command("mariadb-install-db", args...).CombinedOutput(); err != nil {
			templateErr = fmt.Errorf("mariadb-install-db: %w\n%s", err, tail(out, 2000))
			return
		}
		bargs := append([]string{"--no-defaults", "--bootstrap", "--datadir=" + data, "--tmpdir=" + tmp, "--skip-log-bin"}, innodbArgs...)
		bargs = append(bargs, userArg()...)
		cmd := exec.Command(mariadbdPath(), bargs...)
		cmd.Stdin = strings.NewReader(usersSQL)
		if out, err := cmd.CombinedOutput(); err != nil {
			templateErr = fmt.Errorf("mariadbd --bootstrap (users): %w\n%s", err, tail(out, 2000))
			return
		}
		templateDir = data
	})
	return templateDir, templateErr
}

func mariadbdPath() string {
	if p, err := exec.LookPath("mariadbd"); err == nil {
		return p
	}
	return "/usr/sbin/mariadbd"
}

// userArg lets mariadbd run as root (CI and the sandbox run as root); it is
// ignored with a warning otherwise, so only pass it when it matters.
func userArg() []string {
	if os.Geteuid() == 0 {
		return []string{"--user=root"}
	}
	return nil
}

// Start brings up opts.Members servers, wires member 0 as the GTID primary of
// the others, waits until every replica's IO and SQL threads run and semi-sync
// has its replicas, and returns. On error everything started is stopped.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Members <= 0 {
		opts.Members = 3
	}
	if opts.SemiSyncTimeout == 0 {
		opts.SemiSyncTimeout = 5 * time.Second
	}
	if opts.Log == nil {
		opts.Log = func(string, ...any) {}
	}
	tmpl, err := buildTemplate()
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: opts.Dir, opts: opts}
	if c.dir == "" {
		if c.dir, err = os.MkdirTemp("", "dbrouter-mariadb-"); err != nil {
			return nil, err
		}
		c.ownDir = true
	}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	for i := 0; i < opts.Members; i++ {
		m, err := c.newMember(i, tmpl)
		if err != nil {
			return nil, err
		}
		c.Members = append(c.Members, m)
	}
	if err := startAll(ctx, procs(c.Members), opts.Log); err != nil {
		return nil, err
	}
	if err := c.wire(ctx); err != nil {
		return nil, err
	}
	ok = true
	opts.Log("mariadb: %d members up in %s", len(c.Members), c.dir)
	return c, nil
}

func (c *Cluster) newMember(i int, tmpl string) (*Member, error) {
	name := fmt.Sprintf("db%d", i+1)
	dir := filepath.Join(c.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	m := &Member{
		Name:     name,
		ServerID: i + 1,
		dir:      dir,
		DataDir:  filepath.Join(dir, "data"),
		Socket:   filepath.Join(dir, "mysqld.sock"),
		confPath: filepath.Join(dir, "my.cnf"),
		proc:     proc{name: name, logPath: filepath.Join(dir, "error.log"), stopGrace: 30 * time.Second},
	}
	m.proc.start = m.start
	if out, err := exec.Command("cp", "-a", tmpl, m.DataDir).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("copy template for %s: %w: %s", name, err, out)
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	m.Port = port
	conf := []string{
		"[mariadbd]",
		"datadir=" + m.DataDir,
		"socket=" + m.Socket,
		"tmpdir=" + filepath.Join(dir, "tmp"),
		"pid-file=" + filepath.Join(dir, "mysqld.pid"),
		"log-error=" + m.logPath,
		"port=" + strconv.Itoa(port),
		"bind-address=127.0.0.1",
		"server_id=" + strconv.Itoa(m.ServerID),
		"log_bin=" + filepath.Join(dir, "binlog"),
		"relay_log=" + filepath.Join(dir, "relay"),
		"log_slave_updates=ON",
		"binlog_format=ROW",
		"gtid_strict_mode=ON",
		"rpl_semi_sync_slave_enabled=ON",
		"rpl_semi_sync_master_wait_point=AFTER_SYNC",
		"rpl_semi_sync_master_timeout=" + strconv.FormatInt(c.opts.SemiSyncTimeout.Milliseconds(), 10),
		"max_allowed_packet=64M",
		// Every member starts read-only, the primary included: a primary that
		// restarts after a failover must not come back writable. wire opens
		// the first primary; after that only the control plane opens one.
		"read_only=ON",
		"skip-name-resolve",
		"performance_schema=OFF",
		"innodb_log_file_size=8M",
		"innodb_buffer_pool_size=32M",
		"innodb_flush_log_at_trx_commit=2",
		"sync_binlog=0",
		"max_connections=500",
		"local_infile=ON",
	}
	if os.Geteuid() == 0 {
		conf = append(conf, "user=root")
	}
	if t := c.opts.TLS; t != nil {
		m.tls = true
		conf = append(conf, "ssl_cert="+t.CertFile, "ssl_key="+t.KeyFile, "ssl_ca="+t.CAFile, "require_secure_transport=ON")
	}
	if c.opts.SlaveNetTimeout > 0 {
		conf = append(conf, "slave_net_timeout="+strconv.Itoa(int(c.opts.SlaveNetTimeout.Seconds())))
	}
	conf = append(conf, c.opts.ExtraConfig...)
	if err := os.WriteFile(m.confPath, []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	return m, nil
}

// wire opens member 0 as the primary, points every replica at it and turns
// semi-sync on once they are all attached.
func (c *Cluster) wire(ctx context.Context) error {
	primary := c.Members[0]
	if err := primary.exec(ctx, "SET GLOBAL read_only=OFF"); err != nil {
		return err
	}
	for _, m := range c.Members[1:] {
		if err := m.ReplicateFrom(ctx, primary); err != nil {
			return err
		}
	}
	for _, m := range c.Members[1:] {
		if err := m.WaitReplicating(ctx); err != nil {
			return err
		}
	}
	if len(c.Members) > 1 {
		db, err := primary.DB()
		if err != nil {
			return err
		}
		defer db.Close()
		if _, err := db.ExecContext(ctx, "SET GLOBAL rpl_semi_sync_master_enabled=ON"); err != nil {
			return fmt.Errorf("%s: enable semi-sync: %w", primary.Name, err)
		}
		want := len(c.Members) - 1
		err = poll(ctx, 15*time.Second, func() (bool, error) {
			var name string
			var n int
			if err := db.QueryRowContext(ctx, "SHOW STATUS LIKE 'Rpl_semi_sync_master_clients'").Scan(&name, &n); err != nil {
				return false, err
			}
			return n >= want, nil
		})
		if err != nil {
			return fmt.Errorf("%s: waiting for %d semi-sync replicas: %w", primary.Name, want, err)
		}
	}
	return nil
}

func (m *Member) exec(ctx context.Context, stmts ...string) error {
	db, err := m.DB()
	if err != nil {
		return err
	}
	defer db.Close()
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%s: %s: %w", m.Name, s, err)
		}
	}
	return nil
}

// ReplicateFrom makes m a GTID replica of src (MASTER_USE_GTID=slave_pos) and
// starts it.
func (m *Member) ReplicateFrom(ctx context.Context, src *Member) error {
	db, err := m.DB()
	if err != nil {
		return err
	}
	defer db.Close()
	ssl := ""
	if src.tls {
		ssl = ", MASTER_SSL=1" // a TLS-only source refuses plaintext replicas too
	}
	stmts := []string{
		"STOP SLAVE",
		fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='%s', MASTER_PASSWORD='%s', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=1%s", src.Port, ReplUser, ReplPassword, ssl),
		"START SLAVE",
	}
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%s: %s: %w", m.Name, strings.SplitN(s, " ", 3)[0:2], err)
		}
	}
	return nil
}

// WaitReplicating polls until m's IO and SQL threads both run.
func (m *Member) WaitReplicating(ctx context.Context) error {
	db, err := m.DB()
	if err != nil {
		return err
	}
	defer db.Close()
	var last string
	err = poll(ctx, 15*time.Second, func() (bool, error) {
		st, _, err := ReplicaStatus(ctx, db)
		if err != nil {
			return false, err
		}
		last = fmt.Sprintf("io=%s sql=%v %s", st.IOState, st.SQLRunning, st.Errors())
		return st.IORunning() && st.SQLRunning, nil
	})
	if err != nil {
		return fmt.Errorf("%s: replication not running (%s): %w", m.Name, last, err)
	}
	return nil
}

// ReplicaStatus reads the member's default replication connection through
// the parser the monitor and the arbiters use; ok is false when the server
// is not a replica.
func ReplicaStatus(ctx context.Context, db *sql.DB) (st mariadb.ReplicaStatus, ok bool, err error) {
	all, err := mariadb.ReadReplicaStatus(ctx, db)
	if err != nil {
		return st, false, err
	}
	for _, r := range all {
		if r.Connection == "" {
			return r, true, nil
		}
	}
	return st, false, nil
}

// Addr is the member's TCP address.
func (m *Member) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(m.Port)) }

// DSN is a go-sql-driver DSN for the admin user over the unix socket.
func (m *Member) DSN() string {
	return fmt.Sprintf("%s:%s@unix(%s)/?timeout=5s&readTimeout=30s&writeTimeout=30s&interpolateParams=true", AdminUser, AdminPassword, m.Socket)
}

// DB opens a small admin pool on the member (socket, admin user).
// AppDB opens a pool as the application user (no SUPER: read_only stops
// it), holding no idle connections.
func (m *Member) AppDB() (*sql.DB, error) {
	db, err := sql.Open("mysql", fmt.Sprintf("%s:%s@tcp(%s)/%s", AppUser, AppPassword, m.Addr(), AppDatabase))
	if err != nil {
		return nil, err
	}
	db.SetMaxIdleConns(0)
	return db, nil
}

// Writable lists the running members with read_only=OFF.
func (c *Cluster) Writable(ctx context.Context) []string {
	var out []string
	for _, m := range c.Members {
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

func (m *Member) DB() (*sql.DB, error) {
	db, err := sql.Open("mysql", m.DSN())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(2)
	db.SetConnMaxIdleTime(5 * time.Second)
	return db, nil
}

func (m *Member) start(ctx context.Context) error {
	done, err := m.proc.launch(exec.Command(mariadbdPath(), "--defaults-file="+m.confPath))
	if err != nil {
		return err
	}
	err = poll(ctx, 20*time.Second, func() (bool, error) {
		select {
		case <-done:
			return false, fmt.Errorf("exited during start-up")
		default:
		}
		c, err := net.DialTimeout("unix", m.Socket, time.Second)
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("start %s: %w\n%s", m.Name, err, m.LogTail(3000))
	}
	return nil
}

// Close stops every member and removes the work dir it created.
func (c *Cluster) Close() error {
	stopAll(procs(c.Members))
	if c.ownDir {
		return os.RemoveAll(c.dir)
	}
	return nil
}

// Dir is the cluster's work dir.
func (c *Cluster) Dir() string { return c.dir }

// FreePort returns a free loopback TCP port for a server a test starts.
//
// Ports come from below the kernel's ephemeral range: a port from that
// range can be taken as the source port of any outgoing connection between
// this check and the server binding it, which happened in CI with several
// test binaries running at once. Each port handed out is also claimed with
// an flock on a file in the temp dir, held until this process exits, so
// two test processes never get the same one.
func FreePort() (int, error) {
	lo, hi := 20000, ephemeralLow()
	if hi-lo >= 1000 {
		for range 200 {
			p := lo + rand.IntN(hi-lo)
			if claimPort(p) {
				return p, nil
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

var portClaims struct {
	sync.Mutex
	held map[int]*os.File
}

// claimPort takes port p for this process if no other process holds it and
// it is free to bind now.
func claimPort(p int) bool {
	portClaims.Lock()
	defer portClaims.Unlock()
	if portClaims.held[p] != nil {
		return false
	}
	dir := filepath.Join(os.TempDir(), "dbrouter-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return false
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(p)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return false
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		f.Close()
		return false
	}
	l.Close()
	if portClaims.held == nil {
		portClaims.held = map[int]*os.File{}
	}
	portClaims.held[p] = f // the lock lives as long as the process
	return true
}

// ephemeralLow is the lowest port the kernel picks for outgoing connections.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}

// poll calls f until it reports done, returns an error, or d passes. A false
// result with an error is retried (servers refuse connections while starting);
// only the last error is reported.
func poll(ctx context.Context, d time.Duration, f func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var last error
	for {
		ok, err := f()
		if ok {
			return nil
		}
		if err != nil {
			last = err
			var me *mysql.MySQLError
			if errors.As(err, &me) && me.Number == 1045 { // access denied: retrying cannot help
				return err
			}
			if strings.Contains(err.Error(), "exited during start-up") {
				return err
			}
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
			}
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Poll is the condition-polling helper tests share: it returns nil once f
// reports true, or the last error when d passes.
func Poll(ctx context.Context, d time.Duration, f func() (bool, error)) error { return poll(ctx, d, f) }

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
