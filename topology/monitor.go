package topology

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/topology/mariadb"
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

// Config is what a Monitor needs.
type Config struct {
	Cluster       string
	Members       []MemberConfig
	User          string
	Password      string
	ProbeInterval time.Duration
	MaxReplicaLag time.Duration
	// HeartbeatID identifies this monitor's heartbeat row; every monitor writes
	// its own, so several proxies never disturb each other's lag measurement.
	HeartbeatID string
	// HeartbeatGate, when set, must approve the member a heartbeat is written
	// to. With a control plane it allows only the primary of the applied
	// epoch while this node may write: a heartbeat is a write, and one
	// written to a cut-off old primary would become an errant transaction.
	HeartbeatGate func(member string) bool
}

// Monitor probes a cluster and publishes snapshots.
type Monitor struct {
	cfg     Config
	log     *zap.Logger
	snap    atomic.Pointer[Snapshot]
	members []*prober
	hb      heartbeats // this monitor's own heartbeat writes
	obs     heartbeats // others' heartbeats, when this monitor may not write
	notify  chan struct{}
}

type prober struct {
	cfg MemberConfig
	db  *sql.DB
	// mu guards result, the latest probe, which publish reads; the fields
	// below it belong to the member's probe loop alone.
	mu     sync.Mutex
	result probeResult

	srtt  time.Duration
	fails int // consecutive failed probes
	// failingSince is when the member was last known alive: the end of the
	// last successful probe, or the first failed one if none succeeded yet.
	// Failure detection counts from there, so a primary that dies just after
	// a probe is not given an extra probe interval.
	failingSince time.Time
	lastOK       time.Time
	// serverID survives failed probes: deciding whether a replica still
	// streams from a primary that stopped answering needs the primary's id.
	serverID uint32
	// progress is what the replica had heard from its source at the last
	// probe, and progressAt when that last changed (this monitor's clock).
	progress   string
	progressAt time.Time
	replicas   []uint32 // SHOW SLAVE HOSTS at the last successful probe
}

// unreachableAfter consecutive failed probes mark a member unreachable: one
// probe that misses its deadline on a busy server must not take the primary
// away from every writer.
const unreachableAfter = 2

// minProbeTimeout: probes get at least this long, whatever the interval.
const minProbeTimeout = time.Second

// New returns a monitor whose first snapshot has every member unreachable.
func New(cfg Config, log *zap.Logger) (*Monitor, error) {
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = 500 * time.Millisecond
	}
	if cfg.MaxReplicaLag <= 0 {
		cfg.MaxReplicaLag = time.Second
	}
	m := &Monitor{cfg: cfg, log: log.Named("topology").With(zap.String("cluster", cfg.Cluster)), notify: make(chan struct{}, 1)}
	snap := &Snapshot{Cluster: cfg.Cluster, Primary: -1}
	for _, mc := range cfg.Members {
		dc := mysql.NewConfig()
		dc.User, dc.Passwd, dc.Net, dc.Addr = cfg.User, cfg.Password, "tcp", mc.Addr
		if mc.Dial != "" {
			dc.Addr = mc.Dial
		}
		dc.Timeout = max(cfg.ProbeInterval, minProbeTimeout)
		dc.ReadTimeout = max(cfg.ProbeInterval, minProbeTimeout)
		dc.WriteTimeout = max(cfg.ProbeInterval, minProbeTimeout)
		dc.InterpolateParams = true
		conn, err := mysql.NewConnector(dc)
		if err != nil {
			return nil, fmt.Errorf("member %s: %w", mc.Name, err)
		}
		db := sql.OpenDB(conn)
		// Two: the member's probe loop and the heartbeat loop may use it
		// at once.
		db.SetMaxOpenConns(2)
		db.SetMaxIdleConns(2)
		m.members = append(m.members, &prober{cfg: mc, db: db})
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
		for _, p := range m.members {
			p.db.Close()
		}
	}()
	for _, p := range m.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.probeLoop(ctx, p)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.heartbeatLoop(ctx)
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
func (m *Monitor) probeLoop(ctx context.Context, p *prober) {
	t := time.NewTicker(m.cfg.ProbeInterval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, max(m.cfg.ProbeInterval, minProbeTimeout))
		prev := p.latest()
		r := m.probe(pctx, p, prev.Member)
		cancel()
		p.store(probeResult{Member: r, done: true, failingSince: p.failingSince, progressAt: p.progressAt, failed: p.fails > 0})
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
	progressAt   time.Time
}

func (p *prober) latest() probeResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.result
}

func (p *prober) store(r probeResult) {
	p.mu.Lock()
	p.result = r
	p.mu.Unlock()
}

// publish assembles a snapshot from every member's latest probe.
func (m *Monitor) publish() {
	prev := m.snap.Load()
	now := time.Now()
	next := &Snapshot{Cluster: m.cfg.Cluster, Taken: now, Primary: -1, Members: make([]Member, len(m.members))}
	for i, p := range m.members {
		r := p.latest()
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
	var writable []int
	for i, mm := range next.Members {
		if mm.Reachable && !mm.ReadOnly {
			writable = append(writable, i)
		}
	}
	switch len(writable) {
	case 1:
		next.Primary = writable[0]
	case 0:
	default:
		for _, i := range writable {
			next.Conflict = append(next.Conflict, next.Members[i].Name)
		}
	}
	for i := range next.Members {
		mm := &next.Members[i]
		switch {
		case !mm.Reachable:
			mm.Role = RoleUnknown
		case !mm.ReadOnly:
			mm.Role = RolePrimary
		default:
			mm.Role = RoleReplica
		}
		mm.Eligible = mm.Reachable && mm.ReadOnly && mm.IORunning && mm.SQLRunning && mm.Lag >= 0 && mm.Lag <= m.cfg.MaxReplicaLag
	}
	m.logChanges(prev, next)
	m.snap.Store(next)
	select {
	case m.notify <- struct{}{}:
	default:
	}
}

// heartbeatLoop writes this monitor's heartbeat to the primary of the latest
// snapshot every interval (or, when it may not write, reads the heartbeats
// others write), on a loop of its own so a hung primary delays nothing else.
func (m *Monitor) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(m.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		snap := m.snap.Load()
		if snap.Primary < 0 {
			continue
		}
		p := m.members[snap.Primary]
		hctx, cancel := context.WithTimeout(ctx, max(m.cfg.ProbeInterval, minProbeTimeout))
		if m.cfg.HeartbeatGate == nil || m.cfg.HeartbeatGate(p.cfg.Name) {
			if err := m.hb.write(hctx, p.db, m.cfg.HeartbeatID); err != nil {
				m.log.Debug("heartbeat write", zap.String("member", p.cfg.Name), zap.Error(err))
			}
		} else if rows, err := readHeartbeats(hctx, p.db); err == nil {
			// Not allowed to write (an arbiter that does not lead, a proxy
			// without a lease): time a heartbeat another node keeps
			// writing, by this monitor's clock, from when it first sees it.
			m.obs.observe(rows, time.Now())
		}
		cancel()
	}
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

func (m *Monitor) probe(ctx context.Context, p *prober, prev Member) Member {
	st := Member{Name: p.cfg.Name, Addr: p.cfg.Addr, Site: p.cfg.Site, Lag: -1, RTT: prev.RTT}
	var ro int
	var semi sql.NullString
	// Take the connection first, so dialing (several round trips) is never
	// counted as RTT: one slow reconnect must not make a member look far.
	conn, err := p.db.Conn(ctx)
	var t0 time.Time
	if err == nil {
		t0 = time.Now()
		var semiTimeoutMs int64
		err = conn.QueryRowContext(ctx, "SELECT @@server_id, @@read_only, @@gtid_binlog_pos, @@gtid_slave_pos, @@gtid_current_pos, @@version, @@rpl_semi_sync_master_enabled, "+
			"@@rpl_semi_sync_master_wait_point, @@rpl_semi_sync_master_timeout, @@rpl_semi_sync_slave_enabled").
			Scan(&st.ServerID, &ro, &st.GTIDBinlogPos, &st.GTIDSlavePos, &st.GTIDCurrentPos, &st.Version, &semi,
				&st.SemiSyncWaitPoint, &semiTimeoutMs, &st.SemiSyncReplica)
		st.SemiSyncTimeout = time.Duration(semiTimeoutMs) * time.Millisecond
		conn.Close()
	}
	if err != nil {
		p.fails++
		if p.failingSince.IsZero() {
			p.failingSince = p.lastOK
			if p.failingSince.IsZero() {
				p.failingSince = time.Now()
			}
		}
		if p.fails < unreachableAfter && prev.Reachable {
			prev.ProbeError = err.Error()
			prev.FailingFor = time.Since(p.failingSince)
			if prev.SourceContact >= 0 && !p.progressAt.IsZero() {
				prev.SourceContact = time.Since(p.progressAt)
			}
			return prev // keep the last observation until failures repeat
		}
		st.ProbeError = err.Error()
		st.FailingFor = time.Since(p.failingSince)
		st.ServerID = p.serverID
		st.Replicas = p.replicas
		st.SourceContact = -1
		return st
	}
	p.serverID = st.ServerID
	p.fails = 0
	p.failingSince = time.Time{}
	p.lastOK = time.Now()
	rtt := time.Since(t0)
	// Exponential smoothing: one slow probe must not reorder "nearest".
	if p.srtt == 0 {
		p.srtt = rtt
	} else {
		p.srtt = (p.srtt*4 + rtt) / 5
	}
	st.RTT = p.srtt
	st.Reachable = true
	st.ReadOnly = ro == 1
	st.SemiSyncOn = semi.String == "1"
	if err := probeReplication(ctx, p, &st); err != nil {
		st.ProbeError = err.Error()
	}
	if !st.ReadOnly {
		if ids, err := connectedReplicas(ctx, p.db); err == nil {
			st.Replicas, p.replicas = ids, ids
		}
		st.Lag = 0
		if st.SemiSyncOn {
			var name, v string
			if err := p.db.QueryRowContext(ctx, "SHOW STATUS LIKE 'Rpl_semi_sync_master_status'").Scan(&name, &v); err == nil {
				st.SemiSyncActive = v == "ON"
			}
		}
		return st
	}
	// Lag is measured against this monitor's own heartbeats while it
	// writes them, else against the ones it observes others write; with
	// neither fresh it is unknown (-1: not eligible), never a stale 0.
	now := time.Now()
	hb, id := &m.hb, m.cfg.HeartbeatID
	if !m.hb.fresh(now, m.staleAfter()) {
		hb, id = &m.obs, m.obs.source()
		if id == "" || !m.obs.fresh(now, m.staleAfter()) {
			st.Lag = -1
			return st
		}
	}
	var ts int64
	err = p.db.QueryRowContext(ctx, "SELECT ts FROM dbrouter.heartbeat WHERE id = ?", id).Scan(&ts)
	switch {
	case err == nil:
		st.Lag = hb.lag(ts, now)
	case errors.Is(err, sql.ErrNoRows) || isNoTable(err):
		st.Lag = hb.lag(0, now)
	default:
		st.ProbeError = err.Error()
	}
	return st
}

func isNoTable(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && (me.Number == 1146 || me.Number == 1049)
}

// probeReplication reads SHOW ALL SLAVES STATUS (every named connection); a
// member replicates properly when every connection runs both threads. The
// source and its contact are the default connection's (the first one when
// there is no default): the one the arbiters configure.
func probeReplication(ctx context.Context, p *prober, st *Member) error {
	st.SourceContact = -1
	all, err := mariadb.ReadReplicaStatus(ctx, p.db)
	if err != nil {
		p.progress, p.progressAt = "", time.Time{}
		return err
	}
	io, sqlr := len(all) > 0, len(all) > 0
	var errs []string
	main := -1
	for i, r := range all {
		io = io && r.IORunning()
		sqlr = sqlr && r.SQLRunning
		if e := r.Errors(); e != "" {
			errs = append(errs, e)
		}
		if main < 0 || r.Connection == "" {
			main = i
		}
	}
	st.IORunning, st.SQLRunning = io, sqlr
	st.ReplError = strings.Join(errs, "; ")
	if main < 0 {
		p.progress, p.progressAt = "", time.Time{}
		return nil
	}
	r := all[main]
	st.Source, st.SourceServerID, st.GTIDIOPos = r.Source(), r.SourceServerID, r.GTIDIOPos
	st.HeartbeatPeriod = time.Duration(r.HeartbeatPeriod * float64(time.Second))
	// Contact: the first observation counts as contact now, which can only
	// delay a failover (a replica that seems to hear its source vetoes it).
	now := time.Now()
	if pr := r.Progress(); pr != p.progress || p.progressAt.IsZero() {
		p.progress, p.progressAt = pr, now
	}
	if r.IORunning() {
		st.SourceContact = now.Sub(p.progressAt)
	}
	return nil
}

// errReadOnly: the heartbeat was not written, the member is read-only.
var errReadOnly = errors.New("read-only: no heartbeat written")

// connectedReplicas reads SHOW SLAVE HOSTS: the server ids of the replicas
// connected to this server now.
func connectedReplicas(ctx context.Context, db *sql.DB) ([]uint32, error) {
	rows, err := db.QueryContext(ctx, "SHOW SLAVE HOSTS")
	if err != nil {
		return nil, fmt.Errorf("show slave hosts: %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	ids := []uint32{}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		for i, c := range cols {
			if c == "Server_id" {
				var id uint32
				if _, err := fmt.Sscan(vals[i].String, &id); err == nil {
					ids = append(ids, id)
				}
			}
		}
	}
	return ids, rows.Err()
}

// staleAfter: heartbeats older than this no longer measure anything (the
// writer stopped); three rounds, so one slow round is not a gap.
func (m *Monitor) staleAfter() time.Duration { return 3 * m.cfg.ProbeInterval }

// heartbeats measures lag without comparing clocks across hosts: each point
// is a heartbeat value and the local time it was written (own writes) or
// first seen on the primary (observed). A replica showing value k is as far
// behind as the first point after k is old.
type heartbeats struct {
	mu      sync.Mutex
	id      string           // observed: whose row the points are from
	prev    map[string]int64 // observed: every row's value last round
	points  []hbPoint        // oldest first
	created bool
}

func readHeartbeats(ctx context.Context, db *sql.DB) (map[string]int64, error) {
	rows, err := db.QueryContext(ctx, "SELECT id, ts FROM dbrouter.heartbeat")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var id string
		var ts int64
		if err := rows.Scan(&id, &ts); err != nil {
			return nil, err
		}
		out[id] = ts
	}
	return out, rows.Err()
}

type hbPoint struct {
	ts int64     // the row's value (the writer's clock, unix µs)
	at time.Time // when it was written, or first seen, here
}

const heartbeatWindow = 2 * time.Minute

func (h *heartbeats) write(ctx context.Context, db *sql.DB, id string) error {
	h.mu.Lock()
	created := h.created
	h.mu.Unlock()
	if !created {
		for _, q := range []string{
			"CREATE DATABASE IF NOT EXISTS dbrouter",
			"CREATE TABLE IF NOT EXISTS dbrouter.heartbeat (id VARBINARY(128) PRIMARY KEY, ts BIGINT NOT NULL) ENGINE=InnoDB",
		} {
			if _, err := db.ExecContext(ctx, q); err != nil {
				return err
			}
		}
	}
	ts := time.Now().UnixMicro()
	// Only while the member is writable: the monitor's account usually
	// bypasses read_only, and a heartbeat landing on a member that was
	// just fenced (the snapshot that named it primary is a round old) is
	// a transaction the new primary never gets, which would make the old
	// one errant.
	res, err := db.ExecContext(ctx, "INSERT INTO dbrouter.heartbeat (id, ts) SELECT ?, ? FROM DUAL WHERE @@GLOBAL.read_only = 0 ON DUPLICATE KEY UPDATE ts = VALUES(ts)", id, ts)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return errReadOnly
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.created = true
	h.add(hbPoint{ts: ts, at: time.UnixMicro(ts)})
	return nil
}

// observe takes the heartbeat rows read on the primary. It follows one row
// that is still being written (its value moved since the last round): the
// one it followed if that is live, else the live one with the newest value.
// A row nobody writes any more (a former leader's) is never followed.
func (h *heartbeats) observe(rows map[string]int64, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	live := func(id string) bool {
		prev, seen := h.prev[id]
		return seen && rows[id] > prev
	}
	if !live(h.id) {
		best := ""
		for id := range rows {
			if live(id) && (best == "" || rows[id] > rows[best] || rows[id] == rows[best] && id < best) {
				best = id
			}
		}
		if best != "" && best != h.id {
			h.id, h.points = best, nil
		}
	}
	if ts, ok := rows[h.id]; ok && h.id != "" && (len(h.points) == 0 || ts > h.points[len(h.points)-1].ts) && live(h.id) {
		h.add(hbPoint{ts: ts, at: now})
	}
	h.prev = rows
}

func (h *heartbeats) add(p hbPoint) {
	h.points = append(h.points, p)
	cut := p.at.Add(-heartbeatWindow)
	i := 0
	for i < len(h.points)-1 && h.points[i].at.Before(cut) {
		i++
	}
	h.points = h.points[i:]
}

// fresh reports whether the newest point is younger than d.
func (h *heartbeats) fresh(now time.Time, d time.Duration) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.points) > 0 && now.Sub(h.points[len(h.points)-1].at) < d
}

func (h *heartbeats) source() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.id
}

// lag returns how long the first acknowledged write newer than seen has been
// outstanding, 0 when the replica has the newest, -1 when nothing was written
// yet.
func (h *heartbeats) lag(seen int64, now time.Time) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.points) == 0 {
		return -1
	}
	for _, p := range h.points {
		if p.ts > seen {
			return max(now.Sub(p.at), 0)
		}
	}
	return 0
}
