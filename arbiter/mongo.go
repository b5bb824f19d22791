package arbiter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/raftfsm"
	"github.com/dbrouter/dbrouter/topology"
	tmongo "github.com/dbrouter/dbrouter/topology/mongo"
)

// MongoActuator runs the steps of a decision on one replica-set member,
// named by its address (topology/mongo's Actions). A replica set elects
// its own primary: the arbiters never make a member writable by
// themselves, they ask one to run for election and the set's vote rules
// decide.
type MongoActuator interface {
	// Hello reads the member's hello afresh.
	Hello(ctx context.Context, addr string) (*tmongo.Detail, error)
	// StepUp asks the member to run for primary now (replSetStepUp).
	StepUp(ctx context.Context, addr string) error
	// Hears reports whether member addr heard from the member at peer
	// within d (its replSetGetStatus).
	Hears(ctx context.Context, addr, peer string, d time.Duration) (bool, error)
	// StepDown makes a primary step down at once (replSetStepDown with
	// force): a deposed primary that has not heard of the new election
	// stops taking writes from clients that bypass the proxies.
	StepDown(ctx context.Context, addr string) error
}

// Mongo makes one replica set's decisions while its node leads. The set
// elects its primary; the arbiters follow it:
//
//   - the primary the set elected (topology/mongo's elector: greatest
//     electionId, then setVersion) is committed as the cluster's epoch, so
//     every proxy writes to the same member and only while it holds its
//     lease; a new primary's epoch commits in phase failing_over (proxies
//     hold writes, acknowledgements of the old epoch stop counting) and
//     opens once no proxy can still be writing under the old one (every
//     proxy confirmed the change, or lease+margin passed);
//   - when a majority of arbiters has lost the primary for
//     failure_threshold and no member still hears from it, the freshest
//     electable secondary is asked to step up, instead of waiting for the
//     set's election timeout;
//   - a switchover (Promote) holds writes, lets the target catch up and
//     asks it to step up.
type Mongo struct {
	*Arbiter
	act MongoActuator

	// sawPrimary is when this node's monitor last showed a primary (its
	// own clock; guarded by Arbiter.mu, Run and Reconcile set it).
	sawPrimary time.Time
	// stepUpAt is when this node last asked a member to step up (mu).
	stepUpAt time.Time
}

// NewMongo returns the arbiter of one replica set.
func NewMongo(cfg Config, g Group, snaps Snapshots, obs Observers, act MongoActuator, log *zap.Logger) *Mongo {
	return &Mongo{Arbiter: New(cfg, g, snaps, obs, nil, log), act: act}
}

// Run reconciles every Interval while ctx lives; it acts only while this
// node leads.
func (m *Mongo) Run(ctx context.Context) {
	m.run(ctx, m.Reconcile, func() {
		m.mu.Lock()
		m.sawPrimary = time.Time{} // a new leader counts afresh
		m.mu.Unlock()
	})
}

// Reconcile makes one round of decisions.
func (m *Mongo) Reconcile(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	ctx, err := m.lead(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	snap := m.snaps.Snapshot()
	elected := snap.PrimaryName()
	switch {
	case m.sawPrimary.IsZero():
		// A leader starts counting from its first look: it never fails
		// over on time it did not watch.
		m.sawPrimary = now
	case elected != "" && snap.Members[snap.Primary].FailingFor > 0:
		// Its probes fail (the monitor marks it unreachable only after
		// a few): it was last seen when it last answered, and once that
		// is failure_threshold ago it counts as lost, as a dead one.
		pm := snap.Members[snap.Primary]
		if seen := now.Add(-pm.FailingFor); seen.After(m.sawPrimary) {
			m.sawPrimary = seen
		}
		if pm.FailingFor >= m.cfg.FailureThreshold {
			elected = ""
		}
	case elected != "":
		m.sawPrimary = now
	}
	cl := m.group.State().Cluster(m.cfg.Cluster)
	switch {
	case cl == nil:
		if elected != "" {
			return m.bootstrapMongo(ctx, snap, elected)
		}
	case cl.Phase == raftfsm.PhaseSwitching:
		// A switchover a leader before this one left: finish it if the
		// target won, roll it back if the old primary still leads.
		return m.recoverMongoSwitch(ctx, cl)
	case elected != "" && (elected != cl.Primary || cl.Phase != raftfsm.PhaseServing):
		return m.follow(ctx, cl, snap, elected, "the set elected "+elected, time.Time{}, 0)
	}
	if elected != "" {
		return nil
	}
	lost := ""
	if cl != nil {
		lost = cl.Primary
	}
	if ok, why := m.primaryLost(ctx, snap, lost, now); ok {
		return m.stepUpFreshest(ctx, cl, snap, why)
	}
	return nil
}

func (m *Mongo) bootstrapMongo(ctx context.Context, snap *topology.Snapshot, primary string) error {
	var names []string
	for _, mm := range snap.Members {
		names = append(names, mm.Name)
	}
	_, err := m.propose(ctx, &raftfsm.Command{Type: raftfsm.TypeBootstrap, Primary: primary, Members: names,
		Reason: "the primary the replica set elected when the cluster was first seen"})
	if errors.Is(err, raftfsm.ErrStaleEpoch) {
		return nil
	}
	return err
}

// elected confirms with a fresh hello that the member at addr is the
// writable primary, and returns what it said.
func (m *Mongo) writable(ctx context.Context, addr string) (*tmongo.Detail, bool) {
	d, err := m.act.Hello(ctx, addr)
	return d, err == nil && d.Writable
}

// follow commits name, which the set elected, as the cluster's primary: a
// new epoch in phase failing_over (proxies hold writes; the old epoch's
// acknowledgements stop counting, since a new election can roll back the
// old primary's w:1 writes), then, once no proxy can still write under the
// old epoch, serving. committed and index, when set, are those of a begin
// already committed for name (a switchover's).
//
// The snapshot may lag the set: before anything is committed, fresh hellos
// must show name writable and the recorded primary not writable under an
// election at least as new, so a monitor that has not yet seen a
// switchover's step-up never undoes it.
func (m *Mongo) follow(ctx context.Context, cl *raftfsm.Cluster, snap *topology.Snapshot, name, why string, committed time.Time, index uint64) error {
	nm, ok := memberByName(snap, name)
	if !ok {
		return nil
	}
	nd, ok := m.writable(ctx, nm.Addr)
	if !ok {
		return nil
	}
	var stale *topology.Member
	if cl.Primary != name {
		// Only a recorded primary that answers this monitor's probes is
		// asked, and only briefly: a hung one (SIGSTOP) would hold the
		// failover for the whole connect timeout. One it does not reach cannot be shown
		// newer than name, whose election the elector already found the
		// newest it has seen.
		if old, ok := memberByName(snap, cl.Primary); ok && old.Reachable && old.FailingFor == 0 {
			qctx, cancel := context.WithTimeout(ctx, quickStep)
			od, ok := m.writable(qctx, old.Addr)
			cancel()
			if ok && !newerElection(nd, od) {
				return nil
			}
			if ok {
				stale = &old
			}
		}
		next, idx, err := m.proposeIndex(ctx, &raftfsm.Command{Type: raftfsm.TypeBegin, Epoch: cl.Epoch, Primary: name,
			Phase: raftfsm.PhaseFailingOver, Reason: why})
		if err != nil {
			return fmt.Errorf("record %s as the primary: %w", name, err)
		}
		m.log.Info("following the set's primary", zap.String("from", cl.Primary), zap.String("to", name), zap.Uint64("epoch", next.Epoch))
		cl, committed, index = next, time.Now(), idx
		if stale != nil {
			// Fence where it can: the old primary still claims, under an
			// older election (cut off from the set, or not yet told).
			// Proxies no longer write to it; this stops other clients.
			if err := m.step(ctx, "fence"); err != nil {
				return err
			}
			if err := m.act.StepDown(ctx, stale.Addr); err != nil {
				m.log.Warn("step down the deposed primary", zap.String("member", stale.Name), zap.Error(err))
			}
		}
	}
	if committed.IsZero() {
		// A change a leader before this one began: its commit time is
		// another machine's, so the whole lease is waited from now.
		committed = time.Now()
	}
	if err := m.step(ctx, "lease_wait"); err != nil {
		return err
	}
	if err := m.waitLease(ctx, committed, index); err != nil {
		return err
	}
	if err := m.step(ctx, "open"); err != nil {
		return err
	}
	if _, ok := m.writable(ctx, nm.Addr); !ok {
		// Deposed while the leases ran out: the next round follows
		// whoever the set elected instead.
		return fmt.Errorf("%s stopped being primary before its epoch %d opened", name, cl.Epoch)
	}
	if _, err := m.propose(ctx, &raftfsm.Command{Type: raftfsm.TypeOpen, Epoch: cl.Epoch, Reason: why}); err != nil {
		return fmt.Errorf("open epoch %d on %s: %w", cl.Epoch, name, err)
	}
	m.log.Info("primary serving", zap.String("member", name), zap.Uint64("epoch", cl.Epoch))
	return nil
}

// newerElection reports whether a's election (electionId, then
// setVersion) is at least as new as b's.
func newerElection(a, b *tmongo.Detail) bool {
	return tmongo.CompareElection(a, b) >= 0
}

// primaryLost applies the failure rule: this leader has seen no primary
// for FailureThreshold, a majority of arbiters sees none now, and, when a
// recorded primary went unreachable, a majority has failed to reach it for
// FailureThreshold and no member any arbiter reaches still hears from it
// (a link cut between the arbiters and the primary is not a failure of the
// set: a step-up would depose a primary the set still follows).
func (m *Mongo) primaryLost(ctx context.Context, snap *topology.Snapshot, lost string, now time.Time) (bool, string) {
	if now.Sub(m.sawPrimary) < m.cfg.FailureThreshold {
		return false, ""
	}
	obs := m.obs.Observations(ctx, m.cfg.Cluster)
	voters := m.cfg.Arbiters
	if m.cfg.Voters != nil {
		voters = max(m.cfg.Voters(), 1)
	}
	none, down := 0, 0
	for _, o := range obs {
		if o.Primary == "" {
			none++
		}
		if lost != "" && o.Failing[lost] >= m.cfg.FailureThreshold {
			down++
		}
	}
	if none < voters/2+1 {
		// Most arbiters see a primary this leader does not: only the
		// leader acts, so one that sees the set's primary takes over
		// (it can follow the set's elections and run switchovers). Not
		// at the first disagreement: after a crash the others' probes
		// fail up to a probe later than this leader's.
		if now.Sub(m.sawPrimary) < 2*m.cfg.FailureThreshold {
			return false, ""
		}
		for _, o := range obs {
			if o.Primary != "" && m.handOver(ctx, o.Primary, "to follow the set's primary "+o.Primary) {
				break
			}
		}
		return false, ""
	}
	lm, known := memberByName(snap, lost)
	if !known || lm.Reachable && lm.FailingFor == 0 {
		// No primary recorded, or the recorded one answers and is no
		// longer primary: the set has none.
		return true, fmt.Sprintf("no primary for at least %s, seen by %d/%d arbiters", m.cfg.FailureThreshold, none, voters)
	}
	if down < voters/2+1 {
		return false, ""
	}
	for _, mm := range snap.Members {
		if mm.Name == lost || !mm.Reachable || mm.Role != topology.RoleReplica {
			continue
		}
		qctx, cancel := context.WithTimeout(ctx, quickStep)
		hears, err := m.act.Hears(qctx, mm.Addr, lm.Addr, m.cfg.FailureThreshold)
		cancel()
		if err == nil && hears {
			m.note(ctx, lost, fmt.Sprintf("%s unreachable from %d/%d arbiters but %s still hears from it: no step-up", lost, down, voters, mm.Name))
			return false, ""
		}
	}
	return true, fmt.Sprintf("%s unreachable from %d/%d arbiters for at least %s and no member hears from it", lost, down, voters, m.cfg.FailureThreshold)
}

// candidates lists the members that may be asked to step up, freshest
// first (by a fresh hello): reachable data-bearing secondaries of the set
// that are neither hidden, nor priority 0 (passives), nor in maintenance
// or fenced.
func (m *Mongo) candidates(ctx context.Context, cl *raftfsm.Cluster, snap *topology.Snapshot) []candidate {
	var out []candidate
	for _, mm := range snap.Members {
		if !mm.Reachable || mm.Role != topology.RoleReplica {
			continue
		}
		if cl != nil {
			if ms := cl.Members[mm.Name]; ms.Maintenance || ms.Fenced {
				continue
			}
		}
		d, err := m.act.Hello(ctx, mm.Addr)
		if err != nil || !d.Secondary || d.Arbiter || d.Hidden || (d.Me != "" && slices.Contains(d.Passives, d.Me)) {
			continue
		}
		out = append(out, candidate{mm, d})
	}
	slices.SortStableFunc(out, func(a, b candidate) int {
		switch {
		case tmongo.Newer(a.d.LastWrite, b.d.LastWrite):
			return -1
		case tmongo.Newer(b.d.LastWrite, a.d.LastWrite):
			return 1
		}
		return 0
	})
	return out
}

type candidate struct {
	m topology.Member
	d *tmongo.Detail
}

// quickStep bounds a question to a member that decides nothing by itself
// (is the recorded primary still writable, does a secondary still hear
// from the primary): a hung member must not hold a failover for the
// actuator's whole timeout.
const quickStep = time.Second

// stepUpRetry spaces step-up attempts: an election takes a few round trips,
// and a refused one must not be repeated every reconcile round.
const stepUpRetry = time.Second

// stepUpFreshest asks the freshest electable secondary to run for primary
// (the next freshest when it is refused), then follows the winner.
func (m *Mongo) stepUpFreshest(ctx context.Context, cl *raftfsm.Cluster, snap *topology.Snapshot, why string) error {
	if time.Since(m.stepUpAt) < stepUpRetry {
		return nil
	}
	cands := m.candidates(ctx, cl, snap)
	if len(cands) == 0 {
		m.note(ctx, "", why+": no electable secondary reachable to ask to step up")
		return nil
	}
	var errs []error
	for _, c := range cands {
		if err := m.step(ctx, "step_up"); err != nil {
			return err
		}
		m.stepUpAt = time.Now()
		if err := m.act.StepUp(ctx, c.m.Addr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.m.Name, err))
			continue
		}
		m.log.Info("asked a secondary to step up", zap.String("member", c.m.Name), zap.String("why", why))
		if !m.waitWritable(ctx, c.m.Addr, 5*time.Second) {
			return fmt.Errorf("%s won its election but is not writable yet", c.m.Name)
		}
		if cl == nil {
			return m.bootstrapMongo(ctx, snap, c.m.Name)
		}
		return m.follow(ctx, cl, snap, c.m.Name, why+": "+c.m.Name+" asked to step up and elected", time.Time{}, 0)
	}
	return fmt.Errorf("%s: no secondary could step up: %w", why, errors.Join(errs...))
}

// waitWritable polls the member's hello until it is the writable primary.
func (m *Mongo) waitWritable(ctx context.Context, addr string, d time.Duration) bool {
	end := time.Now().Add(d)
	for {
		if _, ok := m.writable(ctx, addr); ok {
			return true
		}
		if time.Now().After(end) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Promote runs a planned switchover to target within timeout: writes are
// held from the moment `switching` commits; once every proxy holds them
// (or its lease ran out) and the primary's writes stopped moving, the
// target catches up with the primary's last optime and is asked to step
// up; when it is the writable primary its epoch opens and proxies release
// the held writes there. Refusals wrap ErrRefused; a failure before the
// step-up rolls back to the old primary at a new epoch.
func (m *Mongo) Promote(ctx context.Context, target string, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m.mu.Lock()
	defer m.mu.Unlock()
	ctx, err := m.lead(ctx)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	cl := m.group.State().Cluster(m.cfg.Cluster)
	if cl == nil {
		return fmt.Errorf("%w: cluster %s has no primary recorded yet", ErrNotReady, m.cfg.Cluster)
	}
	snap := m.snaps.Snapshot()
	tm, old, err := m.checkMongoPromote(ctx, cl, snap, target)
	if err != nil {
		return err
	}
	next, idx, err := m.proposeIndex(ctx, &raftfsm.Command{Type: raftfsm.TypeBegin, Epoch: cl.Epoch, Primary: target,
		Phase: raftfsm.PhaseSwitching, Reason: "switchover requested by operator"})
	if err != nil {
		return fmt.Errorf("begin switchover to %s: %w", target, err)
	}
	committed := time.Now()
	m.log.Info("switchover begun", zap.String("from", old.Name), zap.String("to", target), zap.Uint64("epoch", next.Epoch))
	stepped, err := m.switchMongo(ctx, old, tm, committed, idx)
	if err == nil {
		return m.follow(ctx, next, snap, target, "switchover requested by operator", committed, idx)
	}
	if errors.Is(err, ErrDeposed) || stepped {
		// Stepped: the set may have elected the target after all; the
		// next round follows whoever it elected.
		return fmt.Errorf("switchover to %s interrupted: %w", target, err)
	}
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer rcancel()
	if _, rerr := m.propose(rctx, &raftfsm.Command{Type: raftfsm.TypeAbort, Epoch: next.Epoch,
		Reason: "switchover to " + target + " failed: " + err.Error()}); rerr != nil {
		return fmt.Errorf("switchover to %s failed (%v) and rollback failed: %w", target, err, rerr)
	}
	return fmt.Errorf("switchover to %s failed and was rolled back to %s: %w", target, old.Name, err)
}

func (m *Mongo) checkMongoPromote(ctx context.Context, cl *raftfsm.Cluster, snap *topology.Snapshot, target string) (tm, old topology.Member, err error) {
	ms, known := cl.Members[target]
	tm, seen := memberByName(snap, target)
	since, _, changed, _ := m.seen.since(time.Now())
	switch {
	case !known || !seen:
		return tm, old, fmt.Errorf("%w: %s is not a member of cluster %s", ErrRefused, target, m.cfg.Cluster)
	case cl.Phase != raftfsm.PhaseServing:
		return tm, old, fmt.Errorf("%w: cluster %s is %s", ErrRefused, m.cfg.Cluster, cl.Phase)
	case target == cl.Primary:
		return tm, old, fmt.Errorf("%w: %s is already the primary", ErrRefused, target)
	case cl.Epoch > 1 && changed && since < m.cfg.Cooldown:
		return tm, old, fmt.Errorf("%w: cooldown: this arbiter saw the last change %s ago (cooldown %s)", ErrRefused, since.Round(time.Second), m.cfg.Cooldown)
	case ms.Maintenance || ms.Fenced:
		return tm, old, fmt.Errorf("%w: %s is in maintenance or fenced", ErrRefused, target)
	case !tm.Reachable:
		return tm, old, fmt.Errorf("%w: %s is unreachable", ErrRefused, target)
	}
	d, err := m.act.Hello(ctx, tm.Addr)
	if err != nil {
		return tm, old, fmt.Errorf("%w: %s is unreachable: %v", ErrRefused, target, err)
	}
	sd, _ := tmongo.DetailOf(tm)
	switch {
	case d.Arbiter:
		return tm, old, fmt.Errorf("%w: %s is an arbiter of the set (it holds no data and cannot be primary)", ErrRefused, target)
	case sd != nil && sd.Note != "":
		return tm, old, fmt.Errorf("%w: %s is not in the replica set: %s", ErrRefused, target, sd.Note)
	case !d.Secondary:
		return tm, old, fmt.Errorf("%w: %s is not a secondary of the set (hello: not secondary)", ErrRefused, target)
	case d.Hidden || (d.Me != "" && slices.Contains(d.Passives, d.Me)):
		return tm, old, fmt.Errorf("%w: %s is hidden or has priority 0: the set would never elect it", ErrRefused, target)
	}
	old, ok := memberByName(snap, cl.Primary)
	if !ok || !old.Reachable {
		return tm, old, fmt.Errorf("%w: the primary %s is unreachable; a failover, not a switchover, handles that", ErrRefused, cl.Primary)
	}
	od, err := m.act.Hello(ctx, old.Addr)
	if err != nil || !od.Writable {
		return tm, old, fmt.Errorf("%w: the recorded primary %s is not the writable primary now (%v); wait for the arbiters to follow the set", ErrRefused, cl.Primary, err)
	}
	if lag := lagBehind(od.LastWrite, d.LastWrite); lag > m.cfg.MaxPromoteLag {
		return tm, old, fmt.Errorf("%w: %s lags %s behind the primary, more than max_promote_lag %s", ErrRefused, target, lag, m.cfg.MaxPromoteLag)
	}
	return tm, old, nil
}

// lagBehind is how far b's last write is behind a's by their write dates;
// unknown (no lastWrite) counts as infinitely far.
func lagBehind(a, b *tmongo.LastWrite) time.Duration {
	if a == nil || b == nil {
		return time.Duration(1<<63 - 1)
	}
	if !tmongo.Newer(a, b) {
		return 0
	}
	return max(a.Date.Sub(b.Date), 0)
}

// switchMongo runs the switchover's steps after `switching` committed.
// stepped tells whether the target was asked to step up (past that point
// nothing is rolled back: the set may have elected it).
func (m *Mongo) switchMongo(ctx context.Context, old, target topology.Member, committed time.Time, index uint64) (stepped bool, err error) {
	// Proxies hold new writes once they apply `switching`; one that has
	// not yet could still send writes to the old primary after the
	// target is elected.
	if err := m.step(ctx, "lease_wait"); err != nil {
		return false, err
	}
	if err := m.waitLease(ctx, committed, index); err != nil {
		return false, err
	}
	// Drain: writes already sent finish on the old primary; its last
	// optime stops moving (bounded by DrainTimeout).
	if err := m.step(ctx, "drain"); err != nil {
		return false, err
	}
	var last *tmongo.LastWrite
	drainEnd := time.Now().Add(m.cfg.DrainTimeout)
	for stable := 0; stable < 2; {
		od, err := m.act.Hello(ctx, old.Addr)
		if err != nil {
			return false, fmt.Errorf("drain %s: %w", old.Name, err)
		}
		if !od.Writable {
			return false, fmt.Errorf("%s stopped being primary during the switchover", old.Name)
		}
		if last != nil && !tmongo.Newer(od.LastWrite, last) {
			stable++
		} else {
			stable = 0
		}
		last = od.LastWrite
		if time.Now().After(drainEnd) {
			break
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return false, err
		}
	}
	// Catch-up: the target has the old primary's last write.
	if err := m.step(ctx, "catch_up"); err != nil {
		return false, err
	}
	// A write already sent can still land on the old primary after the
	// drain saw its last write hold still (a loaded member answers late):
	// once the target has caught up, the old primary's last write is read
	// again, and the catch-up goes on until the target has that one too.
	// A target behind the old primary would lose its election by the
	// set's vote rules, and the failed election can depose the old primary
	// with nobody elected until the set's own election timeout.
	end := time.Now().Add(m.cfg.CatchupTimeout)
	for {
		td, err := m.act.Hello(ctx, target.Addr)
		if err == nil && last != nil && !tmongo.Newer(last, td.LastWrite) {
			od, err := m.act.Hello(ctx, old.Addr)
			if err != nil {
				return false, fmt.Errorf("catch-up: read %s: %w", old.Name, err)
			}
			if !od.Writable {
				return false, fmt.Errorf("%s stopped being primary during the switchover", old.Name)
			}
			if !tmongo.Newer(od.LastWrite, last) {
				break
			}
			last = od.LastWrite // and wait again, within the same bound
		}
		if time.Now().After(end) {
			return false, fmt.Errorf("%s did not catch up with %s's last write within %s", target.Name, old.Name, m.cfg.CatchupTimeout)
		}
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return false, err
		}
	}
	if err := m.step(ctx, "step_up"); err != nil {
		return false, err
	}
	if err := m.act.StepUp(ctx, target.Addr); err != nil {
		return false, fmt.Errorf("step up %s: %w", target.Name, err)
	}
	if !m.waitWritable(ctx, target.Addr, m.cfg.CatchupTimeout) {
		return true, fmt.Errorf("%s won its election but did not become writable within %s", target.Name, m.cfg.CatchupTimeout)
	}
	return true, nil
}

// recoverMongoSwitch finishes or rolls back a switchover its leader left.
func (m *Mongo) recoverMongoSwitch(ctx context.Context, cl *raftfsm.Cluster) error {
	snap := m.snaps.Snapshot()
	if tm, ok := memberByName(snap, cl.Primary); ok {
		if _, ok := m.writable(ctx, tm.Addr); ok {
			return m.follow(ctx, cl, snap, cl.Primary, "switchover finished by a new leader: the target is primary", time.Time{}, 0)
		}
	}
	if err := m.step(ctx, "rollback"); err != nil {
		return err
	}
	_, err := m.propose(ctx, &raftfsm.Command{Type: raftfsm.TypeAbort, Epoch: cl.Epoch,
		Reason: "switchover left unfinished by a previous leader; the target is not primary: rolled back"})
	return err
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
