package topology

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// MemberConfig names one member to probe.
type MemberConfig struct {
	Name string
	Addr string
	Site string
	// Dial, when set, is where probes connect instead of Addr (a test link
	// in front of the member); Addr stays the member's identity, the address
	// replicas name as their source.
	Dial string
}

// Config is what a Monitor needs, whatever the database.
type Config struct {
	Cluster       string
	Members       []MemberConfig
	ProbeInterval time.Duration
	MaxReplicaLag time.Duration
}

// Default monitor settings.
const (
	DefaultProbeInterval = 500 * time.Millisecond
	DefaultMaxReplicaLag = time.Second
)

// WithDefaults returns c with its unset durations defaulted; a Prober
// built for c should use the same values as its Monitor.
func (c Config) WithDefaults() Config {
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
	if c.MaxReplicaLag <= 0 {
		c.MaxReplicaLag = DefaultMaxReplicaLag
	}
	return c
}

// ProbeTimeout bounds one probe of a member: the probe interval, but at
// least a second, whatever the interval.
func (c Config) ProbeTimeout() time.Duration { return max(c.ProbeInterval, minProbeTimeout) }

// Prober observes the members of one cluster for a Monitor. A database
// flavour implements it (topology/mariadb); the Monitor owns the loops, the
// failure counting, RTT smoothing and publication.
type Prober interface {
	// Probe observes member i (Config.Members[i]) once, within ctx. The
	// Monitor calls it from member i's own probe loop: calls for one
	// member never overlap, calls for different members run at once.
	//
	// On success, Probe.Member is what was observed; the Monitor sets its
	// Name, Addr, Site, Reachable, RTT, Role and Eligible. On error, it
	// holds only what the flavour still knows of the member without
	// reaching it (its identity: MariaDB keeps the server id and the
	// replicas last seen connected); the Monitor marks it unreachable once
	// failures repeat, and keeps the last observation until then.
	Probe(ctx context.Context, i int) (Probe, error)
	// Run does the flavour's own work beside the probes until ctx ends
	// (MariaDB: writing and reading its lag heartbeats), reading the
	// latest published snapshot through latest.
	Run(ctx context.Context, latest func() *Snapshot)
	// Close releases the prober's connections. The Monitor calls it once,
	// after Run and every Probe have returned.
	Close() error
}

// Probe is the outcome of one probe of a member.
type Probe struct {
	Member Member
	// RTT is one round trip of the probe, without setting up a connection
	// (several round trips): one slow reconnect must not make a member look
	// far. Only on success.
	RTT time.Duration
	// Answered is when the member answered the probe (zero: now). Failure
	// detection counts from the last answer, so a member that dies just
	// after one is not given an extra probe interval, nor the time the rest
	// of the probe took.
	Answered time.Time
	// SourceHeardAt is when, by this monitor's clock, the replica was last
	// seen receiving from its source (zero when unknown or not a replica),
	// also on error: SourceContact is measured from it at each publication.
	SourceHeardAt time.Time
}

// Monitor probes a cluster and publishes snapshots.
type Monitor struct {
	cfg     Config
	log     *zap.Logger
	prober  Prober
	snap    atomic.Pointer[Snapshot]
	members []*memberLoop
	notify  chan struct{}
}

// memberLoop is one member's probing state.
type memberLoop struct {
	i int
	// mu guards result, the latest probe, which publish reads; the fields
	// below it belong to the member's probe loop alone.
	mu     sync.Mutex
	result probeResult

	srtt  time.Duration
	fails int // consecutive failed probes
	// failingSince is when the member was last known alive: when it last
	// answered a probe, or the first failed one if none succeeded yet.
	// Failure detection counts from there, so a primary that dies just after
	// a probe is not given an extra probe interval.
	failingSince time.Time
	lastOK       time.Time
}

// unreachableAfter consecutive failed probes mark a member unreachable: one
// probe that misses its deadline on a busy server must not take the primary
// away from every writer.
const unreachableAfter = 2

// minProbeTimeout: probes get at least this long, whatever the interval.
const minProbeTimeout = time.Second

// New returns a monitor of cfg's members probed by p, whose first snapshot
// has every member unreachable. p must have been built for the same
// members, in the same order.
func New(cfg Config, p Prober, log *zap.Logger) (*Monitor, error) {
	if p == nil {
		return nil, errors.New("topology monitor: no prober")
	}
	cfg = cfg.WithDefaults()
	m := &Monitor{cfg: cfg, prober: p, log: log.Named("topology").With(zap.String("cluster", cfg.Cluster)), notify: make(chan struct{}, 1)}
	snap := &Snapshot{Cluster: cfg.Cluster, Primary: -1}
	for i, mc := range cfg.Members {
		m.members = append(m.members, &memberLoop{i: i})
		snap.Members = append(snap.Members, Member{Name: mc.Name, Addr: mc.Addr, Site: mc.Site, Role: RoleUnknown, Lag: -1})
	}
	m.snap.Store(snap)
	return m, nil
}

// Snapshot returns the latest published snapshot; never nil.
func (m *Monitor) Snapshot() *Snapshot { return m.snap.Load() }

// Updated is signalled (without blocking the monitor) after each publication.
func (m *Monitor) Updated() <-chan struct{} { return m.notify }

// Run probes every probe_interval until ctx ends. Each member has a probe
// loop of its own and a snapshot is published every interval from the
// latest results: a member that hangs (SIGSTOP, a dead link) holds up only
// its own probe, never the view of the others, and how long it has failed
// is measured when the snapshot is published, not when its probe gives up.
func (m *Monitor) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		if err := m.prober.Close(); err != nil {
			m.log.Debug("close prober", zap.Error(err))
		}
	}()
	for _, ml := range m.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.probeLoop(ctx, ml)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.prober.Run(ctx, m.Snapshot)
	}()
	t := time.NewTicker(m.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.publish()
	}
}

// probeLoop probes one member every interval; a probe that outlasts the
// interval is followed at once by the next.
func (m *Monitor) probeLoop(ctx context.Context, ml *memberLoop) {
	t := time.NewTicker(m.cfg.ProbeInterval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, m.cfg.ProbeTimeout())
		prev := ml.latest()
		r, heard := m.probe(pctx, ml, prev.Member)
		cancel()
		ml.store(probeResult{Member: r, done: true, failingSince: ml.failingSince, progressAt: heard, failed: ml.fails > 0})
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probeResult is one member's latest probe, with the moments its
// durations are measured from when a snapshot is published.
type probeResult struct {
	Member
	done         bool // a probe has completed
	failed       bool
	failingSince time.Time
	progressAt   time.Time // Probe.SourceHeardAt
}

func (ml *memberLoop) latest() probeResult {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	return ml.result
}

func (ml *memberLoop) store(r probeResult) {
	ml.mu.Lock()
	ml.result = r
	ml.mu.Unlock()
}

// probe runs one probe of a member and turns its outcome into the member's
// observed state, given the previous one; it also returns when the member
// was last heard receiving from its source.
func (m *Monitor) probe(ctx context.Context, ml *memberLoop, prev Member) (Member, time.Time) {
	mc := m.cfg.Members[ml.i]
	pr, err := m.prober.Probe(ctx, ml.i)
	if err != nil {
		ml.fails++
		if ml.failingSince.IsZero() {
			ml.failingSince = ml.lastOK
			if ml.failingSince.IsZero() {
				ml.failingSince = time.Now()
			}
		}
		if ml.fails < unreachableAfter && prev.Reachable {
			prev.ProbeError = err.Error()
			prev.FailingFor = time.Since(ml.failingSince)
			if prev.SourceContact >= 0 && !pr.SourceHeardAt.IsZero() {
				prev.SourceContact = time.Since(pr.SourceHeardAt)
			}
			return prev, pr.SourceHeardAt // keep the last observation until failures repeat
		}
		st := pr.Member
		st.Name, st.Addr, st.Site = mc.Name, mc.Addr, mc.Site
		st.Reachable, st.Lag, st.RTT = false, -1, prev.RTT
		st.ProbeError = err.Error()
		st.FailingFor = time.Since(ml.failingSince)
		st.SourceContact = -1
		return st, pr.SourceHeardAt
	}
	ml.fails = 0
	ml.failingSince = time.Time{}
	ml.lastOK = pr.Answered
	if ml.lastOK.IsZero() {
		ml.lastOK = time.Now()
	}
	// Exponential smoothing: one slow probe must not reorder "nearest".
	if ml.srtt == 0 {
		ml.srtt = pr.RTT
	} else {
		ml.srtt = (ml.srtt*4 + pr.RTT) / 5
	}
	st := pr.Member
	st.Name, st.Addr, st.Site = mc.Name, mc.Addr, mc.Site
	st.RTT = ml.srtt
	st.Reachable = true
	return st, pr.SourceHeardAt
}

// publish assembles a snapshot from every member's latest probe.
func (m *Monitor) publish() {
	m.publishAt(time.Now())
}

func (m *Monitor) publishAt(now time.Time) {
	prev := m.snap.Load()
	next := &Snapshot{Cluster: m.cfg.Cluster, Taken: now, Primary: -1, Members: make([]Member, len(m.members))}
	for i, ml := range m.members {
		r := ml.latest()
		mm := prev.Members[i]
		if r.done {
			mm = r.Member
		}
		if r.failed && !r.failingSince.IsZero() {
			mm.FailingFor = now.Sub(r.failingSince)
		}
		if mm.SourceContact >= 0 && !r.progressAt.IsZero() {
			mm.SourceContact = now.Sub(r.progressAt)
		}
		next.Members[i] = mm
	}
	if e, ok := m.prober.(Elector); ok {
		next.Primary, next.Conflict = e.Elect(next.Members)
	} else {
		next.Primary, next.Conflict = electWritable(next.Members)
	}
	for i := range next.Members {
		mm := &next.Members[i]
		mm.Eligible = mm.Reachable && mm.ReadOnly && mm.IORunning && mm.SQLRunning && mm.Lag >= 0 && mm.Lag <= m.cfg.MaxReplicaLag
	}
	m.logChanges(prev, next)
	m.snap.Store(next)
	select {
	case m.notify <- struct{}{}:
	default:
	}
}

// Elector is an optional interface of a Prober whose members elect their
// primary themselves. The Monitor's own rule, the single reachable writable
// member, is wrong for them: after a MongoDB election the deposed primary
// may still say it is writable until it learns of the new term, and the set
// has already decided which of the two is primary (the one with the newer
// election id), so calling that a conflict would refuse every write for no
// reason, and taking the only claimant seen would route writes to a stale
// primary whose successor this monitor cannot reach. Only the flavour can
// read who the set chose from what its members report, so it decides.
type Elector interface {
	// Elect judges the members of one publication, already judged
	// reachable or not: it sets every member's Role, and Lag where the lag
	// is relative to the primary it picks, and returns the primary's index
	// (-1: none) and the names of the members that conflict (no write is
	// routed then). members is the publication's own copy, not yet
	// published; Elect must not keep it. The Monitor then sets Eligible
	// from the neutral fields as for every flavour.
	Elect(members []Member) (primary int, conflict []string)
}

// electWritable is the Monitor's rule for flavours without an Elector
// (MariaDB): the single reachable member that is not read-only is the
// primary; two or more are a conflict.
func electWritable(members []Member) (int, []string) {
	primary := -1
	var writable []int
	for i, mm := range members {
		if mm.Reachable && !mm.ReadOnly {
			writable = append(writable, i)
		}
	}
	var conflict []string
	switch len(writable) {
	case 1:
		primary = writable[0]
	case 0:
	default:
		for _, i := range writable {
			conflict = append(conflict, members[i].Name)
		}
	}
	for i := range members {
		mm := &members[i]
		switch {
		case !mm.Reachable:
			mm.Role = RoleUnknown
		case !mm.ReadOnly:
			mm.Role = RolePrimary
		default:
			mm.Role = RoleReplica
		}
	}
	return primary, conflict
}

func (m *Monitor) logChanges(prev, next *Snapshot) {
	if prev.PrimaryName() != next.PrimaryName() {
		m.log.Info("primary changed", zap.String("from", prev.PrimaryName()), zap.String("to", next.PrimaryName()))
	}
	if len(next.Conflict) > 0 && len(prev.Conflict) == 0 {
		m.log.Error("more than one writable member: writes are refused", zap.Strings("members", next.Conflict))
	}
	for i := range next.Members {
		a, b := prev.Members[i], next.Members[i]
		if a.Reachable != b.Reachable || a.Eligible != b.Eligible {
			m.log.Info("member state", zap.String("member", b.Name), zap.Bool("reachable", b.Reachable),
				zap.Bool("eligible", b.Eligible), zap.Duration("lag", b.Lag), zap.String("error", b.ProbeError+b.ReplError))
		}
	}
}
