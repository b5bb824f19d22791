package mongo_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/topology"
	"github.com/dbrouter/dbrouter/topology/mongo"
)

// TestActionsOnAReplicaSet: on a simulated set whose own election timeout
// is long, Hello reads a member's role and last write, StepUp makes a
// secondary primary at once (the old primary steps down), StepUp on an
// arbiter is refused, StepDown steps a primary down (and leaves a
// secondary alone), and Hears tells whether a member still hears from a
// peer: yes while it runs, no once it was killed.
func TestActionsOnAReplicaSet(t *testing.T) {
	rs := chaos.StartReplicaSetT(t, chaos.ReplicaSetOptions{Members: 2, Arbiter: true, ElectionTimeout: 10 * time.Second, Heartbeat: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	act := &mongo.Actions{Timeout: 2 * time.Second}
	t.Cleanup(func() { _ = act.Close() })
	db1, db2, arb := rs.Member("db1"), rs.Member("db2"), rs.Member("arb")

	// No primary yet (election timeout 10 s): ask db1.
	if err := act.StepUp(ctx, db1.Addr()); err != nil {
		t.Fatalf("step up db1: %v", err)
	}
	d, err := act.Hello(ctx, db1.Addr())
	if err != nil || !d.Writable || d.ElectionID == nil {
		t.Fatalf("db1 after step-up: %+v, %v; want the writable primary with an electionId", d, err)
	}
	// db2 must have db1's no-op before it can win.
	if err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
		d2, err := act.Hello(ctx, db2.Addr())
		return err == nil && d2.Secondary && !mongo.Newer(d.LastWrite, d2.LastWrite), nil
	}); err != nil {
		t.Fatalf("db2 catches up: %v", err)
	}
	if err := act.StepUp(ctx, db2.Addr()); err != nil {
		t.Fatalf("step up db2: %v", err)
	}
	d2, err := act.Hello(ctx, db2.Addr())
	if err != nil || !d2.Writable || mongo.CompareElection(d2, d) <= 0 {
		t.Fatalf("db2 after step-up: %+v, %v; want the primary of a newer election than db1's", d2, err)
	}
	if err := chaos.Poll(ctx, 5*time.Second, func() (bool, error) {
		d, err := act.Hello(ctx, db1.Addr())
		return err == nil && !d.Writable, nil
	}); err != nil {
		t.Fatalf("db1 steps down: %v", err)
	}
	if err := act.StepUp(ctx, arb.Addr()); err == nil {
		t.Fatal("an arbiter stepped up")
	}
	if a, err := act.Hello(ctx, arb.Addr()); err != nil || !a.Arbiter {
		t.Fatalf("arb hello %+v, %v; want arbiterOnly", a, err)
	}

	// StepDown: nothing to do on a secondary; the primary steps down.
	if err := act.StepDown(ctx, db1.Addr()); err != nil {
		t.Fatalf("step down the secondary db1: %v", err)
	}
	if err := act.StepDown(ctx, db2.Addr()); err != nil {
		t.Fatalf("step down db2: %v", err)
	}
	if d2, err := act.Hello(ctx, db2.Addr()); err != nil || d2.Writable {
		t.Fatalf("db2 after its step-down: %+v, %v; want not writable", d2, err)
	}
	if ok, err := act.Hears(ctx, db1.Addr(), db2.Addr(), time.Second); err != nil || !ok {
		t.Fatalf("db1 hears db2: %v, %v; want true", ok, err)
	}
	if err := db2.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := chaos.Poll(ctx, 5*time.Second, func() (bool, error) {
		ok, err := act.Hears(ctx, db1.Addr(), db2.Addr(), time.Second)
		return err == nil && !ok, nil
	}); err != nil {
		t.Fatalf("db1 stops hearing the killed db2: %v", err)
	}
}

// TestPSAWarning: a set with an arbiter whose writes keep w:1 gets the
// durability warning, unless the proxy adds w:majority; a set without an
// arbiter gets none.
func TestPSAWarning(t *testing.T) {
	psa := &topology.Snapshot{Cluster: "docs", Members: []topology.Member{
		{Name: "db1", Reachable: true, Role: topology.RolePrimary, Detail: &mongo.Detail{SetName: "rs0", Writable: true, Arbiters: []string{"h3:27017"}}},
		{Name: "arb", Addr: "h3:27017", Reachable: true, Role: topology.RoleArbiter, Detail: &mongo.Detail{SetName: "rs0", Arbiter: true}},
	}}
	w := mongo.DurabilityWarnings(psa, false)
	if len(w) != 1 || w[0].Check != mongo.CheckPSAWriteConcern || !strings.Contains(w[0].Message, "write_concern: majority") {
		t.Fatalf("warnings %+v, want one naming mongodb.write_concern: majority", w)
	}
	if w := mongo.DurabilityWarnings(psa, true); len(w) != 0 {
		t.Fatalf("warnings %+v with write_concern majority", w)
	}
	pss := &topology.Snapshot{Cluster: "docs", Members: []topology.Member{{Name: "db1", Reachable: true, Role: topology.RolePrimary, Detail: &mongo.Detail{SetName: "rs0", Writable: true}}}}
	if w := mongo.DurabilityWarnings(pss, false); len(w) != 0 {
		t.Fatalf("warnings %+v on a set without an arbiter", w)
	}
}
