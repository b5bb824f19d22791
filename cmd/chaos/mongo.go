package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/chaos"
	pmongo "github.com/dbrouter/dbrouter/protocol/mongo"
	"github.com/dbrouter/dbrouter/topology"
	tmongo "github.com/dbrouter/dbrouter/topology/mongo"
)

// The Mongo scenarios run the Mongo proxy with its default settings in
// front of a simulated 3-member replica set (chaos.StartReplicaSet: real
// processes, the simulator's 2 s election timeout) with the
// topology/mongo monitor at routerd's default probe interval and no
// control plane: the set's own elections decide. The load is the Go driver
// v2 at its default settings through the proxy, w:majority inserts of new
// _ids started at a fixed rate (a service's requests: one stuck on a hung
// member does not stop the others).

// mongoPauseFor is how long the hung-primary scenario keeps the primary
// SIGSTOPped: three election timeouts.
const mongoPauseFor = 6 * time.Second

type mongoResult struct {
	resume  time.Duration // fault → first write begun after it acknowledged
	pause   time.Duration // longest gap between acknowledgements
	slowest time.Duration // the longest a write waited
	errors  []string
	acked   int
}

// mongoEnv is one set behind one proxy.
type mongoEnv struct {
	rs     *chaos.ReplicaSet
	client *mongo.Client
	stop   func()
}

func startMongoEnv(ctx context.Context) (*mongoEnv, error) {
	rs, err := chaos.StartReplicaSet(ctx, chaos.ReplicaSetOptions{Members: 3})
	if err != nil {
		return nil, err
	}
	e := &mongoEnv{rs: rs}
	var stops []func()
	e.stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		_ = rs.Close()
	}
	ok := false
	defer func() {
		if !ok {
			e.stop()
		}
	}()
	if _, err := rs.WaitPrimary(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	var mcs []topology.MemberConfig
	var members []pmongo.Member
	for _, m := range rs.Members {
		mcs = append(mcs, topology.MemberConfig{Name: m.Name, Addr: m.Addr()})
		members = append(members, pmongo.Member{Name: m.Name, Addr: m.Addr()})
	}
	mon, err := tmongo.NewMonitor(tmongo.MonitorConfig{Cluster: "rs", Members: mcs, ReplicaSet: rs.Name}, zap.NewNop())
	if err != nil {
		return nil, err
	}
	mctx, mcancel := context.WithCancel(context.Background())
	mdone := make(chan struct{})
	go func() { defer close(mdone); mon.Run(mctx) }()
	stops = append(stops, func() { mcancel(); <-mdone })
	px, err := pmongo.New(pmongo.Config{Cluster: "rs", Members: members, Topology: mon}, zap.NewNop())
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	pctx, pcancel := context.WithCancel(context.Background())
	pdone := make(chan struct{})
	go func() { defer close(pdone); _ = px.Serve(pctx, ln) }()
	stops = append(stops, func() { pcancel(); <-pdone })
	e.client, err = mongo.Connect(options.Client().ApplyURI("mongodb://" + ln.Addr().String() + "/"))
	if err != nil {
		return nil, err
	}
	stops = append(stops, func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.client.Disconnect(dctx)
	})
	ok = true
	return e, nil
}

// measure stops load l and measures it against the fault at fault.
func measure(l *chaos.MongoLoad, fault time.Time) (mongoResult, []int64) {
	ids := l.Finish()
	r := mongoResult{resume: l.WritesAgain(fault), pause: l.LongestPause(), slowest: l.Slowest(), acked: len(ids)}
	for _, err := range l.Errors() {
		r.errors = append(r.errors, err.Error())
	}
	return r, ids
}

// mongoCheck asserts the invariants once the set has settled: one
// writable member, and every acknowledged w:majority write on it.
func mongoCheck(ctx context.Context, rs *chaos.ReplicaSet, acked []int64) error {
	p, err := rs.WaitPrimary(ctx, 20*time.Second)
	if err != nil {
		return err
	}
	writable := 0
	for _, m := range rs.Members {
		if !m.Running() {
			continue
		}
		h, err := m.Hello(ctx)
		if err != nil {
			continue
		}
		if w, _ := h.Lookup("isWritablePrimary").BooleanOK(); w {
			writable++
		}
	}
	if writable != 1 {
		return fmt.Errorf("%d writable members after the fault, want 1", writable)
	}
	cl, err := mongo.Connect(p.ClientOptions())
	if err != nil {
		return err
	}
	defer func() { _ = cl.Disconnect(context.Background()) }()
	cur, err := cl.Database("app").Collection("acked").Find(ctx, bson.D{})
	if err != nil {
		return err
	}
	have := map[int64]bool{}
	for cur.Next(ctx) {
		id, _ := cur.Current.Lookup("_id").AsInt64OK()
		have[id] = true
	}
	if err := cur.Err(); err != nil {
		return err
	}
	var lost []int64
	for _, id := range acked {
		if !have[id] {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		return fmt.Errorf("%d acknowledged w:majority writes lost (not on the primary %s), e.g. %v", len(lost), p.Name, lost[:min(5, len(lost))])
	}
	return nil
}

// mongoFault runs one scenario: load, the fault (which returns when it is
// done, the set having a new primary), more load, the check.
func mongoFault(every time.Duration, maxInFlight int, fault func(ctx context.Context, e *mongoEnv, old *chaos.MongoMember, l *chaos.MongoLoad) (time.Time, error)) (mongoResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e, err := startMongoEnv(ctx)
	if err != nil {
		return mongoResult{}, err
	}
	defer e.stop()
	old, err := e.rs.WaitPrimary(ctx, 20*time.Second)
	if err != nil {
		return mongoResult{}, err
	}
	l := chaos.StartMongoLoad(ctx, e.client, "acked", every, maxInFlight)
	if err := waitFor(ctx, 30*time.Second, func() bool { return l.AckedAfter(time.Time{}) >= 20 }); err != nil {
		l.Finish()
		return mongoResult{}, fmt.Errorf("writes did not start: %w", err)
	}
	at, err := fault(ctx, e, old, l)
	if err != nil {
		l.Finish()
		return mongoResult{}, err
	}
	after := time.Now()
	if err := waitFor(ctx, 30*time.Second, func() bool { return l.AckedAfter(after) >= 20 }); err != nil {
		l.Finish()
		return mongoResult{}, fmt.Errorf("writes did not go on after the fault: %w", err)
	}
	r, acked := measure(l, at)
	return r, mongoCheck(ctx, e.rs, acked)
}

// mongoKill: kill -9 of the primary.
func mongoKill() (mongoResult, error) {
	return mongoFault(10*time.Millisecond, 50, func(ctx context.Context, e *mongoEnv, old *chaos.MongoMember, l *chaos.MongoLoad) (time.Time, error) {
		at := time.Now()
		if err := old.Kill(); err != nil {
			return at, err
		}
		return at, waitFor(ctx, 30*time.Second, func() bool { return l.AckedAfter(at) > 0 })
	})
}

// mongoHung: SIGSTOP of the primary for mongoPauseFor, then SIGCONT; the
// old primary must step down. Writes in flight on the frozen member wait
// until the new primary is named (one every 100 ms, so that they do not
// fill the proxy's member connections meanwhile).
func mongoHung() (mongoResult, error) {
	return mongoFault(100*time.Millisecond, 100, func(ctx context.Context, e *mongoEnv, old *chaos.MongoMember, l *chaos.MongoLoad) (time.Time, error) {
		at := time.Now()
		if err := old.Pause(); err != nil {
			return at, err
		}
		if err := waitFor(ctx, 30*time.Second, func() bool { return l.AckedAfter(at) > 0 }); err != nil {
			_ = old.Resume()
			return at, fmt.Errorf("no write acknowledged while the primary was frozen: %w", err)
		}
		time.Sleep(time.Until(at.Add(mongoPauseFor))) // the fault's duration
		if err := old.Resume(); err != nil {
			return at, err
		}
		return at, waitFor(ctx, 20*time.Second, func() bool {
			h, err := old.Hello(ctx)
			if err != nil {
				return false
			}
			w, _ := h.Lookup("isWritablePrimary").BooleanOK()
			return !w
		})
	})
}

// mongoStepDown: replSetStepDown on the primary through a direct
// connection (a planned switchover done on the set itself).
func mongoStepDown() (mongoResult, error) {
	return mongoFault(10*time.Millisecond, 50, func(ctx context.Context, e *mongoEnv, old *chaos.MongoMember, l *chaos.MongoLoad) (time.Time, error) {
		at := time.Now()
		if _, err := old.Command(ctx, bson.D{{Key: "replSetStepDown", Value: 60}, {Key: "secondaryCatchUpPeriodSecs", Value: 10}}); err != nil {
			return at, fmt.Errorf("replSetStepDown: %w", err)
		}
		return at, waitFor(ctx, 30*time.Second, func() bool { return l.AckedAfter(at) > 0 })
	})
}

func renderMongo(runs int, kill, hung, step []mongoResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## MongoDB: the Mongo proxy over a simulated replica set, no control plane\n\n")
	fmt.Fprintf(&b, "Made by `go run ./cmd/chaos -runs %d -only mongo` on %s: 3 simulated members (chaos.StartReplicaSet: FerretDB behind chaos/rssim, real processes; election timeout 2 s, heartbeat 250 ms), the topology/mongo monitor at routerd's default probe interval (500 ms), the proxy's defaults (WriteHold 10 s), no control plane: the set's own elections decide. Load: the Go driver v2 at its default settings through the proxy, a w:majority insert of a new `_id` started every 10 ms (every 100 ms under SIGSTOP), each its own request.\n\n", runs, time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&b, "| measurement | min | median | max | target |\n|---|---|---|---|---|\n")
	row := func(name string, rs []mongoResult, f func(mongoResult) time.Duration, target string) {
		durationRow(&b, name, rs, f, target)
	}
	resume := func(x mongoResult) time.Duration { return x.resume }
	row("kill -9 primary → writes through the proxy succeed again", kill, resume, "≤ election timeout + 3 s")
	row("kill -9 primary: slowest write (held through the election)", kill, func(x mongoResult) time.Duration { return x.slowest }, "")
	row(fmt.Sprintf("SIGSTOP primary %s → writes succeed again", mongoPauseFor), hung, resume, "≤ election timeout + 3 s")
	row("SIGSTOP primary: slowest write (in flight on the frozen member until the new primary was named)", hung, func(x mongoResult) time.Duration { return x.slowest }, "")
	row("replSetStepDown switchover: longest write pause", step, func(x mongoResult) time.Duration { return x.pause }, "≤ 1 s")
	count := func(rs []mongoResult) (errs, acked int, sample string) {
		for _, x := range rs {
			errs += len(x.errors)
			acked += x.acked
			if sample == "" && len(x.errors) > 0 {
				sample = x.errors[0]
			}
		}
		return errs, acked, sample
	}
	fmt.Fprintf(&b, "\n")
	for _, s := range []struct {
		name string
		rs   []mongoResult
	}{{"kill -9", kill}, {"SIGSTOP", hung}, {"replSetStepDown", step}} {
		errs, acked, sample := count(s.rs)
		fmt.Fprintf(&b, "- %s, %d runs: %d client errors (target 0), %d w:majority writes acknowledged, 0 lost (each checked on the new primary; a run that lost one fails)", s.name, len(s.rs), errs, acked)
		if sample != "" {
			fmt.Fprintf(&b, "; e.g. `%s`", sample)
		}
		fmt.Fprintf(&b, ".\n")
	}
	fmt.Fprintf(&b, "\nWithout a control plane the proxy learns of a new primary from its monitor: the switchover's pause is about one probe interval (the writes the stepping-down primary refuses are held until the next probe shows its successor), and writes already sent to a frozen primary wait until the monitor names its successor (then they are answered 9510 with RetryableWriteError and the driver retries them there), hence the slowest write ≈ the time to a new primary, not the freeze.\n")
	return b.String()
}
