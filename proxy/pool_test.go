package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testKey is a MySQL-like pool key: an account, and whether the
// connection is in no database (a session without one must never get one
// that is in a database; a session with one may take one without).
type testKey struct {
	user string
	noDB bool
}

// testConn is a connection without a socket.
type testConn struct {
	Pooled[testKey]
	db     string
	dead   bool // the member closed it while it sat idle
	closed atomic.Bool
}

func (c *testConn) Close() error { c.closed.Store(true); return nil }
func (c *testConn) Alive() bool  { return !c.dead }

var (
	withDB = testKey{user: "app"}
	noDB   = testKey{user: "app", noDB: true}
)

// newTestPool returns a pool of at most max connections whose dial
// succeeds, the connection selecting a database for a key with one.
func newTestPool(max int) (*Pool[*testConn, testKey], *atomic.Int32) {
	dials := new(atomic.Int32)
	return NewPool(PoolConfig[*testConn, testKey]{
		Member: "db1",
		Max:    max,
		Dial: func(_ context.Context, k testKey, _ Login) (*testConn, error) {
			dials.Add(1)
			c := &testConn{}
			if !k.noDB {
				c.db = "app"
			}
			return c, nil
		},
		Fallback: func(k testKey) (testKey, bool) {
			if k.noDB {
				return k, false
			}
			k.noDB = true
			return k, true
		},
		Refile: func(c *testConn, k testKey) testKey {
			k.noDB = c.db == ""
			return k
		},
		PinNames: []string{"transaction", "autocommit=0", "temporary table"},
	}), dials
}

// idle opens n connections of key k and hands them back: the last is on
// top of the idle stack.
func idle(t *testing.T, p *Pool[*testConn, testKey], n int, k testKey) []*testConn {
	t.Helper()
	var conns []*testConn
	for i := 0; i < n; i++ {
		c, err := p.Get(context.Background(), k, Login{}, time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		p.Put(c)
	}
	return conns
}

func TestPoolPrefersTheSessionsLastConnection(t *testing.T) {
	other, _ := newTestPool(8)
	elsewhere := idle(t, other, 1, withDB)
	for _, tc := range []struct {
		name   string
		prefer func(p *Pool[*testConn, testKey], conns []*testConn) *testConn
		want   func(conns []*testConn) *testConn
	}{
		{"idle preferred connection from the bottom of the stack",
			func(_ *Pool[*testConn, testKey], c []*testConn) *testConn { return c[0] }, func(c []*testConn) *testConn { return c[0] }},
		{"idle preferred connection in the middle",
			func(_ *Pool[*testConn, testKey], c []*testConn) *testConn { return c[1] }, func(c []*testConn) *testConn { return c[1] }},
		{"no preference: the most recently used",
			func(*Pool[*testConn, testKey], []*testConn) *testConn { return nil }, func(c []*testConn) *testConn { return c[2] }},
		{"preferred connection is busy (not idle): the most recently used",
			func(p *Pool[*testConn, testKey], _ []*testConn) *testConn {
				busy := &testConn{db: "app"}
				busy.owner, busy.key = p, withDB
				return busy
			}, func(c []*testConn) *testConn { return c[2] }},
		{"preferred connection belongs to another member",
			func(*Pool[*testConn, testKey], []*testConn) *testConn { return elsewhere[0] }, func(c []*testConn) *testConn { return c[2] }},
		{"preferred connection has another key",
			func(_ *Pool[*testConn, testKey], c []*testConn) *testConn {
				c[0].key = testKey{user: "other"}
				return c[0]
			},
			func(c []*testConn) *testConn { return c[2] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := newTestPool(8)
			conns := idle(t, p, 3, withDB)
			prefer := tc.prefer(p, conns)
			want := tc.want(conns)
			got, err := p.Get(context.Background(), withDB, Login{}, time.Second, prefer)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("got connection %p, want %p", got, want)
			}
			// The rest stay idle, in order, and none twice.
			seen := map[*testConn]bool{got: true}
			for _, c := range p.idle[withDB] {
				if seen[c] {
					t.Fatalf("connection %p both handed out and idle, or idle twice", c)
				}
				seen[c] = true
			}
			if n := len(p.idle[withDB]); n != 2 {
				t.Fatalf("%d idle connections left, want 2", n)
			}
		})
	}
}

func TestPoolNeverHandsADatabaseToASessionWithout(t *testing.T) {
	// A session with a database may take a connection without one.
	p, dials := newTestPool(8)
	conns := idle(t, p, 1, noDB)
	got, err := p.Get(context.Background(), withDB, Login{}, time.Second, nil)
	if err != nil || got != conns[0] || dials.Load() != 1 {
		t.Fatalf("session with a database got %p, %v (%d dials); want the idle connection without one", got, err, dials.Load())
	}

	// A session without one must not take a connection left in one: with
	// only such a connection idle, the pool dials.
	p, dials = newTestPool(8)
	conns = idle(t, p, 1, withDB)
	got, err = p.Get(context.Background(), noDB, Login{}, time.Second, conns[0])
	if err != nil || got == conns[0] || dials.Load() != 2 {
		t.Fatalf("session without a database got %p, %v (%d dials); want a new connection", got, err, dials.Load())
	}
	if len(p.idle[withDB]) != 1 {
		t.Fatalf("the connection in a database left the idle stack")
	}

	// At the limit it closes the other connection first.
	p, _ = newTestPool(1)
	conns = idle(t, p, 1, withDB)
	got, err = p.Get(context.Background(), noDB, Login{}, time.Second, nil)
	if err != nil || got == conns[0] || !conns[0].closed.Load() || p.Stats().Open != 1 {
		t.Fatalf("at the limit: got %p, %v, the other closed %v, %+v; want it closed and a new one", got, err, conns[0].closed.Load(), p.Stats())
	}
}

func TestPoolReturnsConnectionsUnderTheirDatabaseState(t *testing.T) {
	p, _ := newTestPool(8)
	a, err := p.Get(context.Background(), withDB, Login{}, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Get(context.Background(), withDB, Login{}, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.db = "" // left in no database (MySQL: a DROP DATABASE of its own)
	p.Put(a)
	p.Put(b)
	if len(p.idle[noDB]) != 1 || len(p.idle[withDB]) != 1 || p.idle[noDB][0] != a || p.idle[withDB][0] != b {
		t.Fatalf("idle stacks: without database %v, with %v", p.idle[noDB], p.idle[withDB])
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
	p, _ := newTestPool(1)
	held, err := p.Get(context.Background(), withDB, Login{}, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	type served struct {
		who int
		c   *testConn
	}
	got := make(chan served)
	for i := 0; i < waiters; i++ {
		go func() {
			c, err := p.Get(context.Background(), withDB, Login{}, 10*time.Second, nil)
			if err != nil {
				t.Error(err)
			}
			got <- served{i, c}
		}()
		waitFor(t, fmt.Sprintf("waiter %d to queue", i), func() bool { return p.Waiting() == i+1 })
	}
	c := held
	for want := 0; want < waiters; want++ {
		p.Put(c)
		s := <-got
		if s.who != want {
			t.Fatalf("waiter %d was served before waiter %d", s.who, want)
		}
		c = s.c
	}
	if p.Waiting() != 0 || p.Stats().Open != 1 {
		t.Fatalf("%d waiting, %+v", p.Waiting(), p.Stats())
	}
}

// TestPoolWaiterThatTimedOutLosesNoConnection: a waiter that gives up
// leaves the queue; the connection released after it goes to the next
// waiter or back to the idle stack, never to the one that left.
func TestPoolWaiterThatTimedOutLosesNoConnection(t *testing.T) {
	p, _ := newTestPool(1)
	held, err := p.Get(context.Background(), withDB, Login{}, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Get(context.Background(), withDB, Login{}, 20*time.Millisecond, nil)
	if !errors.Is(err, ErrPoolTimeout) || err.Error() != "member db1: no free backend connection: all 1 connections in use for 20ms" {
		t.Fatalf("waiter: %v, want pool timeout", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := p.Get(ctx, withDB, Login{}, 10*time.Second, nil)
		done <- err
	}()
	waitFor(t, "the waiter to queue", func() bool { return p.Waiting() == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	p.Put(held)
	if p.Waiting() != 0 || p.Stats() != (ConnStats{Open: 1, Idle: 1}) {
		t.Fatalf("after the waiters left: %d waiting, %+v", p.Waiting(), p.Stats())
	}
	if c, err := p.Get(context.Background(), withDB, Login{}, time.Second, nil); c != held || err != nil {
		t.Fatalf("the released connection was lost: %p, %v", c, err)
	}
}

// TestPoolTimeoutSaysWhatPinsTheConnections: more connections will not
// help sessions that keep theirs; the message says how many do, and why.
func TestPoolTimeoutSaysWhatPinsTheConnections(t *testing.T) {
	p, _ := newTestPool(2)
	for i := 0; i < 2; i++ {
		if _, err := p.Get(context.Background(), withDB, Login{}, time.Second, nil); err != nil {
			t.Fatal(err)
		}
	}
	p.CountPins(1<<0, 1)      // a transaction
	p.CountPins(1<<0|1<<2, 1) // a transaction with a temporary table
	_, err := p.Get(context.Background(), withDB, Login{}, time.Millisecond, nil)
	want := "2 sessions pin one, keeping it between statements (transaction 2, temporary table 1)"
	if !errors.Is(err, ErrPoolTimeout) || !strings.HasSuffix(err.Error(), want) {
		t.Fatalf("pool timeout: %v, want it to end with %q", err, want)
	}
	if p.Pinned(0) != 2 || p.Pinned(1) != 0 || p.Pinned(2) != 1 {
		t.Fatalf("pinned by reason: %d %d %d", p.Pinned(0), p.Pinned(1), p.Pinned(2))
	}
	p.CountPins(1<<0|1<<2, -1)
	if p.Pinned(0) != 1 || p.Pinned(2) != 0 {
		t.Fatalf("after an unpin: %d %d", p.Pinned(0), p.Pinned(2))
	}
}

// TestPoolLearnsItsLimitFromTheFirstConnection: without a configured
// limit only one connection opens until the member's is read; sessions
// that asked meanwhile wait, and get room once it is known. A connection
// that fails while the limit is read is discarded, and the next one reads
// it.
func TestPoolLearnsItsLimitFromTheFirstConnection(t *testing.T) {
	reading := make(chan struct{})
	answer := make(chan error)
	reads := 0
	var dialed []*testConn
	p := NewPool(PoolConfig[*testConn, testKey]{
		Member: "db1",
		Dial: func(context.Context, testKey, Login) (*testConn, error) {
			c := &testConn{db: "app"}
			dialed = append(dialed, c)
			return c, nil
		},
		Limit: func(*testConn) (int, error) {
			reads++
			reading <- struct{}{}
			if err := <-answer; err != nil {
				return 0, err
			}
			return 3, nil
		},
	})
	type got struct {
		c   *testConn
		err error
	}
	first := make(chan got)
	go func() {
		c, err := p.Get(context.Background(), withDB, Login{}, time.Second, nil)
		first <- got{c, err}
	}()
	<-reading
	answer <- errors.New("connection lost")
	if g := <-first; g.err == nil || g.c != nil {
		t.Fatalf("a connection lost while reading the limit: %p, %v; want an error", g.c, g.err)
	}
	if s := p.Stats(); s.Open != 0 || !dialed[0].closed.Load() {
		t.Fatalf("the failed connection still counts (%+v) or is open (closed: %v)", s, dialed[0].closed.Load())
	}

	go func() {
		c, err := p.Get(context.Background(), withDB, Login{}, time.Second, nil)
		first <- got{c, err}
	}()
	<-reading
	second := make(chan got)
	go func() {
		c, err := p.Get(context.Background(), withDB, Login{}, 5*time.Second, nil)
		second <- got{c, err}
	}()
	waitFor(t, "a session to wait for the limit", func() bool { return p.Waiting() == 1 })
	answer <- nil
	for _, ch := range []chan got{first, second} {
		if g := <-ch; g.err != nil {
			t.Fatal(g.err)
		}
	}
	if _, err := p.Get(context.Background(), withDB, Login{}, time.Second, nil); err != nil {
		t.Fatalf("third connection under a limit of 3: %v", err)
	}
	if _, err := p.Get(context.Background(), withDB, Login{}, time.Millisecond, nil); !errors.Is(err, ErrPoolTimeout) {
		t.Fatalf("fourth connection under a limit of 3: %v", err)
	}
	if reads != 2 || p.Stats().Open != 3 {
		t.Fatalf("%d reads of the limit, %+v", reads, p.Stats())
	}
}

// TestPoolTakesTheConnectionsOfEndedEpochs: connections chosen as the
// primary at an epoch that ended are handed to the caller to reset; idle
// ones leave the pool at once, in-use ones when their session fails.
func TestPoolTakesTheConnectionsOfEndedEpochs(t *testing.T) {
	p, _ := newTestPool(8)
	conns := idle(t, p, 4, withDB)
	inUse, err := p.Get(context.Background(), withDB, Login{}, time.Second, conns[3])
	if err != nil || inUse != conns[3] {
		t.Fatal(err)
	}
	conns[0].Epoch.Store(7) // idle, ended
	conns[1].Epoch.Store(8) // idle, current
	inUse.Epoch.Store(7)    // in use, ended
	conns[2].Epoch.Store(7)
	conns[2].Aborted.Store(true) // already reset
	var asked []uint64
	stale := p.TakeStale(func(e uint64) bool { asked = append(asked, e); return e < 8 })
	if len(stale) != 2 || !(stale[0] == conns[0] && stale[1] == inUse || stale[1] == conns[0] && stale[0] == inUse) {
		t.Fatalf("stale %v, want the idle and the in-use connections of epoch 7", stale)
	}
	if len(asked) != 2 {
		t.Fatalf("asked about epochs %v: once per epoch", asked)
	}
	if s := p.Stats(); s != (ConnStats{Open: 3, Idle: 2}) {
		t.Fatalf("after taking: %+v, want the idle stale one gone", s)
	}
	p.Discard(inUse)
	if s := p.Stats(); s.Open != 2 {
		t.Fatalf("after discarding the in-use one: %+v", s)
	}
}

// TestPoolChecksAConnectionThatSatIdle: a connection idle for over a
// second that the member closed is discarded, not handed out.
func TestPoolChecksAConnectionThatSatIdle(t *testing.T) {
	p, dials := newTestPool(8)
	conns := idle(t, p, 1, withDB)
	conns[0].dead = true
	conns[0].lastUsed = time.Now().Add(-2 * staleAfter)
	c, err := p.Get(context.Background(), withDB, Login{}, time.Second, nil)
	if err != nil || c == conns[0] || !conns[0].closed.Load() || dials.Load() != 2 {
		t.Fatalf("got %p, %v: want a new connection and the dead one closed", c, err)
	}
	if c.Reused() || !conns[0].Reused() {
		t.Fatal("Reused: want false for a new connection, true for one handed back")
	}
}

func TestPoolCloseIdle(t *testing.T) {
	p, _ := newTestPool(8)
	conns := idle(t, p, 3, withDB)
	busy, err := p.Get(context.Background(), withDB, Login{}, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.CloseIdle()
	for _, c := range conns {
		if c != busy && !c.closed.Load() {
			t.Fatalf("idle connection %p left open", c)
		}
	}
	if busy.closed.Load() || p.Stats() != (ConnStats{Open: 1}) {
		t.Fatalf("the busy connection: closed %v, %+v", busy.closed.Load(), p.Stats())
	}
}

// TestPoolGetAndPutAllocateNothing: the hot path (an idle connection
// taken and handed back) allocates nothing.
func TestPoolGetAndPutAllocateNothing(t *testing.T) {
	p, _ := newTestPool(8)
	last := idle(t, p, 2, withDB)[1]
	allocs := testing.AllocsPerRun(1000, func() {
		c, err := p.Get(context.Background(), withDB, Login{User: "app"}, time.Second, last)
		if err != nil {
			t.Fatal(err)
		}
		p.Put(c)
		last = c
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per Get and Put", allocs)
	}
}
