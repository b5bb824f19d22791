package mysql_test

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	driver "github.com/go-sql-driver/mysql"

	"github.com/dbrouter/dbrouter/chaos"
	pmysql "github.com/dbrouter/dbrouter/protocol/mysql"
)

// pinnedSessions reads dbrouter_pinned_sessions for reason.
func (e *env) pinnedSessions(t *testing.T, reason string) float64 {
	t.Helper()
	return e.gauge(t, "dbrouter_pinned_sessions", map[string]string{"cluster": "app", "reason": reason})
}

// waitPinned polls until dbrouter_pinned_sessions{reason} is n.
func (e *env) waitPinned(t *testing.T, reason string, n float64) {
	t.Helper()
	err := chaos.Poll(context.Background(), 10*time.Second, func() (bool, error) {
		return e.pinnedSessions(t, reason) == n, nil
	})
	if err != nil {
		t.Fatalf("dbrouter_pinned_sessions{reason=%q} = %v, want %v", reason, e.pinnedSessions(t, reason), n)
	}
}

func openConns(e *env) int {
	n := 0
	for _, c := range e.proxy.MemberConns() {
		n += c.Open
	}
	return n
}

// TestAutocommitOffSessionsAreMultiplexed: a session with autocommit=0
// (the default of every Python DB-API driver) holds a backend connection
// only while the server reports an open transaction. Before, each one kept
// a primary connection for life, and the session after the pool's limit
// got 9006. Its statements go to the primary, its transactions stay on
// one connection until COMMIT, and autocommit=0 goes with it to whichever
// connection it gets next.
func TestAutocommitOffSessionsAreMultiplexed(t *testing.T) {
	const limit = 4
	e := newEnv(t, envOpts{mutate: func(c *pmysql.Config) {
		c.MaxConnsPerMember = limit
		c.PoolTimeout = time.Second
	}})
	ctx := context.Background()
	primaryID := e.cluster.Members[0].ServerID
	db := e.db(t, "")
	mustExec(t, db, "CREATE TABLE ac (id INT PRIMARY KEY)")

	var sessions []*sql.Conn
	for i := 0; i < 5*limit; i++ {
		c := e.conn(t, db)
		mustExec(t, c, "SET autocommit = 0")
		if v := serverID(t, c, "SELECT 1"); v != 1 {
			t.Fatalf("SELECT 1 = %d", v)
		}
		sessions = append(sessions, c)
	}
	if n := e.pinnedSessions(t, "transaction") + e.pinnedSessions(t, "autocommit_off"); n != 0 {
		t.Fatalf("%v sessions pinned after SELECT 1 with autocommit=0", n)
	}

	a, b := sessions[0], sessions[1]
	// A SELECT from a table begins a transaction (autocommit=0): a keeps
	// its connection, on the primary, until COMMIT.
	if n := serverID(t, a, "SELECT COUNT(*) FROM ac"); n != 0 {
		t.Fatalf("ac has %d rows", n)
	}
	e.waitPinned(t, "transaction", 1)
	conn := serverID(t, a, "SELECT CONNECTION_ID()")
	mustExec(t, a, "INSERT INTO ac VALUES (1)")
	for _, c := range sessions[2:] { // other sessions use the other connections meanwhile
		serverID(t, c, "SELECT 1")
	}
	if got := serverID(t, a, "SELECT CONNECTION_ID()"); got != conn {
		t.Fatalf("the transaction moved from connection %d to %d", conn, got)
	}
	if id := serverID(t, a, "SELECT @@server_id"); id != primaryID {
		t.Fatalf("the transaction runs on server %d", id)
	}
	if n := serverID(t, b, "SELECT COUNT(*) FROM ac"); n != 0 {
		t.Fatalf("another session sees %d uncommitted rows", n)
	}
	mustExec(t, b, "COMMIT")
	mustExec(t, a, "COMMIT")
	e.waitPinned(t, "transaction", 0)

	// Between transactions: autocommit=0 replayed, statements on the
	// primary, the row committed.
	var autocommit, server int
	if err := a.QueryRowContext(ctx, "SELECT @@autocommit, @@server_id").Scan(&autocommit, &server); err != nil {
		t.Fatal(err)
	}
	if autocommit != 0 || server != primaryID {
		t.Fatalf("after COMMIT: autocommit=%d on server %d", autocommit, server)
	}
	if n := serverID(t, b, "SELECT COUNT(*) FROM ac"); n != 1 {
		t.Fatalf("after COMMIT another session sees %d rows", n)
	}
	// An uncommitted write of an idle session is not lost by the others'
	// use of the pool: it stays on its connection, and ROLLBACK undoes it.
	mustExec(t, b, "ROLLBACK")
	mustExec(t, a, "INSERT INTO ac VALUES (2)")
	for _, c := range sessions[2:] {
		serverID(t, c, "SELECT 1")
	}
	mustExec(t, a, "ROLLBACK")
	if n := serverID(t, b, "SELECT COUNT(*) FROM ac"); n != 1 {
		t.Fatalf("after ROLLBACK %d rows", n)
	}
	mustExec(t, b, "COMMIT")
	// A failed statement carries no status, and may have opened a
	// transaction (a duplicate key leaves the INSERT's open, with the lock
	// it took): the session keeps its connection until a status says none
	// is open, so no other session lands in that transaction.
	if _, err := a.ExecContext(ctx, "INSERT INTO ac VALUES (1)"); errCode(err) != 1062 {
		t.Fatalf("duplicate INSERT: %v", err)
	}
	e.waitPinned(t, "transaction", 1)
	if n := serverID(t, a, "SELECT @@in_transaction"); n != 1 {
		t.Fatalf("@@in_transaction = %d after the failed INSERT", n)
	}
	mustExec(t, a, "ROLLBACK")
	e.waitPinned(t, "transaction", 0)
	if n := openConns(e); n > limit*len(e.cluster.Members) {
		t.Fatalf("%d backend connections open", n)
	}
}

// TestIdlePyMySQLClientsShareFewBackendConnections: the target —
// 2000 PyMySQL clients with default settings (autocommit off), each having
// run SELECT 1, held with at most 64 backend connections. Before, the 65th
// got 9006. The proxy's memory for them is measured by make bench.
func TestIdlePyMySQLClientsShareFewBackendConnections(t *testing.T) {
	const clients, limit = 2000, 64
	e := newEnv(t, envOpts{mutate: func(c *pmysql.Config) {
		c.MaxConnsPerMember = limit
		c.PoolTimeout = 2 * time.Second
	}})
	_, port, err := net.SplitHostPort(e.addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// Debian's python3-pymysql is for the system interpreter, which a
	// python3 earlier on PATH (pyenv, a venv) may not see.
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", "../../bench/pyidle/idle.py",
		"--port", port, "--user", chaos.AppUser, "--password", chaos.AppPassword, "--database", chaos.AppDatabase, "-n", fmt.Sprint(clients))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("python3 with PyMySQL (apt python3-pymysql, installed by make deps): %v", err)
	}
	defer func() { stdin.Close(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != fmt.Sprintf("held %d", clients) {
		stdin.Close()
		_ = cmd.Wait()
		t.Fatalf("PyMySQL clients: %q, %v: %s", line, err, stderr.String())
	}
	if n := e.proxy.Sessions(); n != clients {
		t.Fatalf("%d sessions, want %d", n, clients)
	}
	conns := e.proxy.MemberConns()
	open := 0
	for _, c := range conns {
		open += c.Open
	}
	t.Logf("%d idle PyMySQL clients: backend connections %v (open, idle) = %d open", clients, conns, open)
	if open > limit {
		t.Fatalf("%d backend connections for %d idle clients, want at most %d", open, clients, limit)
	}
	if n := e.pinnedSessions(t, "transaction") + e.pinnedSessions(t, "autocommit_off"); n != 0 {
		t.Fatalf("%v idle PyMySQL sessions pinned", n)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("PyMySQL clients: %v: %s", err, stderr.String())
	}
	_, _ = io.Copy(io.Discard, stdout)
}

// TestLiteralUserVariablesAreReplayedPerSession: SET @var = <literal> is
// session state the proxy replays, like SET: two sessions with different
// values share one backend connection and each reads back its own. Before,
// each pinned its connection, and the second waited for a free one (9006).
// A variable assigned from a query still pins.
func TestLiteralUserVariablesAreReplayedPerSession(t *testing.T) {
	e := newEnv(t, envOpts{mutate: func(c *pmysql.Config) {
		c.MaxConnsPerMember = 1
		c.PoolTimeout = time.Second
	}})
	ctx := context.Background()
	db := e.db(t, "")
	a, b := e.conn(t, db), e.conn(t, db)
	mustExec(t, a, "SET @tenant = 'a', @n = 1")
	mustExec(t, b, "SET @tenant = 'b'")
	read := func(c *sql.Conn) (tenant string, n sql.NullInt64, conn int) {
		t.Helper()
		if err := c.QueryRowContext(ctx, "SELECT @tenant, @n, CONNECTION_ID()").Scan(&tenant, &n, &conn); err != nil {
			t.Fatal(err)
		}
		return tenant, n, conn
	}
	conns := map[int]bool{}
	for i := 0; i < 3; i++ { // alternate: the connection goes back and forth
		tenant, n, conn := read(a)
		if tenant != "a" || !n.Valid || n.Int64 != 1 {
			t.Fatalf("session a reads @tenant=%q @n=%v", tenant, n)
		}
		conns[conn] = true
		tenant, n, conn = read(b)
		if tenant != "b" || n.Valid {
			t.Fatalf("session b reads @tenant=%q @n=%v", tenant, n)
		}
		conns[conn] = true
	}
	if len(conns) != 1 {
		t.Fatalf("the sessions ran on backend connections %v, want one shared", conns)
	}
	// A later assignment replaces the earlier one.
	mustExec(t, a, "SET @tenant = 'c'")
	if tenant, _, _ := read(a); tenant != "c" {
		t.Fatalf("session a reads @tenant=%q after reassigning it", tenant)
	}
	if tenant, _, _ := read(b); tenant != "b" {
		t.Fatalf("session b reads @tenant=%q", tenant)
	}
	if n := e.pinnedSessions(t, "user_variable"); n != 0 {
		t.Fatalf("%v sessions pinned by literal user variables", n)
	}

	// Assigned from a query: the value lives on that connection only.
	q := e.conn(t, db)
	mustExec(t, q, "SET @q = (SELECT 42)")
	e.waitPinned(t, "user_variable", 1)
	if v := serverID(t, q, "SELECT @q"); v != 42 {
		t.Fatalf("@q = %d", v)
	}
	_, err := a.ExecContext(ctx, "SET @tenant = 'd'")
	if errCode(err) != pmysql.CodePoolTimeout {
		t.Fatalf("a session needing the connection q pins: %v, want 9006", err)
	}
}

// TestPoolLimitComesFromTheMembersMaxConnections: without
// max_connections_per_member the limit is the member's max_connections
// less a tenth and a fixed reserve of 10 (40 → 26), read at the first
// connection. Sessions holding all of them make the next one wait
// pool_timeout and get 9006, which says they are pinned and why.
func TestPoolLimitComesFromTheMembersMaxConnections(t *testing.T) {
	e := newEnv(t, envOpts{members: 2, mutate: func(c *pmysql.Config) {
		c.MaxConnsPerMember = 0
		c.PoolTimeout = 300 * time.Millisecond
	}})
	adminExec(t, e.cluster.Members[0], "SET GLOBAL max_connections = 40")
	t.Cleanup(func() { adminExec(t, e.cluster.Members[0], "SET GLOBAL max_connections = 500") })
	const want = 40 - 4 - 10
	db := e.db(t, "")
	for i := 0; i < want; i++ {
		mustExec(t, e.conn(t, db), "BEGIN")
	}
	if n := e.proxy.MemberConns()["db1"].Open; n != want {
		t.Fatalf("%d connections open to db1, want %d", n, want)
	}
	e.waitPinned(t, "transaction", want)
	start := time.Now()
	_, err := e.conn(t, db).ExecContext(context.Background(), "BEGIN")
	var me *driver.MySQLError
	if !errors.As(err, &me) || me.Number != pmysql.CodePoolTimeout || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("session %d: %v after %v, want 9006 after pool_timeout", want+1, err, time.Since(start))
	}
	for _, s := range []string{fmt.Sprintf("%d connections", want), fmt.Sprintf("%d sessions pin", want), fmt.Sprintf("transaction %d", want)} {
		if !strings.Contains(me.Message, s) {
			t.Errorf("9006 message %q does not say %q", me.Message, s)
		}
	}
}

// TestPinnedSessionsAreCountedByReason: dbrouter_pinned_sessions follows
// each session's pins as they change, and a session waiting for a
// connection all pinned sessions hold is told who holds them.
func TestPinnedSessionsAreCountedByReason(t *testing.T) {
	e := newEnv(t, envOpts{members: 2, mutate: func(c *pmysql.Config) {
		c.MaxConnsPerMember = 3
		c.PoolTimeout = 300 * time.Millisecond
	}})
	ctx := context.Background()
	db := e.db(t, "")
	mustExec(t, db, "CREATE TABLE pinned (id INT PRIMARY KEY)")
	txn, tmp, uvar, other := e.conn(t, db), e.conn(t, db), e.conn(t, db), e.conn(t, db)
	mustExec(t, txn, "BEGIN")
	mustExec(t, tmp, "CREATE TEMPORARY TABLE scratch (x INT)")
	mustExec(t, uvar, "SET @q = (SELECT 1)")
	for reason, n := range map[string]float64{"transaction": 1, "temporary_table": 1, "user_variable": 1, "autocommit_off": 0, "lock_tables": 0} {
		e.waitPinned(t, reason, n)
	}
	_, err := other.ExecContext(ctx, "INSERT INTO pinned VALUES (1)")
	var me *driver.MySQLError
	if !errors.As(err, &me) || me.Number != pmysql.CodePoolTimeout {
		t.Fatalf("a fourth session: %v, want 9006", err)
	}
	for _, s := range []string{"3 sessions pin", "transaction 1", "temporary table 1", "user variable 1"} {
		if !strings.Contains(me.Message, s) {
			t.Errorf("9006 message %q does not say %q", me.Message, s)
		}
	}
	mustExec(t, txn, "COMMIT")
	e.waitPinned(t, "transaction", 0)
	mustExec(t, other, "INSERT INTO pinned VALUES (1)")
	tmp.Close()
	e.waitPinned(t, "temporary_table", 0)
	mustExec(t, uvar, "SELECT 1")
	e.waitPinned(t, "user_variable", 1)
}
