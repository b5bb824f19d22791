package mongo

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.uber.org/zap/zaptest"

	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/topology"
	tmongo "github.com/dbrouter/dbrouter/topology/mongo"
)

// TestWithTheMongoMonitor wires the proxy to the real topology/mongo
// monitor of a FerretDB member, as routerd will: the member is observed a
// standalone primary, so writes and reads go to it, the proxy announces
// its maxWireVersion (21, FerretDB's) with the matching buildInfo
// version, the staleness formula's inputs are recorded, and a
// transaction is refused because the member is a standalone.
func TestWithTheMongoMonitor(t *testing.T) {
	mc := chaos.StartMongoT(t, 1)
	m := mc.Members[0]
	mon, err := tmongo.NewMonitor(tmongo.MonitorConfig{Cluster: "c1", ProbeInterval: 100 * time.Millisecond,
		Members: []topology.MemberConfig{{Name: m.Name, Addr: m.Addr()}}}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); mon.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	addr, _ := startProxy(t, Config{Cluster: "c1", Topology: mon, Members: []Member{{Name: m.Name, Addr: m.Addr()}}})

	deadline := time.Now().Add(10 * time.Second)
	for mon.Snapshot().Primary != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the monitor never saw the member as primary: %+v", mon.Snapshot())
		}
		time.Sleep(20 * time.Millisecond)
	}
	d, _ := tmongo.DetailOf(mon.Snapshot().Members[0])
	if d.Observed.IsZero() || d.Heartbeat != 100*time.Millisecond || d.MaxWireVersion != 21 {
		t.Fatalf("detail %+v: want the observation time, the probe interval and FerretDB's wire version", d)
	}

	c := connect(t, "mongodb://"+addr+"/")
	tctx := testCtx(t)
	coll := c.Database("app").Collection("mon")
	if _, err := coll.InsertOne(tctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatalf("insert: %v", err)
	}
	if err := coll.FindOne(tctx, bson.D{{Key: "_id", Value: 1}}).Err(); err != nil {
		t.Fatalf("find: %v", err)
	}
	rc := dialRaw(t, addr)
	r := rc.command(cmd("hello"))
	if w, _ := r.Lookup("maxWireVersion").Int32OK(); w != 21 {
		t.Errorf("maxWireVersion %d, want FerretDB's 21", w)
	}
	if v := rc.command(cmd("buildInfo")).Lookup("version").StringValue(); v != "7.0.0" {
		t.Errorf("buildInfo version %s, want 7.0.0 for wire 21", v)
	}
	sess, err := c.StartSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.EndSession(tctx)
	_, err = sess.WithTransaction(tctx, func(ctx context.Context) (any, error) {
		return coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 2}})
	})
	var se mongo.ServerError
	if !errors.As(err, &se) || !se.HasErrorCode(int(CodeIllegalOperation.Code)) {
		t.Fatalf("transaction on the observed standalone: %v, want IllegalOperation", err)
	}
}
