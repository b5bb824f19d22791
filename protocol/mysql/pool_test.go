package mysql

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/proxy"
)

// idlePool builds a pool holding n idle connections of key k (no sockets:
// get never dials while an idle connection of the key exists).
func idlePool(n int, k poolKey) (*memberPool, []*backendConn) {
	p := newMemberPool(0, "db1", "127.0.0.1:1", 8, time.Second, 1<<20, zap.NewNop())
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
	if got != nil || !errors.Is(err, proxy.ErrBackendDown) {
		t.Fatalf("session without a database got %p, %v; want a new connection (proxy.ErrBackendDown here)", got, err)
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

// waitFor polls cond (no sleeping as synchronisation: the condition is
// checked until it holds or the deadline passes).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestPoolWaitersAreServedInArrivalOrder: at the limit, sessions waiting
// for a connection get one in the order they asked. Before, every waiter
// woke at each release and the fastest won, so one could starve until
// pool_timeout while later arrivals went ahead.
func TestPoolWaitersAreServedInArrivalOrder(t *testing.T) {
	const waiters = 6
	k := poolKey{user: "app", collation: defaultCollationID}
	p, _ := idlePool(1, k)
	p.max = 1
	held, err := p.get(context.Background(), k, credentials{}, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	type served struct {
		who int
		bc  *backendConn
	}
	got := make(chan served)
	for i := 0; i < waiters; i++ {
		go func() {
			bc, err := p.get(context.Background(), k, credentials{}, 10*time.Second, nil)
			if err != nil {
				t.Error(err)
			}
			got <- served{i, bc}
		}()
		waitFor(t, fmt.Sprintf("waiter %d to queue", i), func() bool { return p.waiting() == i+1 })
	}
	bc := held
	for want := 0; want < waiters; want++ {
		p.put(bc)
		s := <-got
		if s.who != want {
			t.Fatalf("waiter %d was served before waiter %d", s.who, want)
		}
		bc = s.bc
	}
	if p.waiting() != 0 || p.open != 1 {
		t.Fatalf("%d waiting, %d open", p.waiting(), p.open)
	}
}

// TestPoolWaiterThatTimedOutLosesNoConnection: a waiter that gives up
// leaves the queue; the connection released after it goes to the next
// waiter or back to the idle stack, never to the one that left.
func TestPoolWaiterThatTimedOutLosesNoConnection(t *testing.T) {
	k := poolKey{user: "app", collation: defaultCollationID, noDB: true} // as put files it
	p, _ := idlePool(1, k)
	p.max = 1
	held, err := p.get(context.Background(), k, credentials{}, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.get(context.Background(), k, credentials{}, 20*time.Millisecond, nil)
	if !errors.Is(err, proxy.ErrPoolTimeout) {
		t.Fatalf("waiter: %v, want pool timeout", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := p.get(ctx, k, credentials{}, 10*time.Second, nil)
		done <- err
	}()
	waitFor(t, "the waiter to queue", func() bool { return p.waiting() == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	p.put(held)
	if p.waiting() != 0 || p.open != 1 || len(p.idle[k]) != 1 {
		t.Fatalf("after the waiters left: %d waiting, %d open, %d idle", p.waiting(), p.open, len(p.idle[k]))
	}
	if bc, err := p.get(context.Background(), k, credentials{}, time.Second, nil); bc != held || err != nil {
		t.Fatalf("the released connection was lost: %p, %v", bc, err)
	}
}

// TestPoolLimitFromMaxConnections: the default per-member limit leaves
// the member a tenth of max_connections and a fixed reserve for admin
// sessions, monitors, arbiters and replication.
func TestPoolLimitFromMaxConnections(t *testing.T) {
	for _, tc := range []struct{ maxConnections, want int }{
		{151, 126}, // MariaDB's default: 151 - 15 - 10
		{500, 440},
		{1000, 890},
		{40, 26},
		{20, 8},
		{12, 1}, // too small for the reserve: still one
		{1, 1},
		{100000, 89990},
	} {
		if got := limitFromMaxConnections(tc.maxConnections); got != tc.want {
			t.Errorf("max_connections %d: limit %d, want %d", tc.maxConnections, got, tc.want)
		}
	}
}
