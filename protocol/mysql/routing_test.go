package mysql_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	driver "github.com/go-sql-driver/mysql"

	"github.com/dbrouter/dbrouter/chaos"
	pmysql "github.com/dbrouter/dbrouter/protocol/mysql"
	"github.com/dbrouter/dbrouter/router"
)

const primaryID = 1

func isReplica(id int) bool { return id == 2 || id == 3 }

// TestRouting asserts which server answered each statement (by @@server_id):
// member 1 is the primary, 2 and 3 are replicas.
func TestRouting(t *testing.T) {
	e := newEnv(t, envOpts{})
	db := e.db(t, "")
	mustExec(t, db, "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
	mustExec(t, db, "INSERT INTO t (v) VALUES (1), (2), (3)")
	ctx := context.Background()
	// Each case starts from a healthy cluster: under load replicas can lag
	// past max_replica_lag, and reads then (correctly) go to the primary.
	run := func(name string, f func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			e.waitHealthy(t, 2)
			f(t)
		})
	}

	run("AutocommitReadGoesToReplica", func(t *testing.T) {
		// A session keeps reading from one replica (monotonic reads)...
		c := e.conn(t, db)
		first := serverID(t, c, "SELECT @@server_id")
		if !isReplica(first) {
			t.Fatalf("autocommit read answered by server %d", first)
		}
		for i := 0; i < 20; i++ {
			if id := serverID(t, c, "SELECT @@server_id"); id != first {
				t.Fatalf("read %d of one session answered by %d, its earlier reads by %d", i, id, first)
			}
		}
		// ...and sessions share the replicas within the locality window.
		seen := map[int]bool{first: true}
		for i := 0; i < 20 && len(seen) < 2; i++ {
			id := serverID(t, e.conn(t, db), "SELECT @@server_id")
			if !isReplica(id) {
				t.Fatalf("autocommit read of a new session answered by server %d", id)
			}
			seen[id] = true
		}
		if len(seen) != 2 {
			t.Errorf("sessions within the locality window should share replicas, saw %v", seen)
		}
	})
	run("PrimaryHint", func(t *testing.T) {
		if id := serverID(t, db, "SELECT /* dbrouter:primary */ @@server_id"); id != primaryID {
			t.Fatalf("primary hint answered by %d", id)
		}
	})
	run("ReplicaHintOnSessionRead", func(t *testing.T) {
		var id, last int
		if err := db.QueryRowContext(ctx, "SELECT /* dbrouter:replica */ @@server_id, LAST_INSERT_ID()").Scan(&id, &last); err != nil || !isReplica(id) {
			t.Fatalf("replica hint answered by %d (%v)", id, err)
		}
	})
	run("TransactionStaysOnPrimary", func(t *testing.T) {
		for _, begin := range []string{"BEGIN", "START TRANSACTION", "START TRANSACTION READ ONLY", "XA START 'x1'"} {
			c := e.conn(t, db)
			mustExec(t, c, begin)
			for i := 0; i < 3; i++ {
				if id := serverID(t, c, "SELECT @@server_id"); id != primaryID {
					t.Fatalf("%s: read inside transaction answered by %d", begin, id)
				}
			}
			if begin[0] == 'X' {
				mustExec(t, c, "XA END 'x1'")
				mustExec(t, c, "XA ROLLBACK 'x1'")
			} else {
				mustExec(t, c, "COMMIT")
			}
			if id := serverID(t, c, "SELECT @@server_id"); !isReplica(id) {
				t.Fatalf("%s: read after commit answered by %d", begin, id)
			}
		}
	})
	run("AutocommitOffStaysOnPrimary", func(t *testing.T) {
		c := e.conn(t, db)
		mustExec(t, c, "SET autocommit=0")
		if id := serverID(t, c, "SELECT @@server_id"); id != primaryID {
			t.Fatalf("read with autocommit=0 answered by %d", id)
		}
		mustExec(t, c, "COMMIT")
		if id := serverID(t, c, "SELECT @@server_id"); id != primaryID {
			t.Fatalf("read after COMMIT with autocommit=0 answered by %d", id)
		}
		mustExec(t, c, "SET autocommit=1")
		if id := serverID(t, c, "SELECT @@server_id"); !isReplica(id) {
			t.Fatalf("read after autocommit=1 answered by %d", id)
		}
	})
	run("LockTablesPins", func(t *testing.T) {
		c := e.conn(t, db)
		mustExec(t, c, "LOCK TABLES t READ")
		if id := serverID(t, c, "SELECT @@server_id FROM t LIMIT 1"); id != primaryID {
			t.Fatalf("read under LOCK TABLES answered by %d", id)
		}
		mustExec(t, c, "UNLOCK TABLES")
		if id := serverID(t, c, "SELECT @@server_id"); !isReplica(id) {
			t.Fatalf("read after UNLOCK TABLES answered by %d", id)
		}
	})
	run("GetLockPins", func(t *testing.T) {
		c := e.conn(t, db)
		if id := serverID(t, c, "SELECT GET_LOCK('l1', 1)"); id != 1 {
			t.Fatalf("GET_LOCK returned %d", id)
		}
		if id := serverID(t, c, "SELECT @@server_id"); id != primaryID {
			t.Fatalf("read after GET_LOCK answered by %d", id)
		}
		var held int
		if err := c.QueryRowContext(ctx, "SELECT IS_USED_LOCK('l1') = CONNECTION_ID()").Scan(&held); err != nil || held != 1 {
			t.Fatalf("lock not held by the session's connection: %v %v", held, err)
		}
	})
	run("TemporaryTablePins", func(t *testing.T) {
		c := e.conn(t, db)
		mustExec(t, c, "CREATE TEMPORARY TABLE tmp1 (a INT)")
		mustExec(t, c, "INSERT INTO tmp1 VALUES (7)")
		var a int
		if err := c.QueryRowContext(ctx, "SELECT a FROM tmp1").Scan(&a); err != nil || a != 7 {
			t.Fatalf("temporary table read: %v %v", a, err)
		}
	})
	run("LockingReadsGoToPrimary", func(t *testing.T) {
		for _, q := range []string{
			"SELECT @@server_id FROM t WHERE id = 1 FOR UPDATE",
			"SELECT @@server_id FROM t WHERE id = 1 LOCK IN SHARE MODE",
		} {
			if id := serverID(t, db, q); id != primaryID {
				t.Fatalf("%s answered by %d", q, id)
			}
		}
	})
	run("LastInsertIDOnSameConnection", func(t *testing.T) {
		c := e.conn(t, db)
		r := mustExec(t, c, "INSERT INTO t (v) VALUES (10)")
		want, _ := r.LastInsertId()
		var got int64
		var id int
		if err := c.QueryRowContext(ctx, "SELECT LAST_INSERT_ID(), @@server_id").Scan(&got, &id); err != nil {
			t.Fatal(err)
		}
		if got != want || id != primaryID {
			t.Fatalf("LAST_INSERT_ID() = %d on %d, want %d on the primary", got, id, want)
		}
	})
	run("FoundRows", func(t *testing.T) {
		c := e.conn(t, db)
		var id int
		if err := c.QueryRowContext(ctx, "SELECT SQL_CALC_FOUND_ROWS id FROM t LIMIT 1").Scan(&id); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := c.QueryRowContext(ctx, "SELECT FOUND_ROWS()").Scan(&n); err != nil || n < 3 {
			t.Fatalf("FOUND_ROWS() = %d, %v", n, err)
		}
	})
	run("UserVariablesFromAQueryPin", func(t *testing.T) {
		c := e.conn(t, db)
		mustExec(t, c, "SET @x = (SELECT 42)")
		var x, id int
		if err := c.QueryRowContext(ctx, "SELECT @x, @@server_id").Scan(&x, &id); err != nil || x != 42 || id != primaryID {
			t.Fatalf("SELECT @x = %d on %d (%v)", x, id, err)
		}
	})
	run("LiteralUserVariablesReplayed", func(t *testing.T) {
		c := e.conn(t, db)
		mustExec(t, c, "SET @x = 42")
		var x, id int
		if err := c.QueryRowContext(ctx, "SELECT @x, @@server_id").Scan(&x, &id); err != nil || x != 42 || id != primaryID {
			t.Fatalf("SELECT @x = %d on %d (%v)", x, id, err)
		}
	})
	run("SessionStateReplayedOnReplica", func(t *testing.T) {
		c := e.conn(t, db)
		mustExec(t, c, "SET SESSION sql_mode = 'ANSI_QUOTES'")
		mustExec(t, c, "SET NAMES latin1")
		for i := 0; i < 4; i++ {
			var mode, cs, dbname string
			var id int
			if err := c.QueryRowContext(ctx, "SELECT @@session.sql_mode, @@character_set_client, DATABASE(), @@server_id").Scan(&mode, &cs, &dbname, &id); err != nil {
				t.Fatal(err)
			}
			if mode != "ANSI_QUOTES" || cs != "latin1" || dbname != "app" || !isReplica(id) {
				t.Fatalf("replica %d sees sql_mode=%q charset=%q db=%q", id, mode, cs, dbname)
			}
		}
	})
	run("UseReplayed", func(t *testing.T) {
		c := e.conn(t, db)
		mustExec(t, c, "USE sbtest")
		var dbname string
		var id int
		if err := c.QueryRowContext(ctx, "SELECT DATABASE(), @@server_id").Scan(&dbname, &id); err != nil || dbname != "sbtest" || !isReplica(id) {
			t.Fatalf("DATABASE() = %q on %d (%v)", dbname, id, err)
		}
	})
	run("SelectIntoIsAWrite", func(t *testing.T) {
		c := e.conn(t, db)
		mustExec(t, c, "SELECT @@server_id INTO @sid")
		if id := serverID(t, c, "SELECT @sid"); id != primaryID {
			t.Fatalf("SELECT ... INTO ran on %d", id)
		}
	})
	run("PreparedStatementsFollowTheirClass", func(t *testing.T) {
		c := e.conn(t, db)
		st, err := c.PrepareContext(ctx, "SELECT @@server_id, v FROM t WHERE id = ?")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		for i := 0; i < 6; i++ {
			var id, v int
			if err := st.QueryRowContext(ctx, 1).Scan(&id, &v); err != nil {
				t.Fatal(err)
			}
			if !isReplica(id) || v != 1 {
				t.Fatalf("prepared read answered by %d (v=%d)", id, v)
			}
		}
		ins, err := c.PrepareContext(ctx, "INSERT INTO t (v) VALUES (?)")
		if err != nil {
			t.Fatal(err)
		}
		defer ins.Close()
		if _, err := ins.ExecContext(ctx, 99); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := c.QueryRowContext(ctx, "SELECT /* dbrouter:primary */ COUNT(*) FROM t WHERE v = 99").Scan(&n); err != nil || n != 1 {
			t.Fatalf("prepared insert: %d rows, %v", n, err)
		}
	})
	run("BackendErrorsPassThrough", func(t *testing.T) {
		_, err := db.ExecContext(ctx, "SELECT * FROM no_such_table")
		var me *driver.MySQLError
		if !errors.As(err, &me) || me.Number != 1146 || string(me.SQLState[:]) != "42S02" {
			t.Fatalf("error = %#v", err)
		}
	})
	run("MultiStatementsAndResults", func(t *testing.T) {
		mdb := e.db(t, "&multiStatements=true")
		rows, err := mdb.QueryContext(ctx, "SELECT 1; SELECT 2, 3")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var sets int
		for {
			for rows.Next() {
			}
			sets++
			if !rows.NextResultSet() {
				break
			}
		}
		if sets != 2 {
			t.Fatalf("result sets = %d", sets)
		}
	})
}

var _ = sql.ErrNoRows

// TestNearestReplica: a replica 10 ms away (each way) gets no reads while a
// near one is eligible, and takes them when the near one breaks.
func TestNearestReplica(t *testing.T) {
	e := newEnv(t, envOpts{remote: map[int]time.Duration{2: 10 * time.Millisecond},
		routerFn: func(c *router.Config) { c.LocalityWindow = 5 * time.Millisecond }})
	db := e.db(t, "")
	ctx := context.Background()
	// RTTs are smoothed: wait for them to reflect the link.
	err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
		s := e.mon.Snapshot()
		return s.Members[2].RTT >= 15*time.Millisecond && s.Members[1].RTT <= 10*time.Millisecond, nil
	})
	if err != nil {
		s := e.mon.Snapshot()
		t.Fatalf("measured RTTs near %v, far %v", s.Members[1].RTT, s.Members[2].RTT)
	}
	farBefore := e.counter(t, "dbrouter_queries_total", map[string]string{"member": "db3"})
	nearBefore := e.counter(t, "dbrouter_queries_total", map[string]string{"member": "db2", "route": "routed"})
	for i := 0; i < 20; i++ {
		if id := serverID(t, db, "SELECT @@server_id"); id != 2 {
			t.Fatalf("read %d answered by %d, want the near replica 2", i, id)
		}
	}
	// The metrics say the same.
	if got := e.counter(t, "dbrouter_queries_total", map[string]string{"member": "db2", "route": "routed"}) - nearBefore; got < 20 {
		t.Fatalf("dbrouter_queries_total{member=db2} grew by %v, want >= 20", got)
	}
	if got := e.counter(t, "dbrouter_queries_total", map[string]string{"member": "db3"}); got != farBefore {
		t.Fatalf("dbrouter_queries_total{member=db3} grew while db3 got no reads")
	}
	near, _ := e.cluster.Members[1].DB()
	defer near.Close()
	if _, err := near.ExecContext(ctx, "STOP SLAVE SQL_THREAD"); err != nil {
		t.Fatal(err)
	}
	err = chaos.Poll(ctx, 5*time.Second, func() (bool, error) { return !e.mon.Snapshot().Members[1].Eligible, nil })
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if id := serverID(t, db, "SELECT @@server_id"); id != 3 {
			t.Fatalf("with the near replica broken, read answered by %d, want the far replica 3", id)
		}
	}
}

// TestNoDatabaseIsNotInherited: a session without a default database never
// runs on a pooled connection another session left in one. With one
// connection per member, the only idle connection is the one the first
// session used.
func TestNoDatabaseIsNotInherited(t *testing.T) {
	e := newEnv(t, envOpts{mutate: func(c *pmysql.Config) { c.MaxConnsPerMember = 1 }})
	ctx := context.Background()
	withDB := e.db(t, "")
	mustExec(t, withDB, "CREATE TABLE nodb (id INT)")
	e.waitHealthy(t, 2)
	noDB, err := sql.Open("mysql", fmt.Sprintf("%s:%s@tcp(%s)/?timeout=5s", chaos.AppUser, chaos.AppPassword, e.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer noDB.Close()
	for _, hint := range []string{"/* dbrouter:primary */", ""} {
		var name sql.NullString
		if err := withDB.QueryRowContext(ctx, "SELECT "+hint+" DATABASE()").Scan(&name); err != nil || name.String != chaos.AppDatabase {
			t.Fatalf("%q: session with a database sees %v (%v)", hint, name, err)
		}
		if err := noDB.QueryRowContext(ctx, "SELECT "+hint+" DATABASE()").Scan(&name); err != nil || name.Valid {
			t.Fatalf("%q: session without a database sees database %v (%v)", hint, name, err)
		}
		_, err := noDB.ExecContext(ctx, "SELECT "+hint+" * FROM nodb")
		var me *driver.MySQLError
		if !errors.As(err, &me) || me.Number != 1046 {
			t.Fatalf("%q: unqualified table without a database: %v, want error 1046 (no database selected)", hint, err)
		}
	}
}

// TestCausalReads: with causal reads a session reads its own writes on
// replicas that are behind: the replica waits for the write's GTID, or, when
// it would take longer than the timeout, the primary answers.
func TestCausalReads(t *testing.T) {
	for _, tc := range []struct {
		name        string
		timeout     time.Duration
		wantPrimary bool
	}{
		{"ReplicaWaitsForTheWrite", 10 * time.Second, false},
		{"SlowReplicaSendsTheReadToThePrimary", 200 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOpts{maxLag: 10 * time.Second, mutate: func(c *pmysql.Config) {
				c.CausalReads, c.CausalTimeout = pmysql.CausalSession, tc.timeout
			}})
			ctx := context.Background()
			db := e.db(t, "")
			mustExec(t, db, "CREATE TABLE causal (id INT PRIMARY KEY)")
			// Both replicas apply events only once they are 2 s old (and
			// stay eligible: max_replica_lag is 10 s here).
			var replicas []*sql.DB
			for _, m := range e.cluster.Members[1:] {
				r, err := m.DB()
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close()
				// The table first, undelayed.
				if err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
					_, err := r.ExecContext(ctx, "SELECT 1 FROM app.causal LIMIT 1")
					return err == nil, nil
				}); err != nil {
					t.Fatalf("%s never got the table: %v", m.Name, err)
				}
				for _, q := range []string{"STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 2", "START SLAVE"} {
					mustExec(t, r, q)
				}
				replicas = append(replicas, r)
			}
			e.waitHealthy(t, 2)
			c := e.conn(t, db)
			for i := 1; i <= 2; i++ {
				mustExec(t, c, "INSERT INTO causal VALUES (?)", i)
				var n int
				if err := replicas[0].QueryRowContext(ctx, "SELECT COUNT(*) FROM app.causal WHERE id = ?", i).Scan(&n); err != nil || n != 0 {
					t.Fatalf("the delayed replica already has row %d (%d, %v): the test proves nothing", i, n, err)
				}
				start := time.Now()
				var id, got int
				if err := c.QueryRowContext(ctx, "SELECT @@server_id, COUNT(*) FROM causal WHERE id = ?", i).Scan(&id, &got); err != nil {
					t.Fatal(err)
				}
				took := time.Since(start)
				if got != 1 {
					t.Fatalf("read after the session's write %d answered by server %d without the row", i, id)
				}
				if tc.wantPrimary && id != primaryID || !tc.wantPrimary && !isReplica(id) {
					t.Fatalf("read answered by server %d after %v (timeout %v)", id, took, tc.timeout)
				}
			}
			// The metrics say which way each read went.
			waited := e.counter(t, "dbrouter_causal_reads_total", map[string]string{"result": "waited"})
			primary := e.counter(t, "dbrouter_causal_reads_total", map[string]string{"result": "primary"})
			if tc.wantPrimary && (primary != 2 || waited != 0) || !tc.wantPrimary && (waited != 2 || primary != 0) {
				t.Fatalf("dbrouter_causal_reads_total: waited %v, primary %v", waited, primary)
			}
		})
	}
}
