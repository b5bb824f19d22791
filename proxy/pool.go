package proxy

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Login is the member account a pool's connections authenticate as.
type Login struct {
	User     string
	Password string
}

// Conn is what a Pool needs of a member connection. A connection type
// satisfies it by embedding Pooled (the pool's bookkeeping, which also
// carries the unexported method) and closing and checking its socket.
type Conn[K comparable] interface {
	comparable
	pooled() *Pooled[K]
	// Close closes the connection at once.
	Close() error
	// Alive reports, without blocking, whether the member still has the
	// connection open: it may have closed it while it sat idle.
	Alive() bool
}

// Pooled is the pool's part of a member connection; connection types
// embed it.
type Pooled[K comparable] struct {
	// Epoch is the control plane epoch this connection was chosen as the
	// primary under (0: not a primary route, or no control plane). An
	// answer arriving after that epoch ended is not passed on as a
	// success, and the proxy resets the connection when the epoch ends
	// (TakeStale reads it from another goroutine).
	Epoch atomic.Uint64
	// Aborted: the connection was reset; its owner has yet to discard it
	// (TakeStale passes it over).
	Aborted atomic.Bool

	owner    any       // the *Pool that opened it: set once, before anyone else sees it
	key      K         // guarded by the owner's mu: sessions compare it with the one they would prefer
	idle     bool      // on the owner's idle stack (guarded by its mu)
	lastUsed time.Time // when it was last handed back (zero: never)
}

func (c *Pooled[K]) pooled() *Pooled[K] { return c }

// Reused reports whether the connection was handed back to its pool
// before: one the member may have closed while it sat idle, where a new
// connection cannot have been.
func (c *Pooled[K]) Reused() bool { return !c.lastUsed.IsZero() }

// PoolConfig configures one member's Pool.
type PoolConfig[C Conn[K], K comparable] struct {
	// Member names the member in errors.
	Member string
	// Max bounds open connections. Max <= 0 learns the bound from the
	// member (Limit) at the first connection; until then only that one
	// connection may open, so the limit only ever rises.
	Max int
	// Dial opens a connection for key, authenticated as login.
	Dial func(ctx context.Context, key K, login Login) (C, error)
	// Limit reads the member's own connection limit on c and returns the
	// bound the pool keeps (a member that cannot tell gets a default, not
	// an error). An error is a failed connection: the pool discards c,
	// and learns on the next one. Required when Max <= 0.
	Limit func(c C) (int, error)
	// Fallback, when set, gives the key of idle connections a session of
	// key may also take when none of its own is idle (MySQL: a session
	// with a database may take a connection without one, and select the
	// database; never the reverse).
	Fallback func(key K) (K, bool)
	// Refile, when set, gives the key a connection handed back is filed
	// under (its key was key): what it carries may have changed while a
	// session used it (MySQL: it was left in a database, or not).
	Refile func(c C, key K) K
	// PinNames name the reasons sessions pin connections, in the bit
	// order of CountPins, for the pool timeout's message.
	PinNames []string
}

// Pool holds one member's connections. Open connections are bounded;
// idle ones are kept per key on a LIFO stack so the hottest connection
// (warm caches) is reused first. A connection handed back, or the room a
// closed one leaves, goes to the sessions waiting for one in arrival
// order.
type Pool[C Conn[K], K comparable] struct {
	cfg PoolConfig[C, K]

	// inflight counts statements sent on this member's connections and
	// not yet answered.
	inflight atomic.Int64
	// pins counts the sessions pinned to one of this member's
	// connections, in all and by reason (dbrouter_pinned_sessions, and
	// the pool timeout's message). Sessions update it when their pins
	// change.
	pins struct {
		sessions atomic.Int32
		byReason []atomic.Int32
	}

	mu sync.Mutex
	// max bounds open connections. derive: it was not configured, and is
	// learned from the member at the first connection (learned).
	max      int
	derive   bool
	learned  bool
	learning bool
	open     int
	idle     map[K][]C
	conns    map[C]struct{} // every open connection, idle or in use
	// queue holds the sessions waiting for a connection, in arrival order.
	// A connection handed back, or the room a closed one leaves, goes to
	// the first of them: while anyone waits nothing is idle, and a session
	// that arrives later queues behind them instead of taking it first.
	queue []*poolWaiter[C]
}

// poolWaiter is a session waiting for a connection: it receives one, or
// (the zero C) room to open one.
type poolWaiter[C any] struct {
	ch chan C
}

// NewPool returns an empty pool.
func NewPool[C Conn[K], K comparable](cfg PoolConfig[C, K]) *Pool[C, K] {
	if cfg.Max <= 0 && cfg.Limit == nil {
		panic(fmt.Sprintf("pool of %s: no limit and none to learn", cfg.Member))
	}
	p := &Pool[C, K]{cfg: cfg, max: cfg.Max, idle: map[K][]C{}, conns: map[C]struct{}{}}
	p.pins.byReason = make([]atomic.Int32, len(cfg.PinNames))
	if cfg.Max <= 0 {
		p.derive, p.max = true, 1
	}
	return p
}

// Member is the member's name.
func (p *Pool[C, K]) Member() string { return p.cfg.Member }

// staleAfter: an idle connection unused for this long is checked before use,
// so a member restart costs no client an error.
const staleAfter = time.Second

// Get returns an idle connection for key or opens one as login, waiting up
// to wait when the member is at its connection limit. The wait timer is
// only created when waiting is needed: the common case allocates nothing.
// prefer (may be the zero C) is the connection the session used last: if
// it is idle, it is the one returned, because a client that keeps talking
// to the same member thread wakes fewer threads on the member, and on a
// busy host that is measurable (bench/NOTES.md). Waiting sessions are
// served in arrival order.
func (p *Pool[C, K]) Get(ctx context.Context, key K, login Login, wait time.Duration, prefer C) (C, error) {
	var zero C
	for {
		p.mu.Lock()
		if len(p.queue) > 0 {
			break // others were first
		}
		if c := p.popIdleLocked(key, prefer); c != zero {
			prefer = zero
			p.mu.Unlock()
			if time.Since(c.pooled().lastUsed) > staleAfter && !c.Alive() {
				p.Discard(c)
				continue
			}
			return c, nil
		}
		if p.open < p.max {
			p.open++
			p.mu.Unlock()
			return p.dialInto(ctx, key, login)
		}
		// At the limit: an idle connection of another key is cheaper to close
		// than to wait for.
		if victim := p.popOtherLocked(key); victim != zero {
			p.mu.Unlock()
			p.Discard(victim)
			continue
		}
		break
	}
	w := &poolWaiter[C]{ch: make(chan C, 1)}
	p.queue = append(p.queue, w)
	p.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	var err error
	select {
	case c := <-w.ch:
		return p.served(ctx, key, login, c)
	case <-ctx.Done():
		err = ctx.Err()
	case <-t.C:
		err = p.timeoutError(wait)
	}
	p.mu.Lock()
	if i := slices.Index(p.queue, w); i >= 0 {
		p.queue = slices.Delete(p.queue, i, i+1)
		p.mu.Unlock()
		return zero, err
	}
	p.mu.Unlock()
	// Served as it gave up: pass the connection (or the room) on.
	if c := <-w.ch; c != zero {
		p.Put(c)
	} else {
		p.mu.Lock()
		p.releaseLocked()
		p.mu.Unlock()
	}
	return zero, err
}

// served takes what a waiter was handed: a connection, or room to open
// one (the zero C). A connection of a key the waiter cannot use is closed
// and its room used: waiters are served in order, whatever they wait for.
func (p *Pool[C, K]) served(ctx context.Context, key K, login Login, c C) (C, error) {
	var zero C
	if c != zero {
		// Its previous user filed it under its key (Put) before handing
		// it over: no one else writes it now.
		ck := c.pooled().key
		if fb, ok := p.fallback(key); ck == key || ok && ck == fb {
			return c, nil
		}
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		c.Close()
	}
	return p.dialInto(ctx, key, login)
}

func (p *Pool[C, K]) fallback(key K) (K, bool) {
	if p.cfg.Fallback == nil {
		return key, false
	}
	return p.cfg.Fallback(key)
}

// dialInto opens a connection in room already counted in open, and gives
// the room back if it fails. The first connection of a pool whose limit
// is derived reads the member's limit.
func (p *Pool[C, K]) dialInto(ctx context.Context, key K, login Login) (C, error) {
	var zero C
	c, err := p.cfg.Dial(ctx, key, login)
	p.mu.Lock()
	if err != nil {
		p.releaseLocked()
		p.mu.Unlock()
		return zero, err
	}
	pc := c.pooled()
	pc.owner, pc.key = p, key
	p.conns[c] = struct{}{}
	learn := p.derive && !p.learned && !p.learning
	if learn {
		p.learning = true
	}
	p.mu.Unlock()
	if learn {
		if err := p.learnLimit(c); err != nil {
			p.Discard(c)
			return zero, err
		}
	}
	return c, nil
}

// learnLimit sets the pool's limit from the member's, read on c; only a
// failed connection is an error (the limit is learned on the next one).
func (p *Pool[C, K]) learnLimit(c C) error {
	limit, err := p.cfg.Limit(c)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.learning = false
	if err != nil {
		return err
	}
	p.max, p.learned = max(limit, 1), true
	// Room for those who waited for the limit.
	var zero C
	for len(p.queue) > 0 && p.open < p.max {
		p.open++
		p.handLocked(zero)
	}
	return nil
}

// timeoutError says that every connection stayed busy for wait, and, when
// sessions pin some of them, how many and why: more connections will not
// help sessions that keep theirs for a long time, ending what pins them
// will (an open transaction, a lock, a temporary table...).
func (p *Pool[C, K]) timeoutError(wait time.Duration) error {
	p.mu.Lock()
	limit := p.max
	p.mu.Unlock()
	n := p.pins.sessions.Load()
	if n <= 0 {
		return fmt.Errorf("member %s: %w: all %d connections in use for %v", p.cfg.Member, ErrPoolTimeout, limit, wait)
	}
	var why strings.Builder
	for i := range p.pins.byReason {
		if c := p.pins.byReason[i].Load(); c > 0 {
			if why.Len() > 0 {
				why.WriteString(", ")
			}
			fmt.Fprintf(&why, "%s %d", p.cfg.PinNames[i], c)
		}
	}
	return fmt.Errorf("member %s: %w: all %d connections in use for %v; %d sessions pin one, keeping it between statements (%s)",
		p.cfg.Member, ErrPoolTimeout, limit, wait, n, why.String())
}

// handLocked gives c (the zero C: room to open one) to the first waiter.
func (p *Pool[C, K]) handLocked(c C) {
	w := p.queue[0]
	p.queue[0] = nil
	p.queue = p.queue[1:]
	w.ch <- c
}

// releaseLocked frees the room of a connection that closed (or was never
// opened): the first waiter may open one, else the count drops.
func (p *Pool[C, K]) releaseLocked() {
	if len(p.queue) > 0 {
		var zero C
		p.handLocked(zero)
		return
	}
	p.open--
}

// popIdleLocked takes prefer if it is idle under key, else the most
// recently used idle connection of key, else of key's fallback.
func (p *Pool[C, K]) popIdleLocked(key K, prefer C) C {
	var zero C
	st := p.idle[key]
	if len(st) == 0 {
		if fb, ok := p.fallback(key); ok {
			key = fb
			st = p.idle[key]
		}
	}
	if len(st) == 0 {
		return zero
	}
	i := len(st) - 1
	// The owner first: another pool's connection's key is guarded by
	// that pool's lock, not this one.
	if prefer != zero {
		if pp := prefer.pooled(); pp.owner == any(p) && pp.key == key {
			for j := i; j >= 0; j-- {
				if st[j] == prefer {
					i = j
					break
				}
			}
		}
	}
	c := st[i]
	copy(st[i:], st[i+1:])
	st[len(st)-1] = zero
	p.idle[key] = st[:len(st)-1]
	c.pooled().idle = false
	return c
}

func (p *Pool[C, K]) popOtherLocked(key K) C {
	for k, st := range p.idle {
		if k != key && len(st) > 0 {
			c := st[0] // the coldest
			p.idle[k] = st[1:]
			c.pooled().idle = false
			return c
		}
	}
	var zero C
	return zero
}

// Put hands back a healthy connection: to the first waiter, else to the
// idle stack.
func (p *Pool[C, K]) Put(c C) {
	pc := c.pooled()
	pc.lastUsed = time.Now()
	p.mu.Lock()
	// Under the lock: another session may be looking at this connection as
	// the one it would prefer (popIdleLocked reads its key).
	if p.cfg.Refile != nil {
		pc.key = p.cfg.Refile(c, pc.key)
	}
	if len(p.queue) > 0 {
		p.handLocked(c)
		p.mu.Unlock()
		return
	}
	pc.idle = true
	p.idle[pc.key] = append(p.idle[pc.key], c)
	p.mu.Unlock()
}

// Discard closes a connection that must not be reused.
func (p *Pool[C, K]) Discard(c C) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.releaseLocked()
	p.mu.Unlock()
}

// Waiting is the number of sessions waiting for a connection.
func (p *Pool[C, K]) Waiting() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue)
}

// TakeStale finds the connections chosen as the primary at an epoch for
// which stale is true. Idle ones leave the pool (the caller resets them);
// the caller resets the ones in use too, and their sessions discard them
// when their read or write fails.
func (p *Pool[C, K]) TakeStale(stale func(epoch uint64) bool) []C {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []C
	verdict := map[uint64]bool{}
	for c := range p.conns {
		pc := c.pooled()
		e := pc.Epoch.Load()
		if e == 0 || pc.Aborted.Load() {
			continue
		}
		gone, ok := verdict[e]
		if !ok {
			gone = stale(e)
			verdict[e] = gone
		}
		if !gone {
			continue
		}
		out = append(out, c)
		if pc.idle {
			st := p.idle[pc.key]
			for i := range st {
				if st[i] == c {
					copy(st[i:], st[i+1:])
					var zero C
					st[len(st)-1] = zero
					p.idle[pc.key] = st[:len(st)-1]
					break
				}
			}
			pc.idle = false
			delete(p.conns, c)
			p.releaseLocked()
		}
	}
	return out
}

// Stats counts open and idle connections.
func (p *Pool[C, K]) Stats() ConnStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	idle := 0
	for _, st := range p.idle {
		idle += len(st)
	}
	return ConnStats{Open: p.open, Idle: idle}
}

// AnyIdle returns an idle connection, left idle, for reading what never
// changes on it (the member's version).
func (p *Pool[C, K]) AnyIdle() (C, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, st := range p.idle {
		if len(st) > 0 {
			return st[0], true
		}
	}
	var zero C
	return zero, false
}

// CloseIdle closes every idle connection (shutdown).
func (p *Pool[C, K]) CloseIdle() {
	p.mu.Lock()
	var all []C
	for k, st := range p.idle {
		all = append(all, st...)
		delete(p.idle, k)
	}
	for _, c := range all {
		delete(p.conns, c)
		p.releaseLocked()
	}
	p.mu.Unlock()
	for _, c := range all {
		c.Close()
	}
}

// InFlight is the number of statements sent on the member's connections
// and not yet answered.
func (p *Pool[C, K]) InFlight() int64 { return p.inflight.Load() }

// AddInFlight counts delta statements sent (1) or answered (-1).
func (p *Pool[C, K]) AddInFlight(delta int64) { p.inflight.Add(delta) }

// CountPins adds delta sessions pinned for the reasons set in reasons
// (bit i: PinNames[i]).
func (p *Pool[C, K]) CountPins(reasons uint64, delta int32) {
	p.pins.sessions.Add(delta)
	for i := range p.pins.byReason {
		if reasons&(1<<i) != 0 {
			p.pins.byReason[i].Add(delta)
		}
	}
}

// Pinned is the number of sessions pinned to one of the member's
// connections for reason (an index into PinNames).
func (p *Pool[C, K]) Pinned(reason int) int { return int(p.pins.byReason[reason].Load()) }
