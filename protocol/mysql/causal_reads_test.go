package mysql_test

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/chaos"
	pmysql "github.com/dbrouter/dbrouter/protocol/mysql"
	"github.com/dbrouter/dbrouter/router"
)

// delayReplicas makes every replica apply events only once they are
// delay old, after table has reached them (undelayed), and returns direct
// connections to them. They stay eligible: the env's max_replica_lag must
// exceed delay.
func delayReplicas(t *testing.T, e *env, table string, delay int) []*sql.DB {
	t.Helper()
	ctx := context.Background()
	var replicas []*sql.DB
	for _, m := range e.cluster.Members[1:] {
		r, err := m.DB()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		if err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
			_, err := r.ExecContext(ctx, "SELECT 1 FROM app."+table+" LIMIT 1")
			return err == nil, nil
		}); err != nil {
			t.Fatalf("%s never got table %s: %v", m.Name, table, err)
		}
		for _, q := range []string{"STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = " + strconv.Itoa(delay), "START SLAVE"} {
			mustExec(t, r, q)
		}
		replicas = append(replicas, r)
	}
	e.waitHealthy(t, len(replicas))
	return replicas
}

// TestReadYourWritesModes: with the defaults a session's read after its
// own write sees it even when every replica is behind (causal_reads:
// session), though another session may read the replica's older state;
// with causal_reads: off the session itself may read a replica that does
// not have its write yet; with causal_reads: proxy a read on any session
// sees a write another session made. The replicas apply events 3 s late
// and stay eligible.
func TestReadYourWritesModes(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode pmysql.CausalMode
		// whether a read right after the write sees it: on the session
		// that wrote, and on another session of the same proxy.
		own, other bool
	}{
		{"DefaultIsSession", "", true, false},
		{"Off", pmysql.CausalOff, false, false},
		{"Proxy", pmysql.CausalProxy, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOpts{maxLag: 10 * time.Second, mutate: func(c *pmysql.Config) { c.CausalReads = tc.mode }})
			ctx := context.Background()
			db := e.db(t, "")
			mustExec(t, db, "CREATE TABLE rw (id INT PRIMARY KEY)")
			replicas := delayReplicas(t, e, "rw", 3)
			writer, reader := e.conn(t, db), e.conn(t, db)
			// Both sessions have read before (the proxy knows them).
			for _, c := range []*sql.Conn{writer, reader} {
				serverID(t, c, "SELECT @@server_id")
			}
			read := func(who string, c *sql.Conn, i int) (seen bool) {
				t.Helper()
				var id, n int
				if err := c.QueryRowContext(ctx, "SELECT @@server_id, COUNT(*) FROM rw WHERE id = ?", i).Scan(&id, &n); err != nil {
					t.Fatalf("%s: %v", who, err)
				}
				if n == 0 && !isReplica(id) {
					t.Fatalf("%s: server %d (not a replica) has not row %d", who, id, i)
				}
				return n == 1
			}
			for i := 1; i <= 2; i++ {
				mustExec(t, writer, "INSERT INTO rw VALUES (?)", i)
				var n int
				if err := replicas[0].QueryRowContext(ctx, "SELECT COUNT(*) FROM app.rw WHERE id = ?", i).Scan(&n); err != nil || n != 0 {
					t.Fatalf("the delayed replica already has row %d (%d, %v): the test proves nothing", i, n, err)
				}
				// The other session first: the replicas are 3 s behind, so
				// it reads before they apply the row.
				if got := read("another session", reader, i); got != tc.other {
					t.Fatalf("write %d: another session's read saw it: %v, want %v", i, got, tc.other)
				}
				if got := read("the writing session", writer, i); got != tc.own {
					t.Fatalf("write %d: the writing session's read saw it: %v, want %v", i, got, tc.own)
				}
			}
		})
	}
}

// afterPick runs after with each replica the router picks, before the
// proxy uses it.
type afterPick struct {
	pmysql.Router
	after func(m int)
}

func (a afterPick) Replica(ctx context.Context, avoid, prefer int) (int, bool, error) {
	m, replica, err := a.Router.Replica(ctx, avoid, prefer)
	if err == nil && replica {
		a.after(m)
	}
	return m, replica, err
}

// TestReadYourWritesWhenTheReadSetChangesUnderTheRead: the read set can
// change between the moment a read is given a replica and the moment it
// runs there (it waited for a member connection; the replica was fenced
// or crossed the lag limit meanwhile). The read still waits for the
// session's write on that replica, or goes to the primary: it never reads
// the replica's older state. Here the lagging replica is excluded right
// after each pick.
func TestReadYourWritesWhenTheReadSetChangesUnderTheRead(t *testing.T) {
	var armed atomic.Bool
	e := newEnv(t, envOpts{members: 2, maxLag: 10 * time.Second, wrap: func(rt *router.Router) pmysql.Router {
		return afterPick{Router: rt, after: func(int) {
			if armed.Load() {
				rt.SetExcluded([]string{"db2"})
			}
		}}
	}})
	ctx := context.Background()
	db := e.db(t, "")
	mustExec(t, db, "CREATE TABLE moved (id INT PRIMARY KEY)")
	replicas := delayReplicas(t, e, "moved", 3)
	c := e.conn(t, db)
	if id := serverID(t, c, "SELECT @@server_id"); id != 2 {
		t.Fatalf("the first read went to server %d, want the replica", id)
	}
	mustExec(t, c, "INSERT INTO moved VALUES (1)")
	var n int
	if err := replicas[0].QueryRowContext(ctx, "SELECT COUNT(*) FROM app.moved").Scan(&n); err != nil || n != 0 {
		t.Fatalf("the delayed replica already has the row (%d, %v): the test proves nothing", n, err)
	}
	armed.Store(true)
	var id int
	if err := c.QueryRowContext(ctx, "SELECT @@server_id, COUNT(*) FROM moved").Scan(&id, &n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("the session's read after its write, on server %d, did not see it", id)
	}
}

// TestReadYourWritesSendsNoQueryPerWrite: with read-your-writes on, the
// primary runs the application's writes and nothing more per write: the
// GTID of each write comes in its own OK packet (session tracking), not
// from a SELECT @@last_gtid after it. Two sessions with different SET
// state share the primary's one connection, so it is reset and replayed
// between them: the reset turns last_gtid tracking on again, and every
// read after a write still waits for that write's GTID. The primary's
// general log shows every statement the proxy's app account sent.
func TestReadYourWritesSendsNoQueryPerWrite(t *testing.T) {
	e := newEnv(t, envOpts{mutate: func(c *pmysql.Config) {
		c.CausalReads = pmysql.CausalSession
		c.MaxConnsPerMember = 1
	}})
	ctx := context.Background()
	db := e.db(t, "")
	a, b := e.conn(t, db), e.conn(t, db)
	mustExec(t, a, "SET sql_mode = 'ANSI_QUOTES'")
	mustExec(t, a, "CREATE TABLE nq (id INT PRIMARY KEY)")
	primary, err := e.cluster.Members[0].DB()
	if err != nil {
		t.Fatal(err)
	}
	defer primary.Close()
	mustExec(t, primary, "SET GLOBAL log_output = 'TABLE'")
	mustExec(t, primary, "SET GLOBAL general_log = ON")
	defer mustExec(t, primary, "SET GLOBAL general_log = OFF")
	var since string
	if err := primary.QueryRowContext(ctx, "SELECT NOW(6)").Scan(&since); err != nil {
		t.Fatal(err)
	}
	waited := e.counter(t, "dbrouter_causal_reads_total", map[string]string{"result": "waited"})
	const writes = 20
	for i := 1; i <= writes; i++ {
		c := a
		if i%2 == 0 {
			c = b
		}
		mustExec(t, c, "INSERT INTO nq VALUES ("+strconv.Itoa(i)+")")
		var n int
		if err := c.QueryRowContext(ctx, "SELECT COUNT(*) FROM nq WHERE id = "+strconv.Itoa(i)).Scan(&n); err != nil || n != 1 {
			t.Fatalf("read after write %d: %d rows, %v", i, n, err)
		}
	}
	if w := e.counter(t, "dbrouter_causal_reads_total", map[string]string{"result": "waited"}) - waited; w != writes {
		t.Fatalf("%v reads waited on a replica for the write before them, want %d: a write's GTID went unseen", w, writes)
	}
	rows, err := primary.QueryContext(ctx, "SELECT argument FROM mysql.general_log WHERE user_host LIKE ? AND command_type = 'Query' AND event_time >= ?", chaos.AppUser+"[%", since)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	inserts, tracking := 0, 0
	var other []string
	for rows.Next() {
		var q string
		if err := rows.Scan(&q); err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.HasPrefix(q, "INSERT INTO nq"):
			inserts++
		case strings.HasPrefix(q, "SET session_track_system_variables"):
			tracking++
		case q == "SET sql_mode = 'ANSI_QUOTES'": // session a's state, replayed
		default:
			other = append(other, q)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if inserts != writes || len(other) > 0 {
		t.Fatalf("the primary ran %d inserts (want %d) and %d other statements: %q", inserts, writes, len(other), other)
	}
	if tracking < writes/2 {
		t.Fatalf("last_gtid tracking turned on %d times, want once after each of the %d resets", tracking, writes/2)
	}
}
