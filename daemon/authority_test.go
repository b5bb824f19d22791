package daemon

import (
	"errors"
	"testing"

	"github.com/hashicorp/raft"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/raftfsm"
	"github.com/dbrouter/dbrouter/router"
)

// A proxy that starts while the group has no leader (or before it has
// joined) routes no writes: it has applied no epoch and holds no lease.
// Writes are held (ErrNoLease), not sent anywhere, and nothing is
// acknowledged.
func TestProxyWithoutLeaderRoutesNoWrites(t *testing.T) {
	_, tr := raft.NewInmemTransport("p1")
	node, err := raftfsm.Open(raftfsm.NodeConfig{ID: "p1", Transport: tr, InMemory: true}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	a := &authority{node: node, cluster: "app"}
	if _, _, err := a.Writer(); !errors.Is(err, router.ErrNoLease) {
		t.Fatalf("Writer without a leader: %v, want ErrNoLease", err)
	}
	if a.Acknowledgeable(1) {
		t.Fatal("a proxy without a lease acknowledged a write")
	}
	if ok, age := node.Lease(); ok || age != -1 {
		t.Fatalf("lease %v age %s before any renewal", ok, age)
	}
}
