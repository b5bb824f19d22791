package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"github.com/dbrouter/dbrouter/admin"
	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/chaos/deploy"
	"github.com/dbrouter/dbrouter/raftfsm"
)

// The Mongo scenarios under the control plane run a whole deployment
// (chaos/deploy with Options.Mongo): 3 arbiters and the proxies in front of
// a simulated 3-member replica set whose own election timeout is mongod's
// 10 s, every setting at routerd's default. The arbiters decide: they
// commit the set's primary as the epoch, step a secondary up when a
// majority has lost the primary, and run switchovers. The load is
// chaos.MongoLoad (w:majority inserts through the proxy, the Go driver v2
// at its default settings). Every run checks the invariants:
//   - one primary per epoch in every node's decision history, and at the
//     end one writable member, the primary of the newest epoch;
//   - every acknowledged w:majority write on that primary;
//   - every client error one docs/mongo.md promises for a primary change.

// cpPauseFor is how long the SIGSTOP scenario keeps the primary frozen:
// under the set's own 10 s election timeout, so the set alone would elect
// no one meanwhile (a new primary is the arbiters' doing), and long past
// the arbiters' failover.
const cpPauseFor = 8 * time.Second

// cpElectionTimeout is the simulated members' own election timeout.
const cpElectionTimeout = 10 * time.Second

// failoverCodes are the proxy's codes docs/mongo.md ("Member state changes
// never reach a driver", "Error codes") promises for a write during a
// primary change: no primary within WriteHold (9501), no lease (9504), a
// change that did not finish (9505), the member down (9506), an outcome
// unknown (9510, which a driver with retryable writes retries). Any other
// error fails the run.
var failoverCodes = []int{9501, 9504, 9505, 9506, 9510}

type cpResult struct {
	resume  time.Duration // fault → first write begun after it acknowledged
	pause   time.Duration // longest gap between acknowledgements
	slowest time.Duration // the longest a write waited
	took    time.Duration // fault → new epoch committed; promote: the call
	errors  []string
	acked   int
	epochs  int // epochs begun after the fault
	// SIGSTOP: writes begun before the freeze and acknowledged after the
	// resume (each found on the new primary), and documents the old
	// primary has that the new one lacks (none acknowledged).
	heldThrough, extra int
	// cut: the leader's note that a secondary still hears from the primary,
	// after the cut.
	veto time.Duration
	// switchover: the promote's error when it failed and was rolled back
	// to the old primary (an outcome docs/guarantees.md promises for a
	// failure before the step-up, but not the target's).
	rolledBack string
}

// cpDeploy starts a Mongo deployment with proxies and waits until every
// node serves a primary.
func cpDeploy(ctx context.Context, proxies int, arbiterLinks bool) (*deploy.Deployment, error) {
	d, err := deploy.Start(ctx, deploy.Options{Proxies: proxies, ArbiterToMembers: arbiterLinks,
		Mongo: &chaos.ReplicaSetOptions{Members: 3, ElectionTimeout: cpElectionTimeout}})
	if err != nil {
		return nil, err
	}
	if _, err := d.WaitStatus(ctx, 60*time.Second, "every node serves a primary", func(st []admin.Status) bool {
		_, ok := agreed(st)
		return ok
	}); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// agreed is the cluster every node shows when all show it serving the same
// primary at the same epoch.
func agreed(st []admin.Status) (admin.ClusterStatus, bool) {
	var c admin.ClusterStatus
	for i, s := range st {
		if len(s.Clusters) == 0 {
			return c, false
		}
		x := s.Clusters[0]
		if x.Phase != "serving" || x.Primary == "" || i > 0 && (x.Primary != c.Primary || x.Epoch != c.Epoch) {
			return c, false
		}
		c = x
	}
	return c, len(st) > 0
}

// proxyClient is a driver v2 client at its default settings through proxy
// i, with a plain URI: the proxy is a mongos to it.
func proxyClient(d *deploy.Deployment, i int) (*mongo.Client, func(), error) {
	cl, err := mongo.Connect(options.Client().ApplyURI("mongodb://" + d.Proxies[i].Listen + "/"))
	if err != nil {
		return nil, nil, err
	}
	return cl, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = cl.Disconnect(ctx)
	}, nil
}

// cpScenario is one fault under the control plane.
type cpScenario struct {
	proxies      int
	arbiterLinks bool          // the arbiters reach the members through links (deploy.Options.ArbiterToMembers)
	every        time.Duration // the load: an insert every `every`,
	maxInFlight  int           // at most maxInFlight at once
	// fault injects the fault once writes flow and returns when it did
	// (the set has a new primary, or the fault has played out).
	fault func(ctx context.Context, d *deploy.Deployment, primary string, loads []*chaos.MongoLoad, r *cpResult) (time.Time, error)
	// check, when set, checks more once the loads stopped, with the
	// acknowledged ids of each proxy's load.
	check func(ctx context.Context, d *deploy.Deployment, primary string, loads []*chaos.MongoLoad, acked [][]int64, r *cpResult) error
}

// cpRun starts a deployment and a load through each proxy (into
// collection pN), runs the fault once writes flow, goes on until 20 writes
// begun after the fault are acknowledged on every load, and checks the
// invariants.
func cpRun(sc cpScenario) (cpResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d, err := cpDeploy(ctx, sc.proxies, sc.arbiterLinks)
	if err != nil {
		return cpResult{}, err
	}
	defer d.Close()
	var loads []*chaos.MongoLoad
	finish := func() {
		for _, l := range loads {
			l.Finish()
		}
	}
	defer finish()
	for i := range d.Proxies {
		cl, disconnect, err := proxyClient(d, i)
		if err != nil {
			return cpResult{}, err
		}
		defer disconnect()
		// The collection exists on every member before the load starts:
		// its creation would otherwise be the runs' slowest write and
		// longest pause.
		coll := fmt.Sprintf("p%d", i+1)
		if _, err := cl.Database("app").Collection(coll, options.Collection().SetWriteConcern(writeconcern.Majority())).
			InsertOne(ctx, bson.D{{Key: "_id", Value: int64(0)}}); err != nil {
			return cpResult{}, fmt.Errorf("create %s: %w", coll, err)
		}
		loads = append(loads, chaos.StartMongoLoad(ctx, cl, coll, sc.every, sc.maxInFlight))
	}
	if err := waitFor(ctx, 30*time.Second, func() bool { return allAcked(loads, time.Time{}, 20) }); err != nil {
		return cpResult{}, fmt.Errorf("writes did not start: %w", err)
	}

	// The fault's target is the primary every node serves and the set
	// has now: the set may have changed it since the deployment started.
	var st admin.ClusterStatus
	if err := waitFor(ctx, 30*time.Second, func() bool {
		var ok bool
		if st, ok = agreed(d.Statuses()); !ok {
			return false
		}
		p, err := d.RS.Primary(ctx)
		return err == nil && p.Name == st.Primary
	}); err != nil {
		return cpResult{}, fmt.Errorf("the nodes and the set do not agree on a primary: %w", err)
	}
	var r cpResult
	at, err := sc.fault(ctx, d, st.Primary, loads, &r)
	if err != nil {
		return r, err
	}
	after := time.Now()
	if err := waitFor(ctx, 30*time.Second, func() bool { return allAcked(loads, after, 20) }); err != nil {
		return r, fmt.Errorf("writes did not go on after the fault: %w", err)
	}
	acked := map[string][]int64{}
	var ackedBy [][]int64
	for i, l := range loads {
		ids := l.Finish()
		acked[fmt.Sprintf("p%d", i+1)] = ids
		ackedBy = append(ackedBy, ids)
		r.acked += len(ids)
		r.resume = max(r.resume, l.WritesAgain(at))
		r.pause = max(r.pause, l.LongestPause())
		r.slowest = max(r.slowest, l.Slowest())
		for _, err := range l.Errors() {
			r.errors = append(r.errors, err.Error())
			if !documented(err) {
				return r, fmt.Errorf("a client error docs/mongo.md does not promise for a primary change: %w", err)
			}
		}
	}
	h, err := cpCheck(ctx, d, acked)
	if err != nil {
		return r, err
	}
	for _, e := range h {
		if e.At.After(at) && (e.Kind == "failover_begin" || e.Kind == "switchover_begin" || e.Kind == "switchover_aborted") {
			r.epochs++
			if r.took == 0 {
				r.took = e.At.Sub(at)
			}
		}
	}
	if sc.check != nil {
		if err := sc.check(ctx, d, st.Primary, loads, ackedBy, &r); err != nil {
			return r, err
		}
	}
	return r, nil
}

// allAcked reports whether every load has n writes begun after from
// acknowledged.
func allAcked(loads []*chaos.MongoLoad, from time.Time, n int) bool {
	for _, l := range loads {
		if l.AckedAfter(from) < n {
			return false
		}
	}
	return true
}

// documented reports whether err carries one of failoverCodes.
func documented(err error) bool {
	var se mongo.ServerError
	if !errors.As(err, &se) {
		return false
	}
	for _, c := range failoverCodes {
		if se.HasErrorCode(c) {
			return true
		}
	}
	return false
}

// cpCheck asserts the invariants once the deployment has settled and
// returns the leader's decision history.
func cpCheck(ctx context.Context, d *deploy.Deployment, acked map[string][]int64) ([]raftfsm.Decision, error) {
	st, err := d.WaitStatus(ctx, 30*time.Second, "every node serves one primary", func(st []admin.Status) bool {
		_, ok := agreed(st)
		return ok
	})
	if err != nil {
		return nil, fmt.Errorf("after the fault: %w", err)
	}
	c, _ := agreed(st)
	// One primary per epoch, as every node applied the decisions.
	var leader []raftfsm.Decision
	primaryOf := map[uint64]string{}
	for i := range len(d.Arbiters) + len(d.Proxies) {
		h, err := d.History(ctx, i)
		if err != nil {
			return nil, fmt.Errorf("history of node %d: %w", i, err)
		}
		if i == 0 {
			leader = h
		}
		var last uint64
		for _, e := range h {
			if e.Epoch < last {
				return nil, fmt.Errorf("node %d: decision history goes back from epoch %d to %d: %+v", i, last, e.Epoch, e)
			}
			last = e.Epoch
			if e.To == "" || !slices.Contains([]string{"bootstrap", "failover_begin", "failover_done", "switchover_begin", "switchover_done", "switchover_aborted"}, e.Kind) {
				continue
			}
			if p, ok := primaryOf[e.Epoch]; ok && p != e.To {
				return nil, fmt.Errorf("epoch %d has two primaries, %s and %s (node %d: %+v)", e.Epoch, p, e.To, i, e)
			}
			primaryOf[e.Epoch] = e.To
		}
	}
	if p := primaryOf[c.Epoch]; p != c.Primary {
		return nil, fmt.Errorf("the nodes serve %s at epoch %d, the history names %q", c.Primary, c.Epoch, p)
	}
	// One writable member: the epoch's primary.
	var writable []string
	for _, m := range d.RS.Members {
		if !m.Running() {
			continue
		}
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		h, err := m.Hello(hctx)
		cancel()
		if err != nil {
			continue
		}
		if w, _ := h.Lookup("isWritablePrimary").BooleanOK(); w {
			writable = append(writable, m.Name)
		}
	}
	if len(writable) != 1 || writable[0] != c.Primary {
		return nil, fmt.Errorf("writable members %v, primary of epoch %d is %s", writable, c.Epoch, c.Primary)
	}
	for coll, ids := range acked {
		have, err := docIDs(ctx, d.RS.Member(c.Primary), coll)
		if err != nil {
			return nil, err
		}
		var lost []int64
		for _, id := range ids {
			if !have[id] {
				lost = append(lost, id)
			}
		}
		if len(lost) > 0 {
			return nil, fmt.Errorf("%d acknowledged w:majority writes to %s lost (not on the primary %s), e.g. %v", len(lost), coll, c.Primary, lost[:min(5, len(lost))])
		}
	}
	return leader, nil
}

// docIDs reads the _ids of app.<coll> on member m.
func docIDs(ctx context.Context, m *chaos.MongoMember, coll string) (map[int64]bool, error) {
	cl, err := mongo.Connect(m.ClientOptions())
	if err != nil {
		return nil, err
	}
	defer func() { _ = cl.Disconnect(context.Background()) }()
	cur, err := cl.Database("app").Collection(coll).Find(ctx, bson.D{}, options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("%s: read %s: %w", m.Name, coll, err)
	}
	have := map[int64]bool{}
	for cur.Next(ctx) {
		id, _ := cur.Current.Lookup("_id").AsInt64OK()
		have[id] = true
	}
	return have, cur.Err()
}

// cpBaseline: the same load for 5 s without a fault, so that a reader can
// tell a fault's pauses from the machine's own (a shared 2-core machine
// stalls writes for a second now and then).
func cpBaseline() (cpResult, error) {
	return cpRun(cpScenario{proxies: 1, every: 50 * time.Millisecond, maxInFlight: 50,
		fault: func(ctx context.Context, _ *deploy.Deployment, _ string, _ []*chaos.MongoLoad, _ *cpResult) (time.Time, error) {
			at := time.Now()
			select {
			case <-ctx.Done():
				return at, ctx.Err()
			case <-time.After(5 * time.Second):
			}
			return at, nil
		},
		check: func(_ context.Context, _ *deploy.Deployment, _ string, _ []*chaos.MongoLoad, _ [][]int64, r *cpResult) error {
			if r.epochs > 0 {
				return fmt.Errorf("%d new epochs without a fault", r.epochs)
			}
			return nil
		}})
}

// cpKill: kill -9 of the primary.
func cpKill() (cpResult, error) {
	return cpRun(cpScenario{proxies: 1, every: 50 * time.Millisecond, maxInFlight: 50,
		fault: func(ctx context.Context, d *deploy.Deployment, primary string, loads []*chaos.MongoLoad, _ *cpResult) (time.Time, error) {
			at := time.Now()
			if err := d.RS.Member(primary).Kill(); err != nil {
				return at, err
			}
			return at, waitFor(ctx, 30*time.Second, func() bool { return allAcked(loads, at, 1) })
		},
		check: failedOver})
}

// failedOver checks that a fault on the primary made the arbiters begin a
// new epoch on another member.
func failedOver(_ context.Context, d *deploy.Deployment, primary string, _ []*chaos.MongoLoad, _ [][]int64, r *cpResult) error {
	if st, _ := agreed(d.Statuses()); r.epochs == 0 || st.Primary == primary {
		return fmt.Errorf("no failover away from %s: %d new epochs, primary %s", primary, r.epochs, st.Primary)
	}
	return nil
}

// cpHung: SIGSTOP of the primary for cpPauseFor, then SIGCONT. Writes
// already sent to the frozen member are answered 9510 when the epoch
// moves on (or, still waiting, when it resumes: what it answers under the
// old epoch the proxy turns into 9510), which the driver retries on the
// new primary. No write may be acknowledged by the old primary after it
// resumed: every acknowledged write is on the new primary, and a document
// the old primary has and the new one lacks must be one whose client was
// not told it was written. An insert every 100 ms, so that the writes held
// on the frozen member do not fill the load's in-flight bound meanwhile.
func cpHung() (cpResult, error) {
	var frozen time.Time
	beforeResume := 0
	return cpRun(cpScenario{proxies: 1, every: 100 * time.Millisecond, maxInFlight: 200,
		fault: func(ctx context.Context, d *deploy.Deployment, primary string, loads []*chaos.MongoLoad, _ *cpResult) (time.Time, error) {
			l, old := loads[0], d.RS.Member(primary)
			frozen = time.Now()
			if err := old.Pause(); err != nil {
				return frozen, err
			}
			if err := waitFor(ctx, 30*time.Second, func() bool { return l.AckedAfter(frozen) > 0 }); err != nil {
				_ = old.Resume()
				return frozen, fmt.Errorf("no write acknowledged while the primary was frozen: %w", err)
			}
			time.Sleep(time.Until(frozen.Add(cpPauseFor))) // the fault's duration
			beforeResume = l.Acked() - l.AckedAfter(frozen)
			if err := old.Resume(); err != nil {
				return frozen, err
			}
			return frozen, waitFor(ctx, 30*time.Second, func() bool {
				h, err := old.Hello(ctx)
				if err != nil {
					return false
				}
				w, _ := h.Lookup("isWritablePrimary").BooleanOK()
				s, _ := h.Lookup("secondary").BooleanOK()
				return !w && s
			})
		},
		check: func(ctx context.Context, d *deploy.Deployment, primary string, loads []*chaos.MongoLoad, acked [][]int64, r *cpResult) error {
			if err := failedOver(ctx, d, primary, loads, acked, r); err != nil {
				return err
			}
			l := loads[0]
			r.heldThrough = l.Acked() - l.AckedAfter(frozen) - beforeResume
			st, _ := agreed(d.Statuses())
			have, err := docIDs(ctx, d.RS.Member(st.Primary), "p1")
			if err != nil {
				return err
			}
			had, err := docIDs(ctx, d.RS.Member(primary), "p1")
			if err != nil {
				return err
			}
			ack := map[int64]bool{}
			for _, id := range acked[0] {
				ack[id] = true
			}
			for id := range had {
				if have[id] {
					continue
				}
				if ack[id] {
					return fmt.Errorf("write %d is on the old primary %s only, and its client was told it was written", id, primary)
				}
				r.extra++
			}
			return nil
		}})
}

// cpCut: every arbiter loses the primary (links cut) while the proxy and
// the secondaries still reach it. The arbiters must not depose it (a
// secondary still hears from it): no new epoch, writes go on.
func cpCut() (cpResult, error) {
	return cpRun(cpScenario{proxies: 1, arbiterLinks: true, every: 50 * time.Millisecond, maxInFlight: 50,
		fault: func(ctx context.Context, d *deploy.Deployment, primary string, loads []*chaos.MongoLoad, r *cpResult) (time.Time, error) {
			at := time.Now()
			for _, a := range d.Arbiters {
				d.Cut(a.Name + "/" + primary)
			}
			// The leader weighed a step-up and noted why not.
			if err := waitFor(ctx, 30*time.Second, func() bool {
				h, err := d.History(ctx, 0)
				if err != nil {
					return false
				}
				for _, e := range h {
					if e.Kind == "note" && e.At.After(at) && strings.Contains(e.Reason, "still hears from it") {
						r.veto = e.At.Sub(at)
						return true
					}
				}
				return false
			}); err != nil {
				return at, fmt.Errorf("the leader never weighed the cut-off primary: %w", err)
			}
			// Writes go on for two failure thresholds more.
			return at, waitFor(ctx, 30*time.Second, func() bool { return time.Since(at) > r.veto+4*time.Second })
		},
		check: func(ctx context.Context, d *deploy.Deployment, primary string, _ []*chaos.MongoLoad, _ [][]int64, r *cpResult) error {
			if st, _ := agreed(d.Statuses()); r.epochs > 0 || st.Primary != primary {
				return fmt.Errorf("the arbiters deposed %s, which the set and the proxy still reached: %d new epochs, primary %s", primary, r.epochs, st.Primary)
			}
			return nil
		}})
}

// cpSwitchover: routerctl promote of a secondary under load through two
// proxies.
func cpSwitchover() (cpResult, error) {
	var took time.Duration
	rolledBack := ""
	r, err := cpRun(cpScenario{proxies: 2, every: 50 * time.Millisecond, maxInFlight: 50,
		fault: func(ctx context.Context, d *deploy.Deployment, primary string, _ []*chaos.MongoLoad, _ *cpResult) (time.Time, error) {
			target := "db2"
			if primary == target {
				target = "db3"
			}
			if err := d.WaitHealthyOnLeader(ctx, target, 30*time.Second); err != nil {
				return time.Now(), err
			}
			// A first epoch the arbiters made by a step-up is a change:
			// its cooldown must pass first (the refusal says so).
			var at time.Time
			var err error
			if werr := waitFor(ctx, 60*time.Second, func() bool {
				at = time.Now()
				err = d.Promote(ctx, 0, target, 30*time.Second)
				if err != nil && strings.Contains(err.Error(), "cooldown") {
					time.Sleep(500 * time.Millisecond)
					return false
				}
				return true
			}); werr != nil {
				return at, fmt.Errorf("promote %s: %w (last: %v)", target, werr, err)
			}
			took = time.Since(at)
			if err != nil && strings.Contains(err.Error(), "rolled back") {
				rolledBack = err.Error()
				return at, nil
			}
			if err != nil {
				return at, fmt.Errorf("promote %s: %w", target, err)
			}
			return at, nil
		},
		check: func(_ context.Context, d *deploy.Deployment, primary string, _ []*chaos.MongoLoad, _ [][]int64, r *cpResult) error {
			st, _ := agreed(d.Statuses())
			switch {
			case rolledBack != "" && (r.epochs != 2 || st.Primary != primary):
				return fmt.Errorf("a rolled-back promote began %d epochs and left %s primary, want 2 (begin, abort) and %s", r.epochs, st.Primary, primary)
			case rolledBack == "" && (r.epochs != 1 || st.Primary == primary):
				return fmt.Errorf("the promote began %d epochs and left %s primary, want 1 and another than %s", r.epochs, st.Primary, primary)
			}
			return nil
		}})
	r.rolledBack = rolledBack
	r.took = took
	return r, err
}

func renderMongoCP(runs int, base, kill, hung, cut, step []cpResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## MongoDB under the control plane\n\n")
	fmt.Fprintf(&b, "Made by `go run ./cmd/chaos -runs %d -only mongo` on %s: a whole deployment (chaos/deploy) with default settings (probe_interval 500ms, failure_threshold 2s, lease 2s, lease_margin 300ms, cooldown 30s), 3 arbiters deciding, proxies in front of 3 simulated members (chaos.StartReplicaSet: FerretDB behind chaos/rssim, real processes) whose own election timeout is mongod's %s (heartbeat 250 ms): a new primary sooner than that is the arbiters' step-up. Load: the Go driver v2 at its default settings through a proxy, a w:majority insert of a new `_id` started every 50 ms (every 100 ms under SIGSTOP; for the switchover every 50 ms through each of two proxies), each its own request, into a collection created (w:majority) before the load starts.\n\n", runs, time.Now().UTC().Format("2006-01-02"), cpElectionTimeout)
	fmt.Fprintf(&b, "Checked in every run: one primary per epoch in every node's decision history (deploy.History), and at the end exactly one writable member, the primary of the newest epoch every node serves; every acknowledged w:majority write on it; every client error one of the codes docs/mongo.md promises for a primary change (9501, 9504, 9505, 9506, 9510), any other fails the run.\n\n")
	fmt.Fprintf(&b, "| measurement | min | median | max | target |\n|---|---|---|---|---|\n")
	row := func(name string, rs []cpResult, f func(cpResult) time.Duration, target string) {
		durationRow(&b, name, rs, f, target)
	}
	resume := func(x cpResult) time.Duration { return x.resume }
	took := func(x cpResult) time.Duration { return x.took }
	pause := func(x cpResult) time.Duration { return x.pause }
	row("no fault (this machine's own noise): longest write pause", base, pause, "")
	row("no fault: slowest write", base, func(x cpResult) time.Duration { return x.slowest }, "")
	row("kill -9 primary → writes through the proxy succeed again", kill, resume, "≤ 5 s (aim ≤ 3 s)")
	row("kill -9 primary → new epoch committed", kill, took, "")
	row(fmt.Sprintf("SIGSTOP primary %s → writes succeed again", cpPauseFor), hung, resume, "≤ 5 s (aim ≤ 3 s)")
	row("SIGSTOP primary → new epoch committed", hung, took, "")
	row("SIGSTOP primary: slowest write", hung, func(x cpResult) time.Duration { return x.slowest }, "")
	row("primary cut off from the arbiters, not from the proxy: longest write pause", cut, pause, "no new epoch, ≤ 1 s")
	row("primary cut off from the arbiters: the leader notes a secondary still hears from it", cut, func(x cpResult) time.Duration { return x.veto }, "")
	row("switchover (`promote`) under load: longest write pause seen by a client", step, pause, "≤ 1 s")
	row("switchover: `promote` call duration", step, took, "")
	fmt.Fprintf(&b, "\n")
	for _, s := range []struct {
		name string
		rs   []cpResult
	}{{"no fault", base}, {"kill -9", kill}, {"SIGSTOP", hung}, {"cut from the arbiters", cut}, {"switchover", step}} {
		errs, acked, epochs, sample := 0, 0, 0, ""
		for _, x := range s.rs {
			errs += len(x.errors)
			acked += x.acked
			epochs += x.epochs
			if sample == "" && len(x.errors) > 0 {
				sample = x.errors[0]
			}
		}
		fmt.Fprintf(&b, "- %s, %d runs: %d client errors (target 0), %d new epochs, %d w:majority writes acknowledged, 0 lost", s.name, len(s.rs), errs, epochs, acked)
		if sample != "" {
			fmt.Fprintf(&b, "; e.g. `%s`", sample)
		}
		fmt.Fprintf(&b, ".\n")
	}
	var rolled []string
	for _, x := range step {
		if x.rolledBack != "" {
			rolled = append(rolled, x.rolledBack)
		}
	}
	if len(rolled) > 0 {
		fmt.Fprintf(&b, "\nSwitchover: the promote failed before the step-up and was rolled back to the old primary (a new epoch, no write lost) in %d of %d runs (target 0), e.g. `%s`. The rows above include those runs.\n", len(rolled), len(step), rolled[0])
	}
	held, extra := 0, 0
	for _, x := range hung {
		held += x.heldThrough
		extra += x.extra
	}
	fmt.Fprintf(&b, "\nSIGSTOP: writes begun before the freeze and acknowledged only after the resume (a write left waiting on the frozen primary; the proxy ends those when the epoch moves on, with 9510, which the driver retries on the new primary — docs/mongo.md): %d, each found on the new primary. Documents the old primary had that the new one lacked once it was a secondary again: %d in all, none acknowledged to a client.\n", held, extra)
	return b.String()
}
