package raftfsm

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/zap"
)

// memGroup is a Raft group on raft's in-memory transport.
type memGroup struct {
	t      *testing.T
	nodes  map[string]*Node
	trans  map[string]*raft.InmemTransport
	voters []Peer
}

func fastConfig(id string, voter bool, voters []Peer, tr raft.Transport) NodeConfig {
	return NodeConfig{ID: id, Voter: voter, Voters: voters, Transport: tr, InMemory: true,
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond, Lease: 500 * time.Millisecond}
}

func newMemGroup(t *testing.T, voters int) *memGroup { return newMemGroupWith(t, voters, 0) }

func newMemGroupWith(t *testing.T, voters int, proxyTimeout time.Duration) *memGroup {
	g := &memGroup{t: t, nodes: map[string]*Node{}, trans: map[string]*raft.InmemTransport{}}
	for i := 1; i <= voters; i++ {
		id := fmt.Sprintf("a%d", i)
		addr, tr := raft.NewInmemTransport(raft.ServerAddress(id))
		g.trans[id] = tr
		g.voters = append(g.voters, Peer{ID: id, Addr: string(addr)})
	}
	g.connectAll()
	for _, p := range g.voters {
		cfg := fastConfig(p.ID, true, g.voters, g.trans[p.ID])
		cfg.ProxyTimeout = proxyTimeout
		n, err := Open(cfg, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		g.nodes[p.ID] = n
	}
	t.Cleanup(func() {
		for _, n := range g.nodes {
			n.Close()
		}
	})
	return g
}

func (g *memGroup) connectAll() {
	for a, ta := range g.trans {
		for b, tb := range g.trans {
			if a != b {
				ta.Connect(raft.ServerAddress(b), tb)
			}
		}
	}
}

// isolate cuts every link to and from id.
func (g *memGroup) isolate(id string) {
	for other, tr := range g.trans {
		if other != id {
			tr.Disconnect(raft.ServerAddress(id))
		}
	}
	g.trans[id].DisconnectAll()
}

func (g *memGroup) addProxy(id string) *Node {
	addr, tr := raft.NewInmemTransport(raft.ServerAddress(id))
	g.trans[id] = tr
	g.connectAll()
	n, err := Open(fastConfig(id, false, nil, tr), zap.NewNop())
	if err != nil {
		g.t.Fatal(err)
	}
	g.nodes[id] = n
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.leader(nil).Join(ctx, id, string(addr), false); err != nil {
		g.t.Fatal(err)
	}
	return n
}

// leader waits for a single leader among the nodes not excluded.
func (g *memGroup) leader(exclude map[string]bool) *Node {
	g.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var leaders []*Node
		for id, n := range g.nodes {
			if !exclude[id] && n.IsLeader() {
				leaders = append(leaders, n)
			}
		}
		if len(leaders) == 1 {
			return leaders[0]
		}
		time.Sleep(10 * time.Millisecond)
	}
	g.t.Fatal("no single leader within 10s")
	return nil
}

// waitAll polls until every node not excluded satisfies ok.
func (g *memGroup) waitAll(what string, exclude map[string]bool, ok func(*State) bool) {
	g.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		all := true
		for id, n := range g.nodes {
			if !exclude[id] && !ok(n.State()) {
				all = false
			}
		}
		if all {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	g.t.Fatalf("not every node reached: %s", what)
}

func propose(t *testing.T, n *Node, c *Command) (Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return n.Propose(ctx, c)
}

func TestGroupsAgreeAndSurviveLeaderLoss(t *testing.T) {
	for _, size := range []int{3, 5} {
		t.Run(fmt.Sprintf("%d voters", size), func(t *testing.T) {
			g := newMemGroup(t, size)
			l := g.leader(nil)
			if _, err := propose(t, l, bootstrap()); err != nil {
				t.Fatal(err)
			}
			g.waitAll("bootstrap", nil, func(s *State) bool { return s.Cluster("shop") != nil && s.Cluster("shop").Epoch == 1 })

			// A follower cannot decide.
			for id, n := range g.nodes {
				if n != l {
					_, err := propose(t, n, &Command{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db2", Phase: PhaseSwitching})
					var nl *ErrNotLeader
					if !errors.As(err, &nl) || nl.LeaderID != l.ID() {
						t.Fatalf("%s: propose on a follower: %v", id, err)
					}
					break
				}
			}

			// Lose the leader: the others elect a new one and keep the state.
			old := l.ID()
			g.isolate(old)
			gone := map[string]bool{old: true}
			l2 := g.leader(gone)
			if _, err := propose(t, l2, &Command{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db2", Phase: PhaseFailingOver}); err != nil {
				t.Fatal(err)
			}
			// A decision taken at the old epoch (say by the deposed leader's
			// stale view) never applies.
			if _, err := propose(t, l2, &Command{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db3", Phase: PhaseFailingOver}); !errors.Is(err, ErrStaleEpoch) {
				t.Fatalf("stale decision: %v", err)
			}
			g.waitAll("failover begun", gone, func(s *State) bool { return s.Cluster("shop").Epoch == 2 && s.Cluster("shop").Primary == "db2" })

			// The deposed leader cannot commit anything while cut off.
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			_, err := g.nodes[old].Propose(ctx, &Command{Type: TypeNote, Cluster: "shop", At: t0, Reason: "from the minority"})
			cancel()
			if err == nil {
				t.Fatal("isolated node committed a command")
			}
			g.connectAll()
			g.waitAll("rejoined node catches up", nil, func(s *State) bool { return s.Cluster("shop").Epoch == 2 })
			for _, d := range g.nodes[old].State().Cluster("shop").History {
				if d.Reason == "from the minority" {
					t.Fatal("minority command survived")
				}
			}
		})
	}
}

func TestProxyLeaseFollowsLeaderContact(t *testing.T) {
	g := newMemGroup(t, 3)
	l := g.leader(nil)
	if _, err := propose(t, l, bootstrap()); err != nil {
		t.Fatal(err)
	}
	p := g.addProxy("p1")
	g.waitAll("proxy applied the cluster", nil, func(s *State) bool { return s.Cluster("shop") != nil })

	if ok, _ := p.Lease(); ok {
		t.Fatal("lease before any renewal")
	}
	renew := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		sent := time.Now()
		idx, err := g.leader(map[string]bool{"p1": true}).LeaseIndex(ctx)
		if err != nil {
			return err
		}
		return p.RenewLease(ctx, sent, idx)
	}
	if err := renew(); err != nil {
		t.Fatal(err)
	}
	if ok, _ := p.Lease(); !ok {
		t.Fatal("no lease after renewal")
	}

	// Cut the proxy off: its lease ends within the lease duration, and it
	// cannot renew.
	g.isolate("p1")
	cut := time.Now()
	for {
		ok, _ := p.Lease()
		if !ok {
			break
		}
		if time.Since(cut) > p.LeaseDuration()+200*time.Millisecond {
			t.Fatal("lease outlived the cut by more than the lease")
		}
		time.Sleep(5 * time.Millisecond)
	}

	// A new epoch committed while the proxy is cut off: when it reconnects, a
	// renewal makes it apply that epoch before the lease counts again.
	if _, err := propose(t, l, &Command{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db2", Phase: PhaseSwitching}); err != nil {
		t.Fatal(err)
	}
	g.connectAll()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := renew()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ok, _ := p.Lease(); !ok || p.State().Cluster("shop").Epoch != 2 {
		t.Fatalf("after renewal: lease %v, epoch %d", ok, p.State().Cluster("shop").Epoch)
	}
}

func TestLeaseIndexRefusedByDeposedLeader(t *testing.T) {
	g := newMemGroup(t, 3)
	l := g.leader(nil)
	g.isolate(l.ID())
	g.leader(map[string]bool{l.ID(): true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := l.LeaseIndex(ctx); err == nil {
		t.Fatal("a leader cut off from its quorum vouched for a lease")
	}
}

func TestVanishedProxyIsRemoved(t *testing.T) {
	g := newMemGroupWith(t, 3, 300*time.Millisecond)
	l := g.leader(nil)
	g.addProxy("p1")
	if _, err := propose(t, l, &Command{Type: TypeProxyJoin, At: t0, Proxy: &Proxy{ID: "p1", Raft: "p1"}}); err != nil {
		t.Fatal(err)
	}
	g.isolate("p1")
	deadline := time.Now().Add(10 * time.Second)
	for {
		servers, err := l.Servers()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, s := range servers {
			found = found || s.ID == "p1"
		}
		if !found && len(l.State().Proxies) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("p1 still in the configuration: %+v, proxies %v", servers, l.State().Proxies)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReplaceAVoter: an arbiter added to a running group (JoinExisting: it
// never bootstraps) receives the state, votes, and with one original voter
// removed and another cut off, keeps a quorum with the one left.
func TestReplaceAVoter(t *testing.T) {
	g := newMemGroup(t, 3)
	l := g.leader(nil)
	if _, err := propose(t, l, bootstrap()); err != nil {
		t.Fatal(err)
	}
	addr, tr := raft.NewInmemTransport("a4")
	g.trans["a4"] = tr
	g.connectAll()
	cfg := fastConfig("a4", true, g.voters, tr)
	cfg.JoinExisting = true
	a4, err := Open(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	g.nodes["a4"] = a4
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Join(ctx, "a4", string(addr), true); err != nil {
		t.Fatal(err)
	}
	if _, err := propose(t, l, &Command{Type: TypeArbiterJoin, At: t0, Arbiter: &Proxy{ID: "a4", Raft: string(addr), Admin: "127.0.0.1:7084"}}); err != nil {
		t.Fatal(err)
	}
	g.waitAll("a4 has the state", nil, func(s *State) bool {
		return s.Cluster("shop") != nil && s.Arbiters["a4"].Admin == "127.0.0.1:7084"
	})
	// Replace a3: remove it, then lose a1 as well. a2 and a4 are a
	// majority of {a1, a2, a4} only if a4 votes.
	l = g.leader(nil)
	if err := l.Remove(ctx, "a3"); err != nil {
		t.Fatal(err)
	}
	g.nodes["a3"].Close()
	delete(g.nodes, "a3")
	g.isolate("a1")
	nl := g.leader(map[string]bool{"a1": true})
	if nl.ID() != "a2" && nl.ID() != "a4" {
		t.Fatalf("leader %s", nl.ID())
	}
	if _, err := propose(t, nl, &Command{Type: TypeMember, Cluster: "shop", Epoch: 1, At: t0, Member: "db3", Maintenance: bp(true)}); err != nil {
		t.Fatalf("commit with a2 and a4: %v", err)
	}
	servers, err := nl.Servers()
	if err != nil {
		t.Fatal(err)
	}
	voters := map[string]bool{}
	for _, s := range servers {
		if s.Voter {
			voters[s.ID] = true
		}
	}
	if len(voters) != 3 || !voters["a4"] || voters["a3"] {
		t.Fatalf("voters %v, want a1, a2, a4", voters)
	}
}
