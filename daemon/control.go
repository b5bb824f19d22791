package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/admin"
	"github.com/dbrouter/dbrouter/arbiter"
	"github.com/dbrouter/dbrouter/config"
	"github.com/dbrouter/dbrouter/raftfsm"
	"github.com/dbrouter/dbrouter/router"
	"github.com/dbrouter/dbrouter/topology"
)

// decider is one cluster's arbiter, whatever the flavour (arbiter.Arbiter
// for MariaDB, arbiter.Mongo for a replica set).
type decider interface {
	Run(ctx context.Context)
	Promote(ctx context.Context, member string, timeout time.Duration) error
}

// control is this node's part of the control plane: its Raft node, the
// admin operations (run here when this node leads, forwarded to the leader
// otherwise), and for a proxy the join and lease loops.
type control struct {
	cfg    *config.Config
	node   *raftfsm.Node
	secret []byte
	log    *zap.Logger
	http   *http.Client

	monitors map[string]*topology.Monitor
	arbiters map[string]decider

	mu         sync.Mutex
	leaseSeen  map[string]time.Time // leader: proxy id → last lease renewal
	applied    map[string]uint64    // leader: proxy id → log index it reported applied
	lastJoined time.Time
}

func openControl(cfg *config.Config, log *zap.Logger) (*control, error) {
	ct := cfg.Control
	secret := []byte(config.Password(ct.Secret))
	nc := raftfsm.NodeConfig{ID: cfg.Name, Bind: ct.RaftListen, Dir: ct.Dir, Secret: secret, Voter: cfg.Role == "arbiter",
		Lease: ct.Lease.D(), ProxyTimeout: ct.ProxyTimeout.D(), JoinExisting: ct.JoinExisting}
	if nc.Voter {
		for _, a := range ct.Arbiters {
			nc.Voters = append(nc.Voters, raftfsm.Peer{ID: a.Name, Addr: a.Raft})
		}
	}
	node, err := raftfsm.Open(nc, log)
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	return &control{cfg: cfg, node: node, secret: secret, log: log.Named("control"), http: &http.Client{Timeout: 5 * time.Minute},
		monitors: map[string]*topology.Monitor{}, arbiters: map[string]decider{}, leaseSeen: map[string]time.Time{}, applied: map[string]uint64{}}, nil
}

func (c *control) close() {
	if err := c.node.Close(); err != nil {
		c.log.Warn("raft shutdown", zap.Error(err))
	}
}

// adminOf returns the admin address of an arbiter by name.
func (c *control) adminOf(id string) string {
	for _, a := range c.arbiterPeers() {
		if a.Name == id {
			return a.Admin
		}
	}
	return ""
}

// arbiterPeers lists the configured arbiters and those added to the running
// group since (recorded in the replicated state). A configured arbiter that
// was removed stays listed; it just no longer answers.
func (c *control) arbiterPeers() []config.Arbiter {
	st := c.node.State()
	out := slices.Clone(c.cfg.Control.Arbiters)
	for _, a := range st.Arbiters {
		if !slices.ContainsFunc(out, func(x config.Arbiter) bool { return x.Name == a.ID }) {
			out = append(out, config.Arbiter{Name: a.ID, Raft: a.Raft, Admin: a.Admin})
		}
	}
	slices.SortFunc(out[len(c.cfg.Control.Arbiters):], func(a, b config.Arbiter) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// voters counts the Raft configuration's voters (the configured count until
// the configuration is known).
func (c *control) voters() int {
	servers, err := c.node.Servers()
	if err != nil {
		return len(c.cfg.Control.Arbiters)
	}
	n := 0
	for _, s := range servers {
		if s.Voter {
			n++
		}
	}
	if n == 0 {
		return len(c.cfg.Control.Arbiters)
	}
	return n
}

// client calls the admin API of the node named name at addr.
func (c *control) client(name, addr string) *admin.Client {
	return &admin.Client{Addr: addr, Node: name, Secret: c.secret, HTTP: c.http}
}

// forward sends an operation to the leader's admin API.
func (c *control) forward(ctx context.Context, method, path string, in, out any) error {
	id, _ := c.node.Leader()
	addr := c.adminOf(id)
	if addr == "" {
		return &raftfsm.ErrNotLeader{LeaderID: id}
	}
	return c.client(id, addr).Do(ctx, method, path, in, out)
}

// clusterState reads the applied state of one cluster.
func (c *control) clusterState(name string) func() *raftfsm.Cluster {
	return func() *raftfsm.Cluster { return c.node.State().Cluster(name) }
}

// heartbeatGate lets a monitor write its heartbeat only to the primary of
// the applied epoch, while serving, and only while this node may write: the
// leader on an arbiter, a proxy holding its lease.
func (c *control) heartbeatGate(cluster string) func(string) bool {
	return func(member string) bool {
		cl := c.node.State().Cluster(cluster)
		if !cl.Writable() || cl.Primary != member {
			return false
		}
		if c.cfg.Role == "arbiter" {
			return c.node.IsLeader()
		}
		ok, _ := c.node.Lease()
		return ok
	}
}

// followFenced keeps the router's read set free of the members the control
// plane has fenced (an errant member may replicate fine and still hold data
// the primary never had), applying each change as the FSM applies it.
func (c *control) followFenced(ctx context.Context, cluster string, rt interface{ SetExcluded([]string) }) {
	var last []string
	first := true
	for {
		changed := c.node.FSM().Changed()
		var fenced []string
		if cl := c.node.State().Cluster(cluster); cl != nil {
			for name, ms := range cl.Members {
				if ms.Fenced {
					fenced = append(fenced, name)
				}
			}
		}
		slices.Sort(fenced)
		if first || !slices.Equal(fenced, last) {
			rt.SetExcluded(fenced)
			last, first = fenced, false
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// authority is the router's view of the control plane for one cluster.
type authority struct {
	node    *raftfsm.Node
	cluster string
}

func (c *control) authority(cluster string) router.Authority {
	return &authority{node: c.node, cluster: cluster}
}

// errIncompatible is not a hold: only an upgrade helps.
var errIncompatible = errors.New("this routerd cannot apply the control plane's log (a newer version wrote it): upgrade it")

func (a *authority) Writer() (string, uint64, error) {
	st := a.node.State()
	if st.Incompatible != "" {
		return "", 0, fmt.Errorf("%w: %s", errIncompatible, st.Incompatible)
	}
	if ok, age := a.node.Lease(); !ok {
		if age < 0 {
			return "", 0, fmt.Errorf("%w: not yet granted by the control plane", router.ErrNoLease)
		}
		return "", 0, fmt.Errorf("%w: last renewed %s ago (lease %s)", router.ErrNoLease, age.Round(time.Millisecond), a.node.LeaseDuration())
	}
	cl := st.Cluster(a.cluster)
	switch {
	case cl == nil:
		return "", 0, fmt.Errorf("%w: no epoch recorded for cluster %s yet", router.ErrNoLease, a.cluster)
	case cl.Phase != raftfsm.PhaseServing:
		return "", 0, fmt.Errorf("%w: epoch %d is %s to %s", router.ErrChanging, cl.Epoch, cl.Phase, cl.Primary)
	}
	return cl.Primary, cl.Epoch, nil
}

func (a *authority) Changed() <-chan struct{} { return a.node.FSM().Changed() }

// Acknowledgeable: without a lease this proxy cannot know whether a failover
// has made the write's primary obsolete, so it acknowledges nothing.
func (a *authority) Acknowledgeable(epoch uint64) bool {
	if ok, _ := a.node.Lease(); !ok {
		return false
	}
	return a.node.State().Cluster(a.cluster).Acknowledgeable(epoch)
}

// --- admin.Control ---

func (c *control) Secret() []byte { return c.secret }

// Node is this node's name (its Raft id).
func (c *control) Node() string { return c.cfg.Name }

func (c *control) Overview() admin.ControlStatus {
	leader, _ := c.node.Leader()
	st := c.node.State()
	o := admin.ControlStatus{Node: c.cfg.Name, Role: c.cfg.Role, Leader: leader, Term: c.node.Term(), Applied: st.Index,
		LeaseAgeMs: -1, Incompatible: st.Incompatible, Proxies: []admin.ProxyStatus{}}
	if c.cfg.Role == "proxy" {
		ok, age := c.node.Lease()
		o.LeaseOK = ok
		if age >= 0 {
			o.LeaseAgeMs = age.Milliseconds()
		}
	}
	c.mu.Lock()
	for _, p := range st.Proxies {
		ps := admin.ProxyStatus{ID: p.ID, Site: p.Site, Admin: p.Admin, LeaseAgeMs: -1}
		if t, ok := c.leaseSeen[p.ID]; ok && c.node.IsLeader() {
			ps.LeaseAgeMs = time.Since(t).Milliseconds()
		}
		o.Proxies = append(o.Proxies, ps)
	}
	c.mu.Unlock()
	sort.Slice(o.Proxies, func(i, j int) bool { return o.Proxies[i].ID < o.Proxies[j].ID })
	return o
}

func (c *control) Members() ([]raftfsm.Server, error) { return c.node.Servers() }

func (c *control) Join(ctx context.Context, req admin.JoinRequest) error {
	if !c.node.IsLeader() {
		return c.forward(ctx, "POST", "/v1/raft/join", req, nil)
	}
	if c.adminOf(req.ID) != "" {
		return fmt.Errorf("%w: %s is an arbiter's name; proxies need names of their own", raftfsm.ErrInvalid, req.ID)
	}
	if err := c.node.Join(ctx, req.ID, req.Raft, false); err != nil {
		return err
	}
	if p, ok := c.node.State().Proxies[req.ID]; ok && p.Raft == req.Raft && p.Admin == req.Admin && p.Site == req.Site {
		return nil
	}
	_, err := c.node.Propose(ctx, &raftfsm.Command{Type: raftfsm.TypeProxyJoin, At: time.Now(),
		Proxy: &raftfsm.Proxy{ID: req.ID, Raft: req.Raft, Admin: req.Admin, Site: req.Site}})
	return err
}

// AddArbiter makes a new arbiter (started with join_existing) a voter and
// records its admin address, so every node can forward to it and ask it for
// observations without a config change.
func (c *control) AddArbiter(ctx context.Context, req admin.JoinRequest) error {
	if !c.node.IsLeader() {
		return c.forward(ctx, "POST", "/v1/raft/arbiters", req, nil)
	}
	if _, ok := c.node.State().Proxies[req.ID]; ok {
		return fmt.Errorf("%w: %s is a proxy's name; arbiters need names of their own", raftfsm.ErrInvalid, req.ID)
	}
	if err := c.node.Join(ctx, req.ID, req.Raft, true); err != nil {
		return err
	}
	_, err := c.node.Propose(ctx, &raftfsm.Command{Type: raftfsm.TypeArbiterJoin, At: time.Now(),
		Arbiter: &raftfsm.Proxy{ID: req.ID, Raft: req.Raft, Admin: req.Admin}})
	if err == nil {
		c.log.Info("arbiter added", zap.String("arbiter", req.ID), zap.String("raft", req.Raft))
	}
	return err
}

// Remove takes a node out of the Raft configuration (a dead arbiter being
// replaced, a proxy host retired) and forgets what the state recorded of it.
func (c *control) Remove(ctx context.Context, id string) error {
	if !c.node.IsLeader() {
		return c.forward(ctx, "POST", "/v1/raft/remove", admin.RemoveRequest{ID: id}, nil)
	}
	servers, err := c.node.Servers()
	if err != nil {
		return err
	}
	var self *raftfsm.Server
	voters := 0
	for i, s := range servers {
		if s.ID == id {
			self = &servers[i]
		}
		if s.Voter {
			voters++
		}
	}
	switch {
	case self == nil:
		return fmt.Errorf("%w: %s is not in the Raft configuration", raftfsm.ErrInvalid, id)
	case self.Voter && voters == 1:
		return fmt.Errorf("%w: %s is the last voter", raftfsm.ErrInvalid, id)
	case self.Leader:
		// Removing the leader would leave its own record behind (it can no
		// longer commit once out): have the others elect another first.
		return fmt.Errorf("%w: %s leads the group; stop it (another arbiter takes over) and remove it from there", raftfsm.ErrInvalid, id)
	}
	st := c.node.State()
	var cmd *raftfsm.Command
	if _, ok := st.Arbiters[id]; ok {
		cmd = &raftfsm.Command{Type: raftfsm.TypeArbiterLeave, At: time.Now(), Arbiter: &raftfsm.Proxy{ID: id}}
	} else if _, ok := st.Proxies[id]; ok {
		cmd = &raftfsm.Command{Type: raftfsm.TypeProxyLeave, At: time.Now(), Proxy: &raftfsm.Proxy{ID: id}}
	}
	if err := c.node.Remove(ctx, id); err != nil {
		return err
	}
	if cmd != nil {
		if _, err := c.node.Propose(ctx, cmd); err != nil {
			return fmt.Errorf("removed %s; forgetting its record: %w", id, err)
		}
	}
	c.log.Info("removed from the group", zap.String("node", id))
	return nil
}

func (c *control) Lease(ctx context.Context, proxy string, applied uint64) (admin.LeaseAnswer, error) {
	idx, err := c.node.LeaseIndex(ctx)
	if err != nil {
		return admin.LeaseAnswer{}, err
	}
	c.mu.Lock()
	c.leaseSeen[proxy] = time.Now()
	c.applied[proxy] = max(c.applied[proxy], applied)
	c.mu.Unlock()
	return admin.LeaseAnswer{Index: idx, Leader: c.cfg.Name}, nil
}

func (c *control) Observe(cluster string) (arbiter.Observation, error) {
	mon, ok := c.monitors[cluster]
	if !ok {
		return arbiter.Observation{}, fmt.Errorf("%w %q", raftfsm.ErrUnknownCluster, cluster)
	}
	return arbiter.Observe(c.cfg.Name, mon.Snapshot()), nil
}

func (c *control) Promote(ctx context.Context, cluster, member string, timeout time.Duration) error {
	if !c.node.IsLeader() {
		return c.forward(ctx, "POST", "/v1/clusters/"+cluster+"/promote", admin.PromoteRequest{Member: member, Timeout: timeout.String()}, nil)
	}
	a, ok := c.arbiters[cluster]
	if !ok {
		return fmt.Errorf("%w %q", raftfsm.ErrUnknownCluster, cluster)
	}
	return a.Promote(ctx, member, timeout)
}

func (c *control) Maintenance(ctx context.Context, cluster, member string, on bool) error {
	if !c.node.IsLeader() {
		return c.forward(ctx, "POST", "/v1/clusters/"+cluster+"/maintenance", admin.MaintenanceRequest{Member: member, On: on}, nil)
	}
	cl := c.node.State().Cluster(cluster)
	if cl == nil {
		return fmt.Errorf("%w %q", raftfsm.ErrUnknownCluster, cluster)
	}
	state := "off"
	if on {
		state = "on"
	}
	_, err := c.node.Propose(ctx, &raftfsm.Command{Type: raftfsm.TypeMember, Cluster: cluster, Epoch: cl.Epoch, At: time.Now(),
		Member: member, Maintenance: &on, Reason: "maintenance " + state + " by operator"})
	return err
}

// confirmed reports whether every proxy in the Raft configuration has
// reported applying the log up to index (arbiter.Config.Confirmed).
func (c *control) confirmed(index uint64) bool {
	servers, err := c.node.Servers()
	if err != nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range servers {
		if !s.Voter && c.applied[s.ID] < index {
			return false
		}
	}
	return true
}

// Observations implements arbiter.Observers: this arbiter's view and every
// other arbiter's, asked in parallel with a short timeout. One that does not
// answer is left out, which can only delay a failover, never cause one.
func (c *control) Observations(ctx context.Context, cluster string) []arbiter.Observation {
	own, err := c.Observe(cluster)
	if err != nil {
		return nil
	}
	out := []arbiter.Observation{own}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, a := range c.arbiterPeers() {
		if a.Name == c.cfg.Name {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			var o arbiter.Observation
			if err := c.client(a.Name, a.Admin).Do(cctx, "POST", "/v1/observe/"+cluster, nil, &o); err != nil {
				c.log.Debug("observe", zap.String("arbiter", a.Name), zap.Error(err))
				return
			}
			o.Arbiter = a.Name
			mu.Lock()
			out = append(out, o)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// joinLoop keeps this proxy in the group: it asks the arbiters to add it
// until a leader is in contact, and again whenever contact has been lost for
// long (the leader may have removed it as vanished).
func (c *control) joinLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if time.Since(c.node.LastContact()) > 3*c.node.LeaseDuration() {
			c.join(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *control) join(ctx context.Context) {
	raftAddr := c.cfg.Control.RaftListen
	if c.cfg.Control.RaftAdvertise != "" {
		raftAddr = c.cfg.Control.RaftAdvertise
	}
	req := admin.JoinRequest{ID: c.cfg.Name, Raft: raftAddr, Admin: c.cfg.Admin.Listen, Site: c.cfg.Site}
	var last error
	for _, a := range c.cfg.Control.Arbiters {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := c.client(a.Name, a.Admin).Do(cctx, "POST", "/v1/raft/join", req, nil)
		cancel()
		if err == nil {
			c.mu.Lock()
			first := c.lastJoined.IsZero()
			c.lastJoined = time.Now()
			c.mu.Unlock()
			if first {
				c.log.Info("joined the control plane", zap.String("via", a.Name))
			}
			return
		}
		last = err
	}
	if ctx.Err() == nil {
		c.log.Warn("cannot join the control plane yet", zap.Error(last))
	}
}

// leaseLoop renews the write lease four times per lease period, so one lost
// renewal never costs the lease. Each renewal asks the leader for its log
// index (see raftfsm.Node.RenewLease for why that is safe).
func (c *control) leaseLoop(ctx context.Context) {
	lease := c.node.LeaseDuration()
	t := time.NewTicker(lease / 4)
	defer t.Stop()
	var failing bool
	changed := c.node.FSM().Changed()
	for {
		// Renew at once after applying a change too: that renewal is what
		// tells the leader this proxy now holds its writes for the change,
		// so a switchover need not wait out the whole lease.
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-changed:
		}
		changed = c.node.FSM().Changed()
		err := c.renew(ctx, lease/2)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			failing = true
			c.log.Warn("lease renewal failing", zap.Error(err))
		case err == nil && failing:
			failing = false
			c.log.Info("lease renewed again")
		}
	}
}

func (c *control) renew(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	id, _ := c.node.Leader()
	addr := c.adminOf(id)
	if addr == "" {
		return errors.New("no leader known")
	}
	sent := time.Now()
	var ans admin.LeaseAnswer
	req := admin.LeaseRequest{Proxy: c.cfg.Name, Applied: c.node.State().Index}
	if err := c.client(id, addr).Do(ctx, "POST", "/v1/raft/lease", req, &ans); err != nil {
		return err
	}
	return c.node.RenewLease(ctx, sent, ans.Index)
}
