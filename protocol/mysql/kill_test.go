package mysql_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
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

	t.Run("MariaDBClientCtrlC", func(t *testing.T) {
		// The mariadb CLI answers Ctrl-C with KILL QUERY <the handshake's
		// id> on a second connection: through the proxy that must stop
		// the statement on the member that runs it.
		e.waitHealthy(t, 2)
		host, port, _ := net.SplitHostPort(e.addr)
		var out bytes.Buffer
		cli := exec.Command("mariadb", "-h", host, "-P", port, "-u", chaos.AppUser, "-p"+chaos.AppPassword, chaos.AppDatabase,
			"-e", "SELECT SLEEP(30) AS ctrl_c_test")
		cli.Stdout, cli.Stderr = &out, &out
		if err := cli.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cli.Wait() }()
		defer func() { _ = cli.Process.Kill() }()
		running := func() (bool, error) {
			for _, m := range e.cluster.Members {
				adm, err := m.DB()
				if err != nil {
					return false, err
				}
				var n int
				err = adm.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%ctrl\\_c\\_test%' AND INFO NOT LIKE '%PROCESSLIST%'").Scan(&n)
				adm.Close()
				if err != nil {
					return false, err
				}
				if n > 0 {
					return true, nil
				}
			}
			return false, nil
		}
		if err := chaos.Poll(ctx, 10*time.Second, running); err != nil {
			t.Fatalf("the CLI's SLEEP never showed up on a member: %v\n%s", err, out.String())
		}
		if err := cli.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Fatalf("the CLI still runs 15 s after Ctrl-C:\n%s", out.String())
		}
		if !strings.Contains(out.String(), "1317") {
			t.Fatalf("CLI output after Ctrl-C: %q, want the interrupted query (1317)", out.String())
		}
		// The member may take a moment to clear the statement's text.
		if err := chaos.Poll(ctx, 5*time.Second, func() (bool, error) {
			still, err := running()
			return !still, err
		}); err != nil {
			t.Fatalf("the SLEEP still runs on a member after Ctrl-C: %v", err)
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
