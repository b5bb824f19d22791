package mysql_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	driver "github.com/go-sql-driver/mysql"

	"github.com/dbrouter/dbrouter/chaos"
	pmysql "github.com/dbrouter/dbrouter/protocol/mysql"
)

// TestAutocommitOffWriterSeesNoErrorInASwitchover reproduces the issue: a
// writer on autocommit=0 (PyMySQL's default) got error 1290 (read-only)
// from the old primary during a promote that gave other clients no error.
// Between its transactions it is held like any other session and moves to
// the new primary with autocommit=0; its transaction in progress when the
// switchover begins finishes on the old primary (the drain).
func TestAutocommitOffWriterSeesNoErrorInASwitchover(t *testing.T) {
	e, auth := authEnv(t, envOpts{})
	db1, db2 := e.cluster.Members[0], e.cluster.Members[1]
	db := e.db(t, "")
	ctx := context.Background()
	mustExec(t, db, "CREATE TABLE ac0 (id INT PRIMARY KEY)")
	w := e.conn(t, db)
	mustExec(t, w, "SET autocommit = 0")
	var mu sync.Mutex
	var committed []int
	var werr error
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := w.ExecContext(ctx, fmt.Sprintf("INSERT INTO ac0 VALUES (%d)", i)); err != nil {
				werr = fmt.Errorf("INSERT %d: %w", i, err)
				return
			}
			if _, err := w.ExecContext(ctx, "COMMIT"); err != nil {
				werr = fmt.Errorf("COMMIT of %d: %w", i, err)
				return
			}
			mu.Lock()
			committed = append(committed, i)
			mu.Unlock()
		}
	}()
	commits := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(committed)
	}
	waitCommits := func(n int) {
		t.Helper()
		err := chaos.Poll(ctx, 20*time.Second, func() (bool, error) {
			select {
			case <-done:
				return false, fmt.Errorf("the writer stopped: %v", werr)
			default:
			}
			return commits() >= n, nil
		})
		if err != nil {
			t.Fatalf("%d commits, want %d: %v", commits(), n, err)
		}
	}
	waitCommits(5)

	auth.switching("db2")
	// The drain: the writer's open transaction finishes on db1 and its next
	// one is held. Seen twice in a row: nothing in flight to db1, no open
	// transaction there.
	quiet := 0
	err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
		if e.proxy.InFlight()["db1"] == 0 && count(t, db1, "SELECT COUNT(*) FROM information_schema.INNODB_TRX") == 0 {
			quiet++
		} else {
			quiet = 0
		}
		return quiet >= 2, nil
	})
	if err != nil {
		t.Fatalf("db1 never drained: %v (writer: %v)", err, werr)
	}
	fence(t, db1)
	catchUp(t, db1, db2)
	promote(t, db2)
	before := commits()
	auth.serve()
	waitCommits(before + 5)
	close(stop)
	<-done
	if werr != nil {
		t.Fatalf("the autocommit=0 writer got an error: %v", werr)
	}
	mu.Lock()
	defer mu.Unlock()
	if n := count(t, db2, "SELECT COUNT(*) FROM app.ac0"); n != len(committed) {
		t.Fatalf("db2 has %d rows, the writer committed %d", n, len(committed))
	}
	last := committed[len(committed)-1]
	if n := count(t, db1, "SELECT COUNT(*) FROM app.ac0 WHERE id = ?", last); n != 0 {
		t.Fatalf("row %d, committed after the switchover, is on the old primary", last)
	}
}

// TestPinnedSessionsLeaveTheOldPrimary: after the primary changed, a pinned
// session's next statement never runs on the old primary. One whose
// server-side state went with it (an open transaction, temporary tables)
// is told so (9011, SQLSTATE 40001) and goes on on the new primary; one
// pinned only by autocommit=0 between transactions just moves, keeping
// autocommit=0. Whether the proxy learnt of the change and reset the old
// connections already, did not yet, or the change was a switchover.
func TestPinnedSessionsLeaveTheOldPrimary(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, e *env, auth *fakeAuthority)
	}{
		{"Failover", func(t *testing.T, e *env, auth *fakeAuthority) {
			catchUp(t, e.cluster.Members[0], e.cluster.Members[1])
			promote(t, e.cluster.Members[1])
			auth.failover("db2", true)
			fence(t, e.cluster.Members[0])
		}},
		{"FailoverTheProxyHasNotActedOnYet", func(t *testing.T, e *env, auth *fakeAuthority) {
			catchUp(t, e.cluster.Members[0], e.cluster.Members[1])
			promote(t, e.cluster.Members[1])
			auth.failover("db2", false)
			fence(t, e.cluster.Members[0])
		}},
		{"CompletedSwitchover", func(t *testing.T, e *env, auth *fakeAuthority) {
			auth.switching("db2")
			fence(t, e.cluster.Members[0])
			catchUp(t, e.cluster.Members[0], e.cluster.Members[1])
			promote(t, e.cluster.Members[1])
			auth.serve()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, auth := authEnv(t, envOpts{})
			db1, db2 := e.cluster.Members[0], e.cluster.Members[1]
			db := e.db(t, "")
			ctx := context.Background()
			mustExec(t, db, "CREATE TABLE pin (id INT PRIMARY KEY)")

			txn := e.conn(t, db)
			mustExec(t, txn, "BEGIN")
			mustExec(t, txn, "INSERT INTO pin VALUES (1)")
			ac0 := e.conn(t, db)
			mustExec(t, ac0, "SET autocommit = 0")
			mustExec(t, ac0, "INSERT INTO pin VALUES (2)")
			mustExec(t, ac0, "COMMIT")
			tmp := e.conn(t, db)
			mustExec(t, tmp, "CREATE TEMPORARY TABLE scratch (x INT)")

			tc.change(t, e, auth)

			lost := func(c *sql.Conn, q string) {
				t.Helper()
				_, err := c.ExecContext(ctx, q)
				var me *driver.MySQLError
				if !errors.As(err, &me) || me.Number != pmysql.CodeTxnLost || string(me.SQLState[:]) != "40001" ||
					!strings.Contains(me.Message, "transaction lost: the primary changed from db1") {
					t.Fatalf("%s after the primary changed: %v, want %d (40001) transaction lost", q, err, pmysql.CodeTxnLost)
				}
			}
			lost(txn, "INSERT INTO pin VALUES (3)")
			mustExec(t, txn, "INSERT INTO pin VALUES (4)")
			if id := serverID(t, txn, "SELECT /* dbrouter:primary */ @@server_id"); id != db2.ServerID {
				t.Fatalf("the session after the lost transaction runs on server %d", id)
			}

			mustExec(t, ac0, "INSERT INTO pin VALUES (5)")
			var autocommit, server int
			if err := ac0.QueryRowContext(ctx, "SELECT @@autocommit, @@server_id").Scan(&autocommit, &server); err != nil {
				t.Fatal(err)
			}
			if autocommit != 0 || server != db2.ServerID {
				t.Fatalf("the autocommit=0 session moved to server %d with autocommit=%d", server, autocommit)
			}
			mustExec(t, ac0, "COMMIT")

			lost(tmp, "INSERT INTO scratch VALUES (1)")
			mustExec(t, tmp, "CREATE TEMPORARY TABLE scratch (x INT)")

			if n := count(t, db2, "SELECT COUNT(*) FROM app.pin WHERE id IN (2, 4, 5)"); n != 3 {
				t.Fatalf("db2 has %d of rows 2, 4, 5", n)
			}
			if n := count(t, db2, "SELECT COUNT(*) FROM app.pin WHERE id IN (1, 3)"); n != 0 {
				t.Fatal("rows of the lost transaction are on the new primary")
			}
			// The old primary rolled the lost transaction back: the proxy
			// reset its connection.
			err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
				return count(t, db1, "SELECT COUNT(*) FROM information_schema.INNODB_TRX") == 0, nil
			})
			if err != nil || count(t, db1, "SELECT COUNT(*) FROM app.pin WHERE id = 1") != 0 {
				t.Fatalf("the lost transaction is still open or committed on the old primary (%v)", err)
			}
		})
	}
}
