package arbiter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/raftfsm"
	"github.com/dbrouter/dbrouter/topology"
	"github.com/dbrouter/dbrouter/topology/mariadb"
)

// holder is a member that may hold transactions it received from the lost
// primary, and what it is known to hold.
type holder struct {
	name     string
	raw      string // its received position, as read
	received mariadb.GTIDSet
	// open: it can be the candidate (the leader reads it directly, and it
	// is not in maintenance, fenced or excluded); why says why not.
	open bool
	why  string
	// via: the arbiter whose observation it is, when the leader cannot
	// reach it (it could be the candidate under that arbiter's leadership).
	via string
}

// received is everything a member holds: what its relay log received and
// what its binlog has applied (one can lack a domain the other has).
func received(p mariadb.ServerState) (string, mariadb.GTIDSet, error) {
	io, err1 := mariadb.ParseGTIDSet(mariadb.MariaDB, p.IOPos)
	bin, err2 := mariadb.ParseGTIDSet(mariadb.MariaDB, p.BinlogPos)
	if err := errors.Join(err1, err2); err != nil {
		return "", mariadb.GTIDSet{}, err
	}
	raw := p.IOPos
	if raw == "" {
		raw = p.BinlogPos
	}
	return raw, io.Union(bin), nil
}

// candidate picks the member to open after lost failed: one the leader can
// act on whose received position contains what every other member holds.
// Semi-sync promises only that *some* replica received each acknowledged
// commit, so every replica counts as a holder of data: one in maintenance or
// fenced, one only another arbiter reaches, one that failed as a candidate
// (exclude). Only a member marked errant does not (what it has, no primary
// had). When no member contains all, there is no safe candidate: "" and why.
//
// A member no arbiter reaches counts as a holder of unknown data when it was
// connected to lost the last time lost answered (it may have acknowledged
// the last commits); that refuses the failover. One that was not connected
// could not have received anything since it was last seen.
//
// handTo names an arbiter under whose leadership there would be a safe
// candidate: one only the leader cannot reach.
func (a *Arbiter) candidate(ctx context.Context, cl *raftfsm.Cluster, snap *topology.Snapshot, lost string, exclude ...string) (cand, reason, handTo string) {
	lostM, _ := memberByName(snap, lost)
	var obs []Observation
	var hs []holder
	for _, m := range snap.Members {
		ms := cl.Members[m.Name]
		if m.Name == lost || ms.Errant != "" {
			continue
		}
		h := holder{name: m.Name}
		var p mariadb.ServerState
		var err error = errors.New("unreachable")
		if m.Reachable {
			p, err = a.act.Position(ctx, m.Addr)
		}
		if err == nil {
			h.raw, h.received, err = received(p)
			if err != nil {
				return "", fmt.Sprintf("%s: unreadable GTID position: %v", m.Name, err), ""
			}
		} else {
			if obs == nil {
				obs = a.obs.Observations(ctx, a.cfg.Cluster)
			}
			o, via, ok := observed(obs, m.Name)
			if !ok {
				if !connectedTo(lostM, m) || lostM.Replicas == nil && a.downThroughout(obs, m.Name) {
					continue
				}
				return "", fmt.Sprintf("%s is unreachable from every arbiter and may have been replicating from %s when it last answered: it may hold acknowledged writes no other member has", m.Name, lost), ""
			}
			h.raw = o.Received
			if h.received, err = mariadb.ParseGTIDSet(mariadb.MariaDB, o.Received); err != nil {
				return "", fmt.Sprintf("%s (seen by %s): unreadable GTID position: %v", m.Name, via, err), ""
			}
			h.why = "the leader cannot reach it (seen by arbiter " + via + ")"
			if !ms.Maintenance && !ms.Fenced && !contains(exclude, m.Name) {
				h.via = via
			}
		}
		switch {
		case h.why != "":
		case ms.Maintenance:
			h.why = "in maintenance"
		case ms.Fenced:
			h.why = "fenced"
		case contains(exclude, m.Name):
			h.why = "failed as the candidate"
		default:
			h.open = true
		}
		hs = append(hs, h)
	}
	if len(hs) == 0 {
		return "", "no other member", ""
	}
	if ce := a.log.Check(zap.InfoLevel, "failover candidates"); ce != nil {
		var fs []string
		for _, h := range hs {
			fs = append(fs, fmt.Sprintf("%s received %s open=%v %s", h.name, orNone(h.raw), h.open, h.why))
		}
		ce.Write(zap.String("lost", lost), zap.Strings("members", fs))
	}
	var opens []string
	for _, c := range hs {
		if !c.open {
			continue
		}
		opens = append(opens, c.name+" has "+orNone(c.raw))
		if !slices.ContainsFunc(hs, func(o holder) bool { return !c.received.Contains(o.received) }) {
			return c.name, "", ""
		}
	}
	for _, c := range hs {
		if c.via != "" && !slices.ContainsFunc(hs, func(o holder) bool { return !c.received.Contains(o.received) }) {
			handTo = c.via
		}
	}
	// No member that can be opened has everything: say who has more.
	for _, h := range hs {
		if slices.ContainsFunc(hs, func(c holder) bool { return c.open && c.received.Contains(h.received) }) {
			continue
		}
		if len(opens) == 0 {
			break
		}
		return "", fmt.Sprintf("%s received %s, which no member that can be opened has (%s); %s: %s", h.name, orNone(h.raw), strings.Join(opens, ", "), h.name, orNone(h.why)), handTo
	}
	var why []string
	for _, h := range hs {
		if !h.open {
			why = append(why, h.name+" "+h.why)
		}
	}
	if len(opens) == 0 {
		return "", "no member can be opened: " + strings.Join(why, "; "), handTo
	}
	return "", "members have diverged: none has everything the others received (" + strings.Join(opens, ", ") + ")", handTo
}

func orNone(s string) string {
	if s == "" {
		return "nothing"
	}
	return s
}

// observed finds a member in another arbiter's observation.
func observed(obs []Observation, name string) (ObservedMember, string, bool) {
	for _, o := range obs {
		if m, ok := o.Members[name]; ok {
			return m, o.Arbiter, true
		}
	}
	return ObservedMember{}, "", false
}

// downThroughout reports whether no arbiter has reached member since before
// the current primary opened (as this arbiter saw it open): it was down for
// the whole of that primary's time, so it cannot have received any of its
// writes.
func (a *Arbiter) downThroughout(obs []Observation, member string) bool {
	since, _, ok, _ := a.seen.since(time.Now())
	if !ok || len(obs) == 0 {
		return false
	}
	least := time.Duration(-1)
	for _, o := range obs {
		f, reported := o.Failing[member]
		if !reported || f <= 0 {
			return false
		}
		if least < 0 || f < least {
			least = f
		}
	}
	return least > since
}

// connectedTo reports whether m may have been a replica of src when src last
// answered a probe; unknown counts as yes.
func connectedTo(src, m topology.Member) bool {
	if src.Replicas == nil || m.ServerID == 0 {
		return true
	}
	return slices.Contains(src.Replicas, m.ServerID)
}

// failover replaces lost (the primary, or during a switchover the primary
// being switched away from) by the safe candidate, or records why not.
func (a *Arbiter) failover(ctx context.Context, cl *raftfsm.Cluster, snap *topology.Snapshot, lost, why string) error {
	if _, since, _, ok := a.seen.since(time.Now()); ok && since < a.cfg.Cooldown {
		a.note(ctx, lost, fmt.Sprintf("failover refused: cooldown (%s since this arbiter saw the last failover, cooldown %s)", since.Round(time.Second), a.cfg.Cooldown))
		return nil
	}
	cand, reason, handTo := a.candidate(ctx, cl, snap, lost)
	if cand == "" && handTo != "" {
		if err := a.still(ctx); err != nil {
			return err
		}
		// Recorded first: once handed over, this node can no longer write
		// the history.
		a.note(ctx, lost, "failover handed to arbiter "+handTo+", which reaches the member this leader cannot: "+reason)
		if err := a.group.TransferLeadership(ctx, handTo); err == nil {
			return nil
		}
	}
	if cand == "" {
		a.note(ctx, lost, "failover refused: "+reason)
		return nil
	}
	a.log.Warn("failing over", zap.String("from", lost), zap.String("to", cand), zap.String("reason", why))
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
			if a.still(fctx) != nil {
				return
			}
			if err := a.act.Fence(fctx, old.Addr); err == nil {
				a.log.Info("fenced old primary", zap.String("member", old.Name))
			}
		}()
	}
	if err := a.step(ctx, "stop_replicas"); err != nil {
		return err
	}
	// Stop the other replicas now, in parallel with the candidate's
	// catch-up: they are repointed next, and stopping is what is slow when
	// the old primary hangs. Their relay logs stay (see StartApplier), so
	// one of them can still be the candidate if this one fails.
	var stopping sync.WaitGroup
	for _, m := range snap.Members {
		if m.Name == cl.Previous || m.Name == cand.Name || !m.Reachable {
			continue
		}
		stopping.Add(1)
		go func() {
			defer stopping.Done()
			if err := a.act.StopReplication(ctx, m.Addr, false); err != nil {
				a.log.Warn("stop replication", zap.String("member", m.Name), zap.Error(err))
			}
		}()
	}
	defer stopping.Wait()
	if err := a.step(ctx, "catchup"); err != nil {
		return err
	}
	opened, err := a.prepareCandidate(ctx, cand.Addr)
	if errors.Is(err, ErrDeposed) {
		return err
	}
	// The others receive nothing more once their IO threads stopped: only
	// now is "the candidate has what every replica received" final (a
	// primary that woke from a hang may have sent more meanwhile).
	stopping.Wait()
	if err == nil {
		err = a.containsHolders(ctx, cl, snap, cand.Name, opened)
	}
	if err != nil {
		// Out of this leader's reach only: another arbiter finishes it.
		if now, ok := memberByName(a.snaps.Snapshot(), cand.Name); ok && !now.Reachable && a.handOver(ctx, cand.Name, "to finish the failover to it") {
			return nil
		}
		// Pick another candidate at a new epoch: the failed one can no
		// longer be it, but it still counts as a holder of data.
		next, reason, _ := a.candidate(ctx, cl, snap, cl.Previous, cand.Name)
		if next == "" {
			a.note(ctx, cand.Name, fmt.Sprintf("failover candidate %s failed (%v) and no other is safe: %s", cand.Name, err, reason))
			return fmt.Errorf("failover to %s: %w", cand.Name, err)
		}
		nc, idx, perr := a.proposeIndex(ctx, &raftfsm.Command{Type: raftfsm.TypeBegin, Epoch: cl.Epoch, Primary: next, Phase: raftfsm.PhaseFailingOver,
			Reason: fmt.Sprintf("candidate %s failed: %v", cand.Name, err)})
		if perr != nil {
			return fmt.Errorf("re-begin failover to %s: %w", next, perr)
		}
		return a.finishFailover(ctx, nc, time.Now(), idx)
	}
	if err := a.step(ctx, "lease_wait"); err != nil {
		return err
	}
	if err := a.waitLease(ctx, committed, index); err != nil {
		return err
	}
	if err := a.step(ctx, "open"); err != nil {
		return err
	}
	if err := a.act.Open(ctx, cand.Addr); err != nil {
		return fmt.Errorf("open %s: %w", cand.Name, err)
	}
	stopping.Wait()
	a.repointOthers(ctx, cl, snap, cand, opened.BinlogPos, cl.Previous)
	if err := a.step(ctx, "commit"); err != nil {
		return err
	}
	// The old primary is marked fenced before `serving` commits, so no
	// state ever shows it as an ordinary member again until it rejoins.
	if ms, ok := cl.Members[cl.Previous]; ok && !ms.Fenced {
		t := true
		if _, err := a.propose(ctx, &raftfsm.Command{Type: raftfsm.TypeMember, Epoch: cl.Epoch, Member: cl.Previous, Fenced: &t,
			Reason: "failed primary: fenced until it rejoins clean"}); err != nil {
			return fmt.Errorf("mark %s fenced: %w", cl.Previous, err)
		}
	}
	if _, err := a.propose(ctx, &raftfsm.Command{Type: raftfsm.TypeOpen, Epoch: cl.Epoch, Reason: cand.Name + " promoted",
		Opened: &raftfsm.OpenedAt{ServerID: opened.ServerID, GTID: opened.BinlogPos}}); err != nil {
		return fmt.Errorf("commit failover to %s: %w", cand.Name, err)
	}
	a.log.Warn("failover done", zap.String("primary", cand.Name), zap.Uint64("epoch", cl.Epoch))
	return nil
}

// containsHolders checks, afresh, that the prepared candidate's position
// contains what every reachable replica (but an errant one) received.
func (a *Arbiter) containsHolders(ctx context.Context, cl *raftfsm.Cluster, snap *topology.Snapshot, cand string, opened mariadb.ServerState) error {
	have, err := mariadb.ParseGTIDSet(mariadb.MariaDB, opened.BinlogPos)
	if err != nil {
		return err
	}
	var more []string
	for _, m := range snap.Members {
		if m.Name == cand || m.Name == cl.Previous || !m.Reachable || cl.Members[m.Name].Errant != "" {
			continue
		}
		p, err := a.act.Position(ctx, m.Addr)
		if err != nil {
			continue // gone: candidate() judged it already
		}
		raw, recv, err := received(p)
		if err != nil {
			return err
		}
		if !have.Contains(recv) {
			more = append(more, m.Name+" received "+raw)
		}
	}
	if len(more) > 0 {
		return fmt.Errorf("%s opened at %s, but %s", cand, opened.BinlogPos, strings.Join(more, ", "))
	}
	return nil
}

// prepareCandidate applies everything the candidate received and detaches
// it; it stays read-only. It returns the candidate's position then: where
// its history as primary starts.
func (a *Arbiter) prepareCandidate(ctx context.Context, addr string) (mariadb.ServerState, error) {
	p, err := a.act.Position(ctx, addr)
	if err != nil {
		return p, err
	}
	if !p.ReadOnly && !p.Replicating {
		return p, nil // opened already by a previous leader
	}
	if err := a.still(ctx); err != nil {
		return p, err
	}
	// The applier must run, even if someone stopped it, and before the IO
	// thread stops (StartApplier).
	if p.Replicating && !p.SQLRunning {
		if err := a.act.StartApplier(ctx, addr); err != nil {
			return p, err
		}
	}
	// Its IO thread stops alongside the catch-up: that is slow on a replica
	// of a hung primary (see StopReplication).
	stopped := make(chan error, 1)
	go func() { stopped <- a.act.StopReplication(ctx, addr, true) }()
	if err := a.act.WaitApplied(ctx, addr, p.IOPos, a.cfg.CatchupTimeout); err != nil {
		<-stopped
		return p, err
	}
	if err := <-stopped; err != nil {
		return p, err
	}
	q, err := a.act.Position(ctx, addr)
	if err != nil {
		return q, err
	}
	if q.IOPos != p.IOPos {
		// It received more before its IO thread stopped: apply that too.
		if err := a.act.WaitApplied(ctx, addr, q.IOPos, a.cfg.CatchupTimeout); err != nil {
			return q, err
		}
	}
	if err := a.still(ctx); err != nil {
		return q, err
	}
	if err := a.act.Detach(ctx, addr); err != nil {
		return q, err
	}
	return a.act.Position(ctx, addr)
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
// replica of the new primary, whose GTID position is primPos. Failures are
// logged: rejoin retries them.
func (a *Arbiter) repointOthers(ctx context.Context, cl *raftfsm.Cluster, snap *topology.Snapshot, prim topology.Member, primPos string, skip string) {
	// In parallel: STOP SLAVE on a replica whose IO thread is stuck
	// connecting to a hung primary takes seconds.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var held []string
	for _, m := range snap.Members {
		// An errant member is never repointed: its binlog is outside the
		// primary's history.
		if m.Name == prim.Name || m.Name == skip || !m.Reachable || cl.Members[m.Name].Errant != "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.repoint(ctx, cl, m, prim, primPos); err != nil {
				a.log.Warn("repoint", zap.String("member", m.Name), zap.Error(err))
				if errors.Is(err, errUniqueRelayLog) {
					mu.Lock()
					held = append(held, err.Error())
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	for _, h := range held {
		a.record(ctx, prim.Name, h)
	}
}

// relayLogSafe reports whether resetting p's relay log loses nothing: what
// it received but has not applied must be in the history of its new source
// (position sourcePos, openings chain), judged per domain and server id —
// a sequence number the source has passed may be another server's
// transaction.
func relayLogSafe(p mariadb.ServerState, sourcePos string, chain []mariadb.Opening) error {
	io, err1 := mariadb.ParsePosition(p.IOPos)
	bin, err2 := mariadb.ParsePosition(p.BinlogPos)
	cur, err3 := mariadb.ParsePosition(sourcePos)
	if err := errors.Join(err1, err2, err3); err != nil {
		return err
	}
	var lost []mariadb.Range
	for d, g := range io {
		if b, ok := bin[d]; ok && b.Seq >= g.Seq {
			continue // applied: the binlog is judged on its own
		}
		lost = append(lost, mariadb.Errant(mariadb.Position{d: g}, nil, chain, cur)...)
	}
	if len(lost) > 0 {
		return fmt.Errorf("%w: it received %s and has not applied %s", errUniqueRelayLog, p.IOPos, mariadb.FormatRanges(lost))
	}
	return nil
}

// errUniqueRelayLog: a member's relay log holds transactions its new source
// lacks; resetting it would delete them.
var errUniqueRelayLog = errors.New("relay log holds transactions the new source lacks: not reset")

// repoint makes m a replica of prim (GTID position primPos), unless m's
// relay log holds transactions prim does not have: RESET SLAVE ALL would
// delete them, and they may be acknowledged writes.
func (a *Arbiter) repoint(ctx context.Context, cl *raftfsm.Cluster, m, prim topology.Member, primPos string) error {
	p, err := a.act.Position(ctx, m.Addr)
	if err != nil {
		return err
	}
	if err := relayLogSafe(p, primPos, openings(cl)); err != nil {
		return fmt.Errorf("%s: %w (%s has %s)", m.Name, err, prim.Name, primPos)
	}
	if err := a.step(ctx, "repoint "+m.Name); err != nil {
		return err
	}
	return a.act.Repoint(ctx, m.Addr, prim.Addr)
}
