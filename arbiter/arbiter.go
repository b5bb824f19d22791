// Package arbiter owns the decisions of the Raft leader for one cluster:
// recording the first primary, detecting a failed primary with agreement of
// a majority of arbiters, failing over, planned switchover, and letting a
// returning member rejoin (or fencing it when it has errant transactions).
//
// Every decision is committed through the Raft log as a compare-and-set on
// the cluster's epoch before anything is done to a database, and every
// database step is idempotent, so a leader that dies mid-change leaves a
// phase its successor can finish or roll back.
package arbiter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/raftfsm"
	"github.com/dbrouter/dbrouter/topology"
	"github.com/dbrouter/dbrouter/topology/mariadb"
)

// Group is what an arbiter needs of its Raft node.
type Group interface {
	IsLeader() bool
	// Term is the current Raft term: a decision is tied to the term it was
	// taken in, and stops when the term changes.
	Term() uint64
	// Barrier returns once this leader has applied everything committed
	// before it: a new leader calls it before its first decision.
	Barrier(ctx context.Context) error
	// VerifyLeader confirms leadership with a quorum; every database step
	// of a change asks first.
	VerifyLeader(ctx context.Context) error
	// TransferLeadership hands leadership to another arbiter (one that
	// reaches a member this one cannot).
	TransferLeadership(ctx context.Context, to string) error
	State() *raftfsm.State
	Propose(ctx context.Context, c *raftfsm.Command) (raftfsm.Result, error)
}

// Actuator runs the database steps of a decision on one member, named by
// its address (topology/mariadb's Actions). Every step is idempotent, so a
// new leader can repeat the steps of a change its predecessor left half
// done; none is taken without a fresh confirmation that this node still
// leads (Arbiter.still).
type Actuator interface {
	// Position reads the member's GTID positions and replication state
	// afresh: decisions are never taken on a snapshot's.
	Position(ctx context.Context, addr string) (mariadb.ServerState, error)
	// Fence makes the member refuse writes and drops its client sessions.
	Fence(ctx context.Context, addr string) error
	// Open makes the member the writable primary.
	Open(ctx context.Context, addr string) error
	// Detach stops the member's replication and forgets its source; it
	// stays read-only.
	Detach(ctx context.Context, addr string) error
	// Repoint makes the member a read-only replica of source (an address).
	Repoint(ctx context.Context, addr, source string) error
	// StopReplication stops the member's replication (ioOnly: receiving
	// only, so what it received is still applied).
	StopReplication(ctx context.Context, addr string, ioOnly bool) error
	// StartApplier makes the member apply what it received, keeping its
	// relay log.
	StartApplier(ctx context.Context, addr string) error
	// WaitApplied waits up to d for the member to have applied pos.
	WaitApplied(ctx context.Context, addr, pos string, d time.Duration) error
	// SetHeartbeatPeriod gives a replica the heartbeat period failure
	// detection needs; an error wrapping mariadb.ErrNotNow means "later".
	SetHeartbeatPeriod(ctx context.Context, addr string) error
	// ActiveTransactions counts the member's open client transactions.
	ActiveTransactions(ctx context.Context, addr string) (int, error)
}

// Snapshots is the local view of the cluster (a topology.Monitor).
type Snapshots interface {
	Snapshot() *topology.Snapshot
}

// Observation is one arbiter's view of the members: which it cannot reach,
// for how long, and what it last saw of the others' replication. The leader
// decides with every arbiter's view, so a replica only another arbiter
// reaches still counts (it may hold acknowledged writes; it may still be
// streaming from the primary).
type Observation struct {
	Arbiter string                    `json:"arbiter"`
	Failing map[string]time.Duration  `json:"failing"`
	Members map[string]ObservedMember `json:"members,omitempty"`
	// Primary is the member this arbiter's monitor sees as primary and
	// that answers its probes ("" when none): a replica set's arbiter steps
	// a secondary up only when a majority sees none.
	Primary string `json:"primary,omitempty"`
}

// ObservedMember is what one arbiter's monitor last saw of a reachable
// member.
type ObservedMember struct {
	ServerID       uint32 `json:"server_id"`
	ReadOnly       bool   `json:"read_only"`
	SourceServerID uint32 `json:"source_server_id,omitempty"`
	IORunning      bool   `json:"io_running,omitempty"`
	// SourceContactMs: how long ago the replica last received from its
	// source (-1 unknown).
	SourceContactMs int64 `json:"source_contact_ms"`
	// Received is the replica's received position (Gtid_IO_Pos), or its
	// binlog position when it is not a replica.
	Received string `json:"received"`
}

// Observe turns a monitor snapshot into this arbiter's observation, its
// durations brought up to now (the snapshot is up to a probe interval old).
func Observe(arbiter string, snap *topology.Snapshot) Observation {
	o := Observation{Arbiter: arbiter, Failing: map[string]time.Duration{}, Members: map[string]ObservedMember{}}
	if p := snap.PrimaryName(); p != "" && snap.Members[snap.Primary].FailingFor == 0 {
		// A primary whose probes fail is not seen, even before the
		// monitor calls it unreachable.
		o.Primary = p
	}
	age := max(time.Since(snap.Taken), 0)
	for _, m := range snap.Members {
		if m.FailingFor > 0 {
			o.Failing[m.Name] = m.FailingFor + age
		} else {
			o.Failing[m.Name] = 0
		}
		if !m.Reachable {
			continue
		}
		recv := m.GTIDIOPos
		if m.Source == "" {
			recv = m.GTIDBinlogPos
		}
		contact := int64(-1)
		if m.SourceContact >= 0 {
			contact = (m.SourceContact + age).Milliseconds()
		}
		o.Members[m.Name] = ObservedMember{ServerID: m.ServerID, ReadOnly: m.ReadOnly, SourceServerID: m.SourceServerID,
			IORunning: m.IORunning, SourceContactMs: contact, Received: recv}
	}
	return o
}

// Observers gathers every arbiter's observation (this one's included). An
// arbiter that does not answer is simply missing: it never counts towards a
// failure.
type Observers interface {
	Observations(ctx context.Context, cluster string) []Observation
}

// Config shapes one cluster's arbiter.
type Config struct {
	Cluster string
	// Arbiters is the number of voters; a failure needs a majority of them.
	// Voters, when set, counts them in the current Raft configuration
	// instead (arbiters can be added and removed while the group runs).
	Arbiters int
	Voters   func() int
	// FailureThreshold: how long a majority must have failed to reach the
	// primary. Default 2 s.
	FailureThreshold time.Duration
	// Cooldown between automatic failovers, and before a switchover after a
	// change. Default 30 s.
	Cooldown time.Duration
	// Lease is the proxies' write lease; LeaseMargin covers clock rate drift.
	// A new primary opens lease+margin after its epoch commits.
	Lease       time.Duration
	LeaseMargin time.Duration
	// DrainTimeout bounds how long a switchover waits for open transactions
	// on the old primary. Default 5 s.
	DrainTimeout time.Duration
	// CatchupTimeout bounds waiting for a candidate to apply what it has
	// received (failover) or what the old primary had (switchover). Default 10 s.
	CatchupTimeout time.Duration
	// MaxPromoteLag refuses a switchover to a replica further behind. Default 5 s.
	MaxPromoteLag time.Duration
	// Interval between reconciliations. Default 250 ms.
	Interval time.Duration
	// Clock, when set, stamps commands instead of time.Now (tests: a
	// proposer whose clock is off). Only people read those stamps: no
	// decision compares them with another machine's clock.
	Clock func() time.Time
	// Confirmed, when set, reports whether every proxy in the group has
	// confirmed applying the log up to index. A proxy that has applied a
	// change holds its writes, so once all have, the new primary need not
	// wait out the lease; one that has not (cut off, say) makes the leader
	// wait the full lease+margin, after which it cannot be writing.
	Confirmed func(index uint64) bool
}

func (c *Config) defaults() {
	if c.Arbiters <= 0 {
		c.Arbiters = 1
	}
	if c.FailureThreshold <= 0 {
		c.FailureThreshold = 2 * time.Second
	}
	if c.Cooldown <= 0 {
		c.Cooldown = 30 * time.Second
	}
	if c.Lease <= 0 {
		c.Lease = 2 * time.Second
	}
	if c.LeaseMargin <= 0 {
		c.LeaseMargin = 300 * time.Millisecond
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 5 * time.Second
	}
	if c.CatchupTimeout <= 0 {
		c.CatchupTimeout = 10 * time.Second
	}
	if c.MaxPromoteLag <= 0 {
		c.MaxPromoteLag = 5 * time.Second
	}
	if c.Interval <= 0 {
		c.Interval = 250 * time.Millisecond
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
}

// Refusal errors of Promote; the message says why.
var (
	ErrRefused  = errors.New("switchover refused")
	ErrNotReady = errors.New("cluster not bootstrapped")
	// ErrDeposed: this arbiter stopped leading (or the term it decided in
	// ended) during a change. It takes no further step; the new leader
	// finishes the change or rolls it back from the replicated state.
	ErrDeposed = errors.New("no longer the leader that took this decision")
)

// Arbiter makes one cluster's decisions while its node leads.
type Arbiter struct {
	cfg   Config
	group Group
	snaps Snapshots
	obs   Observers
	act   Actuator
	log   *zap.Logger

	// mu serialises changes: one decision at a time per cluster.
	mu sync.Mutex
	// refusedAt avoids writing the same refusal to the history every round.
	refused string
	// caughtUp is the term in which this node, as leader, last passed a
	// Barrier (guarded by mu).
	caughtUp uint64
	// noted remembers, per member, the last note written about it, so a
	// condition that lasts is recorded once (guarded by mu).
	noted map[string]string
	// hbFixed: when the heartbeat period of a member was last set (mu).
	hbFixed map[string]time.Time
	// seen: changes as this node witnessed them, on its own clock.
	seen witnessed
	// hook, when set (tests), runs before each step of a change.
	hook atomic.Pointer[func(step string)]
}

// witnessed keeps when this node saw the cluster's last change and its last
// failover, by its own monotonic clock. Cooldowns are judged from these,
// never from the time a command carries: that is another machine's clock.
// A node that did not witness a change (it restarted, or joined later)
// counts from when it first applied the state: later, never earlier.
type witnessed struct {
	mu       sync.Mutex
	init     bool
	epoch    uint64
	phase    raftfsm.Phase
	lastFO   time.Time // the state's LastFailover value: compared for change only
	change   time.Time
	failover time.Time
}

func (w *witnessed) observe(cl *raftfsm.Cluster, now time.Time) {
	if cl == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case !w.init:
		w.init = true
		if cl.Epoch > 1 {
			w.change = now
		}
		if !cl.LastFailover.IsZero() {
			w.failover = now
		}
	case cl.Epoch != w.epoch || cl.Phase != w.phase:
		w.change = now
		// A failover that began and ended between two looks still counts:
		// the replicated LastFailover changed (its value is compared with
		// its last value, never with this clock).
		if cl.Phase == raftfsm.PhaseFailingOver && cl.Epoch != w.epoch || !cl.LastFailover.Equal(w.lastFO) {
			w.failover = now
		}
	}
	w.epoch, w.phase, w.lastFO = cl.Epoch, cl.Phase, cl.LastFailover
}

// since returns how long ago the last change and the last failover were
// witnessed (ok false when there was none).
func (w *witnessed) since(now time.Time) (change, failover time.Duration, okChange, okFailover bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.change.IsZero() {
		change, okChange = now.Sub(w.change), true
	}
	if !w.failover.IsZero() {
		failover, okFailover = now.Sub(w.failover), true
	}
	return
}

// New returns an arbiter for one cluster.
func New(cfg Config, g Group, snaps Snapshots, obs Observers, act Actuator, log *zap.Logger) *Arbiter {
	cfg.defaults()
	return &Arbiter{cfg: cfg, group: g, snaps: snaps, obs: obs, act: act, noted: map[string]string{}, hbFixed: map[string]time.Time{},
		log: log.Named("arbiter").With(zap.String("cluster", cfg.Cluster))}
}

// Run reconciles every Interval while ctx lives; it acts only while this
// node leads.
func (a *Arbiter) Run(ctx context.Context) { a.run(ctx, a.Reconcile, nil) }

// run calls reconcile every Interval while this node leads (follower, when
// set, every round it does not), logging each new failure once.
func (a *Arbiter) run(ctx context.Context, reconcile func(context.Context) error, follower func()) {
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.seen.observe(a.group.State().Cluster(a.cfg.Cluster), time.Now())
		if !a.group.IsLeader() {
			if follower != nil {
				follower()
			}
			continue
		}
		// The same failure every round is logged once, until it changes.
		err := reconcile(ctx)
		switch {
		case err != nil && ctx.Err() == nil && err.Error() != lastErr:
			a.log.Warn("reconcile", zap.Error(err))
			lastErr = err.Error()
		case err == nil && lastErr != "":
			a.log.Info("reconcile succeeds again")
			lastErr = ""
		}
	}
}

type termKey struct{}

// lead prepares a decision: this node leads, has applied everything
// committed before its term (Barrier, once per term), and can apply the log
// at all. The returned context carries the term; every database step checks
// it (still).
func (a *Arbiter) lead(ctx context.Context) (context.Context, error) {
	if !a.group.IsLeader() {
		return ctx, fmt.Errorf("%w: this arbiter is not the raft leader", ErrDeposed)
	}
	term := a.group.Term()
	if a.caughtUp != term {
		if err := a.group.Barrier(ctx); err != nil {
			return ctx, fmt.Errorf("new leader catching up with the log: %w", err)
		}
		a.caughtUp = term
	}
	if inc := a.group.State().Incompatible; inc != "" {
		return ctx, fmt.Errorf("%w: this node cannot apply the log (%s); upgrade it", ErrDeposed, inc)
	}
	a.seen.observe(a.group.State().Cluster(a.cfg.Cluster), time.Now())
	return context.WithValue(ctx, termKey{}, term), nil
}

// still checks, before a database step, that this node still leads in the
// term the decision was taken in, confirmed by a quorum: a leader cut off
// from the others believes it leads until its lease runs out, and a new
// leader may already be undoing this decision.
func (a *Arbiter) still(ctx context.Context) error {
	term, ok := ctx.Value(termKey{}).(uint64)
	if !ok {
		return fmt.Errorf("%w: no decision term (internal error)", ErrDeposed)
	}
	if !a.group.IsLeader() || a.group.Term() != term {
		return fmt.Errorf("%w (term %d)", ErrDeposed, term)
	}
	if err := a.group.VerifyLeader(ctx); err != nil {
		return fmt.Errorf("%w (term %d): %v", ErrDeposed, term, err)
	}
	return nil
}

// step announces a step of a change and checks leadership before it.
func (a *Arbiter) step(ctx context.Context, name string) error {
	a.log.Info("step", zap.String("step", name))
	if h := a.hook.Load(); h != nil {
		(*h)(name)
	}
	return a.still(ctx)
}

func (a *Arbiter) propose(ctx context.Context, c *raftfsm.Command) (*raftfsm.Cluster, error) {
	cl, _, err := a.proposeIndex(ctx, c)
	return cl, err
}

// proposeIndex also returns the command's log index.
func (a *Arbiter) proposeIndex(ctx context.Context, c *raftfsm.Command) (*raftfsm.Cluster, uint64, error) {
	c.Cluster = a.cfg.Cluster
	c.At = a.cfg.Clock()
	res, err := a.group.Propose(ctx, c)
	if err != nil {
		return nil, 0, err
	}
	cl := a.group.State().Cluster(a.cfg.Cluster)
	a.seen.observe(cl, time.Now())
	return cl, res.Index, nil
}

func (a *Arbiter) note(ctx context.Context, member, reason string) {
	if a.refused == reason {
		return
	}
	a.refused = reason
	a.record(ctx, member, reason)
}

// noteMember records a condition of one member once, until it changes.
func (a *Arbiter) noteMember(ctx context.Context, member, reason string) {
	if a.noted[member] == reason {
		return
	}
	a.noted[member] = reason
	a.record(ctx, member, reason)
}

func (a *Arbiter) record(ctx context.Context, member, reason string) {
	a.log.Warn("decision", zap.String("member", member), zap.String("reason", reason))
	if _, err := a.propose(ctx, &raftfsm.Command{Type: raftfsm.TypeNote, Member: member, Reason: reason}); err != nil {
		a.log.Warn("record note", zap.Error(err))
	}
}

func memberByName(s *topology.Snapshot, name string) (topology.Member, bool) {
	for _, m := range s.Members {
		if m.Name == name {
			return m, true
		}
	}
	return topology.Member{}, false
}

// Reconcile makes one round of decisions.
func (a *Arbiter) Reconcile(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	ctx, err := a.lead(ctx)
	if err != nil {
		return err
	}
	cl := a.group.State().Cluster(a.cfg.Cluster)
	snap := a.snaps.Snapshot()
	switch {
	case cl == nil:
		return a.bootstrap(ctx, snap)
	case cl.Phase == raftfsm.PhaseFailingOver:
		// A failover this node (or a leader before it) started.
		return a.finishFailover(ctx, cl, time.Now(), 0)
	case cl.Phase == raftfsm.PhaseSwitching:
		// The old primary died mid-switchover: it can be neither waited
		// for nor reopened, so a failover takes over from the switchover.
		if failed, why := a.primaryFailed(ctx, cl, snap, cl.Previous); failed {
			return a.failover(ctx, cl, snap, cl.Previous, why+" during a switchover to "+cl.Primary)
		}
		if old, ok := memberByName(snap, cl.Previous); ok && !old.Reachable {
			// A failover once the arbiters agree it failed, or it comes
			// back; or another arbiter that reaches it finishes the
			// switchover or rolls it back.
			a.handOver(ctx, cl.Previous, "to finish or roll back the switchover")
			return nil
		}
		return a.recoverSwitch(ctx, cl)
	}
	if failed, why := a.primaryFailed(ctx, cl, snap, cl.Primary); failed {
		return a.failover(ctx, cl, snap, cl.Primary, why)
	}
	if prim, ok := memberByName(snap, cl.Primary); ok && prim.Reachable && prim.ReadOnly {
		return a.reopen(ctx, cl, snap, prim)
	}
	return a.rejoin(ctx, cl, snap)
}

// reopen handles a serving primary found read-only: restarted within
// failure_threshold (members start read_only=ON) or set so by hand. Writes
// would fail with 1290 for ever. If it still has every transaction its
// replicas received, it is opened again; if a crash cost it commits its
// replicas have (sync_binlog=0, say), it must not take writes again: the
// replica that has them is failed over to.
func (a *Arbiter) reopen(ctx context.Context, cl *raftfsm.Cluster, snap *topology.Snapshot, prim topology.Member) error {
	p, err := a.act.Position(ctx, prim.Addr)
	if err != nil || !p.ReadOnly {
		return err
	}
	have, err := mariadb.ParseGTIDSet(mariadb.MariaDB, p.BinlogPos)
	if err != nil {
		return err
	}
	for _, m := range snap.Members {
		if m.Name == prim.Name || !m.Reachable || cl.Members[m.Name].Errant != "" {
			continue
		}
		q, err := a.act.Position(ctx, m.Addr)
		if err != nil {
			continue
		}
		raw, recv, err := received(q)
		if err != nil {
			return err
		}
		if !have.Contains(recv) {
			return a.failover(ctx, cl, snap, prim.Name, fmt.Sprintf("%s came back read-only at %s without transactions %s received (%s)", prim.Name, p.BinlogPos, m.Name, raw))
		}
	}
	if err := a.still(ctx); err != nil {
		return err
	}
	if err := a.act.Open(ctx, prim.Addr); err != nil {
		return fmt.Errorf("reopen primary %s: %w", prim.Name, err)
	}
	a.record(ctx, prim.Name, fmt.Sprintf("primary %s was read-only (restarted, or set by hand) with every transaction its replicas have: opened again", prim.Name))
	return nil
}

// handOver gives leadership to an arbiter that reaches member, which this
// leader cannot: only the leader acts on members, and a leader with one
// broken link must not hold a failover or a switchover up.
func (a *Arbiter) handOver(ctx context.Context, member, why string) bool {
	for _, o := range a.obs.Observations(ctx, a.cfg.Cluster) {
		if _, reaches := o.Members[member]; !reaches || o.Arbiter == "" {
			continue
		}
		if err := a.still(ctx); err != nil {
			return false
		}
		// Recorded first: once handed over, this node can no longer write
		// the history.
		a.note(ctx, member, fmt.Sprintf("this leader cannot reach %s, which arbiter %s can: leadership handed to %s %s", member, o.Arbiter, o.Arbiter, why))
		if err := a.group.TransferLeadership(ctx, o.Arbiter); err != nil {
			a.log.Warn("hand leadership over", zap.String("to", o.Arbiter), zap.Error(err))
			continue
		}
		return true
	}
	return false
}

// bootstrap records the first primary: the single writable member; or, when
// every member is read-only (as recommended in my.cnf, so that no restarted
// server comes back writable), the one member the others all replicate from,
// which it then opens. No proxy can hold a lease for a cluster without an
// epoch, so opening needs no lease wait.
func (a *Arbiter) bootstrap(ctx context.Context, snap *topology.Snapshot) error {
	if len(snap.Conflict) > 0 {
		return nil // the monitor reports it; a human must fence one
	}
	var names []string
	for _, m := range snap.Members {
		names = append(names, m.Name)
	}
	primary, reason, open := snap.PrimaryName(), "the only writable member when the cluster was first seen", false
	if primary == "" {
		root, ok := replicationRoot(snap)
		if !ok {
			return nil
		}
		primary, reason, open = root.Name, "every member read-only; "+root.Name+" is the source the others replicate from: opened", true
	}
	pm, _ := memberByName(snap, primary)
	// Where the first primary's history starts, for judging returning
	// members later; a fresh read, not the snapshot's.
	p, err := a.act.Position(ctx, pm.Addr)
	if err != nil {
		return fmt.Errorf("bootstrap: read %s's position: %w", primary, err)
	}
	_, err = a.propose(ctx, &raftfsm.Command{Type: raftfsm.TypeBootstrap, Primary: primary, Members: names, Reason: reason,
		Opened: &raftfsm.OpenedAt{ServerID: p.ServerID, GTID: p.BinlogPos}})
	if errors.Is(err, raftfsm.ErrStaleEpoch) {
		return nil // another leader recorded it first
	}
	if err != nil || !open {
		return err
	}
	if err := a.still(ctx); err != nil {
		return err
	}
	if err := a.act.Open(ctx, pm.Addr); err != nil {
		return fmt.Errorf("open first primary %s: %w", primary, err)
	}
	a.log.Info("opened the first primary", zap.String("member", primary))
	return nil
}

// replicationRoot finds the single reachable member that replicates from no
// one while every other reachable member replicates from it.
func replicationRoot(snap *topology.Snapshot) (topology.Member, bool) {
	var root topology.Member
	roots := 0
	for _, m := range snap.Members {
		if m.Reachable && m.Source == "" {
			root, roots = m, roots+1
		}
	}
	if roots != 1 || root.ServerID == 0 {
		return root, false
	}
	for _, m := range snap.Members {
		if m.Reachable && m.Name != root.Name && m.SourceServerID != root.ServerID {
			return root, false
		}
	}
	return root, true
}

// primaryFailed applies the failure rule to the primary lost (the current
// one, or during a switchover the one being switched away from): a majority
// of arbiters has failed to reach it for FailureThreshold, and no replica
// any arbiter reaches still hears from it. One arbiter with a bad link is
// never enough, and neither is a majority of arbiters on the wrong side of a
// partition while the replicas still stream from the primary.
//
// "Hears from it" means received an event or a heartbeat recently, from a
// source whose server id is the primary's: an IO thread's "connected" state
// outlives a hung (SIGSTOPped, frozen) primary by slave_net_timeout, which
// would hold the failover that long, and an address string can name a
// member that is no longer the one the replica talks to.
func (a *Arbiter) primaryFailed(ctx context.Context, cl *raftfsm.Cluster, snap *topology.Snapshot, lost string) (bool, string) {
	prim, ok := memberByName(snap, lost)
	if !ok || prim.FailingFor < a.cfg.FailureThreshold {
		if prim.FailingFor == 0 {
			a.refused = "" // healthy again: a later refusal is news
		}
		return false, "" // this arbiter still reaches it: no need to ask the others
	}
	obs := a.obs.Observations(ctx, a.cfg.Cluster)
	down := 0
	for _, o := range obs {
		if o.Failing[lost] >= a.cfg.FailureThreshold {
			down++
		}
	}
	voters := a.cfg.Arbiters
	if a.cfg.Voters != nil {
		voters = max(a.cfg.Voters(), 1)
	}
	if down < voters/2+1 {
		return false, ""
	}
	// The leader's own view, then every other arbiter's.
	age := max(time.Since(snap.Taken), 0)
	for _, m := range snap.Members {
		if m.Name == lost || !m.Reachable || !m.IORunning || !streamsFrom(m.SourceServerID, prim, snap) {
			continue
		}
		if window := max(a.cfg.FailureThreshold, 2*m.HeartbeatPeriod); m.SourceContact >= 0 && m.SourceContact+age < window {
			// The reason names no duration: one note per episode, not one
			// per round.
			a.log.Debug("veto", zap.String("replica", m.Name), zap.Duration("last_received", m.SourceContact+age))
			a.note(ctx, lost, fmt.Sprintf("%s unreachable from %d/%d arbiters but %s still receives from it: no failover", lost, down, voters, m.Name))
			return false, ""
		}
	}
	for _, o := range obs {
		for name, m := range o.Members {
			if name == lost || !m.IORunning || !streamsFrom(m.SourceServerID, prim, snap) {
				continue
			}
			if m.SourceContactMs >= 0 && time.Duration(m.SourceContactMs)*time.Millisecond < a.cfg.FailureThreshold {
				a.note(ctx, lost, fmt.Sprintf("%s unreachable from %d/%d arbiters but arbiter %s sees %s still receiving from it: no failover",
					lost, down, voters, o.Arbiter, name))
				return false, ""
			}
		}
	}
	return true, fmt.Sprintf("%s unreachable from %d/%d arbiters for at least %s and no replica has received from it for that long", lost, down, voters, a.cfg.FailureThreshold)
}

// streamsFrom reports whether a replica whose IO thread last connected to
// server id source is connected to src. While src's id is unknown (this
// arbiter never reached it), any source that is not another known member
// counts: that can only prevent a failover, never cause one.
func streamsFrom(source uint32, src topology.Member, snap *topology.Snapshot) bool {
	if src.ServerID != 0 {
		return source == src.ServerID
	}
	if source == 0 {
		return true
	}
	for _, o := range snap.Members {
		if o.Name != src.Name && o.ServerID == source {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
