package mongo

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// pins is the proxy-wide table of what keeps a member connection out of
// the pool: open cursors and open transactions.
//
// Why proxy-wide and why the connection: a FerretDB cursor belongs to
// the connection that opened it (it is closed when that connection
// closes; mongod's outlive it), and a driver sends getMore and a
// transaction's next command on whichever pooled connection is free, to
// whichever proxy session that is. So the cursor (transaction) is
// recorded here, with the member connection it lives on, and that
// connection stays out of the pool, serving only its cursors'
// (transaction's) commands, until the last of them is exhausted, killed,
// committed, aborted or timed out.
//
// Every entry added or removed is counted under its member and pin reason
// (pinned, read by dbrouter_pinned_sessions at scrape time without mu).
//
// The bound: a held connection counts against its member's
// MaxMemberConns like any other; a cursor idle for CursorTimeout (10 min,
// mongod's cursorTimeoutMillis) and a transaction idle for TxnTimeout (60
// s, mongod's transactionLifetimeLimitSeconds) are dropped by the reaper
// (Proxy.reap), and a connection no longer holding anything is closed,
// which closes whatever the member still kept on it.
type pins struct {
	mu      sync.Mutex
	cursors map[int64]*cursorEntry
	txns    map[string]*txnEntry // by lsid.id bytes
	next    int64
	// pinned counts the entries by member index and pin reason.
	pinned []memberPins
}

// memberPins are one member's counts of cursors and transactions.
type memberPins [numPins]atomic.Int32

func (t *pins) count(mp *memberPool, reason int, delta int32) {
	t.pinned[mp.idx][reason].Add(delta)
}

// cursorEntry is a cursor the proxy issued an id for.
type cursorEntry struct {
	id       int64 // the proxy's, which the client holds
	memberID int64 // the member's, on conn
	mp       *memberPool
	conn     *memberConn
	used     time.Time
}

// txnEntry is an open transaction pinned to its member connection.
type txnEntry struct {
	lsid      string
	txnNumber int64
	member    int
	mp        *memberPool
	conn      *memberConn
	used      time.Time
}

// newPins is the table of a proxy with members members.
func newPins(members int) *pins {
	// Ids start at a random point, so an id from before a proxy restart
	// is not taken for a new cursor; they stay positive, as mongod's.
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &pins{
		cursors: map[int64]*cursorEntry{},
		txns:    map[string]*txnEntry{},
		next:    int64(binary.LittleEndian.Uint64(b[:]) >> 2),
		pinned:  make([]memberPins, members),
	}
}

// addCursor records the member's cursor memberID on c and returns the
// proxy's id for it. The caller holds c's lock.
func (t *pins) addCursor(mp *memberPool, c *memberConn, memberID int64) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		t.next++
		if t.next <= 0 {
			t.next = 1
		}
		if _, taken := t.cursors[t.next]; !taken {
			break
		}
	}
	t.cursors[t.next] = &cursorEntry{id: t.next, memberID: memberID, mp: mp, conn: c, used: time.Now()}
	t.count(mp, pinCursor, 1)
	c.holds++
	return t.next
}

// cursor finds the proxy's cursor id and marks it used.
func (t *pins) cursor(id int64) (*cursorEntry, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.cursors[id]
	if ok {
		e.used = time.Now()
	}
	return e, ok
}

// current reports whether e is still the entry of its id, on its
// connection: checked after taking the connection's lock, since the
// cursor may have been killed or expired meanwhile.
func (t *pins) current(e *cursorEntry) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cursors[e.id] == e && !e.conn.gone
}

// dropCursor forgets a cursor; it reports whether its connection now holds
// nothing, and so goes back to the pool.
func (t *pins) dropCursor(e *cursorEntry) (free bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cursors[e.id] != e {
		return false
	}
	delete(t.cursors, e.id)
	t.count(e.mp, pinCursor, -1)
	e.conn.holds--
	return e.conn.holds == 0 && !e.conn.gone
}

// dropConn forgets everything c holds: c is being closed. It returns the
// proxy ids of the cursors that lived on it, and whether c was dropped
// before (its closer is someone else).
func (t *pins) dropConn(c *memberConn) (ids []int64, already bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	already = c.gone
	for id, e := range t.cursors {
		if e.conn == c {
			delete(t.cursors, id)
			t.count(e.mp, pinCursor, -1)
			ids = append(ids, id)
		}
	}
	for k, e := range t.txns {
		if e.conn == c {
			delete(t.txns, k)
			t.count(e.mp, pinTxn, -1)
		}
	}
	c.gone, c.holds = true, 0
	return ids, already
}

// addTxn pins the transaction (lsid, txnNumber) to c on member. A
// transaction the session had open before is over (a new txnNumber
// aborts it on the member): when its connection is left holding nothing
// it is returned, for the caller to close.
func (t *pins) addTxn(lsid []byte, txnNumber int64, member int, mp *memberPool, c *memberConn) (freed *held) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.txns[string(lsid)]; ok {
		delete(t.txns, old.lsid)
		t.count(old.mp, pinTxn, -1)
		old.conn.holds--
		if old.conn.holds == 0 && old.conn != c && !old.conn.gone {
			old.conn.gone = true
			freed = &held{old.mp, old.conn}
		}
	}
	k := string(lsid)
	t.txns[k] = &txnEntry{lsid: k, txnNumber: txnNumber, member: member, mp: mp, conn: c, used: time.Now()}
	t.count(mp, pinTxn, 1)
	c.holds++
	return freed
}

// txn finds the session's open transaction.
func (t *pins) txn(lsid []byte) (*txnEntry, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.txns[string(lsid)]
	if ok {
		e.used = time.Now()
	}
	return e, ok
}

func (t *pins) currentTxn(e *txnEntry) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.txns[e.lsid] == e && !e.conn.gone
}

// dropTxn forgets a transaction; it reports whether its connection now
// holds nothing.
func (t *pins) dropTxn(e *txnEntry) (free bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.txns[e.lsid] != e {
		return false
	}
	delete(t.txns, e.lsid)
	t.count(e.mp, pinTxn, -1)
	e.conn.holds--
	return e.conn.holds == 0 && !e.conn.gone
}

// evictFor makes room for one more connection held by cursors on mp's
// member when limit are held already: the connection whose cursors were
// used least recently, holding no transaction and not in use, is taken
// out of the table with its cursors (their clients get CursorNotFound)
// and returned locked, for the caller to close. nil when there is room,
// or nothing may be evicted.
func (t *pins) evictFor(mp *memberPool, limit int) *held {
	t.mu.Lock()
	defer t.mu.Unlock()
	last := map[*memberConn]time.Time{}
	for _, e := range t.cursors {
		if e.mp == mp && e.used.After(last[e.conn]) {
			last[e.conn] = e.used
		}
	}
	inTxn := map[*memberConn]bool{}
	for _, e := range t.txns {
		if e.mp == mp {
			inTxn[e.conn] = true
			if _, ok := last[e.conn]; !ok {
				last[e.conn] = time.Time{} // held, not evictable
			}
		}
	}
	if len(last) < limit {
		return nil
	}
	for len(last) > 0 {
		var victim *memberConn
		for c, used := range last {
			if !inTxn[c] && (victim == nil || used.Before(last[victim])) {
				victim = c
			}
		}
		if victim == nil {
			return nil
		}
		if tryLockConn(victim) {
			for id, e := range t.cursors {
				if e.conn == victim {
					delete(t.cursors, id)
					t.count(e.mp, pinCursor, -1)
				}
			}
			victim.gone, victim.holds = true, 0
			return &held{mp, victim}
		}
		delete(last, victim) // in use: the next least recently used
	}
	return nil
}

// held is one connection the table holds, for the reaper and shutdown.
type held struct {
	mp *memberPool
	c  *memberConn
}

// expire drops cursors idle over cursorIdle and transactions idle over
// txnIdle, and returns the connections left holding nothing whose lock
// it could take (the caller closes them; their locks are held). A
// connection in use keeps its entries until the next round.
func (t *pins) expire(now time.Time, cursorIdle, txnIdle time.Duration) []held {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []held
	take := func(mp *memberPool, c *memberConn) bool {
		return tryLockConn(c) // in use: its next round
	}
	release := func(mp *memberPool, c *memberConn) {
		c.holds--
		if c.holds == 0 {
			c.gone = true
			out = append(out, held{mp, c})
			return
		}
		<-c.lock
	}
	for id, e := range t.cursors {
		if now.Sub(e.used) > cursorIdle && take(e.mp, e.conn) {
			delete(t.cursors, id)
			t.count(e.mp, pinCursor, -1)
			release(e.mp, e.conn)
		}
	}
	for k, e := range t.txns {
		if now.Sub(e.used) > txnIdle && take(e.mp, e.conn) {
			delete(t.txns, k)
			t.count(e.mp, pinTxn, -1)
			release(e.mp, e.conn)
		}
	}
	return out
}

// all takes every held connection out of the table (shutdown, after the
// sessions ended).
func (t *pins) all() []held {
	t.mu.Lock()
	defer t.mu.Unlock()
	seen := map[*memberConn]bool{}
	var out []held
	for id, e := range t.cursors {
		delete(t.cursors, id)
		t.count(e.mp, pinCursor, -1)
		if !seen[e.conn] {
			seen[e.conn] = true
			out = append(out, held{e.mp, e.conn})
		}
	}
	for k, e := range t.txns {
		delete(t.txns, k)
		t.count(e.mp, pinTxn, -1)
		if !seen[e.conn] {
			seen[e.conn] = true
			out = append(out, held{e.mp, e.conn})
		}
	}
	for _, h := range out {
		h.c.gone, h.c.holds = true, 0
	}
	return out
}

// counts reports the open cursors and transactions.
func (t *pins) counts() (cursors, txns int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.cursors), len(t.txns)
}

// lockConn takes c's lock, which serializes the sessions using a held
// connection (two cursors on one connection, a cursor and its
// transaction), within ctx and wait: the holder is in one exchange with
// the member, bounded by MemberTimeout, but a session must not wait
// forever on a holder that never lets go.
func lockConn(ctx context.Context, c *memberConn, wait time.Duration) error {
	select {
	case c.lock <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case c.lock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errors.New("member connection busy for " + wait.String())
	}
}

// tryLockConn takes c's lock if it is free.
func tryLockConn(c *memberConn) bool {
	select {
	case c.lock <- struct{}{}:
		return true
	default:
		return false
	}
}

func (s *session) lockConn(ctx context.Context, c *memberConn) error {
	return lockConn(ctx, c, s.p.cfg.MemberTimeout)
}

func unlockConn(c *memberConn) { <-c.lock }
