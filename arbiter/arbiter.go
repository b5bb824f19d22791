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
)

// Group is what an arbiter needs of its Raft node.
type Group interface {
	IsLeader() bool
	State() *raftfsm.State
	Propose(ctx context.Context, c *raftfsm.Command) (raftfsm.Result, error)
}

// Snapshots is the local view of the cluster (a topology.Monitor).
type Snapshots interface {
	Snapshot() *topology.Snapshot
}

// Observation is one arbiter's view of which members it cannot reach, and
// for how long.
type Observation struct {
	Arbiter string                   `json:"arbiter"`
	Failing map[string]time.Duration `json:"failing"`
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
}

// Refusal errors of Promote; the message says why.
var (
	ErrRefused  = errors.New("switchover refused")
	ErrNotReady = errors.New("cluster not bootstrapped")
)

// Arbiter makes one cluster's decisions while its node leads.
type Arbiter struct {
	cfg   Config
	group Group
	snaps Snapshots
	obs   Observers
	act   *topology.Actions
	log   *zap.Logger

	// mu serialises changes: one decision at a time per cluster.
	mu sync.Mutex
	// refusedAt avoids writing the same refusal to the history every round.
	refused string
	// hook, when set (tests), runs before each step of a change.
	hook atomic.Pointer[func(step string)]
}

// New returns an arbiter for one cluster.
func New(cfg Config, g Group, snaps Snapshots, obs Observers, act *topology.Actions, log *zap.Logger) *Arbiter {
	cfg.defaults()
	return &Arbiter{cfg: cfg, group: g, snaps: snaps, obs: obs, act: act, log: log.Named("arbiter").With(zap.String("cluster", cfg.Cluster))}
}

// Run reconciles every Interval while ctx lives; it acts only while this
// node leads.
func (a *Arbiter) Run(ctx context.Context) {
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !a.group.IsLeader() {
			continue
		}
		// The same failure every round is logged once, until it changes.
		err := a.Reconcile(ctx)
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

func (a *Arbiter) step(name string) {
	a.log.Info("step", zap.String("step", name))
	if h := a.hook.Load(); h != nil {
		(*h)(name)
	}
}

func (a *Arbiter) propose(ctx context.Context, c *raftfsm.Command) (*raftfsm.Cluster, error) {
	cl, _, err := a.proposeIndex(ctx, c)
	return cl, err
}

// proposeIndex also returns the command's log index.
func (a *Arbiter) proposeIndex(ctx context.Context, c *raftfsm.Command) (*raftfsm.Cluster, uint64, error) {
	c.Cluster = a.cfg.Cluster
	c.At = time.Now()
	res, err := a.group.Propose(ctx, c)
	if err != nil {
		return nil, 0, err
	}
	return a.group.State().Cluster(a.cfg.Cluster), res.Index, nil
}

func (a *Arbiter) note(ctx context.Context, member, reason string) {
	if a.refused == reason {
		return
	}
	a.refused = reason
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
	cl := a.group.State().Cluster(a.cfg.Cluster)
	snap := a.snaps.Snapshot()
	switch {
	case cl == nil:
		return a.bootstrap(ctx, snap)
	case cl.Phase == raftfsm.PhaseFailingOver:
		// A failover this node (or a leader before it) started.
		return a.finishFailover(ctx, cl, time.Now(), 0)
	case cl.Phase == raftfsm.PhaseSwitching:
		return a.recoverSwitch(ctx, cl)
	}
	if failed, why := a.primaryFailed(ctx, cl, snap); failed {
		return a.failover(ctx, cl, snap, why)
	}
	return a.rejoin(ctx, cl, snap)
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
	_, err := a.propose(ctx, &raftfsm.Command{Type: raftfsm.TypeBootstrap, Primary: primary, Members: names, Reason: reason})
	if errors.Is(err, raftfsm.ErrStaleEpoch) {
		return nil // another leader recorded it first
	}
	if err != nil || !open {
		return err
	}
	root, _ := memberByName(snap, primary)
	if err := a.act.Open(ctx, root.Addr); err != nil {
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
	if roots != 1 {
		return root, false
	}
	for _, m := range snap.Members {
		if m.Reachable && m.Name != root.Name && m.Source != root.Addr {
			return root, false
		}
	}
	return root, true
}

// primaryFailed applies the failure rule: a majority of arbiters has failed
// to reach the primary for FailureThreshold, and no reachable replica still
// has its IO thread connected to it. One arbiter with a bad link is never
// enough, and neither is a majority of arbiters on the wrong side of a
// partition while the replicas still stream from the primary.
func (a *Arbiter) primaryFailed(ctx context.Context, cl *raftfsm.Cluster, snap *topology.Snapshot) (bool, string) {
	prim, ok := memberByName(snap, cl.Primary)
	if !ok || prim.FailingFor < a.cfg.FailureThreshold {
		if prim.FailingFor == 0 {
			a.refused = "" // healthy again: a later refusal is news
		}
		return false, "" // this arbiter still reaches it: no need to ask the others
	}
	down := 0
	for _, o := range a.obs.Observations(ctx, a.cfg.Cluster) {
		if o.Failing[cl.Primary] >= a.cfg.FailureThreshold {
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
	for _, m := range snap.Members {
		if m.Name != cl.Primary && m.Reachable && m.IORunning && m.Source == prim.Addr {
			a.note(ctx, cl.Primary, fmt.Sprintf("%s unreachable from %d/%d arbiters but %s still replicates from it: no failover", cl.Primary, down, voters, m.Name))
			return false, ""
		}
	}
	return true, fmt.Sprintf("%s unreachable from %d/%d arbiters for at least %s and no replica connected to it", cl.Primary, down, voters, a.cfg.FailureThreshold)
}

// candidate picks the reachable, non-maintenance replica whose received
// position contains every other's; "" with a reason when there is none.
func (a *Arbiter) candidate(ctx context.Context, cl *raftfsm.Cluster, snap *topology.Snapshot, exclude ...string) (string, string) {
	var names []string
	var sets []topology.GTIDSet
	for _, m := range snap.Members {
		ms := cl.Members[m.Name]
		if !m.Reachable || ms.Maintenance || ms.Fenced || m.Name == cl.Primary || contains(exclude, m.Name) {
			continue
		}
		p, err := a.act.Position(ctx, m.Addr)
		if err != nil {
			continue
		}
		pos := p.IOPos
		if pos == "" {
			pos = p.CurrentPos
		}
		g, err := topology.ParseGTIDSet(topology.MariaDB, pos)
		if err != nil {
			continue
		}
		names = append(names, m.Name)
		sets = append(sets, g)
	}
	if len(names) == 0 {
		return "", "no reachable replica outside maintenance"
	}
	i := topology.MostAdvanced(sets)
	if i < 0 {
		return "", fmt.Sprintf("replicas %v have diverged: none has everything the others received", names)
	}
	return names[i], ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (a *Arbiter) failover(ctx context.Context, cl *raftfsm.Cluster, snap *topology.Snapshot, why string) error {
	if since := time.Since(cl.LastFailover); !cl.LastFailover.IsZero() && since < a.cfg.Cooldown {
		a.note(ctx, cl.Primary, fmt.Sprintf("failover refused: cooldown (%s since the last failover, cooldown %s)", since.Round(time.Second), a.cfg.Cooldown))
		return nil
	}
	cand, reason := a.candidate(ctx, cl, snap)
	if cand == "" {
		a.note(ctx, cl.Primary, "failover impossible: "+reason)
		return nil
	}
	a.log.Warn("failing over", zap.String("from", cl.Primary), zap.String("to", cand), zap.String("reason", why))
	next, idx, err := a.proposeIndex(ctx, &raftfsm.Command{Type: raftfsm.TypeBegin, Epoch: cl.Epoch, Primary: cand, Phase: raftfsm.PhaseFailingOver, Reason: why})
	if err != nil {
		return fmt.Errorf("begin failover to %s: %w", cand, err)
	}
	return a.finishFailover(ctx, next, time.Now(), idx)
}

// finishFailover takes the candidate the committed epoch names to open.
// committed is no earlier than the epoch's commit on this node's clock, and
// index its log index; a new leader passes its own now and 0, which only
// makes the wait longer.
func (a *Arbiter) finishFailover(ctx context.Context, cl *raftfsm.Cluster, committed time.Time, index uint64) error {
	snap := a.snaps.Snapshot()
	cand, ok := memberByName(snap, cl.Primary)
	if !ok {
		return fmt.Errorf("failover: candidate %s is not a configured member", cl.Primary)
	}
	if old, ok := memberByName(snap, cl.Previous); ok {
		// Best effort, and alongside the next steps: the old primary is most
		// likely down (a paused one would hold us for the whole timeout). If
		// it is only cut off from us, proxies stop writing to it within their
		// lease, and acknowledgement fencing voids what it commits later.
		go func() {
			fctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			if err := a.act.Fence(fctx, old.Addr); err == nil {
				a.log.Info("fenced old primary", zap.String("member", old.Name))
			}
		}()
	}
	// Stop the other replicas' threads now, in parallel with preparing the
	// candidate: they are repointed to it next, and STOP SLAVE is what is
	// slow when the old primary hangs. Their received positions stay, so
	// one of them can still be the candidate if this one fails.
	var stopping sync.WaitGroup
	for _, m := range snap.Members {
		if m.Name == cand.Name || m.Name == cl.Previous || !m.Reachable {
			continue
		}
		stopping.Add(1)
		go func() {
			defer stopping.Done()
			if err := a.act.StopReplication(ctx, m.Addr); err != nil {
				a.log.Warn("stop replication", zap.String("member", m.Name), zap.Error(err))
			}
		}()
	}
	defer stopping.Wait()
	a.step("catchup")
	err := a.prepareCandidate(ctx, cand.Addr)
	if err != nil {
		// Pick another candidate at a new epoch; the failed one is excluded.
		next, reason := a.candidate(ctx, cl, snap, cand.Name, cl.Previous)
		if next == "" {
			a.note(ctx, cand.Name, fmt.Sprintf("failover candidate %s failed (%v) and no other: %s", cand.Name, err, reason))
			return fmt.Errorf("failover to %s: %w", cand.Name, err)
		}
		nc, idx, perr := a.proposeIndex(ctx, &raftfsm.Command{Type: raftfsm.TypeBegin, Epoch: cl.Epoch, Primary: next, Phase: raftfsm.PhaseFailingOver,
			Reason: fmt.Sprintf("candidate %s failed: %v", cand.Name, err)})
		if perr != nil {
			return fmt.Errorf("re-begin failover to %s: %w", next, perr)
		}
		return a.finishFailover(ctx, nc, time.Now(), idx)
	}
	a.step("lease_wait")
	if err := a.waitLease(ctx, committed, index); err != nil {
		return err
	}
	a.step("open")
	if err := a.act.Open(ctx, cand.Addr); err != nil {
		return fmt.Errorf("open %s: %w", cand.Name, err)
	}
	stopping.Wait()
	a.repointOthers(ctx, snap, cand, cl.Previous)
	a.step("commit")
	// The old primary is marked fenced before `serving` commits, so no
	// state ever shows it as an ordinary member again until it rejoins.
	if ms, ok := cl.Members[cl.Previous]; ok && !ms.Fenced {
		t := true
		if _, err := a.propose(ctx, &raftfsm.Command{Type: raftfsm.TypeMember, Epoch: cl.Epoch, Member: cl.Previous, Fenced: &t,
			Reason: "failed primary: fenced until it rejoins clean"}); err != nil {
			return fmt.Errorf("mark %s fenced: %w", cl.Previous, err)
		}
	}
	if _, err := a.propose(ctx, &raftfsm.Command{Type: raftfsm.TypeOpen, Epoch: cl.Epoch, Reason: cand.Name + " promoted"}); err != nil {
		return fmt.Errorf("commit failover to %s: %w", cand.Name, err)
	}
	a.log.Warn("failover done", zap.String("primary", cand.Name), zap.Uint64("epoch", cl.Epoch))
	return nil
}

// prepareCandidate applies what the candidate received and detaches it; it
// stays read-only.
func (a *Arbiter) prepareCandidate(ctx context.Context, addr string) error {
	p, err := a.act.Position(ctx, addr)
	if err != nil {
		return err
	}
	if !p.ReadOnly && p.Source == "" {
		return nil // opened already by a previous leader
	}
	if err := a.act.WaitApplied(ctx, addr, p.IOPos, a.cfg.CatchupTimeout); err != nil {
		return err
	}
	return a.act.Detach(ctx, addr)
}

// waitLease returns once no proxy can still be writing under the previous
// epoch: every proxy confirmed applying index, or lease+margin has passed
// since the commit (leases run out even on proxies that hear nothing).
func (a *Arbiter) waitLease(ctx context.Context, committed time.Time, index uint64) error {
	end := committed.Add(a.cfg.Lease + a.cfg.LeaseMargin)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(end) {
		if index > 0 && a.cfg.Confirmed != nil && a.cfg.Confirmed(index) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// repointOthers makes every reachable member but the new primary and skip a
// replica of the new primary. Failures are logged: rejoin retries them.
func (a *Arbiter) repointOthers(ctx context.Context, snap *topology.Snapshot, prim topology.Member, skip string) {
	// In parallel: STOP SLAVE on a replica whose IO thread is stuck
	// connecting to a hung primary takes seconds.
	var wg sync.WaitGroup
	for _, m := range snap.Members {
		if m.Name == prim.Name || m.Name == skip || !m.Reachable {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.act.Repoint(ctx, m.Addr, prim.Addr); err != nil {
				a.log.Warn("repoint", zap.String("member", m.Name), zap.Error(err))
			}
		}()
	}
	wg.Wait()
}

// rejoin brings members that are not replicating from the primary back, or
// fences them: a writable member that is not the primary is fenced at once
// (a second writer is the failure everything else here prevents); a member
// with transactions the primary lacks stays fenced and is reported.
func (a *Arbiter) rejoin(ctx context.Context, cl *raftfsm.Cluster, snap *topology.Snapshot) error {
	prim, ok := memberByName(snap, cl.Primary)
	if !ok || !prim.Reachable {
		return nil
	}
	for _, m := range snap.Members {
		ms := cl.Members[m.Name]
		if m.Name == cl.Primary || !m.Reachable || ms.Maintenance {
			continue
		}
		if !m.ReadOnly {
			if err := a.act.Fence(ctx, m.Addr); err != nil {
				return fmt.Errorf("fence second writable member %s: %w", m.Name, err)
			}
			a.log.Error("fenced a writable member that is not the primary", zap.String("member", m.Name), zap.String("primary", cl.Primary))
		}
		if m.Source == prim.Addr && !ms.Fenced {
			continue
		}
		// A member marked errant is checked again every round: once an
		// operator has fixed it (re-cloned it, or given the primary the
		// missing transactions, e.g. as empty ones), it rejoins like any
		// other; until then it stays fenced.
		mp, err := a.act.Position(ctx, m.Addr)
		if err != nil {
			continue
		}
		pp, err := a.act.Position(ctx, prim.Addr)
		if err != nil {
			return err
		}
		have, err1 := topology.ParseGTIDSet(topology.MariaDB, mp.BinlogPos)
		want, err2 := topology.ParseGTIDSet(topology.MariaDB, pp.BinlogPos)
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		if errant := have.Subtract(want); !errant.Empty() {
			t, e := true, errant.String()
			if ms.Fenced && ms.Errant == e {
				continue // recorded; waits for an operator
			}
			if err := a.act.Fence(ctx, m.Addr); err != nil {
				a.log.Warn("fence errant member", zap.String("member", m.Name), zap.Error(err))
			}
			_, err := a.propose(ctx, &raftfsm.Command{Type: raftfsm.TypeMember, Epoch: cl.Epoch, Member: m.Name, Fenced: &t, Errant: &e,
				Reason: fmt.Sprintf("%s has transactions %s that primary %s lacks: fenced, not rejoined", m.Name, e, cl.Primary)})
			return err
		}
		if err := a.act.Repoint(ctx, m.Addr, prim.Addr); err != nil {
			return fmt.Errorf("rejoin %s: %w", m.Name, err)
		}
		if ms.Fenced || ms.Errant != "" {
			f, e := false, ""
			if _, err := a.propose(ctx, &raftfsm.Command{Type: raftfsm.TypeMember, Epoch: cl.Epoch, Member: m.Name, Fenced: &f, Errant: &e,
				Reason: fmt.Sprintf("rejoined as a replica of %s (no errant transactions)", cl.Primary)}); err != nil {
				return err
			}
		}
		a.log.Info("rejoined", zap.String("member", m.Name), zap.String("primary", cl.Primary))
	}
	return nil
}
