package clients_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/dbrouter/dbrouter/admin"
	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/config"
	"github.com/dbrouter/dbrouter/daemon"
)

// The Mongo client matrix: real MongoDB drivers, each at its default
// settings, through a routerd serving a kind mongodb cluster (daemon.Run
// from a config file's YAML, no control plane) in front of FerretDB
// members (chaos.StartMongoT). The clients authenticate at the proxy with
// SCRAM-SHA-256 and a URI an application would write:
// mongodb://app:PASSWORD@127.0.0.1:PORT/?authSource=admin.
//
// The programs speak the protocol of the package doc ("ok CHECK", "fail
// CHECK: why", "info ..."), take the mode as their argument, and find the
// proxy, the account, their own database and a collection prefix in
// DBR_HOST, DBR_PORT, DBR_USER, DBR_PASSWORD, DBR_DATABASE and DBR_TABLE.

// The matrix's account at the proxy.
const (
	mongoUser     = "app"
	mongoPassword = "app-s3cret"
)

// Sizes the checks use; the programs in python/ and node/ use the same.
const (
	mongoCursorDocs     = 10000
	mongoInsertManyDocs = 100000
)

// mongoPhase is one pass of the matrix: every client runs its program in
// one mode, which reports the phase's checks; verify then checks, on the
// members directly, what a client reported as done. The first phase runs
// against a routerd in front of one FerretDB; the others (rs) against a
// second routerd in front of a simulated 3-member replica set
// (chaos.StartReplicaSetT, docs/mongosim.md), with run doing what the
// test must do while the clients run: set up data that differs per
// member, break a member connection under a write, step the primary down.
type mongoPhase struct {
	mode   string
	checks []string
	verify map[string]func(ctx context.Context, e *mongoEnv, tg target) error
	// rs: the phase runs against the replica set.
	rs bool
	// run runs the phase's clients; nil: one after another, verify after
	// each (mongoSequential).
	run func(ctx context.Context, t *testing.T, e *mongoEnv, p mongoPhase, clients []*client, targets map[string]target, res *results)
}

var mongoPhases = []mongoPhase{
	{
		mode: "workload",
		// connect: the driver connects, authenticates and lists its
		// database's collections (a command the proxy's auth gate refuses
		// before authentication; ping it allows). crud: insert, find,
		// update, delete with their results checked. cursor: a
		// 10,000-document find read with getMore at the driver's default
		// batch size, every document seen exactly once. insert_many:
		// 100,000 documents in one insertMany call. errors: a duplicate key
		// is code 11000 as the driver's typed error.
		checks: []string{"connect", "crud", "cursor", "insert_many", "errors"},
		verify: map[string]func(ctx context.Context, e *mongoEnv, tg target) error{
			"insert_many": func(ctx context.Context, e *mongoEnv, tg target) error {
				return e.countOnPrimary(ctx, tg.database, tg.table+"_many", mongoInsertManyDocs)
			},
		},
	},
	{
		// read_preference: the test makes mx_rp's document {_id: "rp"}
		// name the member that holds it (mongoReadPrefSetUp); the client
		// reads it 20 times with each of primary, secondary and nearest:
		// primary reads all name the primary, secondary reads name only
		// secondaries and both of them, nearest reads name at least two
		// members.
		mode: "read_preference", checks: []string{"read_preference"}, rs: true, run: mongoReadPrefPhase,
	},
	{
		// retryable: an upsert {$inc: {n: 1}} whose member connection the
		// test cuts after the primary applied it (mongoRetryablePhase);
		// the driver retries it (the proxy answers RetryableWriteError),
		// the primary answers the retry from its record of (lsid,
		// txnNumber), and n is 1: applied exactly once.
		mode: "retryable", checks: []string{"retryable"}, rs: true, run: mongoRetryablePhase,
		verify: map[string]func(ctx context.Context, e *mongoEnv, tg target) error{
			"retryable": func(ctx context.Context, e *mongoEnv, tg target) error {
				return e.rsCount(ctx, tg.database, tg.table+"_retry", bson.D{{Key: "_id", Value: "retry"}, {Key: "n", Value: 1}}, 1)
			},
		},
	},
	{
		// transaction: the driver's convenient transaction API inserting
		// one document; the simulated members refuse transactions, so
		// the driver raises IllegalOperation (20), as a mongod standalone
		// answers, and nothing was written.
		mode: "transaction", checks: []string{"transaction"}, rs: true,
		verify: map[string]func(ctx context.Context, e *mongoEnv, tg target) error{
			"transaction": func(ctx context.Context, e *mongoEnv, tg target) error {
				return e.rsCount(ctx, tg.database, tg.table+"_txn", bson.D{}, 0)
			},
		},
	},
	{
		// promote: every client writes (w:majority) and reads back in a
		// loop while the test runs replSetStepDown on the primary (a
		// planned switchover done on the set, no control plane): no
		// client error, every write a client counted is on the new
		// primary.
		mode: "promote", checks: []string{"promote"}, rs: true, run: mongoPromotePhase,
	},
}

// mongoAllChecks is every phase's checks, in the order the matrix reports
// them.
func mongoAllChecks() []string {
	var all []string
	for _, p := range mongoPhases {
		all = append(all, p.checks...)
	}
	return all
}

func mongoMatrix() []*client {
	return []*client{goMongoDriver(), pyMongo(), nodeMongo()}
}

// mongoEnv is the deployment the matrix runs against.
type mongoEnv struct {
	members *chaos.MongoCluster
	listen  string // the routerd's Mongo listener in front of members
	// The replica set, the links routerd dials its members through (by
	// member name), and the second routerd's listener.
	rs       *chaos.ReplicaSet
	links    map[string]*chaos.Link
	rsListen string
	rsAdmin  string
}

// countOnPrimary checks, on the member writes go to and not through the
// proxy, that db.coll holds want documents. (With one member it is the
// first.)
func (e *mongoEnv) countOnPrimary(ctx context.Context, db, coll string, want int64) error {
	m := e.members.Members[0]
	n, err := countOn(ctx, m, db, coll, bson.D{})
	if err == nil && n != want {
		err = fmt.Errorf("%s.%s on %s holds %d documents, want %d", db, coll, m.Name, n, want)
	}
	return err
}

// rsCount checks, on the replica set's primary directly, that db.coll
// holds want documents matching filter.
func (e *mongoEnv) rsCount(ctx context.Context, db, coll string, filter bson.D, want int64) error {
	p, err := e.rs.WaitPrimary(ctx, 20*time.Second)
	if err != nil {
		return err
	}
	n, err := countOn(ctx, p, db, coll, filter)
	if err == nil && n != want {
		err = fmt.Errorf("%s.%s on the primary %s holds %d documents matching %v, want %d", db, coll, p.Name, n, filter, want)
	}
	return err
}

// countOn counts db.coll's documents matching filter on member m,
// directly.
func countOn(ctx context.Context, m *chaos.MongoMember, db, coll string, filter bson.D) (int64, error) {
	cl, err := mongo.Connect(m.ClientOptions())
	if err != nil {
		return 0, err
	}
	defer func() { _ = cl.Disconnect(context.Background()) }()
	n, err := cl.Database(db).Collection(coll).CountDocuments(ctx, filter)
	if err != nil {
		return 0, fmt.Errorf("count %s.%s on %s: %w", db, coll, m.Name, err)
	}
	return n, nil
}

// mongoURI is the URI an application writes for the proxy: the account,
// escaped as a URI needs it, and authSource=admin (the proxy's users are
// admin's).
func mongoURI(tg target) string {
	u := url.URL{Scheme: "mongodb", User: url.UserPassword(tg.user, tg.password), Host: tg.addr(), Path: "/", RawQuery: "authSource=admin"}
	return u.String()
}

// TestMongoClientMatrix runs every Mongo client of the matrix, at its
// default settings, through a routerd's Mongo proxy: each client's
// workload, one client after another, every check a subtest named
// client/check.
func TestMongoClientMatrix(t *testing.T) {
	began := time.Now()
	// A bound for a loaded machine; the matrix takes well under a minute on
	// an idle one.
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	res := &results{m: map[string]map[string]string{}}
	clients := installed(mongoMatrix(), res)
	// In a subtest, so that a fatal step still leaves the matrix reported
	// (and the members and the routerd stopped) below.
	t.Run("deployment", func(t *testing.T) { mongoPhasesRun(ctx, t, clients, res) })
	report(t, "mongo client matrix", res, mongoMatrix(), mongoAllChecks(), began)
}

func mongoPhasesRun(ctx context.Context, t *testing.T, clients []*client, res *results) {
	e := &mongoEnv{members: chaos.StartMongoT(t, 1), links: map[string]*chaos.Link{}}
	e.listen, _ = startMongoRouter(ctx, t, e.members.Members, nil)
	dir := t.TempDir()
	targetsAt := func(listen string) map[string]target {
		host, port, err := net.SplitHostPort(listen)
		if err != nil {
			t.Fatal(err)
		}
		targets := map[string]target{}
		for _, c := range clients {
			// A database per client: FerretDB keeps each in its own
			// SQLite file, so no client waits on another's writes.
			targets[c.name] = target{host: host, port: port, user: mongoUser, password: mongoPassword,
				database: "mx_" + strings.ReplaceAll(c.name, "-", "_"), table: "mx", stopFile: filepath.Join(dir, "stop")}
		}
		return targets
	}
	clients = setUp(ctx, t, clients, dir, res)
	targets := targetsAt(e.listen)
	for _, p := range mongoPhases {
		if p.rs && e.rs == nil {
			began := time.Now()
			e.rs = chaos.StartReplicaSetT(t, chaos.ReplicaSetOptions{Members: 3})
			if _, err := e.rs.WaitPrimary(ctx, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			// routerd dials each member through a link (the config's
			// dial:), so that a test can cut its connections to one.
			for _, m := range e.rs.Members {
				l, err := chaos.NewLink(fmt.Sprintf("mx-%s-%d", m.Name, time.Now().UnixNano()), m.Addr())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(l.Close)
				e.links[m.Name] = l
			}
			e.rsListen, e.rsAdmin = startMongoRouter(ctx, t, e.rs.Members, e.links)
			targets = targetsAt(e.rsListen)
			t.Logf("replica set and its routerd up in %s", time.Since(began).Round(time.Millisecond))
		}
		phase := time.Now()
		run := p.run
		if run == nil {
			run = mongoSequential
		}
		run(ctx, t, e, p, clients, targets, res)
		t.Logf("%s phase: %s", p.mode, time.Since(phase).Round(time.Millisecond))
	}
}

// mongoSequential runs the phase's clients one after another, each
// followed by the phase's verification of its checks.
func mongoSequential(ctx context.Context, t *testing.T, e *mongoEnv, p mongoPhase, clients []*client, targets map[string]target, res *results) {
	for _, c := range clients {
		checks := only(c, p.checks)
		if len(checks) == 0 {
			continue
		}
		began := time.Now()
		start(ctx, t, c, p.mode, targets[c.name], res).finish(res, checks)
		mongoVerify(ctx, e, p, c, targets[c.name], res)
		t.Logf("%s %s: %s", c.name, p.mode, time.Since(began).Round(time.Millisecond))
	}
}

// mongoVerify runs the phase's verification of each check c passed.
func mongoVerify(ctx context.Context, e *mongoEnv, p mongoPhase, c *client, tg target, res *results) {
	for _, ch := range only(c, p.checks) {
		v := p.verify[ch]
		if why, _ := res.get(c.name, ch); v == nil || why != "" {
			continue
		}
		if err := v(ctx, e, tg); err != nil {
			res.set(c.name, ch, "verified on the member: "+err.Error())
		}
	}
}

// rsRoles is the set's primary and its secondaries, asked of the members.
func rsRoles(ctx context.Context, rs *chaos.ReplicaSet) (*chaos.MongoMember, []*chaos.MongoMember, error) {
	p, err := rs.WaitPrimary(ctx, 20*time.Second)
	if err != nil {
		return nil, nil, err
	}
	var secs []*chaos.MongoMember
	for _, m := range rs.Members {
		if m != p {
			secs = append(secs, m)
		}
	}
	return p, secs, nil
}

// mongoReadPrefPhase: before each client reads, the test makes the one
// document of the client's mx_rp name the member holding it, with the
// set's own replication and nothing written to a secondary: it writes
// {member: S2} (w:majority, on every member), pauses S2's replication and
// writes {member: S1} (w:2: on the primary and S1), pauses S1's and writes
// {member: P} (w:1: on the primary alone). A read then says which member
// answered it. DBR_PRIMARY and DBR_SECONDARIES tell the client the names;
// replication resumes after the client's run.
func mongoReadPrefPhase(ctx context.Context, t *testing.T, e *mongoEnv, p mongoPhase, clients []*client, targets map[string]target, res *results) {
	for _, c := range clients {
		if len(only(c, p.checks)) == 0 {
			continue
		}
		began := time.Now()
		tg := targets[c.name]
		prim, secs, err := rsRoles(ctx, e.rs)
		if err != nil {
			res.set(c.name, "read_preference", "set-up: "+err.Error())
			continue
		}
		if err := mongoReadPrefSetUp(ctx, e, prim, secs, tg); err != nil {
			res.set(c.name, "read_preference", "set-up: "+err.Error())
		} else {
			t.Setenv("DBR_PRIMARY", prim.Name)
			t.Setenv("DBR_SECONDARIES", secs[0].Name+","+secs[1].Name)
			start(ctx, t, c, p.mode, tg, res).finish(res, p.checks)
		}
		for _, m := range secs {
			if err := e.rs.PauseReplication(ctx, m, false); err != nil {
				t.Fatalf("resume replication on %s: %v", m.Name, err)
			}
		}
		t.Logf("%s %s: %s", c.name, p.mode, time.Since(began).Round(time.Millisecond))
	}
}

func mongoReadPrefSetUp(ctx context.Context, e *mongoEnv, prim *chaos.MongoMember, secs []*chaos.MongoMember, tg target) error {
	rs := e.rs
	cl, err := mongo.Connect(prim.ClientOptions())
	if err != nil {
		return err
	}
	defer func() { _ = cl.Disconnect(context.Background()) }()
	for i, step := range []struct {
		member string
		w      *writeconcern.WriteConcern
		pause  *chaos.MongoMember
	}{
		{secs[1].Name, writeconcern.Majority(), secs[1]},
		{secs[0].Name, &writeconcern.WriteConcern{W: 2}, secs[0]},
		{prim.Name, writeconcern.W1(), nil},
	} {
		coll := cl.Database(tg.database).Collection(tg.table+"_rp", options.Collection().SetWriteConcern(step.w))
		if _, err := coll.ReplaceOne(ctx, bson.D{{Key: "_id", Value: "rp"}}, bson.D{{Key: "member", Value: step.member}}, options.Replace().SetUpsert(true)); err != nil {
			return fmt.Errorf("write %d (member %s): %w", i+1, step.member, err)
		}
		if i == 0 {
			// routerd's monitor must have seen the secondaries hold a
			// recent write (their lag known and small) before a
			// secondary read may go to them.
			if err := e.waitHealthy(ctx, secs); err != nil {
				return err
			}
		}
		if step.pause != nil {
			if err := rs.PauseReplication(ctx, step.pause, true); err != nil {
				return err
			}
		}
	}
	return nil
}

// waitHealthy polls the replica set routerd's admin API until it shows
// every member of ms healthy (a secondary: eligible for reads).
func (e *mongoEnv) waitHealthy(ctx context.Context, ms []*chaos.MongoMember) error {
	var st admin.Status
	err := chaos.Poll(ctx, 15*time.Second, func() (bool, error) {
		if err := (&admin.Client{Addr: e.rsAdmin}).Do(ctx, "GET", "/status", nil, &st); err != nil || len(st.Clusters) != 1 {
			return false, nil
		}
		healthy := 0
		for _, m := range st.Clusters[0].Members {
			for _, w := range ms {
				if m.Name == w.Name && m.Healthy {
					healthy++
				}
			}
		}
		return healthy == len(ms), nil
	})
	if err != nil {
		return fmt.Errorf("routerd never showed %d secondaries healthy: %+v: %w", len(ms), st, err)
	}
	return nil
}

// mongoRetryablePhase: each client, once connected, says "ready" and
// waits; the test then slows the link routerd reaches the primary through
// (1.5 s each way) and lets the client send its upsert, polls the primary
// directly until it has applied it (n is 1) while the reply is still on
// the slow link, and cuts the link: routerd's member connection is lost
// after the write was sent and applied. The link is then restored,
// without latency, for the retry.
func mongoRetryablePhase(ctx context.Context, t *testing.T, e *mongoEnv, p mongoPhase, clients []*client, targets map[string]target, res *results) {
	for _, c := range clients {
		if len(only(c, p.checks)) == 0 {
			continue
		}
		began := time.Now()
		tg := targets[c.name]
		r := start(ctx, t, c, p.mode, tg, res)
		waitReady(ctx, []*run{r}, res, p.checks)
		resume := sync.OnceFunc(func() { close(r.resume) })
		if err := mongoCutAfterApplied(ctx, e, tg, resume); err != nil {
			res.set(c.name, "retryable", err.Error())
		}
		resume()
		r.finish(res, p.checks)
		mongoVerify(ctx, e, p, c, tg, res)
		t.Logf("%s %s: %s", c.name, p.mode, time.Since(began).Round(time.Millisecond))
	}
}

func mongoCutAfterApplied(ctx context.Context, e *mongoEnv, tg target, resume func()) (err error) {
	prim, _, err := rsRoles(ctx, e.rs)
	if err != nil {
		return err
	}
	cl, err := mongo.Connect(prim.ClientOptions())
	if err != nil {
		return err
	}
	defer func() { _ = cl.Disconnect(context.Background()) }()
	link := e.links[prim.Name]
	if err := link.SetLatency(1500 * time.Millisecond); err != nil {
		return err
	}
	cut := false
	defer func() {
		// Whatever happened, the link is left open and fast.
		if lerr := link.SetLatency(0); lerr != nil && err == nil {
			err = lerr
		}
		if cut {
			if lerr := link.Restore(); lerr != nil && err == nil {
				err = lerr
			}
		}
	}()
	resume()
	coll := cl.Database(tg.database).Collection(tg.table + "_retry")
	if err := chaos.Poll(ctx, 20*time.Second, func() (bool, error) {
		n, err := coll.CountDocuments(ctx, bson.D{{Key: "_id", Value: "retry"}})
		return n == 1, err
	}); err != nil {
		return fmt.Errorf("the upsert never reached the primary %s: %w", prim.Name, err)
	}
	link.Cut()
	cut = true
	return nil
}

// mongoPromotePhase: every client writes and reads back in a loop while
// the test runs replSetStepDown on the primary through a direct
// connection (the set elects the caught-up secondary; no control plane);
// no client may see an error, and every write a client counted is on the
// new primary.
func mongoPromotePhase(ctx context.Context, t *testing.T, e *mongoEnv, p mongoPhase, clients []*client, targets map[string]target, res *results) {
	var runs []*run
	for _, c := range clients {
		if len(only(c, p.checks)) > 0 {
			runs = append(runs, start(ctx, t, c, p.mode, targets[c.name], res))
		}
	}
	if len(runs) == 0 {
		return
	}
	stopFile := targets[runs[0].c.name].stopFile
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		if err := os.WriteFile(stopFile, nil, 0o644); err != nil {
			t.Errorf("stop file: %v", err)
		}
		for _, r := range runs {
			r.finish(res, p.checks)
		}
	}
	defer stop()
	waitReady(ctx, runs, res, p.checks)
	old, _, err := rsRoles(ctx, e.rs)
	if err != nil {
		t.Fatal(err)
	}
	// A few writes by each before the switchover.
	before := make([]int, len(runs))
	if err := chaos.Poll(ctx, 20*time.Second, func() (bool, error) { return ticksAtLeast(runs, before, 5), nil }); err != nil {
		t.Fatalf("clients writing before the switchover: %v", err)
	}
	began := time.Now()
	if _, err := old.Command(ctx, bson.D{{Key: "replSetStepDown", Value: 60}, {Key: "secondaryCatchUpPeriodSecs", Value: 10}}); err != nil {
		t.Fatalf("replSetStepDown on %s: %v", old.Name, err)
	}
	np, err := e.rs.WaitPrimary(ctx, 20*time.Second)
	if err != nil || np == old {
		t.Fatalf("no new primary after the step-down of %s: %v, %v", old.Name, np, err)
	}
	t.Logf("replSetStepDown: %s handed over to %s in %s", old.Name, np.Name, time.Since(began).Round(time.Millisecond))
	// Each client goes on writing on the new primary before it stops.
	after := make([]int, len(runs))
	for i, r := range runs {
		after[i] = r.tickCount()
	}
	err = chaos.Poll(ctx, 30*time.Second, func() (bool, error) { return ticksAtLeast(runs, after, 5), nil })
	stop()
	if err != nil {
		t.Errorf("clients writing after the switchover: %v", err)
	}
	for _, r := range runs {
		tg := targets[r.c.name]
		if why, _ := res.get(r.c.name, "promote"); why != "" {
			continue
		}
		filter := bson.D{{Key: "_id", Value: bson.D{{Key: "$gte", Value: 1000}}}}
		n, err := countOn(ctx, np, tg.database, tg.table+"_promote", filter)
		if err == nil && n < int64(r.tickCount()) {
			err = fmt.Errorf("%d writes acknowledged, %d on the new primary %s", r.tickCount(), n, np.Name)
		}
		if err != nil {
			res.set(r.c.name, "promote", err.Error())
		}
	}
}

// ticksAtLeast: every run still going has reported n more ticks than
// from[i].
func ticksAtLeast(runs []*run, from []int, n int) bool {
	for i, r := range runs {
		select {
		case <-r.done:
			continue
		default:
		}
		if r.tickCount() < from[i]+n {
			return false
		}
	}
	return true
}

// startMongoRouter runs a routerd as cmd/routerd does (daemon.Run from a
// config file's YAML) with one kind mongodb cluster in front of the
// members, authenticating the matrix's user, and stops it when the test
// ends. A member with a link is dialed through it (daemon.Options.Dial).
// It returns the cluster's listener and the admin API's address.
func startMongoRouter(ctx context.Context, t *testing.T, ms []*chaos.MongoMember, links map[string]*chaos.Link) (string, string) {
	t.Helper()
	var ports [2]int
	for i := range ports {
		p, err := chaos.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = p
	}
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	adminAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	var members strings.Builder
	dial := map[string]string{}
	for _, m := range ms {
		fmt.Fprintf(&members, "      - {name: %s, addr: %q}\n", m.Name, m.Addr())
		if l := links[m.Name]; l != nil {
			dial[m.Name] = l.Addr
		}
	}
	yaml := fmt.Sprintf(`role: proxy
admin: {listen: %q}
clusters:
  - name: mx
    kind: mongodb
    listen: %q
    users: [{name: %s, password: %q}]
    members:
%s`, adminAddr, listen, mongoUser, mongoPassword, members.String())
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("routerd config: %v\n%s", err, yaml)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	ready := make(chan struct{})
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	go func() {
		done <- daemon.Run(runCtx, cfg, log, daemon.Options{Dial: dial, Ready: func(string) { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-done:
		stop()
		t.Fatalf("routerd: %v", err)
	case <-time.After(30 * time.Second):
		stop()
		<-done
		t.Fatal("routerd: not ready within 30 s")
	}
	// Registered after the members' clean-up, so it runs before it: the
	// proxy goes first.
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("routerd: %v", err)
		}
	})
	return listen, adminAddr
}
