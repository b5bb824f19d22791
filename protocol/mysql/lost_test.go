package mysql_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	driver "github.com/go-sql-driver/mysql"

	"github.com/dbrouter/dbrouter/chaos"
	pmysql "github.com/dbrouter/dbrouter/protocol/mysql"
)

// TestLostConnectionSaysWhatTheStatementMayHaveDone: when the connection to
// the primary is lost after a statement was sent, the client is told what
// it needs to decide what to do next. A statement that may have committed
// (an autocommit write, a COMMIT) is "outcome unknown" (9010, HY000: not
// the 08S01 drivers retry as transient, which would duplicate a COMMIT that
// did apply); a statement inside a transaction took the transaction with it
// (9011, 40001: retry the whole transaction). Either way the session goes on.
func TestLostConnectionSaysWhatTheStatementMayHaveDone(t *testing.T) {
	// A long semi-sync timeout: the in-doubt COMMIT must still be waiting
	// for its acknowledgement when the link is cut, and a loaded machine
	// must not make the primary fall back to async first.
	e, _ := authEnv(t, envOpts{remote: map[int]time.Duration{0: 0}, semiSync: 30 * time.Second})
	link := e.links[0]
	db1, db2 := e.cluster.Members[0], e.cluster.Members[1]
	db := e.db(t, "")
	ctx := context.Background()
	mustExec(t, db, "CREATE TABLE lc (id INT PRIMARY KEY)")
	for _, tc := range []struct {
		name     string
		setup    []string
		stmt     string
		state    string // the statement's PROCESSLIST state while it waits on db1
		before   func() // the fault that makes it wait (besides SLEEP)
		after    func()
		code     uint16
		sqlState string
		msg      string
	}{
		{name: "AutocommitWrite", stmt: "INSERT INTO lc SELECT 1 FROM DUAL WHERE SLEEP(3) = 0", state: "User sleep",
			code: pmysql.CodeOutcomeUnknown, sqlState: "HY000",
			msg: "outcome unknown: the connection to the primary db1 was lost after the statement was sent"},
		{name: "StatementInATransaction", setup: []string{"BEGIN", "INSERT INTO lc VALUES (10)"},
			stmt: "INSERT INTO lc SELECT 11 FROM DUAL WHERE SLEEP(3) = 0", state: "User sleep",
			code: pmysql.CodeTxnLost, sqlState: "40001", msg: "transaction lost: the connection to db1 was lost"},
		{name: "WriteWithAutocommitOff", setup: []string{"SET autocommit = 0"},
			stmt: "INSERT INTO lc SELECT 21 FROM DUAL WHERE SLEEP(3) = 0", state: "User sleep",
			code: pmysql.CodeTxnLost, sqlState: "40001", msg: "transaction lost: the connection to db1 was lost"},
		// The case: a COMMIT in doubt. db1 waits for a semi-sync
		// acknowledgement that does not come while db2 does not replicate.
		{name: "CommitInDoubt", setup: []string{"BEGIN", "INSERT INTO lc VALUES (30)"}, stmt: "COMMIT", state: "%semi-sync%",
			before: func() { semiSyncOn(t, db1); adminExec(t, db2, "STOP SLAVE") }, after: func() { adminExec(t, db2, "START SLAVE") },
			code: pmysql.CodeOutcomeUnknown, sqlState: "HY000",
			msg: "outcome unknown: the connection to the primary db1 was lost after the statement was sent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.conn(t, db)
			for _, q := range tc.setup {
				mustExec(t, c, q)
			}
			if tc.before != nil {
				tc.before()
			}

			done := make(chan error, 1)
			go func() {
				_, err := c.ExecContext(ctx, tc.stmt)
				done <- err
			}()
			err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
				return count(t, db1, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE LIKE ? AND INFO = ?", tc.state, tc.stmt) > 0, nil
			})
			if err != nil {
				t.Fatalf("%s never waited on db1 in state %s", tc.stmt, tc.state)
			}
			link.Cut()
			err = <-done
			if err := link.Restore(); err != nil {
				t.Fatal(err)
			}
			if tc.after != nil {
				tc.after() // before the session's next write waits on it
			}
			var me *driver.MySQLError
			if !errors.As(err, &me) || me.Number != tc.code || string(me.SQLState[:]) != tc.sqlState || !strings.Contains(me.Message, tc.msg) {
				t.Fatalf("%s, connection lost: %v; want %d (%s) %q", tc.stmt, err, tc.code, tc.sqlState, tc.msg)
			}
			if _, err := c.ExecContext(ctx, "INSERT INTO lc VALUES (100 + CONNECTION_ID() % 100000)"); err != nil {
				t.Fatalf("the session after the error: %v", err)
			}
		})
	}
}

// semiSyncOn waits until m, the primary, runs semi-sync (not fallen back to
// async after an earlier wait timed out on a busy machine): only then does
// a COMMIT wait for a replica's acknowledgement.
func semiSyncOn(t *testing.T, m *chaos.Member) {
	t.Helper()
	adminExec(t, m, "CREATE TABLE IF NOT EXISTS app.semi (id INT PRIMARY KEY)", "REPLACE INTO app.semi VALUES (1)")
	err := chaos.Poll(context.Background(), 15*time.Second, func() (bool, error) {
		return count(t, m, "SELECT COUNT(*) FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_STATUS' AND VARIABLE_VALUE = 'ON'") == 1, nil
	})
	if err != nil {
		t.Fatalf("%s never back on semi-sync: %v", m.Name, err)
	}
}

// TestWritesSkipPooledConnectionsTheMemberClosed: a write is not sent on a
// pooled connection the member closed while it sat idle (a KILL, a
// restart, wait_timeout), even one used moments ago: it goes out on
// another connection instead of ending with an unknown outcome.
func TestWritesSkipPooledConnectionsTheMemberClosed(t *testing.T) {
	e, _ := authEnv(t, envOpts{})
	db1 := e.cluster.Members[0]
	db := e.db(t, "")
	ctx := context.Background()
	mustExec(t, db, "CREATE TABLE wk (id INT PRIMARY KEY)")
	for round := 0; round < 3; round++ {
		var wg sync.WaitGroup
		for i := 0; i < 4; i++ { // leave several connections idle in the pool
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := db.ExecContext(ctx, "INSERT INTO wk SELECT ? FROM DUAL WHERE SLEEP(0.1) = 0", round*10+i); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		killed := killIdleProxyConns(t, db1)
		if killed == 0 {
			t.Fatal("no idle proxy connection on db1")
		}
		for i := 0; i < 4; i++ {
			if _, err := db.ExecContext(ctx, "INSERT INTO wk VALUES (?)", 1000+round*10+i); err != nil {
				t.Fatalf("round %d: write after the member closed %d idle connections: %v", round, killed, err)
			}
		}
	}
}
