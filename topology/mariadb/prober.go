package mariadb

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/topology"
)

// MonitorConfig is what a MariaDB cluster's monitor needs: the neutral
// settings of topology.Config and MariaDB's own.
type MonitorConfig struct {
	Cluster       string
	Members       []topology.MemberConfig
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
	// TLS, when set, is the client side of every probe connection
	// (config member_tls): the member's certificate is verified, and a
	// member that does not offer TLS fails the probe (no plaintext
	// fallback).
	TLS *tls.Config
}

// NewMonitor returns a monitor probing cfg's members as MariaDB servers;
// its first snapshot has every member unreachable.
func NewMonitor(cfg MonitorConfig, log *zap.Logger) (*topology.Monitor, error) {
	mon, _, err := newMonitor(cfg, log)
	return mon, err
}

func newMonitor(cfg MonitorConfig, log *zap.Logger) (*topology.Monitor, *prober, error) {
	tc := topology.Config{Cluster: cfg.Cluster, Members: cfg.Members, ProbeInterval: cfg.ProbeInterval, MaxReplicaLag: cfg.MaxReplicaLag}.WithDefaults()
	p, err := newProber(tc, cfg, log.Named("topology").With(zap.String("cluster", cfg.Cluster)))
	if err != nil {
		return nil, nil, err
	}
	mon, err := topology.New(tc, p, log)
	if err != nil {
		p.Close()
		return nil, nil, err
	}
	return mon, p, nil
}

// prober probes MariaDB members for a topology.Monitor and measures their
// lag with heartbeats.
type prober struct {
	cfg     topology.Config
	id      string
	gate    func(member string) bool
	log     *zap.Logger
	members []*member
	hb      heartbeats // this monitor's own heartbeat writes
	obs     heartbeats // others' heartbeats, when this monitor may not write
}

var _ topology.Prober = (*prober)(nil)

// member is one member's connections and what its probes remember; the
// fields below db belong to the member's probe loop alone.
type member struct {
	cfg topology.MemberConfig
	db  *sql.DB
	// serverID survives failed probes: deciding whether a replica still
	// streams from a primary that stopped answering needs the primary's id.
	serverID uint32
	// progress is what the replica had heard from its source at the last
	// probe, and progressAt when that last changed (this monitor's clock).
	progress   string
	progressAt time.Time
	replicas   []uint32 // SHOW SLAVE HOSTS at the last successful probe
}

func newProber(tc topology.Config, cfg MonitorConfig, log *zap.Logger) (*prober, error) {
	p := &prober{cfg: tc, id: cfg.HeartbeatID, gate: cfg.HeartbeatGate, log: log}
	for _, mc := range tc.Members {
		dc := mysql.NewConfig()
		dc.User, dc.Passwd, dc.Net, dc.Addr = cfg.User, cfg.Password, "tcp", mc.Addr
		if mc.Dial != "" {
			dc.Addr = mc.Dial
		}
		dc.Timeout = tc.ProbeTimeout()
		dc.ReadTimeout = tc.ProbeTimeout()
		dc.WriteTimeout = tc.ProbeTimeout()
		dc.InterpolateParams = true
		dc.TLS = topology.MemberTLS(cfg.TLS, mc.Addr)
		conn, err := mysql.NewConnector(dc)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("member %s: %w", mc.Name, err)
		}
		db := sql.OpenDB(conn)
		// Two: the member's probe loop and the heartbeat loop may use it
		// at once.
		db.SetMaxOpenConns(2)
		db.SetMaxIdleConns(2)
		p.members = append(p.members, &member{cfg: mc, db: db})
	}
	return p, nil
}

// Close closes every member's connections.
func (p *prober) Close() error {
	var errs []error
	for _, m := range p.members {
		if err := m.db.Close(); err != nil {
			errs = append(errs, fmt.Errorf("member %s: %w", m.cfg.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Run writes this monitor's heartbeat to the primary of the latest
// snapshot every interval (or, when it may not write, reads the heartbeats
// others write), on a loop of its own so a hung primary delays nothing else.
func (p *prober) Run(ctx context.Context, latest func() *topology.Snapshot) {
	t := time.NewTicker(p.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		snap := latest()
		if snap.Primary < 0 {
			continue
		}
		m := p.members[snap.Primary]
		hctx, cancel := context.WithTimeout(ctx, p.cfg.ProbeTimeout())
		if p.gate == nil || p.gate(m.cfg.Name) {
			if err := p.hb.write(hctx, m.db, p.id); err != nil {
				p.log.Debug("heartbeat write", zap.String("member", m.cfg.Name), zap.Error(err))
			}
		} else if rows, err := readHeartbeats(hctx, m.db); err == nil {
			// Not allowed to write (an arbiter that does not lead, a proxy
			// without a lease): time a heartbeat another node keeps
			// writing, by this monitor's clock, from when it first sees it.
			p.obs.observe(rows, time.Now())
		}
		cancel()
	}
}

// Probe reads member i's server variables, replication state, connected
// replicas (on a writable member) and heartbeat lag (on a read-only one).
func (p *prober) Probe(ctx context.Context, i int) (topology.Probe, error) {
	m := p.members[i]
	st := topology.Member{Lag: -1}
	var ro int
	var semi sql.NullString
	// Take the connection first, so dialing (several round trips) is never
	// counted as RTT: one slow reconnect must not make a member look far.
	conn, err := m.db.Conn(ctx)
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
		// What is known without reaching it: who it was, and who was
		// connected to it (they may hold its last transactions).
		return topology.Probe{Member: topology.Member{ServerID: m.serverID, Replicas: m.replicas}, SourceHeardAt: m.progressAt}, err
	}
	answered := time.Now()
	rtt := answered.Sub(t0)
	m.serverID = st.ServerID
	st.ReadOnly = ro == 1
	st.SemiSyncOn = semi.String == "1"
	// out is called at each return: it takes st and progressAt as they
	// are by then.
	out := func() topology.Probe {
		return topology.Probe{Member: st, RTT: rtt, Answered: answered, SourceHeardAt: m.progressAt}
	}
	if err := probeReplication(ctx, m, &st); err != nil {
		st.ProbeError = err.Error()
	}
	if !st.ReadOnly {
		if ids, err := connectedReplicas(ctx, m.db); err == nil {
			st.Replicas, m.replicas = ids, ids
		}
		st.Lag = 0
		if st.SemiSyncOn {
			var name, v string
			if err := m.db.QueryRowContext(ctx, "SHOW STATUS LIKE 'Rpl_semi_sync_master_status'").Scan(&name, &v); err == nil {
				st.SemiSyncActive = v == "ON"
			}
		}
		return out(), nil
	}
	// Lag is measured against this monitor's own heartbeats while it
	// writes them, else against the ones it observes others write; with
	// neither fresh it is unknown (-1: not eligible), never a stale 0.
	now := time.Now()
	hb, id := &p.hb, p.id
	if !p.hb.fresh(now, p.staleAfter()) {
		hb, id = &p.obs, p.obs.source()
		if id == "" || !p.obs.fresh(now, p.staleAfter()) {
			st.Lag = -1
			return out(), nil
		}
	}
	var ts int64
	err = m.db.QueryRowContext(ctx, "SELECT ts FROM dbrouter.heartbeat WHERE id = ?", id).Scan(&ts)
	switch {
	case err == nil:
		st.Lag = hb.lag(ts, now)
	case errors.Is(err, sql.ErrNoRows) || isNoTable(err):
		st.Lag = hb.lag(0, now)
	default:
		st.ProbeError = err.Error()
	}
	return out(), nil
}

// staleAfter: heartbeats older than this no longer measure anything (the
// writer stopped); three rounds, so one slow round is not a gap.
func (p *prober) staleAfter() time.Duration { return 3 * p.cfg.ProbeInterval }

func isNoTable(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && (me.Number == 1146 || me.Number == 1049)
}

// probeReplication reads SHOW ALL SLAVES STATUS (every named connection); a
// member replicates properly when every connection runs both threads. The
// source and its contact are the default connection's (the first one when
// there is no default): the one the arbiters configure.
func probeReplication(ctx context.Context, m *member, st *topology.Member) error {
	st.SourceContact = -1
	all, err := ReadReplicaStatus(ctx, m.db)
	if err != nil {
		m.progress, m.progressAt = "", time.Time{}
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
		m.progress, m.progressAt = "", time.Time{}
		return nil
	}
	r := all[main]
	st.Source, st.SourceServerID, st.GTIDIOPos = r.Source(), r.SourceServerID, r.GTIDIOPos
	st.HeartbeatPeriod = time.Duration(r.HeartbeatPeriod * float64(time.Second))
	// Contact: the first observation counts as contact now, which can only
	// delay a failover (a replica that seems to hear its source vetoes it).
	now := time.Now()
	if pr := r.Progress(); pr != m.progress || m.progressAt.IsZero() {
		m.progress, m.progressAt = pr, now
	}
	if r.IORunning() {
		st.SourceContact = now.Sub(m.progressAt)
	}
	return nil
}

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
