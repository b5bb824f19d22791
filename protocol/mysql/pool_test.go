package mysql

import (
	"context"
	"errors"
	"testing"
	"time"
)

// idlePool builds a pool holding n idle connections of key k (no sockets:
// get never dials while an idle connection of the key exists).
func idlePool(n int, k poolKey) (*memberPool, []*backendConn) {
	p := newMemberPool(0, "db1", "127.0.0.1:1", 8, time.Second, 1<<20)
	var conns []*backendConn
	for i := 0; i < n; i++ {
		bc := &backendConn{pool: p, key: k, lastUsed: time.Now()}
		conns = append(conns, bc)
		p.idle[k] = append(p.idle[k], bc)
	}
	p.open = n
	return p, conns
}

func TestPoolPrefersTheSessionsLastConnection(t *testing.T) {
	k := poolKey{user: "app", collation: defaultCollationID}
	other := poolKey{user: "other", collation: defaultCollationID}
	_, elsewhere := idlePool(1, k)
	for _, tc := range []struct {
		name   string
		prefer func(conns []*backendConn) *backendConn
		want   func(conns []*backendConn) *backendConn
	}{
		{"idle preferred connection from the bottom of the stack",
			func(c []*backendConn) *backendConn { return c[0] }, func(c []*backendConn) *backendConn { return c[0] }},
		{"idle preferred connection in the middle",
			func(c []*backendConn) *backendConn { return c[1] }, func(c []*backendConn) *backendConn { return c[1] }},
		{"no preference: the most recently used",
			func([]*backendConn) *backendConn { return nil }, func(c []*backendConn) *backendConn { return c[2] }},
		{"preferred connection is busy (not idle): the most recently used",
			func([]*backendConn) *backendConn { return &backendConn{key: k} }, func(c []*backendConn) *backendConn { return c[2] }},
		{"preferred connection belongs to another member",
			func([]*backendConn) *backendConn { return elsewhere[0] }, func(c []*backendConn) *backendConn { return c[2] }},
		{"preferred connection has another key",
			func(c []*backendConn) *backendConn { c[0].key = other; return c[0] }, func(c []*backendConn) *backendConn { return c[2] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, conns := idlePool(3, k)
			prefer := tc.prefer(conns)
			want := tc.want(conns)
			got, err := p.get(context.Background(), k, credentials{}, time.Second, prefer)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("got connection %p, want %p", got, want)
			}
			// The rest stay idle, in order, and none twice.
			seen := map[*backendConn]bool{got: true}
			for _, bc := range p.idle[k] {
				if seen[bc] {
					t.Fatalf("connection %p both handed out and idle, or idle twice", bc)
				}
				seen[bc] = true
			}
			if n := len(p.idle[k]); n != 2 {
				t.Fatalf("%d idle connections left, want 2", n)
			}
		})
	}
}

func TestPoolNeverHandsADatabaseToASessionWithout(t *testing.T) {
	withDB := poolKey{user: "app", collation: defaultCollationID}
	noDB := withDB
	noDB.noDB = true

	// A session with a database may take a connection without one.
	p, conns := idlePool(1, noDB)
	got, err := p.get(context.Background(), withDB, credentials{}, time.Second, nil)
	if err != nil || got != conns[0] {
		t.Fatalf("session with a database got %p, %v; want the idle connection without one", got, err)
	}

	// A session without one must not take a connection left in one: with
	// only such a connection idle, the pool dials (and the test member is
	// unreachable), or at its limit closes the other connection first.
	p, conns = idlePool(1, withDB)
	got, err = p.get(context.Background(), noDB, credentials{}, time.Second, conns[0])
	if got != nil || !errors.Is(err, errBackendDown) {
		t.Fatalf("session without a database got %p, %v; want a new connection (errBackendDown here)", got, err)
	}
	if len(p.idle[withDB]) != 1 {
		t.Fatalf("the connection in a database left the idle stack")
	}
}

func TestPoolReturnsConnectionsUnderTheirDatabaseState(t *testing.T) {
	k := poolKey{user: "app", collation: defaultCollationID}
	p, _ := idlePool(0, k)
	p.put(&backendConn{pool: p, key: k, db: ""})
	p.put(&backendConn{pool: p, key: k, db: "app"})
	noDB := k
	noDB.noDB = true
	if len(p.idle[noDB]) != 1 || len(p.idle[k]) != 1 || p.idle[noDB][0].db != "" || p.idle[k][0].db != "app" {
		t.Fatalf("idle stacks: without database %v, with %v", p.idle[noDB], p.idle[k])
	}
}
