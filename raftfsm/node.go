package raftfsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.uber.org/zap"
)

// Peer is a voter of the group.
type Peer struct {
	ID   string
	Addr string
}

// NodeConfig is what a Node needs.
type NodeConfig struct {
	ID string
	// Bind is the Raft listen address (host:port); it is also the address
	// the other nodes dial.
	Bind string
	// Dir holds raft.db (log and stable store) and snapshots/.
	Dir string
	// Secret is the cluster secret every node holds.
	Secret []byte
	// Voter: arbiters vote; proxies join as non-voters.
	Voter bool
	// Voters is the initial voter set; an arbiter with no state bootstraps
	// the group with it (every arbiter passes the same list).
	Voters []Peer
	// JoinExisting: an arbiter added to a running group never bootstraps;
	// it waits, like a proxy, for the leader to add it (Join).
	JoinExisting bool
	// Lease is how long a proxy may route writes after its last proof of an
	// up-to-date log (see RenewLease). Default 2 s.
	Lease time.Duration
	// ProxyTimeout: a non-voter the leader has not reached for this long is
	// removed from the configuration. Default 60 s.
	ProxyTimeout time.Duration
	// HeartbeatTimeout and ElectionTimeout tune Raft; defaults 1 s each.
	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration

	// Transport and InMemory replace the TCP transport and the on-disk stores
	// (tests).
	Transport raft.Transport
	InMemory  bool
}

// Node is one member of the Raft group: an arbiter (voter) or a proxy
// (non-voter).
type Node struct {
	cfg   NodeConfig
	log   *zap.Logger
	fsm   *FSM
	raft  *raft.Raft
	trans raft.Transport
	bolt  *raftboltdb.BoltStore
	logs  raft.LogStore

	base       time.Time    // monotonic origin for leaseUntil
	leaseUntil atomic.Int64 // nanoseconds after base; 0: none

	obsCh    chan raft.Observation
	observer *raft.Observer
	mu       sync.Mutex
	failing  map[raft.ServerID]time.Time // non-voters the leader cannot reach, since
	stop     chan struct{}
	wg       sync.WaitGroup
	closed   sync.Once
	closeErr error
}

// ErrNotLeader is returned by leader-only operations on a follower; Leader
// names the node to ask instead ("" when there is none).
type ErrNotLeader struct {
	LeaderID   string
	LeaderAddr string
}

func (e *ErrNotLeader) Error() string {
	if e.LeaderID == "" {
		return "not the raft leader, and no leader is known (no quorum?)"
	}
	return fmt.Sprintf("not the raft leader; the leader is %s (%s)", e.LeaderID, e.LeaderAddr)
}

// Open starts a node. An arbiter with no existing state bootstraps the
// voters it was given; a proxy waits to be added by the leader (Join).
func Open(cfg NodeConfig, log *zap.Logger) (*Node, error) {
	if cfg.ID == "" {
		return nil, errors.New("raft node: empty id")
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 2 * time.Second
	}
	if cfg.ProxyTimeout <= 0 {
		cfg.ProxyTimeout = time.Minute
	}
	if cfg.HeartbeatTimeout <= 0 {
		cfg.HeartbeatTimeout = time.Second
	}
	if cfg.ElectionTimeout <= 0 {
		cfg.ElectionTimeout = time.Second
	}
	n := &Node{cfg: cfg, log: log.Named("raft").With(zap.String("node", cfg.ID)), fsm: NewFSM(), base: time.Now(),
		failing: map[raft.ServerID]time.Time{}, stop: make(chan struct{})}
	hlog := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: zapWriter{n.log}})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = hlog
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = min(cfg.HeartbeatTimeout, rc.LeaderLeaseTimeout)
	rc.SnapshotThreshold = 1024
	rc.TrailingLogs = 1024

	var (
		logs   raft.LogStore
		stable raft.StableStore
		snaps  raft.SnapshotStore
	)
	if cfg.InMemory {
		mem := raft.NewInmemStore()
		logs, stable, snaps = mem, mem, raft.NewInmemSnapshotStore()
	} else {
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("raft dir: %w", err)
		}
		bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.Dir, "raft.db")})
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", filepath.Join(cfg.Dir, "raft.db"), err)
		}
		n.bolt = bolt
		logs, stable = bolt, bolt
		fs, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hlog)
		if err != nil {
			bolt.Close()
			return nil, fmt.Errorf("snapshot store in %s: %w", cfg.Dir, err)
		}
		snaps = fs
	}

	n.trans = cfg.Transport
	if n.trans == nil {
		if len(cfg.Secret) == 0 {
			n.closeStores()
			return nil, errors.New("raft node: no cluster secret; every node needs the same secret")
		}
		ln, err := net.Listen("tcp", cfg.Bind)
		if err != nil {
			n.closeStores()
			return nil, fmt.Errorf("raft listen %s: %w", cfg.Bind, err)
		}
		n.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream: newAuthLayer(ln, cfg.Secret, n.log), MaxPool: 3, Timeout: 5 * time.Second, Logger: hlog,
		})
	}

	if cfg.Voter && len(cfg.Voters) > 0 && !cfg.JoinExisting {
		has, err := raft.HasExistingState(logs, stable, snaps)
		if err != nil {
			n.closeAll()
			return nil, fmt.Errorf("raft state in %s: %w", cfg.Dir, err)
		}
		if !has {
			var conf raft.Configuration
			for _, p := range cfg.Voters {
				conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
			}
			if err := raft.BootstrapCluster(rc, logs, stable, snaps, n.trans, conf); err != nil {
				n.closeAll()
				return nil, fmt.Errorf("bootstrap raft: %w", err)
			}
		}
	}
	n.logs = logs
	r, err := raft.NewRaft(rc, n.fsm, logs, stable, snaps, n.trans)
	if err != nil {
		n.closeAll()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	n.raft = r
	n.obsCh = make(chan raft.Observation, 64)
	n.observer = raft.NewObserver(n.obsCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation:
			return true
		}
		return false
	})
	r.RegisterObserver(n.observer)
	n.wg.Add(1)
	go n.reapProxies()
	return n, nil
}

func (n *Node) closeStores() {
	if n.bolt != nil {
		n.bolt.Close()
	}
}

func (n *Node) closeAll() {
	if c, ok := n.trans.(raft.WithClose); ok && n.cfg.Transport == nil {
		c.Close()
	}
	n.closeStores()
}

// Close leaves nothing running (idempotent). It does not remove the node
// from the group.
func (n *Node) Close() error {
	n.closed.Do(func() {
		close(n.stop)
		n.wg.Wait()
		n.raft.DeregisterObserver(n.observer)
		n.closeErr = n.raft.Shutdown().Error()
		n.closeAll()
	})
	return n.closeErr
}

// FSM returns the node's state machine.
func (n *Node) FSM() *FSM { return n.fsm }

// State is the applied state.
func (n *Node) State() *State { return n.fsm.State() }

// ID is the node's id.
func (n *Node) ID() string { return n.cfg.ID }

// IsLeader reports whether this node leads the group now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the current leader's id and address, or "" when unknown.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// Term is the current Raft term.
func (n *Node) Term() uint64 { return n.raft.CurrentTerm() }

// Barrier returns once every entry committed before it has been applied to
// this node's FSM (leader only). A new leader calls it before acting: it
// wins its election with every committed entry in its log, but it may not
// have applied them yet (restarted from an older snapshot, say), and a
// decision on that state would undo what the group already decided.
func (n *Node) Barrier(ctx context.Context) error {
	if !n.IsLeader() {
		return n.notLeader()
	}
	if err := n.raft.Barrier(timeoutOf(ctx, 10*time.Second)).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return fmt.Errorf("barrier: %w", n.notLeader())
		}
		return fmt.Errorf("barrier: %w", err)
	}
	return nil
}

// TransferLeadership hands leadership to the voter named to (leader only):
// the leader cannot reach a member that another arbiter can, and only a
// leader acts on members.
func (n *Node) TransferLeadership(ctx context.Context, to string) error {
	if !n.IsLeader() {
		return n.notLeader()
	}
	servers, err := n.Servers()
	if err != nil {
		return err
	}
	for _, s := range servers {
		if s.ID == to && s.Voter {
			if err := n.raft.LeadershipTransferToServer(raft.ServerID(s.ID), raft.ServerAddress(s.Addr)).Error(); err != nil {
				return fmt.Errorf("hand leadership to %s: %w", to, err)
			}
			return nil
		}
	}
	return fmt.Errorf("hand leadership to %s: %w: not a voter", to, ErrInvalid)
}

// VerifyLeader confirms with a quorum that this node still leads: a leader
// cut off from the others keeps believing it leads for a while, and must
// not touch a database in that time.
func (n *Node) VerifyLeader(ctx context.Context) error {
	f := n.raft.VerifyLeader()
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("verify leadership: %w", n.notLeader())
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("verify leadership: %w", ctx.Err())
	}
}

// LastContact is when this node last heard from a leader (now for the leader).
func (n *Node) LastContact() time.Time {
	if n.IsLeader() {
		return time.Now()
	}
	return n.raft.LastContact()
}

func (n *Node) notLeader() error {
	id, addr := n.Leader()
	return &ErrNotLeader{LeaderID: id, LeaderAddr: addr}
}

func timeoutOf(ctx context.Context, def time.Duration) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), time.Millisecond)
	}
	return def
}

// Propose commits a command through the log and returns what Apply decided.
// Only the leader proposes; others get *ErrNotLeader.
func (n *Node) Propose(ctx context.Context, c *Command) (Result, error) {
	if !n.IsLeader() {
		return Result{}, n.notLeader()
	}
	b, err := c.Encode()
	if err != nil {
		return Result{}, err
	}
	f := n.raft.Apply(b, timeoutOf(ctx, 10*time.Second))
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return Result{}, fmt.Errorf("propose %s: %w", c.Type, n.notLeader())
		}
		return Result{}, fmt.Errorf("propose %s: %w", c.Type, err)
	}
	res, _ := f.Response().(Result)
	res.Index = f.Index()
	return res, res.Err
}

// Join adds a node (leader only): proxies as non-voters, arbiters as voters.
// Joining again with the same id and address is a no-op.
func (n *Node) Join(ctx context.Context, id, addr string, voter bool) error {
	if !n.IsLeader() {
		return n.notLeader()
	}
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("join %s: %w", id, err)
	}
	for _, s := range cf.Configuration().Servers {
		if string(s.ID) == id || string(s.Address) == addr {
			if string(s.ID) == id && string(s.Address) == addr && (s.Suffrage == raft.Voter) == voter {
				return nil
			}
			if err := n.raft.RemoveServer(s.ID, 0, timeoutOf(ctx, 10*time.Second)).Error(); err != nil {
				return fmt.Errorf("join %s: remove stale entry %s: %w", id, s.ID, err)
			}
		}
	}
	var f raft.IndexFuture
	if voter {
		f = n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeoutOf(ctx, 10*time.Second))
	} else {
		f = n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeoutOf(ctx, 10*time.Second))
	}
	if err := f.Error(); err != nil {
		return fmt.Errorf("join %s (%s): %w", id, addr, err)
	}
	return nil
}

// Remove takes a node out of the configuration (leader only).
func (n *Node) Remove(ctx context.Context, id string) error {
	if !n.IsLeader() {
		return n.notLeader()
	}
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, timeoutOf(ctx, 10*time.Second)).Error(); err != nil {
		return fmt.Errorf("remove %s: %w", id, err)
	}
	return nil
}

// Server is one entry of the Raft configuration.
type Server struct {
	ID     string `json:"id"`
	Addr   string `json:"addr"`
	Voter  bool   `json:"voter"`
	Leader bool   `json:"leader"`
}

// Servers returns the Raft configuration.
func (n *Node) Servers() ([]Server, error) {
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, err
	}
	leader, _ := n.Leader()
	var out []Server
	for _, s := range cf.Configuration().Servers {
		out = append(out, Server{ID: string(s.ID), Addr: string(s.Address), Voter: s.Suffrage == raft.Voter, Leader: string(s.ID) == leader})
	}
	return out, nil
}

// LeaseIndex is the leader's half of a lease renewal. It confirms with a
// quorum that this node still leads (a deposed leader cut off from the
// others must not vouch for a proxy) and returns the index of the last
// command in its log: every committed command, including any new epoch, is at
// or below it. (Raft's own entries, no-ops and configuration changes, never
// reach an FSM, so the index named is always one a proxy's FSM will apply.)
func (n *Node) LeaseIndex(ctx context.Context) (uint64, error) {
	if !n.IsLeader() {
		return 0, n.notLeader()
	}
	if err := n.raft.VerifyLeader().Error(); err != nil {
		return 0, fmt.Errorf("lease: %w", n.notLeader())
	}
	idx := n.fsm.State().Index
	var l raft.Log
	for i := n.raft.LastIndex(); i > idx; i-- {
		if err := n.logs.GetLog(i, &l); err != nil {
			break // compacted: everything older is in the leader's FSM already
		}
		if l.Type == raft.LogCommand {
			idx = i
			break
		}
	}
	return idx, nil
}

// RenewLease is the proxy's half. sent is when the proxy asked the leader,
// index what the leader answered. Once the local FSM has applied up to index,
// the proxy may write until sent+lease.
//
// Why this is safe: the leader opens a new primary only lease+margin after
// committing the epoch that names it. If that commit happened before the
// leader answered, index covers it and the proxy applies it before its lease
// counts. If it happened after, it happened after sent, so the lease ends
// before the new primary opens. Only elapsed time on each machine's monotonic
// clock is compared, never clocks across machines; margin covers rate drift.
func (n *Node) RenewLease(ctx context.Context, sent time.Time, index uint64) error {
	for {
		ch := n.fsm.Changed()
		if n.fsm.State().Index >= index {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lease: applied %d of %d: %w", n.fsm.State().Index, index, ctx.Err())
		case <-ch:
		}
	}
	until := int64(sent.Sub(n.base) + n.cfg.Lease)
	for {
		cur := n.leaseUntil.Load()
		if cur >= until || n.leaseUntil.CompareAndSwap(cur, until) {
			return nil
		}
	}
}

// Lease reports whether this node may route writes now: its lease, renewed
// through the leader, is current, and it heard from a leader within the
// lease. It returns the age of the last renewal's send time.
func (n *Node) Lease() (ok bool, age time.Duration) {
	now := time.Since(n.base)
	until := time.Duration(n.leaseUntil.Load())
	if until == 0 {
		return false, -1
	}
	age = now - (until - n.cfg.Lease)
	ok = now < until && time.Since(n.LastContact()) < n.cfg.Lease && n.fsm.State().Incompatible == ""
	return ok, age
}

// LeaseDuration is the configured lease.
func (n *Node) LeaseDuration() time.Duration { return n.cfg.Lease }

// reapProxies removes non-voters the leader has not reached for
// ProxyTimeout, so a fleet of proxies that come and go does not grow the
// configuration (and the leader's replication work) without bound.
func (n *Node) reapProxies() {
	defer n.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case o := <-n.obsCh:
			n.mu.Lock()
			switch d := o.Data.(type) {
			case raft.FailedHeartbeatObservation:
				if _, ok := n.failing[d.PeerID]; !ok {
					n.failing[d.PeerID] = d.LastContact
				}
			case raft.ResumedHeartbeatObservation:
				delete(n.failing, d.PeerID)
			}
			n.mu.Unlock()
		case <-t.C:
			if !n.IsLeader() {
				n.mu.Lock()
				clear(n.failing)
				n.mu.Unlock()
				continue
			}
			n.reapOnce()
		}
	}
}

func (n *Node) reapOnce() {
	servers, err := n.Servers()
	if err != nil {
		return
	}
	n.mu.Lock()
	var gone []string
	for _, s := range servers {
		since, ok := n.failing[raft.ServerID(s.ID)]
		if ok && !s.Voter && !since.IsZero() && time.Since(since) > n.cfg.ProxyTimeout {
			gone = append(gone, s.ID)
		}
	}
	n.mu.Unlock()
	for _, id := range gone {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := n.Remove(ctx, id)
		if err == nil {
			_, err = n.Propose(ctx, &Command{Type: TypeProxyLeave, At: time.Now(), Proxy: &Proxy{ID: id}})
		}
		cancel()
		if err != nil {
			n.log.Warn("remove vanished proxy", zap.String("proxy", id), zap.Error(err))
			continue
		}
		n.mu.Lock()
		delete(n.failing, raft.ServerID(id))
		n.mu.Unlock()
		n.log.Info("removed vanished proxy", zap.String("proxy", id), zap.Duration("unreachable_for", n.cfg.ProxyTimeout))
	}
}

// zapWriter carries hclog's lines (raft's own logging) into zap.
type zapWriter struct{ log *zap.Logger }

func (w zapWriter) Write(p []byte) (int, error) {
	w.log.Warn(string(bytes.TrimSpace(p)))
	return len(p), nil
}
