package daemon_test

import (
	"context"
	"database/sql"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/admin"
	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/chaos/deploy"
)

// fast timings keep these tests short; cmd/chaos measures the defaults.
const fast = "  lease: 1s\n  lease_margin: 200ms\n  failure_threshold: 1s\n  cooldown: 2s\n  drain_timeout: 2s\n  write_hold_timeout: 10s\n"

func start(t *testing.T, o deploy.Options) *deploy.Deployment {
	t.Helper()
	if o.Control == "" {
		o.Control = fast
	}
	if o.ProbeInterval == "" {
		o.ProbeInterval = "100ms"
	}
	return deploy.StartT(t, o)
}

func proxyDB(t *testing.T, d *deploy.Deployment, i int) *sql.DB {
	t.Helper()
	db, err := d.ProxyDB(i)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func waitStatus(t *testing.T, d *deploy.Deployment, within time.Duration, what string, ok func([]admin.Status) bool) []admin.Status {
	t.Helper()
	st, err := d.WaitStatus(context.Background(), within, what, ok)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func missing(t *testing.T, d *deploy.Deployment, member, table string, acked []int) []int {
	t.Helper()
	lost, err := deploy.Missing(context.Background(), d.Member(member), table, acked)
	if err != nil {
		t.Fatal(err)
	}
	return lost
}

// waitHeartbeatsShortened waits until the arbiters have given both replicas
// a heartbeat period short enough (≤ failure_threshold/2) to tell a hung
// primary from a quiet one; the harness starts them with 1 s, as a replica
// set up by hand might be.
func waitHeartbeatsShortened(t *testing.T, d *deploy.Deployment) {
	t.Helper()
	poll(t, 20*time.Second, "replicas' heartbeat periods shortened", func() bool {
		for _, m := range d.DB.Members[1:] {
			db, err := m.DB()
			if err != nil {
				return false
			}
			st, ok, err := chaos.ReplicaStatus(context.Background(), db)
			db.Close()
			if err != nil || !ok || st.HeartbeatPeriod > 0.5 {
				return false
			}
		}
		return true
	})
}

func exec(t *testing.T, db *sql.DB, qs ...string) {
	t.Helper()
	for _, q := range qs {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func poll(t *testing.T, within time.Duration, what string, f func() bool) {
	t.Helper()
	if err := chaos.Poll(context.Background(), within, func() (bool, error) { return f(), nil }); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// Invariants: every acknowledged write survives a kill -9 of the primary,
// only the write in flight at the kill may fail, and one member is writable.
func TestKillPrimaryUnderWriteLoad(t *testing.T) {
	d := start(t, deploy.Options{Proxies: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	db := proxyDB(t, d, 0)
	// A weak durability setting on a member shows in the metric, and
	// clears when fixed.
	adm, err := d.Member("db2").DB()
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	warning := func() float64 {
		v, _ := d.Metric(ctx, 0, "dbrouter_durability_warning", map[string]string{"member": "db2", "check": "semi_sync_wait_point"})
		return v
	}
	exec(t, adm, "SET GLOBAL rpl_semi_sync_master_wait_point=AFTER_COMMIT")
	poll(t, 10*time.Second, "durability warning raised", func() bool { return warning() == 1 })
	exec(t, adm, "SET GLOBAL rpl_semi_sync_master_wait_point=AFTER_SYNC")
	poll(t, 10*time.Second, "durability warning cleared", func() bool { return warning() == 0 })
	exec(t, db, "CREATE TABLE acked (id INT PRIMARY KEY)")
	w := deploy.StartWriter(ctx, db, "acked", 1, false)
	poll(t, 20*time.Second, "writes through the proxy start", func() bool { return w.Acked() >= 200 })
	killed := time.Now()
	if err := d.Member("db1").Kill(); err != nil {
		t.Fatal(err)
	}
	before := w.Acked()
	poll(t, 30*time.Second, "writes resume after the failover", func() bool { return w.Acked() >= before+200 })
	acked, times, errs := w.Finish()
	t.Logf("kill -9 of the primary: writes resumed after %s; %d acknowledged, %d errors %v",
		deploy.FirstAfter(times[before:], killed).Sub(killed).Round(time.Millisecond), len(acked), len(errs), errs)
	st := d.Statuses()[0].Clusters[0]
	if st.Primary == "db1" || st.Epoch < 2 || st.Phase != "serving" {
		t.Fatalf("control plane after failover: %+v", st)
	}
	if w := d.WritableMembers(ctx); len(w) != 1 || w[0] != st.Primary {
		t.Fatalf("writable members %v, want only %s", w, st.Primary)
	}
	if lost := missing(t, d, st.Primary, "acked", acked); len(lost) > 0 {
		t.Fatalf("%d acknowledged writes lost, e.g. %v", len(lost), lost[:min(10, len(lost))])
	}
	if len(errs) > 8 {
		t.Fatalf("%d write errors; only those in flight at the kill (at most one per connection) may fail", len(errs))
	}
}

// A planned switchover under autocommit and transactional load through two
// proxies: no client error, nothing lost, a short pause.
func TestSwitchoverUnderLoadShowsNoErrors(t *testing.T) {
	d := start(t, deploy.Options{Proxies: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	db := proxyDB(t, d, 0)
	exec(t, db, "CREATE TABLE auto (id INT PRIMARY KEY)", "CREATE TABLE txn (id INT PRIMARY KEY)")
	if err := d.WaitHealthyOnLeader(ctx, "db2", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	wa := deploy.StartWriter(ctx, db, "auto", 1, false)
	wt := deploy.StartWriter(ctx, proxyDB(t, d, 1), "txn", 1, true)
	poll(t, 20*time.Second, "writes start", func() bool { return wa.Acked() > 100 && wt.Acked() > 50 })
	begin := time.Now()
	if err := d.Promote(ctx, 0, "db2", 30*time.Second); err != nil {
		t.Fatalf("promote: %v", err)
	}
	took := time.Since(begin)
	n := wa.Acked()
	poll(t, 20*time.Second, "writes continue after the switchover", func() bool { return wa.Acked() > n+100 })
	ackA, timesA, errsA := wa.Finish()
	ackT, timesT, errsT := wt.Finish()
	t.Logf("switchover took %s; longest write pause: autocommit %s, transactions %s; errors %d + %d",
		took.Round(time.Millisecond), deploy.LongestPause(timesA).Round(time.Millisecond), deploy.LongestPause(timesT).Round(time.Millisecond), len(errsA), len(errsT))
	for _, e := range append(errsA, errsT...) {
		t.Error("client saw an error during the switchover: " + e)
	}
	if w := d.WritableMembers(ctx); len(w) != 1 || w[0] != "db2" {
		t.Fatalf("writable members %v, want only db2", w)
	}
	if lost := missing(t, d, "db2", "auto", ackA); len(lost) > 0 {
		t.Fatalf("lost autocommit writes %v", lost)
	}
	if lost := missing(t, d, "db2", "txn", ackT); len(lost) > 0 {
		t.Fatalf("lost transactions %v", lost)
	}
	if p := max(deploy.LongestPause(timesA), deploy.LongestPause(timesT)); p > 3*time.Second {
		t.Fatalf("writes paused %s", p)
	}
}

// A proxy cut off from every arbiter stops writing within its lease: its
// writes are held, then fail with 9008, and none is acknowledged after the
// lease ran out. The other proxy and the primary are unaffected.
func TestProxyCutOffFromArbitersStopsWriting(t *testing.T) {
	d := start(t, deploy.Options{Proxies: 2, ProxyToArbiters: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	db1, db2 := proxyDB(t, d, 0), proxyDB(t, d, 1)
	exec(t, db1, "CREATE TABLE cut (id INT PRIMARY KEY)")
	w1 := deploy.StartWriter(ctx, db1, "cut", 1, false)
	w2 := deploy.StartWriter(ctx, db2, "cut", 1_000_000, false)
	poll(t, 20*time.Second, "writes start", func() bool { return w1.Acked() > 100 && w2.Acked() > 100 })
	cut := time.Now()
	d.Cut("p1/")
	n2 := w2.Acked()
	poll(t, 30*time.Second, "p1's writes fail while p2's go on", func() bool { return w1.Errors() > 0 && w2.Acked() > n2+200 })
	ack1, times1, errs1 := w1.Finish()
	ack2, _, errs2 := w2.Finish()
	last := times1[len(times1)-1]
	t.Logf("p1 cut off: last write acknowledged %s after the cut (lease 1s); first error: %s", last.Sub(cut).Round(time.Millisecond), errs1[0])
	if last.Sub(cut) > 1500*time.Millisecond {
		t.Fatalf("p1 acknowledged a write %s after it was cut off (lease 1s)", last.Sub(cut))
	}
	// Held writes fail with 9008 (no lease); a write in flight when the
	// lease ran out gets 9010 (outcome unknown), never a success.
	saw9008 := false
	for _, e := range errs1 {
		saw9008 = saw9008 || strings.Contains(e, "9008")
		if !strings.Contains(e, "9008") && !strings.Contains(e, "9010") {
			t.Errorf("p1 error %q, want 9008 or 9010", e)
		}
	}
	if !saw9008 {
		t.Fatalf("p1's writes never failed with 9008 (no write lease): %v", errs1)
	}
	if len(errs2) > 0 {
		t.Fatalf("p2 saw errors: %v", errs2[:min(3, len(errs2))])
	}
	if st := d.Statuses()[0].Clusters[0]; st.Epoch != 1 || st.Primary != "db1" {
		t.Fatalf("a proxy's partition changed the primary: %+v", st)
	}
	for _, ack := range [][]int{ack1, ack2} {
		if lost := missing(t, d, "db1", "cut", ack); len(lost) > 0 {
			t.Fatalf("acknowledged writes missing: %v", lost[:min(5, len(lost))])
		}
	}
	if err := d.Restore("p1/"); err != nil {
		t.Fatal(err)
	}
	poll(t, 20*time.Second, "p1 writes again after the partition healed", func() bool {
		_, err := db1.ExecContext(ctx, "INSERT INTO cut (id) VALUES (?)", 5_000_000+time.Now().Nanosecond()%1_000_000)
		return err == nil
	})
}

// The primary is cut off from every arbiter and its replicas lose it too,
// but a proxy still reaches it: the arbiters fail over, the proxy follows
// the new epoch, and a write that was stuck on the old primary (waiting for
// a semi-sync ack that never comes) is not acknowledged when it finally
// commits there. The old primary comes back fenced with its stray
// transaction reported, or rejoins if it has none.
func TestPrimaryCutOffFromArbitersButNotFromProxy(t *testing.T) {
	d := start(t, deploy.Options{Proxies: 1, ArbiterToPrimary: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	db := proxyDB(t, d, 0)
	exec(t, db, "CREATE TABLE part (id INT PRIMARY KEY)")
	w := deploy.StartWriter(ctx, db, "part", 1, false)
	poll(t, 20*time.Second, "writes start", func() bool { return w.Acked() > 100 })
	for _, m := range []string{"db2", "db3"} {
		adm, err := d.Member(m).DB()
		if err != nil {
			t.Fatal(err)
		}
		exec(t, adm, "STOP SLAVE IO_THREAD")
		adm.Close()
	}
	d.Cut("a")
	st := waitStatus(t, d, 30*time.Second, "failover away from db1", func(st []admin.Status) bool {
		c := st[0].Clusters
		return len(c) > 0 && c[0].Epoch >= 2 && c[0].Phase == "serving" && c[0].Primary != "db1"
	})[0].Clusters[0]
	n := w.Acked()
	poll(t, 30*time.Second, "writes resume on the new primary", func() bool { return w.Acked() > n+100 })
	acked, _, errs := w.Finish()
	t.Logf("failover to %s at epoch %d; %d acknowledged, errors: %v", st.Primary, st.Epoch, len(acked), errs)
	if lost := missing(t, d, st.Primary, "part", acked); len(lost) > 0 {
		t.Fatalf("%d acknowledged writes are not on the new primary %s: %v", len(lost), st.Primary, lost[:min(5, len(lost))])
	}
	for _, e := range errs {
		if !strings.Contains(e, "9010") && !strings.Contains(e, "9011") && !strings.Contains(e, "9005") {
			t.Errorf("unexpected client error %s", e)
		}
	}
	if err := d.Restore("a"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, d, 30*time.Second, "db1 fenced or rejoined", func(st []admin.Status) bool {
		for _, m := range st[0].Clusters[0].Members {
			if m.Name == "db1" {
				return m.ReadOnly && (m.Errant != "" || (m.Role == "replica" && !m.Fenced))
			}
		}
		return false
	})
	if w := d.WritableMembers(ctx); len(w) != 1 || w[0] != st.Primary {
		t.Fatalf("writable members after healing: %v", w)
	}
}

// SIGSTOP the primary for longer than the failure threshold: the arbiters
// fail over once the replicas have lost it too; when it is resumed it is a
// writable member that is not the primary, so it is fenced at once, and the
// statement that was stuck on it is not acknowledged (9010) or failed.
func TestPausedPrimaryIsReplacedAndFencedOnResume(t *testing.T) {
	d := start(t, deploy.Options{Proxies: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	db := proxyDB(t, d, 0)
	exec(t, db, "CREATE TABLE paused (id INT PRIMARY KEY)", "CREATE TABLE pausedtx (id INT PRIMARY KEY)")
	w := deploy.StartWriter(ctx, db, "paused", 1, false)
	wt := deploy.StartWriter(ctx, db, "pausedtx", 1, true)
	poll(t, 20*time.Second, "writes start", func() bool { return w.Acked() > 100 && wt.Acked() > 50 })
	waitHeartbeatsShortened(t, d)
	db1 := d.Member("db1")
	beforeA, beforeT := w.Acked(), wt.Acked()
	paused := time.Now()
	if err := db1.Pause(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			_ = db1.Resume()
		}
	}()
	st := waitStatus(t, d, 40*time.Second, "failover away from the paused primary", func(st []admin.Status) bool {
		c := st[0].Clusters
		return len(c) > 0 && c[0].Epoch >= 2 && c[0].Phase == "serving" && c[0].Primary != "db1"
	})[0].Clusters[0]
	t.Logf("failover to %s %s after SIGSTOP (MariaDB's slave_net_timeout: 60 s)", st.Primary, time.Since(paused).Round(time.Millisecond))
	// No client waits on the hung primary once the failover is done.
	if v, err := d.Metric(ctx, len(d.Arbiters), "dbrouter_backend_inflight", map[string]string{"member": "db1"}); err != nil || v != 0 {
		t.Errorf("statements still waiting on the old primary after the failover: %v (%v)", v, err)
	}
	// Both writers write again within the failure threshold and a few
	// hundred milliseconds of decision, not when the old primary wakes.
	poll(t, 30*time.Second, "writes resume", func() bool { return w.Acked() > beforeA+50 && wt.Acked() > beforeT+20 })
	if err := db1.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	n := w.Acked()
	poll(t, 30*time.Second, "writes continue on the new primary", func() bool { return w.Acked() > n+100 })
	var old admin.MemberStatus
	waitStatus(t, d, 30*time.Second, "db1 back: fenced as errant or rejoined", func(st []admin.Status) bool {
		for _, m := range st[0].Clusters[0].Members {
			if m.Name == "db1" {
				old = m
				return m.Reachable && m.ReadOnly && (m.Errant != "" || !m.Fenced && m.IORunning)
			}
		}
		return false
	})
	acked, times, errs := w.Finish()
	ackedT, timesT, errsT := wt.Finish()
	frozen := paused.Add(20 * time.Millisecond) // acks in the moment before SIGSTOP took effect do not count
	resume := max(deploy.FirstAfter(times[beforeA:], frozen).Sub(paused), deploy.FirstAfter(timesT[beforeT:], frozen).Sub(paused))
	t.Logf("writes resumed %s after SIGSTOP; client errors %v %v; db1 errant %q", resume.Round(time.Millisecond), errs, errsT, old.Errant)
	if limit := time.Second + 4*time.Second; resume > limit {
		t.Errorf("writes resumed %s after SIGSTOP, more than %s (failure_threshold 1s)", resume, limit)
	}
	for _, e := range append(errs, errsT...) {
		if !strings.Contains(e, "9010") && !strings.Contains(e, "9011") && !strings.Contains(e, "9005") {
			t.Errorf("unexpected client error %s", e)
		}
	}
	// Rows only the old primary has: writes whose clients got an error, and
	// then db1 must be errant.
	extra := 0
	for _, tc := range []struct {
		table  string
		failed []int
	}{{"paused", w.Failed()}, {"pausedtx", wt.Failed()}} {
		ids, err := deploy.Extra(ctx, db1, d.Member(st.Primary), tc.table)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if !slices.Contains(tc.failed, id) {
				t.Errorf("%s id %d is only on the old primary and was acknowledged", tc.table, id)
			}
		}
		extra += len(ids)
	}
	if extra > 0 && old.Errant == "" {
		t.Errorf("db1 has %d rows the new primary lacks but is not errant: %+v", extra, old)
	}
	if lost := missing(t, d, st.Primary, "paused", acked); len(lost) > 0 {
		t.Fatalf("%d acknowledged writes not on the new primary: %v", len(lost), lost[:min(5, len(lost))])
	}
	if lost := missing(t, d, st.Primary, "pausedtx", ackedT); len(lost) > 0 {
		t.Fatalf("%d acknowledged transactions not on the new primary: %v", len(lost), lost[:min(5, len(lost))])
	}
	if w := d.WritableMembers(ctx); len(w) != 1 || w[0] != st.Primary {
		t.Fatalf("writable members %v, want only %s", w, st.Primary)
	}
}

// A transaction left open across a switchover gets drain_timeout to finish;
// then its connection is killed with the old primary's fencing, the client
// is told why, and nothing of it reaches the new primary.
func TestSwitchoverAbortsTransactionsOpenPastDrainTimeout(t *testing.T) {
	d := start(t, deploy.Options{Proxies: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := proxyDB(t, d, 0)
	exec(t, db, "CREATE TABLE drained (id INT PRIMARY KEY)")
	if err := d.WaitHealthyOnLeader(ctx, "db2", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []string{"BEGIN", "INSERT INTO drained VALUES (1)"} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	begin := time.Now()
	if err := d.Promote(ctx, 0, "db2", 30*time.Second); err != nil {
		t.Fatalf("promote: %v", err)
	}
	if took := time.Since(begin); took < 2*time.Second {
		t.Fatalf("switchover took %s: it did not wait drain_timeout (2s) for the open transaction", took)
	}
	_, err = conn.ExecContext(ctx, "COMMIT")
	if err == nil {
		t.Fatal("a transaction open past drain_timeout committed on the fenced old primary")
	}
	t.Logf("open transaction after the switchover: %v", err)
	if lost := missing(t, d, "db2", "drained", []int{1}); len(lost) != 1 {
		t.Fatal("the aborted transaction's row is on the new primary")
	}
}

// TestReplaceADeadArbiter: an arbiter lost for good is replaced while the
// group runs — a new one started with join_existing, added through a proxy's
// admin API (forwarded to the leader), the dead one removed — and the group
// then keeps working with the new arbiter as one of the two voters left.
func TestReplaceADeadArbiter(t *testing.T) {
	d := start(t, deploy.Options{Proxies: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := d.Arbiters[2].Stop(); err != nil { // a3's host is gone
		t.Fatal(err)
	}
	waitStatus(t, d, 20*time.Second, "a leader other than a3", func(st []admin.Status) bool {
		c := st[len(st)-1].Control
		return c != nil && c.Leader != "" && c.Leader != "a3"
	})
	a4, raftAddr, err := d.AddArbiter("a4", "a3")
	if err != nil {
		t.Fatal(err)
	}
	ctl := &admin.Client{Addr: d.Proxies[0].Admin, Secret: []byte(deploy.Secret)}
	if err := ctl.Do(ctx, "POST", "/v1/raft/arbiters", admin.JoinRequest{ID: "a4", Raft: raftAddr, Admin: a4.Admin}, nil); err != nil {
		t.Fatalf("add a4: %v", err)
	}
	if err := ctl.Do(ctx, "POST", "/v1/raft/remove", admin.RemoveRequest{ID: "a3"}, nil); err != nil {
		t.Fatalf("remove a3: %v", err)
	}
	// The proxy's view of the configuration follows the leader's.
	var voters map[string]bool
	err = chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
		var m struct {
			Servers []struct {
				ID    string `json:"id"`
				Voter bool   `json:"voter"`
			} `json:"servers"`
		}
		if err := ctl.Do(ctx, "GET", "/v1/raft/members", nil, &m); err != nil {
			return false, err
		}
		voters = map[string]bool{}
		for _, s := range m.Servers {
			if s.Voter {
				voters[s.ID] = true
			}
		}
		return len(voters) == 3 && voters["a1"] && voters["a2"] && voters["a4"], nil
	})
	if err != nil {
		t.Fatalf("voters %v, want a1, a2, a4: %v", voters, err)
	}
	// a4 has the replicated state.
	waitStatus(t, d, 20*time.Second, "a4 applied the cluster state", func(st []admin.Status) bool {
		s := st[3]
		return s.Control != nil && len(s.Clusters) == 1 && s.Clusters[0].Epoch >= 1
	})
	// Lose a1 as well: a2 and a4 are the majority of {a1, a2, a4}. A
	// switchover (a new epoch, committed by them) and writes through the
	// proxy afterwards show the group still decides.
	if err := d.Arbiters[0].Stop(); err != nil {
		t.Fatal(err)
	}
	if err := d.WaitHealthyOnLeader(ctx, "db2", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := d.Promote(ctx, 0, "db2", 30*time.Second); err != nil {
		t.Fatalf("switchover with a2 and a4 voting: %v", err)
	}
	db := proxyDB(t, d, 0)
	exec(t, db, "CREATE TABLE replaced (id INT PRIMARY KEY)", "INSERT INTO replaced VALUES (1)")
	if w := d.WritableMembers(ctx); len(w) != 1 || w[0] != "db2" {
		t.Fatalf("writable members %v, want db2", w)
	}
}

// A replica the control plane fenced (here: errant, though its replication
// runs without a hitch) serves no reads through the proxies.
func TestFencedReplicaServesNoReads(t *testing.T) {
	// Both replicas share the reads whatever their RTTs on a loaded
	// machine (with the 5 ms default, db3 could see none for 20 s).
	d := start(t, deploy.Options{Proxies: 1, Cluster: "    locality_window: 1s\n"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := proxyDB(t, d, 0)
	// Every read on a session of its own: a session keeps reading from
	// the replica it first read from (it was the only eligible one, maybe).
	db.SetMaxIdleConns(0)
	readers := func(n int) map[int]int {
		seen := map[int]int{}
		for i := 0; i < n; i++ {
			var id int
			if err := db.QueryRowContext(ctx, "SELECT @@server_id").Scan(&id); err != nil {
				t.Fatal(err)
			}
			seen[id]++
		}
		return seen
	}
	poll(t, 20*time.Second, "reads reach db3", func() bool { return readers(20)[3] > 0 })
	adm, err := d.Member("db3").DB()
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	conn, err := adm.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "SET SESSION gtid_domain_id=7"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "CREATE TABLE app.stray (id INT PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	waitStatus(t, d, 20*time.Second, "db3 fenced as errant on the proxy", func(st []admin.Status) bool {
		p := st[len(st)-1] // the proxy's view
		for _, m := range p.Clusters[0].Members {
			if m.Name == "db3" {
				return m.Fenced && m.Errant != ""
			}
		}
		return false
	})
	if got := readers(100); got[3] != 0 {
		t.Fatalf("reads served by the fenced db3: %v", got)
	}
}
