package mysql_test

import (
	"context"
	"database/sql"
	"net"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/chaos"
	pmysql "github.com/dbrouter/dbrouter/protocol/mysql"
)

// TestGracefulStop: when Serve's ctx ends, the proxy stops accepting and
// closes idle sessions at once; a statement in flight finishes with its
// answer, an open transaction may still COMMIT (then its session closes);
// a transaction left open past StopTimeout is cut and rolled back.
func TestGracefulStop(t *testing.T) {
	const stopTimeout = 3 * time.Second
	e := newEnv(t, envOpts{members: 2, mutate: func(c *pmysql.Config) { c.StopTimeout = stopTimeout }})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := e.db(t, "")
	mustExec(t, db, "CREATE TABLE stop_t (id INT PRIMARY KEY)")
	idle := e.conn(t, db)
	if err := idle.PingContext(ctx); err != nil {
		t.Fatal(err)
	}
	txn := e.conn(t, db)
	mustExec(t, txn, "BEGIN")
	mustExec(t, txn, "INSERT INTO stop_t VALUES (1)")
	stuck := e.conn(t, db)
	mustExec(t, stuck, "BEGIN")
	mustExec(t, stuck, "INSERT INTO stop_t VALUES (2)")
	slow := e.conn(t, db)
	type result struct {
		v   int
		err error
	}
	slowDone := make(chan result, 1)
	go func() {
		var r result
		r.err = slow.QueryRowContext(ctx, "SELECT /* dbrouter:primary */ SLEEP(1.5)").Scan(&r.v)
		slowDone <- r
	}()
	root, err := e.cluster.Members[0].DB()
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
		var n int
		err := root.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE 'SELECT /* dbrouter:primary */ SLEEP%'").Scan(&n)
		return n == 1, err
	}); err != nil {
		t.Fatalf("the slow statement never ran on the primary: %v", err)
	}

	stopped := time.Now()
	e.stop()
	// No new client: the listener is closed.
	if err := chaos.Poll(ctx, 2*time.Second, func() (bool, error) {
		c, err := net.DialTimeout("tcp", e.addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil, nil
	}); err != nil {
		t.Fatal("the proxy still accepts connections after the stop")
	}
	// The idle session is closed at once.
	if err := chaos.Poll(ctx, 2*time.Second, func() (bool, error) { return idle.PingContext(ctx) != nil, nil }); err != nil {
		t.Fatal("an idle session stayed open after the stop")
	}
	// The statement in flight finishes, uncut (SLEEP returns 1 when
	// interrupted).
	if r := <-slowDone; r.err != nil || r.v != 0 {
		t.Fatalf("statement in flight during the stop: %d, %v", r.v, r.err)
	}
	// The open transaction commits, then its session closes.
	if _, err := txn.ExecContext(ctx, "COMMIT"); err != nil {
		t.Fatalf("COMMIT of a transaction open at the stop: %v", err)
	}
	if err := chaos.Poll(ctx, 2*time.Second, func() (bool, error) { return txn.PingContext(ctx) != nil, nil }); err != nil {
		t.Fatal("a session whose transaction ended stayed open after the stop")
	}
	select {
	case <-e.served:
		t.Fatalf("Serve returned %s after the stop, with a transaction still open: it did not wait", time.Since(stopped))
	default:
	}
	// The transaction left open is cut after StopTimeout and rolled back.
	select {
	case <-e.served:
	case <-time.After(stopTimeout + 5*time.Second):
		t.Fatalf("Serve still running %s after the stop (stop timeout %s)", time.Since(stopped), stopTimeout)
	}
	if took := time.Since(stopped); took < stopTimeout-100*time.Millisecond {
		t.Fatalf("Serve returned after %s, before the stop timeout", took)
	}
	var ids []int
	if err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
		ids = ids[:0]
		rows, err := root.QueryContext(ctx, "SELECT id FROM "+chaos.AppDatabase+".stop_t ORDER BY id")
		if err != nil {
			return false, err
		}
		defer rows.Close()
		for rows.Next() {
			var id int
			if err := rows.Scan(&id); err != nil {
				return false, err
			}
			ids = append(ids, id)
		}
		return len(ids) == 1 && ids[0] == 1, rows.Err()
	}); err != nil {
		t.Fatalf("rows after the stop %v, want [1]: the committed one, not the cut one: %v", ids, err)
	}
	var _ *sql.Conn = stuck
}
