package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
	"github.com/dbrouter/dbrouter/topology"
	topomongo "github.com/dbrouter/dbrouter/topology/mongo"
)

// noLeaks checks, once everything the test started is stopped, that no
// goroutine outlives it: the process waiters and the driver's monitors must
// all have an owner that ends them. Call it first, so its cleanup runs last.
func noLeaks(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
}

// connect opens a driver client on m that the test disconnects at its end.
func connect(t *testing.T, m *MongoMember) *mongo.Client {
	t.Helper()
	cl, err := mongo.Connect(m.ClientOptions())
	if err != nil {
		t.Fatalf("%s: connect: %v", m.Name, err)
	}
	t.Cleanup(func() { _ = cl.Disconnect(context.Background()) })
	return cl
}

type markerDoc struct {
	ID     string `bson:"_id"`
	Member string `bson:"member"`
}

func findMarker(ctx context.Context, cl *mongo.Client, id string) (markerDoc, error) {
	var d markerDoc
	err := cl.Database("app").Collection("markers").FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&d)
	return d, err
}

func TestMongoMembersAreSeparateServersThatStoreAndFind(t *testing.T) {
	noLeaks(t)
	if _, err := ferretMemberBinary(); err != nil { // a first build is not start-up time
		t.Fatal(err)
	}
	start := time.Now()
	c := StartMongoT(t, 3)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("three members took %v to come up, want < 10s", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, m := range c.Members {
		hello, err := m.Hello(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// A standalone that takes writes: the replica-set simulator is what
		// will give a member a set name and a role.
		if w, ok := hello.Lookup("isWritablePrimary").BooleanOK(); !ok || !w {
			t.Errorf("%s hello isWritablePrimary = %v (present %v), want true", m.Name, w, ok)
		}
		if _, err := hello.LookupErr("setName"); err == nil {
			t.Errorf("%s hello carries a setName: %s", m.Name, hello)
		}
		cl := connect(t, m)
		if _, err := cl.Database("app").Collection("markers").InsertOne(ctx, markerDoc{ID: m.Name, Member: m.Name}); err != nil {
			t.Fatalf("%s: insert: %v", m.Name, err)
		}
		got, err := findMarker(ctx, cl, m.Name)
		if err != nil || got.Member != m.Name {
			t.Fatalf("%s: find = %+v, %v", m.Name, got, err)
		}
	}
	// Each member has its own data: what one stored, another does not have.
	cl := connect(t, c.Members[1])
	if _, err := findMarker(ctx, cl, c.Members[0].Name); !errors.Is(err, mongo.ErrNoDocuments) {
		t.Fatalf("%s found %s's document: %v", c.Members[1].Name, c.Members[0].Name, err)
	}
}

func TestMongoKilledMemberFailsFastAndKeepsItsDataAcrossRestarts(t *testing.T) {
	noLeaks(t)
	m := StartMongoT(t, 1).Members[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := connect(t, m)
	if _, err := cl.Database("app").Collection("markers").InsertOne(ctx, markerDoc{ID: "before-kill", Member: m.Name}); err != nil {
		t.Fatal(err)
	}
	pid, port := m.Pid(), m.Port
	if err := m.Kill(); err != nil {
		t.Fatal(err)
	}
	if m.Running() {
		t.Fatal("killed member still running")
	}

	// The driver must report the dead member within its server selection
	// timeout (2 s), long before the operation's own 10 s deadline.
	opCtx, opCancel := context.WithTimeout(ctx, 10*time.Second)
	began := time.Now()
	_, err := findMarker(opCtx, cl, "before-kill")
	opCancel()
	if err == nil {
		t.Fatal("find on a killed member succeeded")
	}
	if !mongo.IsNetworkError(err) {
		t.Errorf("find on a killed member: %v, want a network error", err)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Fatalf("find on a killed member took %v to fail, want < 5s: %v", d, err)
	}
	t.Logf("find on the killed member failed in %v: %v", time.Since(began).Round(time.Millisecond), err)

	began = time.Now()
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("restart after kill -9 answered hello in %v", time.Since(began).Round(time.Millisecond))
	if m.Port != port || m.Pid() == pid {
		t.Fatalf("after restart port %d pid %d, before port %d pid %d", m.Port, m.Pid(), port, pid)
	}
	// The client that saw the failure recovers by itself once its monitor
	// finds the member again; the document was on disk before the kill.
	var got markerDoc
	err = Poll(ctx, 10*time.Second, func() (bool, error) {
		got, err = findMarker(ctx, cl, "before-kill")
		return err == nil, err
	})
	if err != nil {
		t.Fatalf("document written before kill -9 not found after restart: %v", err)
	}
	t.Logf("the failed client found the document %v after the restart began", time.Since(began).Round(time.Millisecond))
	if got.Member != m.Name {
		t.Fatalf("document after restart = %+v", got)
	}

	// A clean stop (SIGTERM, with the client's connections open) and start
	// keep the data too.
	if _, err := cl.Database("app").Collection("markers").InsertOne(ctx, markerDoc{ID: "before-stop", Member: m.Name}); err != nil {
		t.Fatal(err)
	}
	began = time.Now()
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("SIGTERM took %v to stop the member, want < 5s", d)
	}
	t.Logf("SIGTERM stopped the member in %v", time.Since(began).Round(time.Millisecond))
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	err = Poll(ctx, 10*time.Second, func() (bool, error) {
		_, err := findMarker(ctx, cl, "before-stop")
		return err == nil, err
	})
	if err != nil {
		t.Fatalf("document written before SIGTERM not found after restart: %v", err)
	}
}

func TestMongoPausedMemberHangsThenAnswersAfterResume(t *testing.T) {
	noLeaks(t)
	m := StartMongoT(t, 1).Members[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := connect(t, m)
	if _, err := cl.Database("app").Collection("markers").InsertOne(ctx, markerDoc{ID: "p", Member: m.Name}); err != nil {
		t.Fatal(err)
	}
	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	// Paused, the process still holds its port: nothing refuses, nothing
	// answers, and only the caller's deadline ends the wait.
	opCtx, opCancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err := findMarker(opCtx, cl, "p")
	opCancel()
	if err == nil {
		t.Fatal("a paused member answered")
	}
	if !m.Running() {
		t.Fatal("paused member is not running")
	}
	if err := m.Resume(); err != nil {
		t.Fatal(err)
	}
	err = Poll(ctx, 10*time.Second, func() (bool, error) {
		_, err := findMarker(ctx, cl, "p")
		return err == nil, err
	})
	if err != nil {
		t.Fatalf("resumed member does not answer: %v", err)
	}
}

// ---- replica sets (the member simulator, chaos/rssim) ----

// rsTimeout is the election timeout the replica-set tests run with.
const rsTimeout = 2 * time.Second

// TestReplicaSet runs the replica-set scenarios in parallel, each on its
// own set; the leak check covers them all.
func TestReplicaSet(t *testing.T) {
	noLeaks(t)
	if _, err := ferretMemberBinary(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		run  func(t *testing.T)
	}{
		{"ElectsOnePrimaryThatTheDriverFindsForCRUD", testRSElectsOnePrimary},
		{"SecondaryRefusesWritesAndPrimaryOnlyReads", testRSSecondaryRefuses},
		{"MajorityWriteIsOnAMajorityAndTimesOutWhenReplicationPauses", testRSMajorityWriteConcern},
		{"KilledPrimaryIsReplacedWithinTheElectionTimeoutLosingNoMajorityWrite", testRSKillPrimary},
		{"PausedPrimaryStepsDownOnResumeAndRollsBackItsUnreplicatedWrite", testRSPausedPrimaryRollsBack},
		{"IsolatedPrimaryStepsDownAndTheOthersElectANewOne", testRSIsolatedPrimary},
		{"StepDownStepUpAndFreeze", testRSStepDownStepUpFreeze},
		{"RetryableWriteAppliesOnceAlsoAfterAFailover", testRSRetryableWrite},
		{"TransactionsAreRefusedWithAClearError", testRSTransactions},
		{"PSASetWithAnArbiter", testRSArbiter},
		{"TopologyMonitorFollowsThePrimaryThroughAFailover", testRSMonitor},
		{"WritesOnAPrimaryThatStepsDownFail", testRSWritesFailOnStepDown},
		{"IsolatedSecondaryDoesNotDisruptThePrimaryWhenItReturns", testRSIsolatedSecondary},
		{"WholeSetRestartKeepsDataAndTerm", testRSWholeSetRestart},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t)
		})
	}
}

func startRS(t *testing.T, opts ReplicaSetOptions) (*ReplicaSet, *MongoMember) {
	t.Helper()
	opts.ElectionTimeout = rsTimeout
	rs := StartReplicaSetT(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := rs.WaitPrimary(ctx, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return rs, p
}

// connectNoRetry is connect without retries: the driver v2 retries a
// write that fails with NotWritablePrimary until the context's deadline
// when it has one, and a test that expects the error wants it at once.
func connectNoRetry(t *testing.T, m *MongoMember) *mongo.Client {
	t.Helper()
	cl, err := mongo.Connect(m.ClientOptions().SetRetryWrites(false).SetRetryReads(false))
	if err != nil {
		t.Fatalf("%s: connect: %v", m.Name, err)
	}
	t.Cleanup(func() { _ = cl.Disconnect(context.Background()) })
	return cl
}

func rsConnect(t *testing.T, rs *ReplicaSet) *mongo.Client {
	t.Helper()
	cl, err := mongo.Connect(rs.ClientOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Disconnect(context.Background()) })
	return cl
}

// rawCommand sends one OP_MSG on a fresh connection, as a driver would
// not: without the $readPreference a direct connection adds.
func rawCommand(ctx context.Context, addr string, cmd bson.D) (bson.Raw, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	body, err := bson.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	msg, err := wire.AppendOpMsg(nil, 7, 0, 0, body)
	if err != nil {
		return nil, err
	}
	if _, err := nc.Write(msg); err != nil {
		return nil, err
	}
	m, _, err := wire.ReadMessage(nc, 0, nil)
	if err != nil {
		return nil, err
	}
	if m.Header.ResponseTo != 7 {
		return nil, fmt.Errorf("reply answers %d, want 7", m.Header.ResponseTo)
	}
	r, err := wire.DecodeOpMsg(m.Raw)
	if err != nil {
		return nil, err
	}
	return bson.Raw(r.Body()), nil
}

// pauseOthers pauses (or resumes) replication on every member but p.
func pauseOthers(ctx context.Context, t *testing.T, rs *ReplicaSet, p *MongoMember, paused bool) {
	t.Helper()
	for _, m := range rs.Members {
		if m != p {
			if err := rs.PauseReplication(ctx, m, paused); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func mustValues(t *testing.T, a bson.RawArray) []bson.RawValue {
	t.Helper()
	vs, err := a.Values()
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func replyCode(r bson.Raw) int32 {
	c, _ := r.Lookup("code").AsInt64OK()
	return int32(c)
}

func isWritable(h bson.Raw) bool {
	w, _ := h.Lookup("isWritablePrimary").BooleanOK()
	return w
}

// writablePrimaries lists the members that say they are writable, with
// their electionIds: a check of "at most one primary per term".
func writablePrimaries(ctx context.Context, rs *ReplicaSet) map[string]bson.ObjectID {
	out := map[string]bson.ObjectID{}
	for _, m := range rs.Members {
		if !m.Running() {
			continue
		}
		hctx, cancel := context.WithTimeout(ctx, time.Second)
		h, err := m.Hello(hctx)
		cancel()
		if err == nil && isWritable(h) {
			out[m.Name], _ = h.Lookup("electionId").ObjectIDOK()
		}
	}
	return out
}

// direct holds one direct client per test and member, so that polling
// does not open a connection per attempt.
var direct sync.Map // rsClientKey -> *mongo.Client

type rsClientKey struct {
	t *testing.T
	m *MongoMember
}

func directClient(t *testing.T, m *MongoMember) *mongo.Client {
	if cl, ok := direct.Load(rsClientKey{t, m}); ok {
		return cl.(*mongo.Client)
	}
	cl := connect(t, m)
	direct.Store(rsClientKey{t, m}, cl)
	t.Cleanup(func() { direct.Delete(rsClientKey{t, m}) })
	return cl
}

func countOn(ctx context.Context, t *testing.T, m *MongoMember, filter bson.D) int64 {
	t.Helper()
	cl := directClient(t, m)
	n, err := cl.Database("app").Collection("c").CountDocuments(ctx, filter)
	if err != nil {
		t.Fatalf("%s: count: %v", m.Name, err)
	}
	return n
}

// majorityColl is app.c with w: "majority" (the driver v2 has no
// wtimeout: the operation's context bounds the wait).
func majorityColl(cl *mongo.Client) *mongo.Collection {
	return cl.Database("app").Collection("c", options.Collection().SetWriteConcern(writeconcern.Majority()))
}

// insertMajority inserts doc on m with w: "majority" and a wtimeout, by
// hand (the driver v2 cannot send a wtimeout).
func insertMajority(ctx context.Context, m *MongoMember, doc bson.D, wtimeout time.Duration) (bson.Raw, error) {
	return rawCommand(ctx, m.Addr(), bson.D{{Key: "insert", Value: "c"}, {Key: "documents", Value: bson.A{doc}},
		{Key: "writeConcern", Value: bson.D{{Key: "w", Value: "majority"}, {Key: "wtimeout", Value: wtimeout.Milliseconds()}}},
		{Key: "$db", Value: "app"}})
}

func wcErrorCode(r bson.Raw) int32 {
	c, _ := r.Lookup("writeConcernError", "code").AsInt64OK()
	return int32(c)
}

func testRSElectsOnePrimary(t *testing.T) {
	rs, p := startRS(t, ReplicaSetOptions{Members: 3, Tags: map[string]map[string]string{"db1": {"dc": "east"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ps := writablePrimaries(ctx, rs); len(ps) != 1 {
		t.Fatalf("writable primaries %v, want exactly one", ps)
	}
	h, err := p.Hello(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := h.Lookup("setName").StringValueOK(); s != "rs0" {
		t.Errorf("setName %q", s)
	}
	if me, _ := h.Lookup("me").StringValueOK(); me != p.Addr() {
		t.Errorf("me %q, want %s", me, p.Addr())
	}
	if pr, _ := h.Lookup("primary").StringValueOK(); pr != p.Addr() {
		t.Errorf("primary %q, want %s", pr, p.Addr())
	}
	hosts, _ := h.Lookup("hosts").ArrayOK()
	if vals, _ := hosts.Values(); len(vals) != 3 {
		t.Errorf("hosts %v, want 3", hosts)
	}
	if _, ok := h.Lookup("electionId").ObjectIDOK(); !ok {
		t.Errorf("primary hello has no electionId: %s", h)
	}
	if _, err := h.LookupErr("lastWrite", "opTime", "ts"); err != nil {
		t.Errorf("no lastWrite.opTime.ts: %s", h)
	}
	if v, _ := h.Lookup("logicalSessionTimeoutMinutes").AsInt64OK(); v != 30 {
		t.Errorf("logicalSessionTimeoutMinutes %d", v)
	}
	for _, m := range rs.Members {
		if m == p {
			continue
		}
		sh, err := m.Hello(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if sec, _ := sh.Lookup("secondary").BooleanOK(); !sec || isWritable(sh) {
			t.Errorf("%s hello: secondary %v writable %v", m.Name, sec, isWritable(sh))
		}
		if m.Name == "db1" {
			if dc, _ := sh.Lookup("tags", "dc").StringValueOK(); dc != "east" {
				t.Errorf("db1 tags: %s", sh.Lookup("tags"))
			}
		}
	}

	// replSetGetConfig and replSetGetStatus have mongod's shape.
	cfg, err := p.Command(ctx, bson.D{{Key: "replSetGetConfig", Value: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := cfg.Lookup("config", "_id").StringValueOK(); id != "rs0" {
		t.Errorf("replSetGetConfig: %s", cfg)
	}
	if ms, _ := cfg.Lookup("config", "members").ArrayOK(); len(mustValues(t, ms)) != 3 {
		t.Errorf("replSetGetConfig members: %s", cfg)
	}
	if et, _ := cfg.Lookup("config", "settings", "electionTimeoutMillis").AsInt64OK(); et != rsTimeout.Milliseconds() {
		t.Errorf("replSetGetConfig electionTimeoutMillis %d", et)
	}
	if err := Poll(ctx, 10*time.Second, func() (bool, error) {
		st, err := rs.Status(ctx, p)
		if err != nil {
			return false, err
		}
		if my, _ := st.Lookup("myState").AsInt64OK(); my != 1 {
			return false, fmt.Errorf("myState %d", my)
		}
		arr, _ := st.Lookup("members").ArrayOK()
		states := map[string]int{}
		for _, v := range mustValues(t, arr) {
			m := v.Document()
			ss, _ := m.Lookup("stateStr").StringValueOK()
			states[ss]++
			if _, err := m.LookupErr("optime", "ts"); err != nil {
				return false, fmt.Errorf("member without optime.ts: %s", m)
			}
		}
		if states["PRIMARY"] != 1 || states["SECONDARY"] != 2 {
			return false, fmt.Errorf("states %v", states)
		}
		return true, nil
	}); err != nil {
		t.Errorf("replSetGetStatus: %v", err)
	}

	cl := rsConnect(t, rs)
	c := cl.Database("app").Collection("c")
	if _, err := c.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}, {Key: "n", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateOne(ctx, bson.D{{Key: "_id", Value: "a"}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: 1}}}}); err != nil {
		t.Fatal(err)
	}
	var got struct{ N int }
	if err := c.FindOne(ctx, bson.D{{Key: "_id", Value: "a"}}).Decode(&got); err != nil || got.N != 2 {
		t.Fatalf("find after update: %+v %v", got, err)
	}
	if _, err := c.DeleteOne(ctx, bson.D{{Key: "_id", Value: "a"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.InsertOne(ctx, bson.D{{Key: "_id", Value: "b"}}); err != nil {
		t.Fatal(err)
	}
	// Every member converges: "a" deleted, "b" there.
	for _, m := range rs.Members {
		err := Poll(ctx, 10*time.Second, func() (bool, error) {
			return countOn(ctx, t, m, bson.D{{Key: "_id", Value: "a"}}) == 0 && countOn(ctx, t, m, bson.D{{Key: "_id", Value: "b"}}) == 1, nil
		})
		if err != nil {
			t.Errorf("%s did not converge: %v", m.Name, err)
		}
	}
	// A secondary read preference reads from a secondary.
	sc := cl.Database("app").Collection("c", options.Collection().SetReadPreference(readpref.Secondary()))
	if err := Poll(ctx, 10*time.Second, func() (bool, error) {
		n, err := sc.CountDocuments(ctx, bson.D{})
		return n == 1, err
	}); err != nil {
		t.Fatalf("secondary read: %v", err)
	}
}

func testRSSecondaryRefuses(t *testing.T) {
	rs, p := startRS(t, ReplicaSetOptions{Members: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var sec *MongoMember
	for _, m := range rs.Members {
		if m != p {
			sec = m
			break
		}
	}
	// Through the driver: a direct connection to a secondary.
	_, err := connectNoRetry(t, sec).Database("app").Collection("c").InsertOne(ctx, bson.D{{Key: "x", Value: 1}})
	var ce mongo.ServerError
	if !errors.As(err, &ce) || !ce.HasErrorCode(10107) {
		t.Fatalf("insert on a secondary: %v, want NotWritablePrimary (10107)", err)
	}
	for _, tc := range []struct {
		name string
		cmd  bson.D
		code int32
	}{
		{"write", bson.D{{Key: "insert", Value: "c"}, {Key: "documents", Value: bson.A{bson.D{{Key: "x", Value: 1}}}}, {Key: "$db", Value: "app"}}, 10107},
		{"read without read preference", bson.D{{Key: "find", Value: "c"}, {Key: "$db", Value: "app"}}, 13435},
		{"read with primary read preference", bson.D{{Key: "find", Value: "c"}, {Key: "$readPreference", Value: bson.D{{Key: "mode", Value: "primary"}}}, {Key: "$db", Value: "app"}}, 13435},
		{"read with secondary read preference", bson.D{{Key: "find", Value: "c"}, {Key: "$readPreference", Value: bson.D{{Key: "mode", Value: "secondary"}}}, {Key: "$db", Value: "app"}}, 0},
		{"read with nearest read preference", bson.D{{Key: "count", Value: "c"}, {Key: "$readPreference", Value: bson.D{{Key: "mode", Value: "nearest"}}}, {Key: "$db", Value: "app"}}, 0},
		{"unknown command is a write", bson.D{{Key: "someNewWrite", Value: "c"}, {Key: "$db", Value: "app"}}, 10107},
		{"ping anywhere", bson.D{{Key: "ping", Value: 1}, {Key: "$db", Value: "admin"}}, 0},
	} {
		r, err := rawCommand(ctx, sec.Addr(), tc.cmd)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := replyCode(r); got != tc.code {
			t.Errorf("%s on a secondary: code %d, want %d: %s", tc.name, got, tc.code, r)
		}
	}
	// The primary reads without a read preference.
	if r, err := rawCommand(ctx, p.Addr(), bson.D{{Key: "find", Value: "c"}, {Key: "$db", Value: "app"}}); err != nil || replyCode(r) != 0 {
		t.Fatalf("find on the primary: %s %v", r, err)
	}
}

func testRSMajorityWriteConcern(t *testing.T) {
	rs, p := startRS(t, ReplicaSetOptions{Members: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cl := rsConnect(t, rs)
	if _, err := majorityColl(cl).InsertOne(ctx, bson.D{{Key: "_id", Value: "m1"}}); err != nil {
		t.Fatal(err)
	}
	// Acknowledged with w: majority: on at least two members now, without
	// waiting (no poll).
	have := 0
	for _, m := range rs.Members {
		have += int(countOn(ctx, t, m, bson.D{{Key: "_id", Value: "m1"}}))
	}
	if have < 2 {
		t.Fatalf("w:majority write acknowledged but on %d members", have)
	}
	pauseOthers(ctx, t, rs, p, true)
	began := time.Now()
	r, err := insertMajority(ctx, p, bson.D{{Key: "_id", Value: "m2"}}, 500*time.Millisecond)
	if err != nil || replyCode(r) != 0 || wcErrorCode(r) != 64 {
		t.Fatalf("w:majority with replication paused: %s %v, want ok: 1 with a writeConcernError 64", r, err)
	}
	if d := time.Since(began); d > 3*time.Second {
		t.Errorf("wtimeout 500ms took %v", d)
	}
	// w:1 is not held up, and numeric w counts data-bearing members.
	if _, err := cl.Database("app").Collection("c").InsertOne(ctx, bson.D{{Key: "_id", Value: "m3"}}); err != nil {
		t.Fatal(err)
	}
	_, err = cl.Database("app").Collection("c", options.Collection().SetWriteConcern(&writeconcern.WriteConcern{W: 4})).InsertOne(ctx, bson.D{{Key: "_id", Value: "m4"}})
	var se mongo.ServerError
	if !errors.As(err, &se) || !se.HasErrorCode(100) {
		t.Errorf("w:4 on three members: %v, want UnsatisfiableWriteConcern (100)", err)
	}
	pauseOthers(ctx, t, rs, p, false)
	if _, err := majorityColl(cl).InsertOne(ctx, bson.D{{Key: "_id", Value: "m5"}}); err != nil {
		t.Fatalf("w:majority after resume: %v", err)
	}
	// The lag helper: a delayed secondary applies late.
	var lagging *MongoMember
	for _, m := range rs.Members {
		if m != p {
			lagging = m
			break
		}
	}
	if err := rs.SetApplyDelay(ctx, lagging, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := majorityColl(cl).InsertOne(ctx, bson.D{{Key: "_id", Value: "late"}}); err != nil {
		t.Fatal(err)
	}
	if n := countOn(ctx, t, lagging, bson.D{{Key: "_id", Value: "late"}}); n != 0 {
		t.Errorf("a secondary with a 3 s apply delay has the write at once")
	}
	if err := Poll(ctx, 10*time.Second, func() (bool, error) {
		return countOn(ctx, t, lagging, bson.D{{Key: "_id", Value: "late"}}) == 1, nil
	}); err != nil {
		t.Errorf("delayed secondary never applied: %v", err)
	}
}

func testRSKillPrimary(t *testing.T) {
	rs, p := startRS(t, ReplicaSetOptions{Members: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// A writer inserts with w:majority through the replicaSet URI (the
	// driver retries across the failover) while the primary dies.
	c := majorityColl(rsConnect(t, rs))
	var mu sync.Mutex
	var acked []int
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 100000 { // bounded; stopped by the test
			select {
			case <-stop:
				return
			default:
			}
			octx, ocancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := c.InsertOne(octx, bson.D{{Key: "_id", Value: i}})
			ocancel()
			if err == nil {
				mu.Lock()
				acked = append(acked, i)
				mu.Unlock()
			}
		}
	}()
	nacked := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	if err := Poll(ctx, 10*time.Second, func() (bool, error) { return nacked() >= 10, nil }); err != nil {
		t.Fatalf("writer: %d acknowledged before the kill: %v", nacked(), err)
	}
	// Then a w:1 write only the primary gets (the secondaries have
	// stopped replicating): the killed member must roll it back when it
	// returns. The writer's writes meanwhile wait for a majority.
	pauseOthers(ctx, t, rs, p, true)
	if _, err := directClient(t, p).Database("app").Collection("c").InsertOne(ctx, bson.D{{Key: "_id", Value: "w1-only"}}); err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	before := nacked()
	pauseOthers(ctx, t, rs, p, false)
	np, err := rs.WaitPrimary(ctx, 4*rsTimeout)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(killed)
	t.Logf("%s killed; %s primary after %v", p.Name, np.Name, took.Round(time.Millisecond))
	if np == p {
		t.Fatal("the killed member is primary")
	}
	// The timeout plus its jitter (up to half) plus a heartbeat is 3.25 s;
	// the bound leaves room for a loaded test machine.
	if took > 3*rsTimeout {
		t.Errorf("new primary after %v, want about the election timeout %v", took, rsTimeout)
	}
	// The driver follows; writes go on.
	if err := Poll(ctx, 15*time.Second, func() (bool, error) { return nacked() >= before+10, nil }); err != nil {
		t.Fatalf("writes after the failover: %d then %d: %v", before, nacked(), err)
	}
	close(stop)
	<-done
	// No w:majority write is lost.
	ids := map[int]bool{}
	cur, err := directClient(t, np).Database("app").Collection("c").Find(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	var docs []struct {
		ID any `bson:"_id"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		if i, ok := d.ID.(int32); ok {
			ids[int(i)] = true
		}
	}
	for _, i := range acked {
		if !ids[i] {
			t.Errorf("write %d was acknowledged with w:majority and is not on the new primary", i)
		}
	}
	if n := countOn(ctx, t, np, bson.D{{Key: "_id", Value: "w1-only"}}); n != 0 {
		t.Errorf("the new primary has the write only the killed member had")
	}
	t.Logf("%d writes acknowledged, all on the new primary", len(acked))
	// The killed member comes back as a secondary, rolls back its w:1
	// write and catches up.
	if err := p.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	want := countOn(ctx, t, np, bson.D{})
	if err := Poll(ctx, 15*time.Second, func() (bool, error) {
		return countOn(ctx, t, p, bson.D{}) == want && countOn(ctx, t, p, bson.D{{Key: "_id", Value: "w1-only"}}) == 0, nil
	}); err != nil {
		t.Fatalf("restarted member did not roll back and catch up: %v", err)
	}
	if h, err := p.Hello(ctx); err != nil || isWritable(h) {
		t.Fatalf("restarted member: writable %v, %v", isWritable(h), err)
	}
	st, err := rs.Status(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := st.Lookup("rollbacks").AsInt64OK(); n != 1 {
		t.Errorf("restarted member rollbacks %d, want 1", n)
	}
}

func testRSPausedPrimaryRollsBack(t *testing.T) {
	rs, p := startRS(t, ReplicaSetOptions{Members: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pc := connect(t, p)
	if _, err := majorityColl(pc).InsertOne(ctx, bson.D{{Key: "_id", Value: "kept"}}); err != nil {
		t.Fatal(err)
	}
	var secs []*MongoMember
	for _, m := range rs.Members {
		if m != p {
			secs = append(secs, m)
			if err := rs.PauseReplication(ctx, m, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Only the primary ever has this one: acknowledged with w:1.
	if _, err := pc.Database("app").Collection("c").InsertOne(ctx, bson.D{{Key: "_id", Value: "lost"}}); err != nil {
		t.Fatal(err)
	}
	oldHello, err := p.Hello(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oldID, _ := oldHello.Lookup("electionId").ObjectIDOK()
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	for _, m := range secs {
		if err := rs.PauseReplication(ctx, m, false); err != nil {
			t.Fatal(err)
		}
	}
	np, err := rs.WaitPrimary(ctx, 4*rsTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if np == p {
		t.Fatal("paused member still reported primary")
	}
	// While the old primary is frozen, a new one writes in a newer term.
	h, err := np.Hello(ctx)
	if err != nil {
		t.Fatal(err)
	}
	newID, _ := h.Lookup("electionId").ObjectIDOK()
	if bytes.Compare(newID[:], oldID[:]) <= 0 {
		t.Fatalf("new electionId %s is not above the old %s", newID.Hex(), oldID.Hex())
	}
	if _, err := majorityColl(connect(t, np)).InsertOne(ctx, bson.D{{Key: "_id", Value: "after"}}); err != nil {
		t.Fatal(err)
	}
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	// On resume the old primary sees the newer term and steps down: from
	// then on at most one member is writable, and never two with the
	// same electionId.
	if err := Poll(ctx, 10*time.Second, func() (bool, error) {
		hh, err := p.Hello(ctx)
		return err == nil && !isWritable(hh), err
	}); err != nil {
		t.Fatalf("old primary did not step down after resume: %v", err)
	}
	if ps := writablePrimaries(ctx, rs); len(ps) != 1 {
		t.Fatalf("writable primaries after resume: %v", ps)
	}
	// It rolls back the w:1 write only it had, and keeps the rest.
	if err := Poll(ctx, 15*time.Second, func() (bool, error) {
		return countOn(ctx, t, p, bson.D{{Key: "_id", Value: "lost"}}) == 0 && countOn(ctx, t, p, bson.D{{Key: "_id", Value: "after"}}) == 1, nil
	}); err != nil {
		t.Fatalf("old primary did not roll back: %v", err)
	}
	if n := countOn(ctx, t, p, bson.D{{Key: "_id", Value: "kept"}}); n != 1 {
		t.Fatal("rollback lost the majority-acknowledged write")
	}
	st, err := rs.Status(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := st.Lookup("rollbacks").AsInt64OK(); n != 1 {
		t.Errorf("rollbacks %d, want 1: %s", n, st)
	}
	if n := countOn(ctx, t, np, bson.D{{Key: "_id", Value: "lost"}}); n != 0 {
		t.Error("the new primary has the rolled-back write")
	}
}

func testRSIsolatedPrimary(t *testing.T) {
	rs, p := startRS(t, ReplicaSetOptions{Members: 3, Links: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := rs.Isolate(p); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	// The isolated primary stops taking writes after the election timeout
	// (it cannot see a majority), and the others elect a new one.
	var np *MongoMember
	if err := Poll(ctx, 5*rsTimeout, func() (bool, error) {
		ps := writablePrimaries(ctx, rs)
		if _, old := ps[p.Name]; old || len(ps) != 1 {
			return false, fmt.Errorf("writable: %v", ps)
		}
		for name := range ps {
			np = rs.Member(name)
		}
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("after the cut: %s primary, %s stepped down, in %v", np.Name, p.Name, time.Since(cut).Round(time.Millisecond))
	if _, err := connectNoRetry(t, p).Database("app").Collection("c").InsertOne(ctx, bson.D{{Key: "x", Value: 1}}); !hasCode(err, 10107) {
		t.Fatalf("a write on the isolated old primary: %v, want NotWritablePrimary (10107)", err)
	}
	if err := rs.Heal(); err != nil {
		t.Fatal(err)
	}
	if _, err := majorityColl(connect(t, np)).InsertOne(ctx, bson.D{{Key: "_id", Value: "healed"}}); err != nil {
		t.Fatal(err)
	}
	if err := Poll(ctx, 15*time.Second, func() (bool, error) {
		return countOn(ctx, t, p, bson.D{{Key: "_id", Value: "healed"}}) == 1, nil
	}); err != nil {
		t.Fatalf("the healed member does not replicate: %v", err)
	}
}

func testRSStepDownStepUpFreeze(t *testing.T) {
	rs, p := startRS(t, ReplicaSetOptions{Members: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := majorityColl(connect(t, p)).InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	// Freeze on a primary is refused.
	if _, err := p.Command(ctx, bson.D{{Key: "replSetFreeze", Value: 10}}); !hasCode(err, 95) {
		t.Errorf("replSetFreeze on the primary: %v, want NotSecondary (95)", err)
	}
	began := time.Now()
	if _, err := p.Command(ctx, bson.D{{Key: "replSetStepDown", Value: 30}, {Key: "secondaryCatchUpPeriodSecs", Value: 5}}); err != nil {
		t.Fatalf("replSetStepDown: %v", err)
	}
	np, err := rs.WaitPrimary(ctx, 4*rsTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if np == p {
		t.Fatal("the stepped-down member is primary again")
	}
	t.Logf("stepdown handed over to %s in %v", np.Name, time.Since(began).Round(time.Millisecond))
	var other *MongoMember
	for _, m := range rs.Members {
		if m != p && m != np {
			other = m
		}
	}
	// Freeze the third member, then step up the old primary's... no: it is
	// not electable for stepDownSecs; step up the frozen one instead
	// (replSetStepUp runs an election now, frozen or not).
	if _, err := other.Command(ctx, bson.D{{Key: "replSetFreeze", Value: 30}}); err != nil {
		t.Fatalf("replSetFreeze: %v", err)
	}
	if err := Poll(ctx, 10*time.Second, func() (bool, error) {
		_, err := other.Command(ctx, bson.D{{Key: "replSetStepUp", Value: 1}})
		return err == nil, err
	}); err != nil {
		t.Fatalf("replSetStepUp: %v", err)
	}
	if err := Poll(ctx, 5*time.Second, func() (bool, error) {
		ps := writablePrimaries(ctx, rs)
		_, ok := ps[other.Name]
		return ok && len(ps) == 1, fmt.Errorf("writable: %v", ps)
	}); err != nil {
		t.Fatalf("after replSetStepUp on %s: %v", other.Name, err)
	}
	// A secondary that is behind cannot step up.
	cur := other
	var lag *MongoMember
	for _, m := range rs.Members {
		if m != cur {
			lag = m
			break
		}
	}
	if err := rs.PauseReplication(ctx, lag, true); err != nil {
		t.Fatal(err)
	}
	if _, err := majorityColl(connect(t, cur)).InsertOne(ctx, bson.D{{Key: "_id", Value: 2}}); err != nil {
		t.Fatal(err)
	}
	if _, err := lag.Command(ctx, bson.D{{Key: "replSetStepUp", Value: 1}}); !hasCode(err, 125) {
		t.Errorf("replSetStepUp on a lagging secondary: %v, want CommandFailed (125)", err)
	}
	if ps := writablePrimaries(ctx, rs); len(ps) != 1 || ps[cur.Name] == (bson.ObjectID{}) {
		t.Errorf("after a refused step-up, writable: %v, want only %s", ps, cur.Name)
	}
	// Step down without a caught-up secondary: refused unless forced.
	if err := rs.PauseReplication(ctx, rs.otherThan(cur, lag), true); err != nil {
		t.Fatal(err)
	}
	if _, err := connect(t, cur).Database("app").Collection("c").InsertOne(ctx, bson.D{{Key: "_id", Value: 3}}); err != nil {
		t.Fatal(err)
	}
	if _, err := cur.Command(ctx, bson.D{{Key: "replSetStepDown", Value: 10}, {Key: "secondaryCatchUpPeriodSecs", Value: 1}}); !hasCode(err, 262) {
		t.Errorf("replSetStepDown with no caught-up secondary: %v, want ExceededTimeLimit (262)", err)
	}
	if _, err := cur.Command(ctx, bson.D{{Key: "replSetStepDown", Value: 10}, {Key: "secondaryCatchUpPeriodSecs", Value: 1}, {Key: "force", Value: true}}); err != nil {
		t.Errorf("forced replSetStepDown: %v", err)
	}
	if h, err := cur.Hello(ctx); err != nil || isWritable(h) {
		t.Errorf("after a forced step-down: writable %v, %v", isWritable(h), err)
	}
}

// otherThan is the member that is neither a nor b.
func (rs *ReplicaSet) otherThan(a, b *MongoMember) *MongoMember {
	for _, m := range rs.Members {
		if m != a && m != b && !m.Arbiter {
			return m
		}
	}
	return nil
}

func hasCode(err error, code int) bool {
	var se mongo.ServerError
	return errors.As(err, &se) && se.HasErrorCode(code)
}

func testRSRetryableWrite(t *testing.T) {
	rs, p := startRS(t, ReplicaSetOptions{Members: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lsid := bson.D{{Key: "id", Value: bson.Binary{Subtype: 4, Data: []byte("0123456789abcdef")}}}
	inc := func(addr string, txn int64) (bson.Raw, error) {
		return rawCommand(ctx, addr, bson.D{{Key: "update", Value: "c"},
			{Key: "updates", Value: bson.A{bson.D{{Key: "q", Value: bson.D{{Key: "_id", Value: "ctr"}}},
				{Key: "u", Value: bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: 1}}}}}, {Key: "upsert", Value: true}}}},
			{Key: "lsid", Value: lsid}, {Key: "txnNumber", Value: txn},
			{Key: "writeConcern", Value: bson.D{{Key: "w", Value: "majority"}, {Key: "wtimeout", Value: 10000}}},
			{Key: "$db", Value: "app"}})
	}
	counter := func(m *MongoMember) int32 {
		var d struct{ N int32 }
		if err := connect(t, m).Database("app").Collection("c").FindOne(ctx, bson.D{{Key: "_id", Value: "ctr"}}).Decode(&d); err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
		return d.N
	}
	first, err := inc(p.Addr(), 1)
	if err != nil || replyCode(first) != 0 {
		t.Fatalf("first: %s %v", first, err)
	}
	again, err := inc(p.Addr(), 1)
	if err != nil || !bytes.Equal(stripTime(again), stripTime(first)) {
		t.Fatalf("retry answered %s, first answer %s (%v)", again, first, err)
	}
	if n := counter(p); n != 1 {
		t.Fatalf("after a retry n = %d, want 1", n)
	}
	if _, err := inc(p.Addr(), 2); err != nil {
		t.Fatal(err)
	}
	if n := counter(p); n != 2 {
		t.Fatalf("a new txnNumber: n = %d, want 2", n)
	}
	// After a failover the new primary knows both from the oplog.
	if _, err := p.Command(ctx, bson.D{{Key: "replSetStepDown", Value: 30}, {Key: "secondaryCatchUpPeriodSecs", Value: 5}}); err != nil {
		t.Fatal(err)
	}
	np, err := rs.WaitPrimary(ctx, 4*rsTimeout)
	if err != nil {
		t.Fatal(err)
	}
	for _, txn := range []int64{1, 2} {
		r, err := inc(np.Addr(), txn)
		if err != nil || replyCode(r) != 0 {
			t.Fatalf("retry of txn %d on the new primary: %s %v", txn, r, err)
		}
	}
	if n := counter(np); n != 2 {
		t.Fatalf("after retries on the new primary n = %d, want 2", n)
	}
}

// stripTime is a reply without the fields that may differ between two
// answers to one write (none today: the recorded reply is returned).
func stripTime(r bson.Raw) []byte { return r }

func testRSTransactions(t *testing.T) {
	rs, p := startRS(t, ReplicaSetOptions{Members: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := rsConnect(t, rs)
	sess, err := cl.StartSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.EndSession(ctx)
	if err := sess.StartTransaction(); err != nil {
		t.Fatal(err)
	}
	_, err = cl.Database("app").Collection("c").InsertOne(mongo.NewSessionContext(ctx, sess), bson.D{{Key: "x", Value: 1}})
	if !hasCode(err, 20) || !strings.Contains(err.Error(), "does not support transactions") {
		t.Fatalf("insert in a transaction: %v, want IllegalOperation (20) saying transactions are not supported", err)
	}
	_ = sess.AbortTransaction(ctx)
	r, err := rawCommand(ctx, p.Addr(), bson.D{{Key: "commitTransaction", Value: 1}, {Key: "$db", Value: "admin"}})
	if err != nil || replyCode(r) != 20 {
		t.Fatalf("commitTransaction: %s %v", r, err)
	}
	if n := countOn(ctx, t, p, bson.D{}); n != 0 {
		t.Fatalf("a refused transaction wrote %d documents", n)
	}
}

func testRSArbiter(t *testing.T) {
	rs, p := startRS(t, ReplicaSetOptions{Members: 2, Arbiter: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	arb := rs.Member("arb")
	if p == arb {
		t.Fatal("the arbiter is primary")
	}
	h, err := arb.Hello(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := h.Lookup("arbiterOnly").BooleanOK(); !a || isWritable(h) {
		t.Errorf("arbiter hello: %s", h)
	}
	hosts, _ := h.Lookup("hosts").ArrayOK()
	arbiters, _ := h.Lookup("arbiters").ArrayOK()
	hv, _ := hosts.Values()
	av, _ := arbiters.Values()
	if len(hv) != 2 || len(av) != 1 || av[0].StringValue() != arb.Addr() {
		t.Errorf("hosts %s arbiters %s", hosts, arbiters)
	}
	for _, cmd := range []bson.D{
		{{Key: "find", Value: "c"}, {Key: "$readPreference", Value: bson.D{{Key: "mode", Value: "secondary"}}}, {Key: "$db", Value: "app"}},
		{{Key: "insert", Value: "c"}, {Key: "documents", Value: bson.A{bson.D{{Key: "x", Value: 1}}}}, {Key: "$db", Value: "app"}},
	} {
		if r, err := rawCommand(ctx, arb.Addr(), cmd); err != nil || replyCode(r) == 0 {
			t.Errorf("%s on the arbiter: %s %v", cmd[0].Key, r, err)
		}
	}
	cl := rsConnect(t, rs)
	if _, err := majorityColl(cl).InsertOne(ctx, bson.D{{Key: "_id", Value: "psa"}}); err != nil {
		t.Fatal(err)
	}
	sec := rs.otherThan(p, arb)
	// w: majority needs both data-bearing members: the arbiter votes but
	// cannot acknowledge.
	if err := rs.PauseReplication(ctx, sec, true); err != nil {
		t.Fatal(err)
	}
	r, err := insertMajority(ctx, p, bson.D{{Key: "_id", Value: "psa2"}}, 500*time.Millisecond)
	if err != nil || replyCode(r) != 0 || wcErrorCode(r) != 64 {
		t.Fatalf("PSA w:majority with the secondary paused: %s %v, want a writeConcernError 64", r, err)
	}
	if err := rs.PauseReplication(ctx, sec, false); err != nil {
		t.Fatal(err)
	}
	if err := Poll(ctx, 10*time.Second, func() (bool, error) {
		return countOn(ctx, t, sec, bson.D{{Key: "_id", Value: "psa2"}}) == 1, nil
	}); err != nil {
		t.Fatal(err)
	}
	// The primary dies: the secondary and the arbiter elect the secondary.
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	np, err := rs.WaitPrimary(ctx, 4*rsTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if np != sec {
		t.Fatalf("new primary %s, want %s", np.Name, sec.Name)
	}
	if n := countOn(ctx, t, np, bson.D{}); n != 2 {
		t.Fatalf("new primary has %d documents, want 2", n)
	}
}

// testRSMonitor checks the contract with the proxy's monitor
// (topology/mongo): it reads the simulated members' hello as a set, with
// one primary, and follows a failover.
func testRSMonitor(t *testing.T) {
	rs, p := startRS(t, ReplicaSetOptions{Members: 2, Arbiter: true, Tags: map[string]map[string]string{"db1": {"dc": "east"}}})
	var ms []topology.MemberConfig
	for _, m := range rs.Members {
		ms = append(ms, topology.MemberConfig{Name: m.Name, Addr: m.Addr()})
	}
	mon, err := topomongo.NewMonitor(topomongo.MonitorConfig{Cluster: "rs", Members: ms, ReplicaSet: "rs0",
		ProbeInterval: 100 * time.Millisecond, MaxReplicaLag: 5 * time.Second}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); mon.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitSnap := func(what string, cond func(*topology.Snapshot) bool) *topology.Snapshot {
		t.Helper()
		if err := Poll(context.Background(), 15*time.Second, func() (bool, error) { return cond(mon.Snapshot()), nil }); err != nil {
			t.Fatalf("%s: last snapshot %+v", what, mon.Snapshot())
		}
		return mon.Snapshot()
	}
	s := waitSnap("the monitor sees the primary, and every member names it", func(s *topology.Snapshot) bool {
		for _, m := range s.Members {
			if d, ok := topomongo.DetailOf(m); !ok || d.Primary != p.Addr() {
				return false
			}
		}
		return s.PrimaryName() == p.Name
	})
	for _, m := range s.Members {
		d, ok := topomongo.DetailOf(m)
		if !ok {
			t.Fatalf("%s: no detail: %+v", m.Name, m)
		}
		if d.SetName != "rs0" || d.SetVersion == nil || len(d.Hosts) != 2 || len(d.Arbiters) != 1 || d.MaxWireVersion != 21 {
			t.Errorf("%s: detail %+v", m.Name, d)
		}
		switch m.Name {
		case p.Name:
			if !d.Writable || d.ElectionID == nil || d.LastWrite == nil || d.LastWrite.Term < 1 {
				t.Errorf("primary detail %+v", d)
			}
		case "arb":
			if !d.Arbiter || d.Writable || d.LastWrite != nil {
				t.Errorf("arbiter detail %+v", d)
			}
		default:
			if !d.Secondary || d.Writable || d.Primary != p.Addr() || d.LastWrite == nil {
				t.Errorf("secondary detail %+v", d)
			}
		}
		if m.Name == "db1" && d.Tags["dc"] != "east" {
			t.Errorf("db1 tags %v", d.Tags)
		}
	}
	pd, _ := topomongo.DetailOf(s.Members[s.Primary])
	oldID := *pd.ElectionID
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	s = waitSnap("the monitor follows the failover", func(s *topology.Snapshot) bool {
		n := s.PrimaryName()
		return n != "" && n != p.Name
	})
	nd, _ := topomongo.DetailOf(s.Members[s.Primary])
	if bytes.Compare(nd.ElectionID[:], oldID[:]) <= 0 {
		t.Errorf("new electionId %s not above the old %s", nd.ElectionID.Hex(), oldID.Hex())
	}
}

func testRSWritesFailOnStepDown(t *testing.T) {
	rs, p := startRS(t, ReplicaSetOptions{Members: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pauseOthers(ctx, t, rs, p, true)
	// A w:majority write with no wtimeout waits: nothing replicates.
	type result struct {
		r   bson.Raw
		err error
	}
	inflight := make(chan result, 1)
	go func() {
		r, err := insertMajority(ctx, p, bson.D{{Key: "_id", Value: "waiting"}}, 0)
		inflight <- result{r, err}
	}()
	if err := Poll(ctx, 10*time.Second, func() (bool, error) {
		return countOn(ctx, t, p, bson.D{{Key: "_id", Value: "waiting"}}) == 1, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Command(ctx, bson.D{{Key: "replSetStepDown", Value: 10}, {Key: "secondaryCatchUpPeriodSecs", Value: 1}, {Key: "force", Value: true}}); err != nil {
		t.Fatalf("forced replSetStepDown: %v", err)
	}
	select {
	case res := <-inflight:
		if res.err != nil || wcErrorCode(res.r) != 11602 {
			t.Errorf("the write waiting for a majority: %s %v, want a writeConcernError InterruptedDueToReplStateChange (11602)", res.r, res.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the write waiting for a majority did not end when the primary stepped down")
	}
	r, err := insertMajority(ctx, p, bson.D{{Key: "_id", Value: "after"}}, time.Second)
	if err != nil || replyCode(r) != 10107 {
		t.Errorf("a write after the step-down: %s %v, want NotWritablePrimary (10107)", r, err)
	}
	if labels, _ := r.Lookup("errorLabels").ArrayOK(); !strings.Contains(labels.String(), "RetryableWriteError") {
		t.Errorf("10107 without the RetryableWriteError label: %s", r)
	}
}

func testRSIsolatedSecondary(t *testing.T) {
	rs, p := startRS(t, ReplicaSetOptions{Members: 3, Links: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h, err := p.Hello(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := h.Lookup("electionId").ObjectIDOK()
	var sec *MongoMember
	for _, m := range rs.Members {
		if m != p {
			sec = m
			break
		}
	}
	if err := rs.Isolate(sec); err != nil {
		t.Fatal(err)
	}
	// Cut off for well over an election timeout, it calls dry runs that
	// fail; it never raises the term.
	if err := Poll(ctx, 10*time.Second, func() (bool, error) {
		st, err := rs.Status(ctx, sec)
		if err != nil {
			return false, err
		}
		arr, _ := st.Lookup("members").ArrayOK()
		for _, v := range mustValues(t, arr) {
			if self, _ := v.Document().Lookup("self").BooleanOK(); !self {
				if hl, _ := v.Document().Lookup("health").AsFloat64OK(); hl != 0 {
					return false, nil
				}
			}
		}
		return true, nil
	}); err != nil {
		t.Fatalf("the isolated member still sees its peers: %v", err)
	}
	// It has timed out and called a dry run, which failed.
	if err := Poll(ctx, 4*rsTimeout, func() (bool, error) {
		return strings.Contains(sec.simLogTail(4000), "dry run for term"), nil
	}); err != nil {
		t.Fatalf("the isolated member called no dry run: %v", err)
	}
	if err := rs.Heal(); err != nil {
		t.Fatal(err)
	}
	if _, err := majorityColl(directClient(t, p)).InsertOne(ctx, bson.D{{Key: "_id", Value: "after-heal"}}); err != nil {
		t.Fatal(err)
	}
	if err := Poll(ctx, 10*time.Second, func() (bool, error) {
		return countOn(ctx, t, sec, bson.D{{Key: "_id", Value: "after-heal"}}) == 1, nil
	}); err != nil {
		t.Fatalf("the healed secondary does not replicate: %v", err)
	}
	h, err = p.Hello(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if now, _ := h.Lookup("electionId").ObjectIDOK(); !isWritable(h) || now != id {
		t.Fatalf("after the secondary came back the primary is writable %v with electionId %s (was %s)", isWritable(h), now.Hex(), id.Hex())
	}
}

func testRSWholeSetRestart(t *testing.T) {
	rs, p := startRS(t, ReplicaSetOptions{Members: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := majorityColl(directClient(t, p)).InsertOne(ctx, bson.D{{Key: "_id", Value: "durable"}}); err != nil {
		t.Fatal(err)
	}
	h, err := p.Hello(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oldID, _ := h.Lookup("electionId").ObjectIDOK()
	for _, m := range rs.Members {
		if err := m.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	if err := startAll(ctx, procs(rs.Members), t.Logf); err != nil {
		t.Fatal(err)
	}
	np, err := rs.WaitPrimary(ctx, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h, err = np.Hello(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Terms and votes were on disk: the new election is in a later term.
	if id, _ := h.Lookup("electionId").ObjectIDOK(); bytes.Compare(id[:], oldID[:]) <= 0 {
		t.Errorf("electionId after a whole-set restart %s, before %s: the term went back", id.Hex(), oldID.Hex())
	}
	if n := countOn(ctx, t, np, bson.D{{Key: "_id", Value: "durable"}}); n != 1 {
		t.Errorf("the new primary %s lacks the w:majority write after kill -9 of the whole set", np.Name)
	}
	for _, m := range rs.Members {
		if err := Poll(ctx, 10*time.Second, func() (bool, error) {
			return countOn(ctx, t, m, bson.D{{Key: "_id", Value: "durable"}}) == 1, nil
		}); err != nil {
			t.Errorf("%s never has the w:majority write after the restart: %v", m.Name, err)
		}
	}
}
