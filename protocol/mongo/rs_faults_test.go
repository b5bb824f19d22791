package mongo

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
)

// rsDriver is the Go driver v2 with its default settings on the proxy.
func rsDriver(t *testing.T, addr string) *mongo.Client {
	t.Helper()
	c, err := mongo.Connect(options.Client().ApplyURI("mongodb://" + addr + "/"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Disconnect(ctx)
	})
	return c
}

// The bound on "writes succeed again" after the primary is lost: the
// election timeout plus its random 0-50 %, a dry run and a vote (a few
// heartbeats), the monitor's next probe (100 ms) and the proxy's 50 ms
// poll, with room for a two-core machine running other tests (2.6-3.5 s
// measured on an idle one).
const rsWritesAgainBound = rsElectionTimeout*3/2 + 4*time.Second

// rsFreeze is how long the SIGSTOP test keeps the primary frozen: longer
// than rsWritesAgainBound + 1 s, so that a write waiting for the frozen
// member shows.
const rsFreeze = 5 * rsElectionTimeout

// TestRSPrimaryKilledUnderMajorityLoad: kill -9 of the primary under a
// w:majority insert load (one insert every 10 ms, each its own request).
// No error reaches the driver: a write in flight on the killed member is
// answered DbrouterOutcomeUnknown with RetryableWriteError and the driver
// retries it once (the new primary deduplicates it by lsid and txnNumber
// when the first attempt had replicated); a write that finds the member
// down is held until the set has elected another primary. Every
// acknowledged write is on the new primary, and writes succeed again
// within rsWritesAgainBound.
func TestRSPrimaryKilledUnderMajorityLoad(t *testing.T) {
	e := startRSEnv(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l := startWLoad(ctx, rsDriver(t, e.addr), 10*time.Millisecond, 50)
	l.waitAcked(t, ctx, time.Time{}, 100, 20*time.Second)
	old := e.rs.Members[e.first]
	killed := time.Now()
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	np, named := e.waitOtherNamed(t, ctx, e.first, 4*rsElectionTimeout+5*time.Second)
	l.waitAcked(t, ctx, killed, 100, 20*time.Second)
	acked := l.Finish()
	again := l.WritesAgain(killed)
	t.Logf("kill -9 %s: %s named primary after %s, writes acknowledged again after %s (bound %s); %d writes acknowledged, slowest %s",
		old.Name, e.rs.Members[np].Name, named.Sub(killed).Round(time.Millisecond), again.Round(time.Millisecond), rsWritesAgainBound, len(acked), l.Slowest().Round(time.Millisecond))
	l.checkNoErrors(t)
	if again <= 0 || again > rsWritesAgainBound {
		t.Errorf("writes succeeded again %s after the kill, want within %s", again, rsWritesAgainBound)
	}
	if miss := missingOn(t, ctx, e.rs.Members[np], acked); len(miss) > 0 {
		t.Errorf("%d acknowledged w:majority writes are not on the new primary %s, e.g. %v", len(miss), e.rs.Members[np].Name, miss[:min(5, len(miss))])
	}
	e.rec.checkOneClaimantPerElection(t)
}

// TestRSPrimaryPausedRollsBackOnlyUnacknowledgedMajority: SIGSTOP of the
// primary for five election timeouts under a w:majority load (one insert
// every 100 ms), after a w:1 insert that only the primary has (its
// secondaries' replication paused for it). The others elect a new primary
// and writes through the proxy succeed again; the writes that were in
// flight on the frozen member end once the new primary is named
// (DbrouterOutcomeUnknown with RetryableWriteError) and the driver
// retries them there, so none waits for the freeze to end. The old
// primary rolls back
// the w:1 write (the simulator counts one rollback) and keeps every
// acknowledged w:majority write; no two members were ever judged primary
// under one electionId, and no write reached the old primary after the
// new one was named.
func TestRSPrimaryPausedRollsBackOnlyUnacknowledgedMajority(t *testing.T) {
	e := startRSEnv(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := rsDriver(t, e.addr)
	l := startWLoad(ctx, c, 100*time.Millisecond, 100)
	l.waitAcked(t, ctx, time.Time{}, 20, 20*time.Second)
	old := e.rs.Members[e.first]
	var secs []int
	for i := range e.rs.Members {
		if i != e.first {
			secs = append(secs, i)
			if err := e.rs.PauseReplication(ctx, e.rs.Members[i], true); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Through the proxy, w:1 (the driver's default, no writeConcern sent):
	// acknowledged by the primary alone, which is all w:1 promises.
	w1 := c.Database("app").Collection("w1")
	if _, err := w1.InsertOne(ctx, bson.D{{Key: "_id", Value: "only-on-the-old-primary"}}); err != nil {
		t.Fatalf("w:1 insert: %v", err)
	}
	paused := time.Now()
	if err := old.Pause(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			_ = old.Resume()
		}
	}()
	for _, i := range secs {
		if err := e.rs.PauseReplication(ctx, e.rs.Members[i], false); err != nil {
			t.Fatal(err)
		}
	}
	np, named := e.waitOtherNamed(t, ctx, e.first, 4*rsElectionTimeout+5*time.Second)
	l.waitAcked(t, ctx, paused, 10, 20*time.Second)
	again := l.WritesAgain(paused)
	// The fault lasts five election timeouts (a duration, not a wait for
	// something to happen).
	time.Sleep(time.Until(paused.Add(rsFreeze)))
	if err := old.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	resumedAt := time.Now()
	if err := pollCtx(ctx, 20*time.Second, func() bool {
		h, err := old.Hello(ctx)
		if err != nil {
			return false
		}
		w, _ := h.Lookup("isWritablePrimary").BooleanOK()
		return !w && rollbacksOf(t, ctx, e.rs, old) == 1
	}); err != nil {
		t.Fatalf("the old primary %s did not step down and roll back once within 20 s of its resume", old.Name)
	}
	l.waitAcked(t, ctx, resumedAt, 10, 20*time.Second)
	acked := l.Finish()
	t.Logf("SIGSTOP %s for %s: %s named primary after %s, writes acknowledged again after %s; %d writes acknowledged, slowest %s (in flight on the frozen member)",
		old.Name, rsFreeze, e.rs.Members[np].Name, named.Sub(paused).Round(time.Millisecond), again.Round(time.Millisecond), len(acked), l.Slowest().Round(time.Millisecond))
	l.checkNoErrors(t)
	if again <= 0 || again > rsWritesAgainBound {
		t.Errorf("writes succeeded again %s after the pause, want within %s", again, rsWritesAgainBound)
	}
	// Writes in flight on the frozen member end when the new primary is
	// named, not when the freeze ends.
	if slow := l.Slowest(); slow > rsWritesAgainBound+time.Second {
		t.Errorf("the slowest write took %s: it waited for the frozen member (frozen %s), want at most %s", slow, rsFreeze, rsWritesAgainBound+time.Second)
	}
	newP := e.rs.Members[np]
	if miss := missingOn(t, ctx, newP, acked); len(miss) > 0 {
		t.Errorf("%d acknowledged w:majority writes are not on the new primary %s, e.g. %v", len(miss), newP.Name, miss[:min(5, len(miss))])
	}
	// The old primary converges on the new one's history: the w:1 write
	// is gone from both, every acknowledged write is on it.
	if err := pollCtx(ctx, 20*time.Second, func() bool { return len(missingOn(t, ctx, old, acked)) == 0 }); err != nil {
		t.Errorf("the old primary %s still lacks %d acknowledged writes 20 s after its resume", old.Name, len(missingOn(t, ctx, old, acked)))
	}
	for _, m := range []int{e.first, np} {
		n, err := connect(t, e.rs.Members[m].URI()).Database("app").Collection("w1").CountDocuments(ctx, bson.D{})
		if err != nil || n != 0 {
			t.Errorf("%s holds %d documents of the rolled-back w:1 write (%v), want 0", e.rs.Members[m].Name, n, err)
		}
	}
	elections := e.rec.checkOneClaimantPerElection(t)
	if elections < 2 {
		t.Errorf("the proxy's topology saw %d elections, want at least 2", elections)
	}
	// A write the proxy routed just before the new primary was named may
	// pass the tap a moment later; 250 ms covers the scheduling of a
	// loaded machine, far less than the election that separates the two.
	if n, last := e.taps[e.first].count(named.Add(250*time.Millisecond), writeNames...); n > 0 {
		t.Errorf("%d writes reached the old primary %s after %s was named primary (the last %s after)", n, old.Name, newP.Name, last.Sub(named))
	}
}

// TestRSStepDownUnderLoadShowsNoErrors: a planned switchover done on the
// set itself (replSetStepDown on the primary, no control plane) under a
// w:majority load: writes refused by the stepping-down primary (10107)
// are held by the proxy until the set's next primary is observed and sent
// there; writes it interrupted (11602) are retried by the driver. No
// error reaches the driver and every acknowledged write is on the new
// primary.
func TestRSStepDownUnderLoadShowsNoErrors(t *testing.T) {
	e := startRSEnv(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l := startWLoad(ctx, rsDriver(t, e.addr), 10*time.Millisecond, 50)
	l.waitAcked(t, ctx, time.Time{}, 100, 20*time.Second)
	old := e.rs.Members[e.first]
	began := time.Now()
	if _, err := old.Command(ctx, bson.D{{Key: "replSetStepDown", Value: 10}, {Key: "secondaryCatchUpPeriodSecs", Value: 5}}); err != nil {
		t.Fatalf("replSetStepDown on %s: %v", old.Name, err)
	}
	took := time.Since(began)
	np, named := e.waitOtherNamed(t, ctx, e.first, 10*time.Second)
	l.waitAcked(t, ctx, named, 100, 20*time.Second)
	acked := l.Finish()
	t.Logf("replSetStepDown on %s took %s; %s named primary %s after it began; longest write pause %s, slowest write %s; %d writes acknowledged",
		old.Name, took.Round(time.Millisecond), e.rs.Members[np].Name, named.Sub(began).Round(time.Millisecond),
		l.LongestPause().Round(time.Millisecond), l.Slowest().Round(time.Millisecond), len(acked))
	l.checkNoErrors(t)
	// The handoff is a heartbeat or two plus the monitor's next probe
	// (180-390 ms measured on an idle machine): a pause of an election
	// timeout would mean writes waited for an election, not a handoff.
	if p := l.LongestPause(); p >= rsElectionTimeout {
		t.Errorf("longest write pause %s, want less than the election timeout %s", p, rsElectionTimeout)
	}
	if miss := missingOn(t, ctx, e.rs.Members[np], acked); len(miss) > 0 {
		t.Errorf("%d acknowledged w:majority writes are not on the new primary, e.g. %v", len(miss), miss[:min(5, len(miss))])
	}
	e.rec.checkOneClaimantPerElection(t)
}

// TestRSSecondaryReadsSurviveASecondaryKilled: reads with read preference
// secondary go to both secondaries (the tap in front of each counts the
// finds), never to the primary; after one secondary is killed with kill
// -9 they go on, on the other one, with no error reaching the driver.
func TestRSSecondaryReadsSurviveASecondaryKilled(t *testing.T) {
	e := startRSEnv(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := rsDriver(t, e.addr)
	marker := c.Database("app").Collection("marker", options.Collection().SetWriteConcern(writeconcern.Majority()))
	if _, err := marker.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	var secs []int
	for i := range e.rs.Members {
		if i != e.first {
			secs = append(secs, i)
		}
	}
	// The monitor must see both secondaries caught up before reads pick
	// them (lag known and under max_replica_lag).
	if err := pollCtx(ctx, 10*time.Second, func() bool {
		s := e.rec.Snapshot()
		return s.Members[secs[0]].Eligible && s.Members[secs[1]].Eligible
	}); err != nil {
		t.Fatalf("the secondaries never became eligible: %+v", e.rec.Snapshot())
	}
	start := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	var reads atomic.Int64
	rcoll := c.Database("app").Collection("marker", options.Collection().SetReadPreference(readpref.Secondary()))
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := rcoll.FindOne(ctx, bson.D{{Key: "_id", Value: 1}}).Err(); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					continue
				}
				reads.Add(1)
			}
		}()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	if err := pollCtx(ctx, 20*time.Second, func() bool {
		a, _ := e.taps[secs[0]].count(start, "find")
		b, _ := e.taps[secs[1]].count(start, "find")
		return a >= 20 && b >= 20
	}); err != nil {
		t.Fatal("secondary reads did not reach both secondaries")
	}
	victim, other := e.rs.Members[secs[0]], secs[1]
	killed := time.Now()
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := pollCtx(ctx, 20*time.Second, func() bool { n, _ := e.taps[other].count(killed, "find"); return n >= 200 }); err != nil {
		t.Fatalf("reads did not go on on %s after %s was killed", e.rs.Members[other].Name, victim.Name)
	}
	close(stop)
	wg.Wait()
	onOther, _ := e.taps[other].count(killed, "find")
	onPrimary, _ := e.taps[e.first].count(start, "find")
	t.Logf("%d secondary reads; after the kill of %s, %d finds reached %s", reads.Load(), victim.Name, onOther, e.rs.Members[other].Name)
	for i, err := range errs {
		if i == 10 {
			break
		}
		t.Errorf("a driver saw: %v", err)
	}
	if onPrimary != 0 {
		t.Errorf("%d secondary reads reached the primary", onPrimary)
	}
}

// pollCtx polls cond every 20 ms for up to d.
func pollCtx(ctx context.Context, d time.Duration, cond func() bool) error {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return context.DeadlineExceeded
		case <-tick.C:
		}
	}
	return nil
}
