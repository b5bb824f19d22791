package mongo

import (
	"testing"
	"time"
)

func heldConn() *memberConn { return &memberConn{lock: make(chan struct{}, 1)} }

// TestPinsHoldConnectionsUntilTheirLastUser: a connection leaves the
// table when its last cursor or transaction goes, not before.
func TestPinsHoldConnectionsUntilTheirLastUser(t *testing.T) {
	pt := newPins()
	mp := &memberPool{name: "m"}
	c := heldConn()
	a := pt.addCursor(mp, c, 1)
	b := pt.addCursor(mp, c, 1) // the same member id again: another cursor, another proxy id
	if a == b || a <= 0 || b <= 0 {
		t.Fatalf("proxy ids %d and %d", a, b)
	}
	ea, _ := pt.cursor(a)
	eb, _ := pt.cursor(b)
	if pt.dropCursor(ea) {
		t.Fatal("the connection was freed with a cursor still on it")
	}
	if pt.dropCursor(ea) {
		t.Fatal("dropping a cursor twice freed the connection")
	}
	pt.addTxn([]byte("lsid"), 1, 0, mp, c)
	if pt.dropCursor(eb) {
		t.Fatal("the connection was freed with a transaction still on it")
	}
	e, ok := pt.txn([]byte("lsid"))
	if !ok || !pt.dropTxn(e) {
		t.Fatal("the connection was not freed by its last user")
	}
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
}

func TestPinsExpireIdleAndSkipBusy(t *testing.T) {
	pt := newPins()
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
	select {
	case idle.lock <- struct{}{}:
		t.Fatal("an expired connection is returned unlocked")
	default:
	}
	<-busy.lock
	if out := pt.expire(later, time.Minute, time.Minute); len(out) != 1 || out[0].c != busy {
		t.Fatalf("the busy connection did not expire once free: %+v", out)
	}
}

func TestPinsEvictTheLeastRecentlyUsed(t *testing.T) {
	pt := newPins()
	mp, other := &memberPool{name: "m"}, &memberPool{name: "o"}
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
	recent.lock <- struct{}{} // busy: not evictable; the transaction's is never
	if v := pt.evictFor(mp, 1); v != nil {
		t.Fatalf("evicted %+v: busy or in a transaction", v)
	}
}
