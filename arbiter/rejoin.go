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

// rejoin looks after the members that are not the primary, every round
// while the cluster serves: a writable one is fenced at once (a second
// writer is the failure everything else here prevents); one that does not
// replicate properly from the primary is examined afresh and either
// repointed, left for an operator with the reason recorded, or fenced as
// errant.
//
// The monitor's snapshot only says which members to look at: it may be a
// round old (a probe of a hung member waits for its timeout), so nothing
// is done to a member without a fresh reading of that member.
func (a *Arbiter) rejoin(ctx context.Context, cl *raftfsm.Cluster, snap *topology.Snapshot) error {
	prim, ok := memberByName(snap, cl.Primary)
	// Nothing is judged against a primary that misses probes: it may be
	// hanging, and a read of it would hold this round (and the failover
	// decision of the next) for a whole connect timeout.
	if !ok || !prim.Reachable || prim.FailingFor > 0 {
		return nil
	}
	var primPos *mariadb.ServerState
	primary := func() (mariadb.ServerState, error) {
		if primPos == nil {
			pctx, cancel := context.WithTimeout(ctx, max(a.cfg.Interval*4, time.Second))
			defer cancel()
			p, err := a.act.Position(pctx, prim.Addr)
			if err != nil {
				return p, fmt.Errorf("read primary %s: %w", prim.Name, err)
			}
			primPos = &p
		}
		return *primPos, nil
	}
	var errs []error
	fixedOne := false
	for _, m := range snap.Members {
		ms := cl.Members[m.Name]
		if m.Name == cl.Primary || !m.Reachable || ms.Maintenance {
			continue
		}
		if !m.ReadOnly {
			// Confirmed afresh: fencing kills the member's client
			// connections, which on a replica are the proxies' reads.
			if p, err := a.act.Position(ctx, m.Addr); err == nil && !p.ReadOnly {
				if err := a.still(ctx); err != nil {
					return err
				}
				if err := a.act.Fence(ctx, m.Addr); err != nil {
					errs = append(errs, fmt.Errorf("fence second writable member %s: %w", m.Name, err))
					continue
				}
				a.log.Error("fenced a writable member that is not the primary", zap.String("member", m.Name), zap.String("primary", cl.Primary))
			}
		}
		if !ms.Fenced && m.IORunning && m.SQLRunning && m.ReplError == "" && prim.ServerID != 0 && m.SourceServerID == prim.ServerID &&
			!suspectErrant(cl, m, prim) {
			delete(a.noted, m.Name)
			if !fixedOne {
				fixedOne = a.fixHeartbeat(ctx, m, prim)
			}
			continue
		}
		if err := a.examine(ctx, cl, m, prim, primary); err != nil {
			if errors.Is(err, ErrDeposed) {
				return err
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// examine decides about one member from a fresh reading of it and of the
// primary.
func (a *Arbiter) examine(ctx context.Context, cl *raftfsm.Cluster, m, prim topology.Member, primary func() (mariadb.ServerState, error)) error {
	ms := cl.Members[m.Name]
	mp, err := a.act.Position(ctx, m.Addr)
	if err != nil {
		return nil // gone since the snapshot: next round
	}
	pp, err := primary()
	if err != nil {
		return err
	}
	r := mp.Replica
	// Master_Server_Id names the server the IO thread is connected to only
	// while it is connected: after a repoint it still names the previous
	// source until the new one answers.
	connected := mp.Replicating && r.IORunning()
	following := connected && r.SourceServerID == pp.ServerID
	// Configured for the primary's address but not connected (yet): just
	// repointed, unable to reach or log in to it, or stopped by someone.
	// Repointing again fixes none of these.
	configured := mp.Replicating && r.Source() == prim.Addr
	waiting := configured && !connected
	pending := waiting && r.IOState != "No" && r.Errors() == ""
	healthy := following && mp.SQLRunning && r.Errors() == ""
	// Its binlog must be within the primary's history, judged per domain
	// and server id against where each epoch's primary opened: a replica
	// that replicates without a hitch can hold errant transactions too (a
	// write in another GTID domain breaks nothing).
	have, err1 := mariadb.ParsePosition(mp.BinlogPos)
	replicated, err2 := mariadb.ParsePosition(mp.SlavePos)
	cur, err3 := mariadb.ParsePosition(pp.BinlogPos)
	if err := errors.Join(err1, err2, err3); err != nil {
		return fmt.Errorf("judge %s: %w", m.Name, err)
	}
	errant := mariadb.Errant(have, replicated, openings(cl), cur)
	if len(errant) == 0 && (healthy || pending) && !ms.Fenced {
		return nil // the snapshot was older than the member's state
	}
	if len(errant) > 0 {
		e := mariadb.FormatRanges(errant)
		if ms.Fenced && ms.Errant == e {
			return nil // recorded; waits for an operator
		}
		if err := a.still(ctx); err != nil {
			return err
		}
		if err := a.act.Fence(ctx, m.Addr); err != nil {
			a.log.Warn("fence errant member", zap.String("member", m.Name), zap.Error(err))
		}
		// A replica that goes on receiving would go on acknowledging
		// semi-sync commits, while no failover counts it as a holder.
		if mp.Replicating && r.IOState != "No" {
			if err := a.act.StopReplication(ctx, m.Addr, true); err != nil {
				a.log.Warn("stop errant member's replication", zap.String("member", m.Name), zap.Error(err))
			}
		}
		t := true
		_, err := a.propose(ctx, &raftfsm.Command{Type: raftfsm.TypeMember, Epoch: cl.Epoch, Member: m.Name, Fenced: &t, Errant: &e,
			Reason: fmt.Sprintf("%s has transactions %s that are not in primary %s's history: fenced, not rejoined", m.Name, e, cl.Primary)})
		return err
	}
	switch {
	case healthy || pending:
		// Fenced but clean, and already replicating from the primary (an
		// operator repaired it, or it was repointed last round).
		return a.unfence(ctx, cl, m.Name)
	case (following || waiting) && r.Errors() != "":
		a.noteMember(ctx, m.Name, fmt.Sprintf("%s replicates from %s but stopped with an error the arbiters do not repair: %s", m.Name, cl.Primary, r.Errors()))
		return nil
	case following || waiting:
		return nil // its threads were stopped by someone, without error: left as they are
	case configured:
		a.noteMember(ctx, m.Name, fmt.Sprintf("%s is connected to server id %d at %s's address, not to %s (server id %d): not repointed", m.Name, r.SourceServerID, cl.Primary, cl.Primary, pp.ServerID))
		return nil
	}
	if err := relayLogSafe(mp, pp.BinlogPos, openings(cl)); err != nil {
		a.noteMember(ctx, m.Name, fmt.Sprintf("%s not rejoined: %v", m.Name, err))
		return nil
	}
	if err := a.step(ctx, "repoint "+m.Name); err != nil {
		return err
	}
	if err := a.act.Repoint(ctx, m.Addr, prim.Addr); err != nil {
		return fmt.Errorf("rejoin %s: %w", m.Name, err)
	}
	a.log.Info("rejoined", zap.String("member", m.Name), zap.String("primary", cl.Primary))
	return a.unfence(ctx, cl, m.Name)
}

func (a *Arbiter) unfence(ctx context.Context, cl *raftfsm.Cluster, member string) error {
	ms := cl.Members[member]
	if !ms.Fenced && ms.Errant == "" {
		return nil
	}
	f, e := false, ""
	_, err := a.propose(ctx, &raftfsm.Command{Type: raftfsm.TypeMember, Epoch: cl.Epoch, Member: member, Fenced: &f, Errant: &e,
		Reason: fmt.Sprintf("rejoined as a replica of %s (no errant transactions)", cl.Primary)})
	return err
}

// fixHeartbeat shortens a replica's heartbeat period when it is too long to
// tell a quiet primary from a hung one within failure_threshold (MariaDB's
// default is slave_net_timeout/2, 30 s). It reports whether it acted: one
// replica per round, so semi-sync never loses all its acknowledgers at once.
func (a *Arbiter) fixHeartbeat(ctx context.Context, m, prim topology.Member) bool {
	if m.HeartbeatPeriod > 0 && m.HeartbeatPeriod <= a.cfg.FailureThreshold/2 || prim.FailingFor > 0 {
		return false // fine already; or not while the primary may be hanging
	}
	if t, ok := a.hbFixed[m.Name]; ok && time.Since(t) < time.Minute {
		return false // tried lately; a slave_net_timeout this low keeps it long
	}
	if a.still(ctx) != nil {
		return true
	}
	err := a.act.SetHeartbeatPeriod(ctx, m.Addr)
	if errors.Is(err, mariadb.ErrNotNow) {
		return false // next round
	}
	a.hbFixed[m.Name] = time.Now()
	if err != nil {
		a.log.Warn("set heartbeat period", zap.String("member", m.Name), zap.Error(err))
		return true
	}
	a.log.Info("shortened the replica's heartbeat period", zap.String("member", m.Name), zap.Duration("was", m.HeartbeatPeriod))
	return true
}

// suspectErrant is the cheap first look, on the snapshot's positions, for
// errant transactions on a replica that replicates without a hitch; a
// suspect is examined afresh. Its transactions beyond the primary's
// position as last probed, written by the primary itself, are only newer
// than that probe.
func suspectErrant(cl *raftfsm.Cluster, m, prim topology.Member) bool {
	have, err1 := mariadb.ParsePosition(m.GTIDBinlogPos)
	replicated, err2 := mariadb.ParsePosition(m.GTIDSlavePos)
	cur, err3 := mariadb.ParsePosition(prim.GTIDBinlogPos)
	if errors.Join(err1, err2, err3) != nil {
		return true
	}
	for _, r := range mariadb.Errant(have, replicated, openings(cl), cur) {
		if c, ok := cur[r.Domain]; !(ok && r.Server == prim.ServerID && r.From > c.Seq) {
			return true
		}
	}
	return false
}

// openings is the cluster's chain of primary openings in the form the
// MariaDB errant check reads (unparsable entries are skipped: they can only
// make the check less strict about history that old).
func openings(cl *raftfsm.Cluster) []mariadb.Opening {
	out := make([]mariadb.Opening, 0, len(cl.Openings))
	for _, o := range cl.Openings {
		p, err := mariadb.ParsePosition(o.GTID)
		if err != nil {
			continue
		}
		out = append(out, mariadb.Opening{Epoch: o.Epoch, ServerID: o.ServerID, Pos: p})
	}
	return out
}
