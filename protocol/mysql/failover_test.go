package mysql_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/chaos"
	pmysql "github.com/dbrouter/dbrouter/protocol/mysql"
	"github.com/dbrouter/dbrouter/router"
)

// fakeAuthority is a control plane the test drives. A failover moves
// safeSince to the new epoch, so writes routed at older epochs stop being
// acknowledgeable; a switchover does not.
type fakeAuthority struct {
	mu        sync.Mutex
	primary   string
	epoch     uint64
	changing  bool
	safeSince uint64
	noLease   bool
	changed   chan struct{}
}

func newFakeAuthority(primary string) *fakeAuthority {
	return &fakeAuthority{primary: primary, epoch: 1, safeSince: 1, changed: make(chan struct{})}
}

func (f *fakeAuthority) Writer() (string, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.noLease:
		return "", 0, fmt.Errorf("%w: test", router.ErrNoLease)
	case f.changing:
		return "", 0, fmt.Errorf("%w: epoch %d is switching to %s", router.ErrChanging, f.epoch, f.primary)
	}
	return f.primary, f.epoch, nil
}

func (f *fakeAuthority) Acknowledgeable(epoch uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.noLease && epoch >= f.safeSince && epoch <= f.epoch
}

func (f *fakeAuthority) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// update changes the state under the lock; notify closes Changed, as the
// control plane does when it applies a change. Without it the test plays
// the window before the proxy has acted on the change.
func (f *fakeAuthority) update(notify bool, fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
	if notify {
		close(f.changed)
		f.changed = make(chan struct{})
	}
}

// failover commits a new epoch serving at to; earlier epochs are no longer
// acknowledgeable.
func (f *fakeAuthority) failover(to string, notify bool) {
	f.update(notify, func() {
		f.epoch++
		f.primary, f.changing, f.safeSince = to, false, f.epoch
	})
}

// switching begins a switchover to to: writes are held, earlier epochs stay
// acknowledgeable.
func (f *fakeAuthority) switching(to string) {
	f.update(true, func() {
		f.epoch++
		f.primary, f.changing = to, true
	})
}

// serve ends a switchover: the target takes writes.
func (f *fakeAuthority) serve() { f.update(true, func() { f.changing = false }) }

// loseLease: this proxy stops holding its write lease (not a change of the
// control plane's state: Changed is not closed).
func (f *fakeAuthority) loseLease() { f.update(false, func() { f.noLease = true }) }

// authEnv is two real members behind a proxy whose primary the fake
// authority names (db1 at epoch 1).
func authEnv(t *testing.T, o envOpts) (*env, *fakeAuthority) {
	t.Helper()
	auth := newFakeAuthority("db1")
	o.members = 2
	o.routerFn = func(rc *router.Config) {
		rc.Authority = auth
		rc.WriteHold = 15 * time.Second
	}
	return newEnv(t, o), auth
}

// promote makes m a writable primary on its own (what the arbiter does at
// a failover: stop replicating, open).
func promote(t *testing.T, m *chaos.Member) {
	t.Helper()
	adminExec(t, m, "STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only = OFF")
}

// fence sets read_only on m (what the arbiter does to an old primary).
func fence(t *testing.T, m *chaos.Member) {
	t.Helper()
	adminExec(t, m, "SET GLOBAL read_only = ON")
}

// catchUp waits until replica has applied everything in primary's binlog.
func catchUp(t *testing.T, primary, replica *chaos.Member) {
	t.Helper()
	pdb, err := primary.DB()
	if err != nil {
		t.Fatal(err)
	}
	defer pdb.Close()
	var pos string
	if err := pdb.QueryRow("SELECT @@gtid_binlog_pos").Scan(&pos); err != nil {
		t.Fatal(err)
	}
	rdb, err := replica.DB()
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	var res int
	if err := rdb.QueryRow("SELECT MASTER_GTID_WAIT(?, 10)", pos).Scan(&res); err != nil || res != 0 {
		t.Fatalf("%s never reached %s's position %s: %d, %v", replica.Name, primary.Name, pos, res, err)
	}
}

// count runs a COUNT(*) query directly on member m.
func count(t *testing.T, m *chaos.Member, q string, args ...any) int {
	t.Helper()
	db, err := m.DB()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s on %s: %v", q, m.Name, err)
	}
	return n
}

// proxyThreads counts the connections the proxy (user app) has on m.
func proxyThreads(t *testing.T, m *chaos.Member) int {
	return count(t, m, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = ?", chaos.AppUser)
}

// TestFailoverEndsStatementsOnTheOldPrimary: a statement stuck on a primary
// that stopped answering (SIGSTOP: no RST ever comes) ends when the control
// plane fails over, not when the old primary wakes, and its client is told
// the outcome is unknown; the proxy resets every connection it had to the
// old primary, busy and idle.
func TestFailoverEndsStatementsOnTheOldPrimary(t *testing.T) {
	e, auth := authEnv(t, envOpts{})
	db1 := e.cluster.Members[0]
	db := e.db(t, "")
	ctx := context.Background()
	mustExec(t, db, "CREATE TABLE fo (id INT PRIMARY KEY)")
	// Several sessions write at once, leaving idle connections to db1.
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := db.ExecContext(ctx, "INSERT INTO fo SELECT ? FROM DUAL WHERE SLEEP(0.2) = 0", 100+i); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if c := e.proxy.MemberConns()["db1"]; c.Idle < 2 {
		t.Fatalf("db1 connections %v: want idle ones to prove they are reset", c)
	}
	stuck := e.conn(t, db)
	if err := db1.Pause(); err != nil {
		t.Fatal(err)
	}
	paused := true
	t.Cleanup(func() {
		if paused {
			_ = db1.Resume()
		}
	})
	done := make(chan error, 1)
	go func() {
		_, err := stuck.ExecContext(ctx, "INSERT INTO fo VALUES (1)")
		done <- err
	}()
	err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
		return e.proxy.InFlight()["db1"] == 1, nil
	})
	if err != nil {
		t.Fatalf("the INSERT never went out to db1: in flight %v", e.proxy.InFlight())
	}
	if g := e.gauge(t, "dbrouter_backend_inflight", map[string]string{"member": "db1"}); g != 1 {
		t.Fatalf("dbrouter_backend_inflight{member=db1} = %v, want 1", g)
	}

	auth.failover("db2", true)
	start := time.Now()
	select {
	case err := <-done:
		if errCode(err) != pmysql.CodeOutcomeUnknown || !strings.Contains(err.Error(), "outcome unknown") || !strings.Contains(err.Error(), "failed over") {
			t.Fatalf("statement on the failed-over primary: %v, want %d (outcome unknown: failed over)", err, pmysql.CodeOutcomeUnknown)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Fatalf("the client got its answer %v after the failover", d)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the client is still waiting for the failed-over primary 3 s after the failover")
	}
	if n := e.proxy.InFlight()["db1"]; n != 0 {
		t.Errorf("in flight on db1 after the failover: %d", n)
	}
	err = chaos.Poll(ctx, 5*time.Second, func() (bool, error) {
		return e.proxy.MemberConns()["db1"].Open == 0, nil
	})
	if err != nil {
		t.Fatalf("connections to the failed-over primary still open: %v", e.proxy.MemberConns()["db1"])
	}

	if err := db1.Resume(); err != nil {
		t.Fatal(err)
	}
	paused = false
	// Every connection the proxy had on db1 was reset: once db1 has woken
	// and answers, none of them is left there. (The INSERT db1 had already
	// received may still run as it wakes: no reset can take it back, see
	// TestStoppedMemberRunsWhatItReceivedDespiteTheReset. It was not
	// acknowledged.)
	err = chaos.Poll(ctx, 30*time.Second, func() (bool, error) { return proxyThreads(t, db1) == 0, nil })
	if err != nil {
		t.Fatalf("db1 still has %d proxy connections after it woke", proxyThreads(t, db1))
	}
}

// sleepingOn polls until a statement containing marker sleeps on m.
func sleepingOn(t *testing.T, m *chaos.Member, marker string) {
	t.Helper()
	err := chaos.Poll(context.Background(), 10*time.Second, func() (bool, error) {
		return count(t, m, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE = 'User sleep' AND INFO LIKE ?", "%"+marker+"%") > 0, nil
	})
	if err != nil {
		t.Fatalf("%s never slept on %s", marker, m.Name)
	}
}

// TestEveryResponseOfAPrimaryStatementIsFenced: statements that write and
// answer with result sets (INSERT ... RETURNING, CALL) are not acknowledged
// either once the epoch they were routed at has ended while they ran: the
// client gets 9010 in place of the response, or of the rest of it. The
// control plane's change is not signalled here (the window before the
// proxy acts on it, or a lease that ran out), so the check on the
// response itself is what stops the acknowledgement.
func TestEveryResponseOfAPrimaryStatementIsFenced(t *testing.T) {
	e, auth := authEnv(t, envOpts{})
	db1 := e.cluster.Members[0]
	db := e.db(t, "")
	ctx := context.Background()
	mustExec(t, db, "CREATE TABLE ret (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
	mustExec(t, db, `CREATE PROCEDURE write_then_read(x INT)
BEGIN
  INSERT INTO ret (v) VALUES (x);
  SELECT v, REPEAT('x', 40000) AS pad FROM ret WHERE v = x;
  SELECT SLEEP(1) AS proc_sleep;
  SELECT x + 1;
END`)
	for _, tc := range []struct {
		name  string
		query string
		end   func() // ends the epoch the statement was routed at
		why   string // in the error message
		// results the client may get (column lists) before the error
		before []string
	}{
		{"InsertReturningAcrossAFailover", "INSERT INTO ret (v) VALUES (1) RETURNING id, SLEEP(1) AS ret_sleep_1",
			func() { auth.failover("db2", false) }, "failed over", nil},
		// The first result was produced before the epoch ended, and is
		// larger than the proxy's buffer, so it has reached the client;
		// the ones after the sleep must not.
		{"CallAcrossAFailover", "CALL write_then_read(2)",
			func() { auth.failover("db2", false) }, "failed over", []string{"v,pad"}},
		{"InsertReturningWhenTheLeaseRunsOut", "INSERT INTO ret (v) VALUES (3) RETURNING id, SLEEP(1) AS ret_sleep_3",
			auth.loseLease, "lost its write lease", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			auth.update(true, func() { // a fresh epoch at db1
				auth.epoch++
				auth.primary, auth.changing, auth.noLease, auth.safeSince = "db1", false, false, auth.epoch
			})
			c := e.conn(t, db)
			done := make(chan error, 1)
			var got []string // the columns of every result set the client got
			go func() {
				rows, err := c.QueryContext(ctx, tc.query)
				if err != nil {
					done <- err
					return
				}
				defer rows.Close()
				for {
					cols, _ := rows.Columns()
					got = append(got, strings.Join(cols, ","))
					for rows.Next() {
					}
					if !rows.NextResultSet() {
						break
					}
				}
				done <- rows.Err()
			}()
			sleepingOn(t, db1, "SLEEP(1)")
			tc.end()
			select {
			case err := <-done:
				if len(got) > len(tc.before) || !slices.Equal(got, tc.before[:len(got)]) {
					t.Fatalf("the client got result sets %q, some produced after the epoch ended; at most %q may come before the error", got, tc.before)
				}
				if errCode(err) != pmysql.CodeOutcomeUnknown || !strings.Contains(err.Error(), tc.why) {
					t.Fatalf("%s: %v, want %d (outcome unknown: %s)", tc.query, err, pmysql.CodeOutcomeUnknown, tc.why)
				}
				if !strings.HasPrefix(err.Error(), "Error 9010 (HY000): dbrouter: cluster app: outcome unknown: ") {
					t.Errorf("message %q", err)
				}
				// The error came in sequence: the client's connection
				// (and the session) go on.
				if _, err := c.ExecContext(ctx, "SELECT 1"); err != nil {
					t.Fatalf("the session after the error: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no answer")
			}
		})
	}
}

// TestALeaseLapseResetsNothingTheControlPlaneHasNotSuperseded: without a
// write lease no epoch is acknowledgeable, yet the primary may be fine, so
// a lapse (with changes applied meanwhile) costs open transactions nothing;
// a failover applied during the lapse is acted on when the lease comes back,
// though that is no change of state.
func TestALeaseLapseResetsNothingTheControlPlaneHasNotSuperseded(t *testing.T) {
	e, auth := authEnv(t, envOpts{})
	db1 := e.cluster.Members[0]
	db := e.db(t, "")
	ctx := context.Background()
	mustExec(t, db, "CREATE TABLE la (id INT PRIMARY KEY)")
	lease := func(held, notify bool) { auth.update(notify, func() { auth.noLease = !held }) }

	t.Run("LapseWithoutAChange", func(t *testing.T) {
		c := e.conn(t, db)
		mustExec(t, c, "BEGIN")
		mustExec(t, c, "INSERT INTO la VALUES (1)")
		lease(false, true)
		done := make(chan error, 1)
		go func() {
			_, err := c.ExecContext(ctx, "INSERT INTO la VALUES (2)")
			done <- err
		}()
		select { // held: without a lease the proxy cannot tell where it may run
		case err := <-done:
			t.Fatalf("a statement of the transaction went on without a lease: %v", err)
		case <-time.After(300 * time.Millisecond):
		}
		lease(true, true)
		if err := <-done; err != nil {
			t.Fatalf("the transaction's statement after the lapse: %v", err)
		}
		mustExec(t, c, "COMMIT")
		if n := count(t, db1, "SELECT COUNT(*) FROM app.la WHERE id IN (1, 2)"); n != 2 {
			t.Fatalf("the transaction across the lapse committed %d of 2 rows", n)
		}
	})

	t.Run("FailoverAppliedDuringTheLapse", func(t *testing.T) {
		stuck := e.conn(t, db)
		if err := db1.Pause(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db1.Resume() })
		done := make(chan error, 1)
		go func() {
			_, err := stuck.ExecContext(ctx, "INSERT INTO la VALUES (3)")
			done <- err
		}()
		if err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) { return e.proxy.InFlight()["db1"] == 1, nil }); err != nil {
			t.Fatal("the INSERT never went out to db1")
		}
		lease(false, true)
		auth.update(true, func() { // applied without a lease
			auth.epoch++
			auth.primary, auth.safeSince = "db2", auth.epoch
		})
		select {
		case err := <-done:
			t.Fatalf("ended before the proxy could tell the epoch was superseded: %v", err)
		case <-time.After(300 * time.Millisecond):
		}
		lease(true, false) // renewed: no change of state
		start := time.Now()
		select {
		case err := <-done:
			if errCode(err) != pmysql.CodeOutcomeUnknown || !strings.Contains(err.Error(), "failed over") {
				t.Fatalf("%v, want %d (failed over)", err, pmysql.CodeOutcomeUnknown)
			}
			if d := time.Since(start); d > 500*time.Millisecond {
				t.Fatalf("ended %v after the lease came back", d)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("the statement on the failed-over primary still waits 3 s after the lease came back")
		}
	})
}
