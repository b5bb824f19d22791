package chaos

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.uber.org/goleak"
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
