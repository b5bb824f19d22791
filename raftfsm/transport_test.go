package raftfsm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

// handedOut remembers the addresses freeAddr returned: the kernel may give
// a port just closed to the next listen on :0, and two nodes of one group
// on one address make raft refuse the configuration.
var handedOut sync.Map

func freeAddr(t *testing.T) string {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		if _, dup := handedOut.LoadOrStore(addr, true); !dup {
			return addr
		}
	}
	t.Fatal("no unused loopback port in 100 tries")
	return ""
}

func TestHandshakeNeedsTheSecret(t *testing.T) {
	cases := []struct {
		name           string
		client, server string
		ok             bool
	}{
		{"same secret", "s3cret", "s3cret", true},
		{"wrong secret", "guess", "s3cret", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			errc := make(chan error, 1)
			go func() {
				err := serverHandshake(b, []byte(tc.server))
				if err != nil {
					b.Close() // as the accept loop does
				}
				errc <- err
			}()
			cerr := clientHandshake(a, []byte(tc.client))
			serr := <-errc
			if tc.ok && (cerr != nil || serr != nil) {
				t.Fatalf("client %v, server %v", cerr, serr)
			}
			if !tc.ok && (!errors.Is(serr, ErrAuth) || cerr == nil) {
				t.Fatalf("client %v, server %v; want both to fail, the server with ErrAuth", cerr, serr)
			}
		})
	}
}

// TestTCPGroupRefusesNodesWithoutTheSecret runs three arbiters on real
// loopback sockets with bolt stores, then a node holding the wrong secret:
// added to the configuration by the leader, it still never receives the
// state, and bootstrapped as a rival voter it can never win an election.
func TestTCPGroupRefusesNodesWithoutTheSecret(t *testing.T) {
	secret := []byte("cluster-secret")
	var voters []Peer
	for i := 1; i <= 3; i++ {
		voters = append(voters, Peer{ID: fmt.Sprintf("a%d", i), Addr: freeAddr(t)})
	}
	nodes := map[string]*Node{}
	for _, p := range voters {
		n, err := Open(NodeConfig{ID: p.ID, Bind: p.Addr, Dir: t.TempDir(), Secret: secret, Voter: true, Voters: voters,
			HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond}, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		nodes[p.ID] = n
		defer n.Close()
	}
	g := &memGroup{t: t, nodes: nodes}
	l := g.leader(nil)
	if _, err := propose(t, l, bootstrap()); err != nil {
		t.Fatal(err)
	}

	// A proxy with the right secret joins and applies the state.
	good, err := Open(NodeConfig{ID: "p-good", Bind: freeAddr(t), Dir: t.TempDir(), Secret: secret}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Join(ctx, "p-good", good.cfg.Bind, false); err != nil {
		t.Fatal(err)
	}

	// One with the wrong secret is added too (as if an operator erred), but
	// no connection to it survives the handshake.
	bad, err := Open(NodeConfig{ID: "p-bad", Bind: freeAddr(t), Dir: t.TempDir(), Secret: []byte("wrong")}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if err := l.Join(ctx, "p-bad", bad.cfg.Bind, false); err != nil {
		t.Fatal(err)
	}

	// A rival claiming to be a voter with the wrong secret.
	rivalAddr := freeAddr(t)
	rival, err := Open(NodeConfig{ID: "rival", Bind: rivalAddr, Dir: t.TempDir(), Secret: []byte("wrong"), Voter: true,
		Voters:           append(voters[:2:2], Peer{ID: "rival", Addr: rivalAddr}),
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer rival.Close()

	deadline := time.Now().Add(10 * time.Second)
	for good.State().Cluster("shop") == nil {
		if time.Now().After(deadline) {
			t.Fatal("authenticated proxy never received the state")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Give the bad nodes the same time again, then check they learned nothing
	// and the group's leadership is intact.
	time.Sleep(2 * time.Second)
	if bad.State().Cluster("shop") != nil || bad.State().Index != 0 {
		t.Fatal("node with the wrong secret received the state")
	}
	if rival.IsLeader() && rival.State().Cluster("shop") != nil {
		t.Fatal("rival voter took part in the group")
	}
	if id, _ := good.Leader(); id == "rival" || id == "" {
		t.Fatalf("proxy follows leader %q", id)
	}
	if _, err := propose(t, g.leader(map[string]bool{"rival": true, "p-good": true, "p-bad": true}), &Command{Type: TypeNote, Cluster: "shop", At: t0, Reason: "still committing"}); err != nil {
		t.Fatalf("group stopped committing: %v", err)
	}
}
