package arbiter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/raftfsm"
	"github.com/dbrouter/dbrouter/topology"
	"github.com/dbrouter/dbrouter/topology/mariadb"
)

// errOldPrimaryLost: the primary being switched away from stopped answering
// mid-switchover. It can be neither reopened nor caught up with; the
// cluster stays `switching` (writes held) until the arbiters agree it has
// failed and a failover preempts the switchover.
var errOldPrimaryLost = errors.New("the old primary stopped answering during the switchover")

// Promote runs a planned switchover to target, within timeout. Clients see
// a pause, not errors: proxies hold new writes and transactions from the
// moment `switching` commits until `serving` does. Every step before the
// target opens can fail; then the old primary is reopened at a new epoch and
// nothing is left half done. Refusals wrap ErrRefused.
func (a *Arbiter) Promote(ctx context.Context, target string, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.group.IsLeader() {
		return fmt.Errorf("%w: this arbiter is not the raft leader", ErrRefused)
	}
	ctx, err := a.lead(ctx)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	cl := a.group.State().Cluster(a.cfg.Cluster)
	if cl == nil {
		return fmt.Errorf("%w: cluster %s has no primary recorded yet", ErrNotReady, a.cfg.Cluster)
	}
	snap := a.snaps.Snapshot()
	if err := a.checkPromote(cl, snap, target); err != nil {
		return err
	}
	tm, _ := memberByName(snap, target)
	old, _ := memberByName(snap, cl.Primary)

	next, idx, err := a.proposeIndex(ctx, &raftfsm.Command{Type: raftfsm.TypeBegin, Epoch: cl.Epoch, Primary: target, Phase: raftfsm.PhaseSwitching,
		Reason: "switchover requested by operator"})
	if err != nil {
		return fmt.Errorf("begin switchover to %s: %w", target, err)
	}
	committed := time.Now()
	a.log.Info("switchover begun", zap.String("from", old.Name), zap.String("to", target), zap.Uint64("epoch", next.Epoch))

	opened, err := a.switchSteps(ctx, next, old, tm, committed, idx)
	switch {
	case err == nil || opened:
		return err
	case errors.Is(err, ErrDeposed):
		// The new leader finishes or rolls back from the replicated state;
		// a deposed one touching the databases would undo its work.
		return fmt.Errorf("switchover to %s interrupted: %w", target, err)
	case errors.Is(err, errOldPrimaryLost):
		return fmt.Errorf("switchover to %s failed: %w; writes stay held until the arbiters agree it has failed and fail over", target, err)
	}
	// Roll back with a fresh context (the switchover's may have expired),
	// still tied to this leader's term.
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer rcancel()
	if rerr := a.rollback(rctx, next, old, tm, err.Error()); rerr != nil {
		return fmt.Errorf("switchover to %s failed (%v) and rollback failed: %w", target, err, rerr)
	}
	return fmt.Errorf("switchover to %s failed and was rolled back to %s: %w", target, old.Name, err)
}

func (a *Arbiter) checkPromote(cl *raftfsm.Cluster, snap *topology.Snapshot, target string) error {
	ms, known := cl.Members[target]
	tm, seen := memberByName(snap, target)
	since, _, changed, _ := a.seen.since(time.Now())
	switch {
	case !known || !seen:
		return fmt.Errorf("%w: %s is not a member of cluster %s", ErrRefused, target, a.cfg.Cluster)
	case cl.Phase != raftfsm.PhaseServing:
		return fmt.Errorf("%w: cluster %s is %s", ErrRefused, a.cfg.Cluster, cl.Phase)
	case target == cl.Primary:
		return fmt.Errorf("%w: %s is already the primary", ErrRefused, target)
	case cl.Epoch > 1 && changed && since < a.cfg.Cooldown: // a change, not the bootstrap
		return fmt.Errorf("%w: cooldown: this arbiter saw the last change %s ago (cooldown %s)", ErrRefused, since.Round(time.Second), a.cfg.Cooldown)
	case ms.Maintenance || ms.Fenced:
		return fmt.Errorf("%w: %s is in maintenance or fenced", ErrRefused, target)
	case !tm.Reachable:
		return fmt.Errorf("%w: %s is unreachable", ErrRefused, target)
	case !tm.IORunning || !tm.SQLRunning:
		return fmt.Errorf("%w: %s is not replicating (%s)", ErrRefused, target, tm.ReplError)
	case tm.Lag < 0:
		return fmt.Errorf("%w: %s's lag is not known yet (this leader's heartbeat has not reached it); retry in a moment", ErrRefused, target)
	case tm.Lag > a.cfg.MaxPromoteLag:
		return fmt.Errorf("%w: %s lags %s, more than max_promote_lag %s", ErrRefused, target, tm.Lag, a.cfg.MaxPromoteLag)
	}
	if old, ok := memberByName(snap, cl.Primary); !ok || !old.Reachable {
		return fmt.Errorf("%w: the primary %s is unreachable; a failover, not a switchover, handles that", ErrRefused, cl.Primary)
	}
	return nil
}

// switchSteps runs the switchover after `switching` committed. opened tells
// whether the target took the primary role (the point of no return).
func (a *Arbiter) switchSteps(ctx context.Context, cl *raftfsm.Cluster, old, target topology.Member, committed time.Time, index uint64) (opened bool, err error) {
	// Proxies hold new writes once they apply `switching`. Wait until every
	// one has (or its lease has run out) before fencing: a proxy that has
	// not yet applied it would otherwise send writes into the read-only old
	// primary and its clients would see errors, not a pause.
	if err := a.step(ctx, "lease_wait"); err != nil {
		return false, err
	}
	if err := a.waitLease(ctx, committed, index); err != nil {
		return false, err
	}
	// Drain: proxies hold new transactions; in-flight ones get DrainTimeout.
	if err := a.step(ctx, "drain"); err != nil {
		return false, err
	}
	drainEnd := time.Now().Add(a.cfg.DrainTimeout)
	for {
		n, err := a.act.ActiveTransactions(ctx, old.Addr)
		if err != nil {
			return false, a.lostOld(old, fmt.Errorf("drain %s: %w", old.Name, err))
		}
		if n == 0 || time.Now().After(drainEnd) {
			break
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := a.step(ctx, "fence"); err != nil {
		return false, err
	}
	if err := a.act.Fence(ctx, old.Addr); err != nil {
		return false, a.lostOld(old, err)
	}
	op, err := a.act.Position(ctx, old.Addr)
	if err != nil {
		return false, a.lostOld(old, fmt.Errorf("read final position of %s: %w", old.Name, err))
	}
	if err := a.step(ctx, "catchup"); err != nil {
		return false, err
	}
	wait := a.cfg.CatchupTimeout
	if d, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(d))
	}
	if err := a.act.WaitApplied(ctx, target.Addr, op.BinlogPos, wait); err != nil {
		return false, err
	}
	// A session with read_only bypass (SUPER, READ_ONLY ADMIN) can still
	// commit on the fenced primary: catch up with that too, until its
	// position holds still, so the target does not open without it.
	for i := 0; ; i++ {
		again, err := a.act.Position(ctx, old.Addr)
		if err != nil {
			return false, a.lostOld(old, err)
		}
		if again.BinlogPos == op.BinlogPos {
			break
		}
		if i == 5 {
			return false, fmt.Errorf("%s still takes writes after it was fenced (a session that bypasses read_only: SUPER or READ_ONLY ADMIN), at %s", old.Name, again.BinlogPos)
		}
		op = again
		if err := a.act.WaitApplied(ctx, target.Addr, op.BinlogPos, wait); err != nil {
			return false, err
		}
	}
	if err := a.step(ctx, "detach"); err != nil {
		return false, err
	}
	if err := a.act.Detach(ctx, target.Addr); err != nil {
		return false, err
	}
	tp, err := a.act.Position(ctx, target.Addr)
	if err != nil {
		return false, err
	}
	if err := a.step(ctx, "open"); err != nil {
		return false, err
	}
	if err := a.act.Open(ctx, target.Addr); err != nil {
		return false, err
	}
	// Past this point the target may have taken writes: only forward.
	a.repointOthers(ctx, cl, a.snaps.Snapshot(), target, tp.BinlogPos, "")
	if err := a.step(ctx, "commit"); err != nil {
		return true, err
	}
	if err := a.commitOpen(ctx, cl, target.Name+" promoted by switchover", tp); err != nil {
		return true, err
	}
	a.log.Info("switchover done", zap.String("primary", target.Name), zap.Uint64("epoch", cl.Epoch))
	return true, nil
}

// lostOld turns a failed step on the old primary into errOldPrimaryLost when
// the old primary no longer answers at all.
func (a *Arbiter) lostOld(old topology.Member, err error) error {
	pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, perr := a.act.Position(pctx, old.Addr); perr != nil {
		return fmt.Errorf("%w (%s: %v)", errOldPrimaryLost, old.Name, err)
	}
	return err
}

// commitOpen commits `serving`, retrying for a moment: the target is open,
// so giving up here would leave writes held needlessly (a new leader would
// finish it, but later).
func (a *Arbiter) commitOpen(ctx context.Context, cl *raftfsm.Cluster, reason string, at mariadb.ServerState) error {
	var err error
	for i := 0; i < 5; i++ {
		if _, err = a.propose(ctx, &raftfsm.Command{Type: raftfsm.TypeOpen, Epoch: cl.Epoch, Reason: reason,
			Opened: &raftfsm.OpenedAt{ServerID: at.ServerID, GTID: at.BinlogPos}}); err == nil || errors.Is(err, raftfsm.ErrStaleEpoch) || errors.Is(err, raftfsm.ErrPhase) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
	return err
}

// rollback reopens the old primary: the target (never opened) replicates
// from it again, the old primary leaves read-only, and a new epoch names it
// primary again.
func (a *Arbiter) rollback(ctx context.Context, cl *raftfsm.Cluster, old, target topology.Member, why string) error {
	a.log.Warn("switchover failed: rolling back", zap.String("to", old.Name), zap.String("reason", why))
	if err := a.step(ctx, "rollback"); err != nil {
		return err
	}
	// Make sure the target cannot take writes before the old primary does.
	if err := a.act.Repoint(ctx, target.Addr, old.Addr); err != nil {
		a.log.Warn("repoint target back", zap.String("member", target.Name), zap.Error(err))
	}
	op, err := a.act.Position(ctx, old.Addr)
	if err != nil {
		return fmt.Errorf("reopen %s: %w", old.Name, err)
	}
	if err := a.still(ctx); err != nil {
		return err
	}
	if op.Replicating {
		// Repointed to the target by the leader that ran the switchover:
		// it must take no one's writes once it is the primary again.
		if err := a.act.Detach(ctx, old.Addr); err != nil {
			return fmt.Errorf("reopen %s: %w", old.Name, err)
		}
		if op, err = a.act.Position(ctx, old.Addr); err != nil {
			return fmt.Errorf("reopen %s: %w", old.Name, err)
		}
	}
	if err := a.act.Open(ctx, old.Addr); err != nil {
		return fmt.Errorf("reopen %s: %w", old.Name, err)
	}
	if _, err := a.propose(ctx, &raftfsm.Command{Type: raftfsm.TypeAbort, Epoch: cl.Epoch, Reason: "switchover failed: " + why,
		Opened: &raftfsm.OpenedAt{ServerID: op.ServerID, GTID: op.BinlogPos}}); err != nil {
		return fmt.Errorf("commit rollback: %w", err)
	}
	return nil
}

// recoverSwitch finishes a switchover a previous leader left in `switching`:
// forward if the target was opened, back otherwise.
func (a *Arbiter) recoverSwitch(ctx context.Context, cl *raftfsm.Cluster) error {
	snap := a.snaps.Snapshot()
	target, ok1 := memberByName(snap, cl.Primary)
	old, ok2 := memberByName(snap, cl.Previous)
	if !ok1 || !ok2 {
		return fmt.Errorf("recover switchover: unknown members %s/%s", cl.Primary, cl.Previous)
	}
	p, err := a.act.Position(ctx, target.Addr)
	if err != nil {
		// Whether it opened is unknown: reopening the old primary now
		// could make two writers. Next round, or a failover if it died.
		return fmt.Errorf("recover switchover: cannot tell whether %s was opened: %w", target.Name, err)
	}
	if !p.ReadOnly {
		a.repointOthers(ctx, cl, snap, target, p.BinlogPos, "")
		return a.commitOpen(ctx, cl, "switchover finished by a new leader", p)
	}
	return a.rollback(ctx, cl, old, target, "the leader running it was lost before the target opened")
}
