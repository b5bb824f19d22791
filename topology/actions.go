package topology

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
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
	// test link in front of it), like MemberConfig.Dial for probes.
	Dial func(addr string) string
}

// Position is what a promotion needs to know of a member.
type Position struct {
	ReadOnly   bool
	BinlogPos  string // @@gtid_binlog_pos
	CurrentPos string // @@gtid_current_pos
	SlavePos   string // @@gtid_slave_pos
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
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = a.User, a.Password, "tcp", addr
	if a.Dial != nil {
		cfg.Addr = a.Dial(addr)
	}
	to := a.Timeout
	if to <= 0 {
		to = 5 * time.Second
	}
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = to, to, to
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

// redact keeps passwords out of error messages.
func redact(s string) string {
	if i := strings.Index(s, "MASTER_PASSWORD="); i >= 0 {
		j := strings.Index(s[i:], ",")
		if j < 0 {
			return s[:i] + "MASTER_PASSWORD=<secret>"
		}
		return s[:i] + "MASTER_PASSWORD=<secret>" + s[i+j:]
	}
	return s
}

// Position reads a member's GTID state.
func (a *Actions) Position(ctx context.Context, addr string) (Position, error) {
	c, done, err := a.open(ctx, addr)
	if err != nil {
		return Position{}, err
	}
	defer done()
	var p Position
	var ro int
	if err := c.QueryRowContext(ctx, "SELECT @@read_only, @@gtid_binlog_pos, @@gtid_current_pos, @@gtid_slave_pos").
		Scan(&ro, &p.BinlogPos, &p.CurrentPos, &p.SlavePos); err != nil {
		return p, fmt.Errorf("%s: read gtid state: %w", addr, err)
	}
	p.ReadOnly = ro == 1
	st, err := slaveStatus(ctx, c)
	if err != nil {
		return p, fmt.Errorf("%s: %w", addr, err)
	}
	p.IOPos = st["Gtid_IO_Pos"]
	p.IORunning = st["Slave_IO_Running"] == "Yes"
	p.SQLRunning = st["Slave_SQL_Running"] == "Yes"
	if st["Master_Host"] != "" {
		p.Source = net.JoinHostPort(st["Master_Host"], st["Master_Port"])
	}
	fmt.Sscan(st["Last_IO_Errno"], &p.LastIOErr)
	p.LastErr = strings.TrimSpace(st["Last_IO_Error"] + " " + st["Last_SQL_Error"])
	return p, nil
}

func slaveStatus(ctx context.Context, c *sql.Conn) (map[string]string, error) {
	rows, err := c.QueryContext(ctx, "SHOW SLAVE STATUS")
	if err != nil {
		return nil, fmt.Errorf("show slave status: %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	if rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		for i, col := range cols {
			out[col] = vals[i].String
		}
	}
	return out, rows.Err()
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

// WaitApplied waits until the member has applied pos (MASTER_GTID_WAIT).
func (a *Actions) WaitApplied(ctx context.Context, addr, pos string, d time.Duration) error {
	if pos == "" {
		return nil
	}
	c, done, err := a.open(ctx, addr)
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

// Detach stops replication on the member and forgets its source. It stays
// read-only: opening is a separate step, taken only after the lease wait.
func (a *Actions) Detach(ctx context.Context, addr string) error {
	c, done, err := a.open(ctx, addr)
	if err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	defer done()
	return exec(ctx, c, addr, "STOP ALL SLAVES", "RESET SLAVE ALL")
}

// StopReplication stops the member's replication threads. On a replica of a
// hung primary this takes seconds (the IO thread is stuck connecting), so a
// failover does it for all replicas at once, early.
func (a *Actions) StopReplication(ctx context.Context, addr string) error {
	c, done, err := a.open(ctx, addr)
	if err != nil {
		return fmt.Errorf("stop replication: %w", err)
	}
	defer done()
	return exec(ctx, c, addr, "STOP ALL SLAVES")
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
	return exec(ctx, c, addr,
		"SET GLOBAL read_only=ON",
		"STOP ALL SLAVES",
		"RESET SLAVE ALL",
		"SET GLOBAL gtid_slave_pos=@@gtid_binlog_pos",
		"SET GLOBAL rpl_semi_sync_master_enabled=OFF",
		"SET GLOBAL rpl_semi_sync_slave_enabled=ON",
		fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='%s', MASTER_PORT=%s, MASTER_USER='%s', MASTER_PASSWORD='%s', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=1",
			sqlQuote(host), port, sqlQuote(a.ReplUser), sqlQuote(a.ReplPassword)),
		"START SLAVE")
}

func sqlQuote(s string) string {
	return strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s)
}
