package mongo

import (
	"context"
	"net"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
	"go.uber.org/zap/zaptest"

	"github.com/dbrouter/dbrouter/chaos"
)

// TestGracefulStop: when Serve's ctx ends the proxy stops accepting and
// closes idle connections at once, while a command in flight (a w:majority
// insert waiting for replication) finishes and its answer reaches the
// client; Serve returns when it has.
func TestGracefulStop(t *testing.T) {
	e := startRSEnv(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A second proxy over the same members, whose Serve the test ends.
	cfg := Config{Cluster: "rs", Topology: e.rec, Members: e.px.cfg.Members, StopTimeout: 20 * time.Second}
	p, err := New(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	var serveErr error
	served := make(chan struct{})
	go func() { serveErr = p.Serve(sctx, ln); close(served) }()
	t.Cleanup(func() { stop(); <-served })
	addr := ln.Addr().String()

	busy := connect(t, "mongodb://"+addr+"/?maxPoolSize=1")
	idle := connect(t, "mongodb://"+addr+"/?maxPoolSize=1")
	coll := busy.Database("app").Collection("stop", options.Collection().SetWriteConcern(writeconcern.Majority()))
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 0}}); err != nil {
		t.Fatal(err)
	}
	if err := idle.Ping(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for i, m := range e.rs.Members {
		if i != e.first {
			if err := e.rs.PauseReplication(ctx, m, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	inserted := make(chan error, 1)
	go func() {
		_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
		inserted <- err
	}()
	// The insert waits on the primary for a majority: in flight.
	if err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
		n := 0
		p.mu.Lock()
		for s := range p.sessions {
			if s.state.Load() == stateBusy {
				n++
			}
		}
		p.mu.Unlock()
		return n == 1, nil
	}); err != nil {
		t.Fatal("the w:majority insert never was in flight through the proxy")
	}
	stop()
	if err := chaos.Poll(ctx, 5*time.Second, func() (bool, error) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil, nil
	}); err != nil {
		t.Fatal("the proxy still accepts connections after the stop")
	}
	// The idle connection was closed: the driver's next command on it
	// fails (it may not open another: the listener is gone).
	short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
	err = idle.Ping(short, nil)
	cancelShort()
	if err == nil {
		t.Fatal("an idle connection still answered after the stop")
	}
	select {
	case err := <-inserted:
		t.Fatalf("the insert in flight ended before replication resumed: %v", err)
	case <-served:
		t.Fatalf("Serve returned (%v) with a command still in flight", serveErr)
	default:
	}
	for i, m := range e.rs.Members {
		if i != e.first {
			if err := e.rs.PauseReplication(ctx, m, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := <-inserted; err != nil {
		t.Fatalf("the insert in flight at the stop: %v", err)
	}
	select {
	case <-served:
		if serveErr != nil {
			t.Fatalf("Serve: %v", serveErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve still running 10 s after the last command finished")
	}
	var _ *mongo.Client = busy
}
