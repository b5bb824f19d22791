package mysql_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	gmclient "github.com/go-mysql-org/go-mysql/client"
	gm "github.com/go-mysql-org/go-mysql/mysql"
	driver "github.com/go-sql-driver/mysql"

	"github.com/dbrouter/dbrouter/chaos"
	pmysql "github.com/dbrouter/dbrouter/protocol/mysql"
)

// TestKill: KILL takes the proxy's session ids (the handshake's connection
// id) and acts on the member connection the session's statement runs on.
func TestKill(t *testing.T) {
	e := newEnv(t, envOpts{})
	db := e.db(t, "")
	ctx := context.Background()
	mustExec(t, db, "CREATE TABLE killt (id INT PRIMARY KEY)")
	connect := func(t *testing.T) *gmclient.Conn {
		t.Helper()
		c, err := gmclient.Connect(e.addr, chaos.AppUser, chaos.AppPassword, chaos.AppDatabase)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	t.Run("QueryInterruptsOnlyThatStatement", func(t *testing.T) {
		e.waitHealthy(t, 2)
		victim, bystander := connect(t), connect(t)
		type result struct {
			sleep int64
			err   error
			took  time.Duration
		}
		run := func(c *gmclient.Conn, secs int) chan result {
			ch := make(chan result, 1)
			go func() {
				start := time.Now()
				r, err := c.Execute(fmt.Sprintf("SELECT SLEEP(%d)", secs))
				res := result{err: err, took: time.Since(start)}
				if err == nil {
					res.sleep, res.err = r.GetInt(0, 0)
				}
				ch <- res
			}()
			return ch
		}
		victimDone := run(victim, 30)
		bystanderDone := run(bystander, 3)
		// KILL QUERY of a session between statements does nothing, so
		// repeat it until the victim's statement is running and ends.
		var got result
		deadline := time.After(20 * time.Second)
	wait:
		for {
			if _, err := db.ExecContext(ctx, fmt.Sprintf("KILL QUERY %d", victim.GetConnectionID())); err != nil {
				t.Fatal(err)
			}
			select {
			case got = <-victimDone:
				break wait
			case <-time.After(50 * time.Millisecond):
			case <-deadline:
				t.Fatal("the victim's SLEEP(30) still runs 20 s after KILL QUERY")
			}
		}
		var me *gm.MyError
		interrupted := got.err == nil && got.sleep == 1 || errors.As(got.err, &me) && me.Code == 1317
		if !interrupted || got.took > 20*time.Second {
			t.Fatalf("victim's SLEEP(30): %+v, want interrupted (1, or error 1317)", got)
		}
		by := <-bystanderDone
		if by.err != nil || by.sleep != 0 {
			t.Fatalf("bystander's SLEEP(3) = %d, %v: the KILL reached another statement", by.sleep, by.err)
		}
		if _, err := victim.Execute("SELECT 1"); err != nil {
			t.Fatalf("victim session after KILL QUERY: %v", err)
		}
	})

	t.Run("ConnectionEndsTheSessionAndRollsBack", func(t *testing.T) {
		victim := connect(t)
		for _, q := range []string{"BEGIN", "INSERT INTO killt VALUES (1)"} {
			if _, err := victim.Execute(q); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := db.ExecContext(ctx, fmt.Sprintf("KILL %d", victim.GetConnectionID())); err != nil {
			t.Fatal(err)
		}
		if _, err := victim.Execute("SELECT 1"); err == nil {
			t.Fatal("killed session still answers")
		}
		// The victim's transaction ends with it: its row lock goes away
		// (polled: the proxy resets the connection as the session ends),
		// and its row was never committed.
		c := e.conn(t, db)
		mustExec(t, c, "SET SESSION innodb_lock_wait_timeout = 1")
		err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
			_, err := c.ExecContext(ctx, "INSERT INTO killt VALUES (1)")
			var me *driver.MySQLError
			if errors.As(err, &me) && me.Number == 1205 {
				return false, nil // lock wait timeout: still held
			}
			return err == nil, err
		})
		if err != nil {
			t.Fatalf("the killed session's transaction still holds its lock: %v", err)
		}
	})

	t.Run("MemberThreadIDIsNotASession", func(t *testing.T) {
		victim := connect(t)
		if _, err := victim.Execute("BEGIN"); err != nil {
			t.Fatal(err)
		}
		r, err := victim.Execute("SELECT CONNECTION_ID()")
		if err != nil {
			t.Fatal(err)
		}
		tid, _ := r.GetInt(0, 0)
		_, err = db.ExecContext(ctx, fmt.Sprintf("KILL %d", tid))
		var me *driver.MySQLError
		if !errors.As(err, &me) || me.Number != pmysql.CodeNoSuchThread {
			t.Fatalf("KILL of member thread id %d: %v, want error %d", tid, err, pmysql.CodeNoSuchThread)
		}
		for _, q := range []string{"SELECT 1", "COMMIT"} {
			if _, err := victim.Execute(q); err != nil {
				t.Fatalf("session whose member thread id was given to KILL: %s: %v", q, err)
			}
		}
	})
}
