package mongo

import (
	"testing"
	"time"
)

func heldConn() *memberConn { return &memberConn{lock: make(chan struct{}, 1)} }

// wantPinned checks the counts of mp's cursors and transactions, as
// dbrouter_pinned_sessions reads them.
func wantPinned(t *testing.T, step string, pt *pins, mp *memberPool, cursors, txns int) {
	t.Helper()
	ms := memberStats{mp, &pt.pinned[mp.idx]}
	if c, x := ms.Pinned(pinCursor), ms.Pinned(pinTxn); c != cursors || x != txns {
		t.Errorf("%s: %s counts %d cursors and %d transactions pinned, want %d and %d", step, mp.name, c, x, cursors, txns)
	}
}

// TestPinsHoldConnectionsUntilTheirLastUser: a connection leaves the
// table when its last cursor or transaction goes, not before.
func TestPinsHoldConnectionsUntilTheirLastUser(t *testing.T) {
	pt := newPins(2)
	mp := &memberPool{name: "m"}
	c := heldConn()
	a := pt.addCursor(mp, c, 1)
	b := pt.addCursor(mp, c, 1) // the same member id again: another cursor, another proxy id
	if a == b || a <= 0 || b <= 0 {
		t.Fatalf("proxy ids %d and %d", a, b)
	}
	wantPinned(t, "two cursors", pt, mp, 2, 0)
	ea, _ := pt.cursor(a)
	eb, _ := pt.cursor(b)
	if pt.dropCursor(ea) {
		t.Fatal("the connection was freed with a cursor still on it")
	}
	if pt.dropCursor(ea) {
		t.Fatal("dropping a cursor twice freed the connection")
	}
	wantPinned(t, "one cursor dropped (twice)", pt, mp, 1, 0)
	pt.addTxn([]byte("lsid"), 1, 0, mp, c)
	wantPinned(t, "a transaction added", pt, mp, 1, 1)
	if pt.dropCursor(eb) {
		t.Fatal("the connection was freed with a transaction still on it")
	}
	e, ok := pt.txn([]byte("lsid"))
	if !ok || !pt.dropTxn(e) {
		t.Fatal("the connection was not freed by its last user")
	}
	wantPinned(t, "everything dropped", pt, mp, 0, 0)
	// A new transaction of the session ends the old one, and frees its
	// connection.
	c2, c3 := heldConn(), heldConn()
	pt.addTxn([]byte("s"), 1, 0, mp, c2)
	if freed := pt.addTxn([]byte("s"), 2, 0, mp, c3); freed == nil || freed.c != c2 {
		t.Fatalf("the old transaction's connection was not freed: %+v", freed)
	}
	if e, _ := pt.txn([]byte("s")); e.txnNumber != 2 || e.conn != c3 {
		t.Fatalf("the session's transaction is %+v", e)
	}
	wantPinned(t, "a session's next transaction", pt, mp, 0, 1)
	// A connection lost takes what it held with it; shutdown takes the
	// rest.
	pt.addCursor(mp, c3, 7)
	pt.addCursor(mp, c2, 8)
	wantPinned(t, "two cursors more", pt, mp, 2, 1)
	pt.dropConn(c3)
	wantPinned(t, "a connection dropped", pt, mp, 1, 0)
	pt.all()
	wantPinned(t, "shutdown", pt, mp, 0, 0)
}

func TestPinsExpireIdleAndSkipBusy(t *testing.T) {
	pt := newPins(2)
	mp := &memberPool{name: "m"}
	idle, busy := heldConn(), heldConn()
	pt.addCursor(mp, idle, 1)
	pt.addCursor(mp, busy, 2)
	pt.addTxn([]byte("t"), 1, 0, mp, idle)
	busy.lock <- struct{}{} // a session is using it
	later := time.Now().Add(time.Hour)
	// The cursor expires, the transaction (60 s) does too; busy stays.
	out := pt.expire(later, time.Minute, time.Minute)
	if len(out) != 1 || out[0].c != idle {
		t.Fatalf("expired %+v, want the idle connection only", out)
	}
	if c, txns := pt.counts(); c != 1 || txns != 0 {
		t.Fatalf("%d cursors and %d transactions left, want the busy cursor", c, txns)
	}
	wantPinned(t, "idle ones expired", pt, mp, 1, 0)
	select {
	case idle.lock <- struct{}{}:
		t.Fatal("an expired connection is returned unlocked")
	default:
	}
	<-busy.lock
	if out := pt.expire(later, time.Minute, time.Minute); len(out) != 1 || out[0].c != busy {
		t.Fatalf("the busy connection did not expire once free: %+v", out)
	}
	wantPinned(t, "all expired", pt, mp, 0, 0)
}

func TestPinsEvictTheLeastRecentlyUsed(t *testing.T) {
	pt := newPins(2)
	mp, other := &memberPool{name: "m"}, &memberPool{name: "o", idx: 1}
	old, recent, inTxn := heldConn(), heldConn(), heldConn()
	idOld := pt.addCursor(mp, old, 1)
	pt.addCursor(mp, recent, 1)
	pt.addTxn([]byte("t"), 1, 0, mp, inTxn)
	pt.addCursor(other, heldConn(), 1)
	e, _ := pt.cursor(idOld)
	e.used = time.Now().Add(-time.Hour)
	if v := pt.evictFor(mp, 4); v != nil {
		t.Fatalf("evicted %+v below the limit", v)
	}
	v := pt.evictFor(mp, 3)
	if v == nil || v.c != old {
		t.Fatalf("evicted %+v, want the least recently used", v)
	}
	if _, ok := pt.cursor(idOld); ok {
		t.Fatal("the evicted connection's cursor is still known")
	}
	wantPinned(t, "evicted", pt, mp, 1, 1)
	wantPinned(t, "evicted on another member", pt, other, 1, 0)
	recent.lock <- struct{}{} // busy: not evictable; the transaction's is never
	if v := pt.evictFor(mp, 1); v != nil {
		t.Fatalf("evicted %+v: busy or in a transaction", v)
	}
}
