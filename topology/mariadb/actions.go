package mariadb

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/dbrouter/dbrouter/topology"
)

// Actions runs the MariaDB administrative steps of a primary change on one
// cluster's members: fence, detach, open, repoint. Each step is idempotent,
// so a new Raft leader can repeat the steps of a change its predecessor left
// half done. It opens one short-lived connection per call: the targets are
// the members that are failing, and a pooled connection to a dead server is
// the last thing a failover needs.
type Actions struct {
	User, Password         string
	ReplUser, ReplPassword string
	// Timeout bounds each step that has no deadline of its own.
	Timeout time.Duration
	// Dial, when set, maps a member's address to the one to connect to (a
	// test link in front of it), like topology.MemberConfig.Dial for probes.
	Dial func(addr string) string
	// HeartbeatPeriod is the MASTER_HEARTBEAT_PERIOD a repointed replica
	// gets (default 500 ms): an idle source still sends something that
	// often, which is how the arbiters tell a quiet primary from a hung one.
	// Keep it well under failure_threshold.
	HeartbeatPeriod time.Duration
	// TLS, when set, is the client side of every step's connection
	// (config member_tls), with no plaintext fallback; Repoint then also
	// has the replica connect to its source over TLS (MASTER_SSL=1), since
	// a member that refuses plaintext clients refuses plaintext replicas.
	TLS *tls.Config
}

// DefaultHeartbeatPeriod is Actions.HeartbeatPeriod's default.
const DefaultHeartbeatPeriod = 500 * time.Millisecond

// heartbeatPeriod is the period to configure on a replica whose
// slave_net_timeout is netTimeout seconds: MariaDB wants it below that (a
// replica that hears nothing for slave_net_timeout reconnects).
func (a *Actions) heartbeatPeriod(netTimeout float64) string {
	p := a.HeartbeatPeriod
	if p <= 0 {
		p = DefaultHeartbeatPeriod
	}
	if lim := time.Duration(netTimeout / 2 * float64(time.Second)); netTimeout > 0 && p > lim {
		p = lim
	}
	return fmt.Sprintf("%.3f", max(p, time.Millisecond).Seconds())
}

// ServerState is what a promotion needs to know of a member: a fresh
// observation of it alone, read when a decision needs it (Actions.Position).
type ServerState struct {
	ServerID   uint32
	ReadOnly   bool
	BinlogPos  string // @@gtid_binlog_pos
	CurrentPos string // @@gtid_current_pos
	SlavePos   string // @@gtid_slave_pos
	// Replica is the default replication connection (zero when Replicating
	// is false: not configured as a replica).
	Replica     ReplicaStatus
	Replicating bool
	// IOPos is the replica's received position (Gtid_IO_Pos): what it has in
	// its relay log, applied or not. Empty on a server that is not a replica.
	IOPos      string
	IORunning  bool
	SQLRunning bool
	Source     string
	LastIOErr  int
	LastErr    string
}

func (a *Actions) open(ctx context.Context, addr string) (*sql.Conn, func(), error) {
	return a.openFor(ctx, addr, 0)
}

// openFor opens a connection whose reads may take wait longer than a
// step's timeout: a statement that waits on the server (MASTER_GTID_WAIT)
// must not be cut by the connection's read deadline.
func (a *Actions) openFor(ctx context.Context, addr string, wait time.Duration) (*sql.Conn, func(), error) {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = a.User, a.Password, "tcp", addr
	if a.Dial != nil {
		cfg.Addr = a.Dial(addr)
	}
	to := a.Timeout
	if to <= 0 {
		to = 5 * time.Second
	}
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = to, to+wait, to
	cfg.TLS = topology.MemberTLS(a.TLS, addr)
	// A known sql_mode, so that sqlQuote's literals mean the same on
	// every member (with the default mode a backslash escapes; under
	// NO_BACKSLASH_ESCAPES it does not): the admin statements use no
	// other mode-dependent syntax.
	cfg.Params = map[string]string{"sql_mode": "'NO_BACKSLASH_ESCAPES'"}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, nil, err
	}
	db := sql.OpenDB(conn)
	db.SetMaxIdleConns(0)
	c, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("connect %s: %w", addr, err)
	}
	return c, func() { c.Close(); db.Close() }, nil
}

func exec(ctx context.Context, c *sql.Conn, addr string, stmts ...string) error {
	for _, s := range stmts {
		if _, err := c.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%s: %s: %w", addr, redact(s), err)
		}
	}
	return nil
}

// redact keeps passwords out of error messages: the string literal after
// MASTER_PASSWORD= (quoted by sqlQuote: a quote inside is doubled), whatever
// characters it holds (commas, quotes, backslashes).
func redact(s string) string {
	const key = "MASTER_PASSWORD='"
	i := strings.Index(s, key)
	if i < 0 {
		return s
	}
	j := i + len(key)
	for j < len(s) {
		if s[j] == '\'' {
			if j+1 < len(s) && s[j+1] == '\'' {
				j += 2
				continue
			}
			return s[:i] + "MASTER_PASSWORD=<secret>" + s[j+1:]
		}
		j++
	}
	return s[:i] + "MASTER_PASSWORD=<secret>" // unterminated: hide the rest
}

// Position reads a member's GTID state.
func (a *Actions) Position(ctx context.Context, addr string) (ServerState, error) {
	c, done, err := a.open(ctx, addr)
	if err != nil {
		return ServerState{}, err
	}
	defer done()
	return readPosition(ctx, c, addr)
}

func readPosition(ctx context.Context, c *sql.Conn, addr string) (ServerState, error) {
	var p ServerState
	var ro int
	if err := c.QueryRowContext(ctx, "SELECT @@server_id, @@read_only, @@gtid_binlog_pos, @@gtid_current_pos, @@gtid_slave_pos").
		Scan(&p.ServerID, &ro, &p.BinlogPos, &p.CurrentPos, &p.SlavePos); err != nil {
		return p, fmt.Errorf("%s: read gtid state: %w", addr, err)
	}
	p.ReadOnly = ro == 1
	all, err := ReadReplicaStatus(ctx, c)
	if err != nil {
		return p, fmt.Errorf("%s: %w", addr, err)
	}
	for _, r := range all {
		if r.Connection == "" {
			p.Replica, p.Replicating = r, true
		}
	}
	r := p.Replica
	p.IOPos, p.IORunning, p.SQLRunning = r.GTIDIOPos, r.IORunning(), r.SQLRunning
	p.Source, p.LastIOErr, p.LastErr = r.Source(), r.LastIOErrno, r.Errors()
	return p, nil
}

// Fence stops a member taking writes: read_only=ON (which also waits for
// commits in progress), then kills every client connection but replication
// and this one, so no session that was already past the read_only check can
// write, and every proxy's pooled connection is dropped.
func (a *Actions) Fence(ctx context.Context, addr string) error {
	c, done, err := a.open(ctx, addr)
	if err != nil {
		return fmt.Errorf("fence: %w", err)
	}
	defer done()
	if err := exec(ctx, c, addr, "SET GLOBAL read_only=ON"); err != nil {
		return fmt.Errorf("fence: %w", err)
	}
	return a.killClients(ctx, c, addr)
}

func (a *Actions) killClients(ctx context.Context, c *sql.Conn, addr string) error {
	rows, err := c.QueryContext(ctx, `SELECT ID FROM information_schema.PROCESSLIST
		WHERE ID <> CONNECTION_ID() AND USER NOT IN ('system user', 'event_scheduler', ?)
		AND COMMAND NOT IN ('Binlog Dump', 'Binlog Dump GTID', 'Daemon')`, a.User)
	if err != nil {
		return fmt.Errorf("%s: list clients: %w", addr, err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	rows.Close()
	for _, id := range ids {
		if _, err := c.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION %d", id)); err != nil {
			var me *mysql.MySQLError
			if errors.As(err, &me) && me.Number == 1094 { // unknown thread: gone already
				continue
			}
			return fmt.Errorf("%s: kill %d: %w", addr, id, err)
		}
	}
	return nil
}

// ActiveTransactions counts open InnoDB transactions of client sessions.
func (a *Actions) ActiveTransactions(ctx context.Context, addr string) (int, error) {
	c, done, err := a.open(ctx, addr)
	if err != nil {
		return 0, err
	}
	defer done()
	var n int
	err = c.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.INNODB_TRX t
		JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id
		WHERE p.USER NOT IN ('system user', ?)`, a.User).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("%s: count transactions: %w", addr, err)
	}
	return n, nil
}

// WaitApplied waits until the member has applied pos (MASTER_GTID_WAIT), for
// up to d: the whole of d, whatever the step timeout.
func (a *Actions) WaitApplied(ctx context.Context, addr, pos string, d time.Duration) error {
	if pos == "" {
		return nil
	}
	c, done, err := a.openFor(ctx, addr, d)
	if err != nil {
		return err
	}
	defer done()
	var r sql.NullInt64
	if err := c.QueryRowContext(ctx, "SELECT MASTER_GTID_WAIT(?, ?)", pos, d.Seconds()).Scan(&r); err != nil {
		return fmt.Errorf("%s: wait for %s: %w", addr, pos, err)
	}
	if !r.Valid || r.Int64 != 0 {
		return fmt.Errorf("%s: had not applied %s after %s", addr, pos, d)
	}
	return nil
}

// StartApplier starts the member's SQL thread, so its relay log is applied
// even if someone stopped it: a failover candidate's relay log may hold the
// only copy of acknowledged commits. The IO thread is left as it is.
//
// With both threads stopped, a plain START SLAVE SQL_THREAD is what must
// not be done: in GTID mode MariaDB then discards the relay log (it
// expects to fetch it again from the source, which is the dead primary).
// Switching the connection to file positions at the SQL thread's place in
// the relay log keeps it, and the applier goes on from there.
func (a *Actions) StartApplier(ctx context.Context, addr string) error {
	c, done, err := a.open(ctx, addr)
	if err != nil {
		return fmt.Errorf("start applier: %w", err)
	}
	defer done()
	p, err := readPosition(ctx, c, addr)
	if err != nil {
		return fmt.Errorf("start applier: %w", err)
	}
	switch r := p.Replica; {
	case !p.Replicating || p.SQLRunning:
		return nil
	case r.IOState != "No": // connected, or still trying to connect
		return exec(ctx, c, addr, "START SLAVE SQL_THREAD")
	default:
		return exec(ctx, c, addr,
			fmt.Sprintf("CHANGE MASTER TO MASTER_USE_GTID=no, RELAY_LOG_FILE='%s', RELAY_LOG_POS=%d", sqlQuote(r.RelayLogFile), r.RelayLogPos),
			"START SLAVE SQL_THREAD")
	}
}

// Detach stops replication on the member and forgets its source. It stays
// read-only: opening is a separate step, taken only after the lease wait.
func (a *Actions) Detach(ctx context.Context, addr string) error {
	c, done, err := a.open(ctx, addr)
	if err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	defer done()
	return exec(ctx, c, addr, append(quickStop("STOP ALL SLAVES"), "RESET SLAVE ALL")...)
}

// StopReplication stops the member's replication threads (IOOnly: just
// the IO thread, so the relay log goes on being applied). On a semi-sync
// replica of a hung primary the IO thread's stop connects to the primary
// to kill its dump thread and waits rpl_semi_sync_slave_kill_conn_timeout
// for that (2 s with the default 5); a failover does it for all replicas
// at once, early, with that timeout at its 1 s minimum for the stop.
func (a *Actions) StopReplication(ctx context.Context, addr string, ioOnly bool) error {
	c, done, err := a.open(ctx, addr)
	if err != nil {
		return fmt.Errorf("stop replication: %w", err)
	}
	defer done()
	stop := "STOP ALL SLAVES"
	if ioOnly {
		stop = "STOP SLAVE IO_THREAD"
	}
	return exec(ctx, c, addr, quickStop(stop)...)
}

// quickStop wraps a STOP SLAVE statement so a semi-sync replica of a hung
// source gives up killing its dump thread there after 1 s, not the
// configured rpl_semi_sync_slave_kill_conn_timeout (restored after).
func quickStop(stop string) []string {
	return []string{
		"SET @dbrouter_kill_timeout = @@GLOBAL.rpl_semi_sync_slave_kill_conn_timeout",
		"SET GLOBAL rpl_semi_sync_slave_kill_conn_timeout = 1",
		stop,
		"SET GLOBAL rpl_semi_sync_slave_kill_conn_timeout = @dbrouter_kill_timeout",
	}
}

// Open makes the member the writable primary: semi-sync as a source, then
// read_only=OFF.
func (a *Actions) Open(ctx context.Context, addr string) error {
	c, done, err := a.open(ctx, addr)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer done()
	return exec(ctx, c, addr,
		"SET GLOBAL rpl_semi_sync_slave_enabled=OFF",
		"SET GLOBAL rpl_semi_sync_master_enabled=ON",
		"SET GLOBAL read_only=OFF")
}

// Repoint makes the member a read-only GTID replica of source. Its
// replication position is set from its own binlog (log_slave_updates keeps
// every applied transaction there), which is right for a replica and for a
// returning primary whose gtid_slave_pos predates its time as primary.
func (a *Actions) Repoint(ctx context.Context, addr, source string) error {
	host, port, err := net.SplitHostPort(source)
	if err != nil {
		return fmt.Errorf("repoint %s: source %q: %w", addr, source, err)
	}
	c, done, err := a.open(ctx, addr)
	if err != nil {
		return fmt.Errorf("repoint: %w", err)
	}
	defer done()
	var netTimeout float64
	if err := c.QueryRowContext(ctx, "SELECT @@slave_net_timeout").Scan(&netTimeout); err != nil {
		return fmt.Errorf("repoint %s: read slave_net_timeout: %w", addr, err)
	}
	ssl := ""
	if a.TLS != nil {
		// Encrypted; the replica verifies its source only as its own
		// settings say (MASTER_SSL_CA, MASTER_SSL_VERIFY_SERVER_CERT are
		// paths on its host, which the arbiters do not know).
		ssl = ", MASTER_SSL=1"
	}
	stmts := append([]string{"SET GLOBAL read_only=ON"}, quickStop("STOP ALL SLAVES")...)
	return exec(ctx, c, addr, append(stmts,
		"RESET SLAVE ALL",
		"SET GLOBAL gtid_slave_pos=@@gtid_binlog_pos",
		"SET GLOBAL rpl_semi_sync_master_enabled=OFF",
		"SET GLOBAL rpl_semi_sync_slave_enabled=ON",
		fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='%s', MASTER_PORT=%s, MASTER_USER='%s', MASTER_PASSWORD='%s', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=%s%s",
			sqlQuote(host), port, sqlQuote(a.ReplUser), sqlQuote(a.ReplPassword), a.heartbeatPeriod(netTimeout), ssl),
		"START SLAVE")...)
}

// ErrNotNow: the step would be unsafe at this moment; try again later.
var ErrNotNow = errors.New("not now")

// SetHeartbeatPeriod gives a replica the configured heartbeat period
// without touching its position (a replica set up by hand keeps MariaDB's
// default, slave_net_timeout/2, which hides a hung source for that long).
// It returns ErrNotNow while the relay log holds unapplied transactions.
func (a *Actions) SetHeartbeatPeriod(ctx context.Context, addr string) error {
	c, done, err := a.open(ctx, addr)
	if err != nil {
		return fmt.Errorf("set heartbeat period: %w", err)
	}
	defer done()
	var netTimeout float64
	if err := c.QueryRowContext(ctx, "SELECT @@slave_net_timeout").Scan(&netTimeout); err != nil {
		return fmt.Errorf("set heartbeat period on %s: read slave_net_timeout: %w", addr, err)
	}
	p, err := readPosition(ctx, c, addr)
	if err != nil {
		return err
	}
	if !p.IORunning || !p.SQLRunning {
		return nil // someone stopped its threads: not ours to restart
	}
	if p.IOPos != p.SlavePos {
		// STOP SLAVE then START SLAVE in GTID mode discards the relay log
		// and fetches it again: not while it holds anything unapplied (the
		// source might not be there to send it again).
		return fmt.Errorf("%s: %w: relay log not applied yet", addr, ErrNotNow)
	}
	return exec(ctx, c, addr,
		"STOP SLAVE",
		"CHANGE MASTER TO MASTER_HEARTBEAT_PERIOD="+a.heartbeatPeriod(netTimeout),
		"START SLAVE")
}

// sqlQuote makes s the inside of a '...' literal on an admin connection,
// whose sql_mode is NO_BACKSLASH_ESCAPES (openFor): a quote is doubled and
// every other byte, the backslash included, stands for itself, whatever
// the member's global sql_mode is.
func sqlQuote(s string) string {
	return strings.ReplaceAll(s, `'`, `''`)
}
