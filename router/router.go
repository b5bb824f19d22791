// Package router owns the per-cluster routing decision: which member gets a
// statement. It reads the topology snapshot current at each decision (an
// atomic load, no locks) and caches the derived read set per snapshot, so the
// hot path is a pointer compare and a counter increment.
package router

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dbrouter/dbrouter/topology"
)

// Errors callers branch on; protocol packages map them to wire error codes.
var (
	ErrNoPrimary        = errors.New("no eligible primary")
	ErrWritableConflict = errors.New("more than one writable member")
	ErrNoReplica        = errors.New("no eligible replica")
	// ErrNoLease: this proxy cannot show that its view of the primary is
	// current (it has lost the control plane), so it routes no write.
	ErrNoLease = errors.New("no write lease")
	// ErrChanging: a switchover or failover is in progress.
	ErrChanging = errors.New("primary change in progress")
)

// Authority is the control plane's word on where writes go. When a router
// has one, it alone names the primary: the topology snapshot only locates
// members and chooses replicas.
type Authority interface {
	// Writer names the member writes may go to now and the epoch that made
	// it primary, or says why none may: ErrNoLease and ErrChanging make a
	// write wait (up to the hold timeout) for the next Changed.
	Writer() (string, uint64, error)
	// Acknowledgeable reports whether a write routed at epoch may be
	// reported as committed now.
	Acknowledgeable(epoch uint64) bool
	// Changed is closed at the next change of the control plane's state.
	// Lease expiry is not a change: waiters also poll.
	Changed() <-chan struct{}
}

// Fallback says what a read does when no replica is eligible.
type Fallback string

// Fallbacks.
const (
	FallbackPrimary Fallback = "primary"
	FallbackFail    Fallback = "fail"
)

// SnapshotSource is what the router needs from topology.
type SnapshotSource interface {
	Snapshot() *topology.Snapshot
}

// Config shapes read selection.
type Config struct {
	Cluster string
	// Site of this proxy: eligible replicas in it are preferred.
	Site string
	// LocalityWindow: replicas whose smoothed RTT is within this of the
	// nearest share the reads.
	LocalityWindow time.Duration
	// ReadsWithoutReplica: FallbackPrimary (default) or FallbackFail.
	ReadsWithoutReplica Fallback
	// Authority, when set, decides the primary (the Raft control plane).
	Authority Authority
	// WriteHold is how long a write waits for the authority to allow it
	// before it fails. Default 10 s.
	WriteHold time.Duration
}

// Router picks members for one cluster.
type Router struct {
	cfg  Config
	src  SnapshotSource
	plan atomic.Pointer[plan]
	rr   atomic.Uint32
	// excluded names the members the control plane has fenced: they serve
	// no reads, whatever their replication looks like (an errant member
	// has data the primary never had).
	excluded atomic.Pointer[map[string]bool]
}

// plan is what one snapshot (and exclusion set) means for routing.
type plan struct {
	snap     *topology.Snapshot
	excluded *map[string]bool
	primary  int
	writeErr error
	reads    []int // nearest eligible replicas, sharing the load
}

// New returns a router reading snapshots from src.
func New(cfg Config, src SnapshotSource) *Router {
	if cfg.ReadsWithoutReplica == "" {
		cfg.ReadsWithoutReplica = FallbackPrimary
	}
	if cfg.WriteHold <= 0 {
		cfg.WriteHold = 10 * time.Second
	}
	return &Router{cfg: cfg, src: src}
}

// SetExcluded names the members that must serve no reads (fenced by the
// control plane); it takes effect at the next routing decision.
func (r *Router) SetExcluded(members []string) {
	m := make(map[string]bool, len(members))
	for _, n := range members {
		m[n] = true
	}
	r.excluded.Store(&m)
}

func (r *Router) current() *plan {
	s := r.src.Snapshot()
	ex := r.excluded.Load()
	p := r.plan.Load()
	if p != nil && p.snap == s && p.excluded == ex {
		return p
	}
	p = r.derive(s, ex)
	r.plan.Store(p)
	return p
}

func (r *Router) derive(s *topology.Snapshot, ex *map[string]bool) *plan {
	p := &plan{snap: s, excluded: ex, primary: s.Primary}
	readable := func(m topology.Member) bool { return m.Eligible && (ex == nil || !(*ex)[m.Name]) }
	switch {
	case len(s.Conflict) > 0:
		p.primary = -1
		p.writeErr = fmt.Errorf("%w: %s are all writable; writes refused until one is fenced", ErrWritableConflict, strings.Join(s.Conflict, ", "))
	case s.Primary < 0:
		p.writeErr = fmt.Errorf("%w: %s", ErrNoPrimary, describeMembers(s))
	}
	// Nearest: prefer the proxy's site when it has an eligible replica, then
	// share among those within the locality window of the closest.
	local := false
	for _, m := range s.Members {
		if readable(m) && r.cfg.Site != "" && m.Site == r.cfg.Site {
			local = true
		}
	}
	best := time.Duration(-1)
	for _, m := range s.Members {
		if readable(m) && (!local || m.Site == r.cfg.Site) && (best < 0 || m.RTT < best) {
			best = m.RTT
		}
	}
	for i, m := range s.Members {
		if readable(m) && (!local || m.Site == r.cfg.Site) && m.RTT <= best+r.cfg.LocalityWindow {
			p.reads = append(p.reads, i)
		}
	}
	return p
}

func describeMembers(s *topology.Snapshot) string {
	if len(s.Members) == 0 {
		return "no members configured"
	}
	parts := make([]string, 0, len(s.Members))
	for _, m := range s.Members {
		switch {
		case !m.Reachable:
			parts = append(parts, m.Name+" unreachable")
		case m.ReadOnly:
			parts = append(parts, m.Name+" read_only")
		default:
			parts = append(parts, m.Name+" "+string(m.Role))
		}
	}
	return strings.Join(parts, ", ")
}

// Primary returns the member index writes go to and, with an authority,
// the epoch that made it primary (0 without one). A write that may not go
// anywhere yet (no lease, a change in progress) waits up to WriteHold:
// clients see a pause, not an error.
func (r *Router) Primary(ctx context.Context) (int, uint64, error) {
	p := r.current()
	if r.cfg.Authority == nil {
		if p.snap.Taken.IsZero() {
			p = r.observed(ctx)
		}
		if p.writeErr != nil {
			return -1, 0, p.writeErr
		}
		return p.primary, 0, nil
	}
	name, epoch, err := r.cfg.Authority.Writer()
	if err == nil {
		i, err := p.index(name)
		return i, epoch, err
	}
	if !errors.Is(err, ErrNoLease) && !errors.Is(err, ErrChanging) {
		return -1, 0, err
	}
	hold := time.NewTimer(r.cfg.WriteHold)
	defer hold.Stop()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		changed := r.cfg.Authority.Changed()
		if name, epoch, err = r.cfg.Authority.Writer(); err == nil {
			i, err := r.current().index(name)
			return i, epoch, err
		}
		if !errors.Is(err, ErrNoLease) && !errors.Is(err, ErrChanging) {
			return -1, 0, err
		}
		select {
		case <-ctx.Done():
			return -1, 0, fmt.Errorf("%w (write held, then abandoned: %v)", err, ctx.Err())
		case <-hold.C:
			return -1, 0, fmt.Errorf("%w: write held %s (write_hold_timeout) without a writable primary", err, r.cfg.WriteHold)
		case <-changed:
		case <-poll.C:
		}
	}
}

// RetryWrite is asked when the member chosen for a write (failed) refused
// the connection, so the statement never reached a server. With an
// authority the write waits, like a held one, for the control plane to name
// another primary (a failover is likely under way), re-checking at least
// every 250 ms; it reports false once WriteHold has passed since first, and
// at once without an authority.
func (r *Router) RetryWrite(ctx context.Context, failed int, first time.Time) bool {
	if r.cfg.Authority == nil || time.Since(first) >= r.cfg.WriteHold {
		return false
	}
	wait := time.NewTimer(min(250*time.Millisecond, r.cfg.WriteHold-time.Since(first)))
	defer wait.Stop()
	for {
		changed := r.cfg.Authority.Changed()
		if name, _, err := r.cfg.Authority.Writer(); err == nil {
			if i, err := r.current().index(name); err == nil && i != failed {
				return true
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-wait.C:
			return true
		case <-changed:
		}
	}
}

// Current reports whether a write routed at epoch may be acknowledged (see
// Authority.Acknowledgeable). A write that reached an old primary and
// completed after a failover (it waited out semi-sync on a primary cut off
// from its replicas, say) must not be reported as committed: it may be
// lost. Always true without an authority, or for epoch 0 (not a primary
// route).
func (r *Router) Current(epoch uint64) bool {
	if r.cfg.Authority == nil || epoch == 0 {
		return true
	}
	return r.cfg.Authority.Acknowledgeable(epoch)
}

// Moved reports whether the primary has changed since epoch (a newer epoch
// is serving: moved) and whether a change is in progress now (changing). A
// session pinned to a connection chosen at epoch uses it to tell a
// switchover's drain (changing: an open transaction finishes where it
// began) from a completed change (moved: the old primary is fenced, so the
// connection must not be used again).
func (r *Router) Moved(epoch uint64) (moved, changing bool) {
	if r.cfg.Authority == nil {
		return false, false
	}
	_, e, err := r.cfg.Authority.Writer()
	return err == nil && epoch != 0 && e != epoch, errors.Is(err, ErrChanging)
}

// Changed is closed at the next change of the control plane's state; nil
// (never ready) without an authority. The proxy watches it to reset its
// connections to a primary whose epoch stopped being acknowledgeable.
func (r *Router) Changed() <-chan struct{} {
	if r.cfg.Authority == nil {
		return nil
	}
	return r.cfg.Authority.Changed()
}

// observed returns the plan of the first snapshot the monitor publishes,
// waiting for it up to WriteHold (or ctx): until then every member is
// unknown, and a statement that arrives in the first probe interval of a
// (re)started proxy would fail with "no eligible member" though the
// cluster is healthy. Clients reconnecting to a restarted proxy see a
// pause instead. After the wait the plan is whatever is current.
func (r *Router) observed(ctx context.Context) *plan {
	hold := time.NewTimer(r.cfg.WriteHold)
	defer hold.Stop()
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for {
		p := r.current()
		if !p.snap.Taken.IsZero() {
			return p
		}
		select {
		case <-ctx.Done():
			return p
		case <-hold.C:
			return p
		case <-poll.C:
		}
	}
}

// index finds the named member; the authority names members by config name.
func (p *plan) index(name string) (int, error) {
	for i := range p.snap.Members {
		if p.snap.Members[i].Name == name {
			return i, nil
		}
	}
	return -1, fmt.Errorf("%w: the control plane names %q, which is not a member here", ErrNoPrimary, name)
}

// Replica returns the member index an autocommit read goes to, avoiding the
// member at index avoid (a retry after that member failed; -1 for none),
// and whether it is a replica (false: no replica is eligible and the read
// falls back to the primary). prefer is the member the session read from
// last (-1 for none): while it stays among the nearest eligible replicas
// the session keeps reading there, so its reads never go back in time by
// switching to a replica that lags more, and the member connection it used
// is likely still idle for it.
//
// The answer is the caller's to keep: the read set may change while the
// read waits for a connection (a replica's lag crossing the limit, a
// switchover), and asking again later whether the member is a replica
// would then skip the read-your-writes wait on a replica that lags.
func (r *Router) Replica(ctx context.Context, avoid, prefer int) (m int, replica bool, err error) {
	p := r.current()
	if p.snap.Taken.IsZero() {
		p = r.observed(ctx)
	}
	m, replica, hold, err := r.pick(p, avoid, prefer)
	if err == nil || !hold || r.cfg.Authority == nil {
		return m, replica, err
	}
	// No member can serve the read. Under the control plane that is a
	// moment of a primary change (the old primary read-only and detached,
	// the target not yet open, the others being repointed): the read
	// waits, up to WriteHold, as a write does, for a replica or for the
	// control plane to name the primary.
	hold1 := time.NewTimer(r.cfg.WriteHold)
	defer hold1.Stop()
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for {
		changed := r.cfg.Authority.Changed()
		select {
		case <-ctx.Done():
			return -1, false, err
		case <-hold1.C:
			return -1, false, err
		case <-poll.C:
		case <-changed:
		}
		var again bool
		if m, replica, again, err = r.pick(r.current(), avoid, prefer); err == nil || !again {
			return m, replica, err
		}
	}
}

// pick chooses a read's member from plan p: a replica, else the primary
// (reads_without_replica: primary). hold reports, with an error, that no
// member may serve the read now but one may soon (not the case when the
// only member left is the one the read just failed on, or reads never go
// to the primary).
//
// Under the control plane the primary is the one it names, not the
// snapshot's: the snapshot lags the control plane by up to a probe
// interval, and right after a switchover from db1 to db2 it may still call
// db1 the primary and db2 a replica while writes already go to db2. A read
// "on the primary" skips the read-your-writes wait (the session's writes
// are there), so it must go where writes go; and the named primary is
// never read from as a replica.
func (r *Router) pick(p *plan, avoid, prefer int) (m int, replica, hold bool, err error) {
	writer, werr := p.primary, p.writeErr
	if r.cfg.Authority != nil {
		name, _, aerr := r.cfg.Authority.Writer()
		if aerr == nil {
			writer, werr = p.index(name)
		} else {
			writer, werr = -1, aerr
		}
	}
	n := len(p.reads)
	if prefer >= 0 && prefer != avoid && prefer != writer {
		for _, i := range p.reads {
			if i == prefer {
				return i, true, false, nil
			}
		}
	}
	if n > 0 {
		start := int(r.rr.Add(1))
		for k := 0; k < n; k++ {
			i := p.reads[(start+k)%n]
			if i != avoid && i != writer {
				return i, true, false, nil
			}
		}
	}
	switch {
	case r.cfg.ReadsWithoutReplica == FallbackFail:
		return -1, false, false, fmt.Errorf("%w (reads_without_replica: fail): %s", ErrNoReplica, describeMembers(p.snap))
	case werr != nil:
		return -1, false, true, fmt.Errorf("%w and %w: %s", ErrNoReplica, werr, describeMembers(p.snap))
	case writer == avoid:
		return -1, false, false, fmt.Errorf("%w and %w: %s", ErrNoReplica, ErrNoPrimary, describeMembers(p.snap))
	}
	return writer, false, false, nil
}

// Snapshot returns the snapshot the router currently routes by.
func (r *Router) Snapshot() *topology.Snapshot { return r.current().snap }
