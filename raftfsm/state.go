package raftfsm

import (
	"maps"
	"slices"
	"time"
)

// Phase is where a cluster is in its primary's lifecycle.
type Phase string

// Phases. Writes are routed only in PhaseServing.
const (
	PhaseServing     Phase = "serving"
	PhaseSwitching   Phase = "switching"
	PhaseFailingOver Phase = "failing_over"
)

// HistoryLimit bounds each cluster's decision history, so the replicated
// state (and every snapshot) stays small however long the group runs.
const HistoryLimit = 100

// MemberState is what the group has decided about one member.
type MemberState struct {
	Maintenance bool `json:"maintenance,omitempty"`
	// Fenced: made read-only and out of the write path; it rejoins only
	// through a decision.
	Fenced bool `json:"fenced,omitempty"`
	// Errant holds transactions the member has that the primary lacks (a
	// GTID set); such a member stays fenced until an operator acts.
	Errant string `json:"errant,omitempty"`
}

// Decision is one entry of a cluster's history.
type Decision struct {
	Epoch  uint64    `json:"epoch"`
	At     time.Time `json:"at"`
	Kind   string    `json:"kind"`
	From   string    `json:"from,omitempty"`
	To     string    `json:"to,omitempty"`
	Member string    `json:"member,omitempty"`
	Reason string    `json:"reason,omitempty"`
}

// Cluster is the replicated state of one database cluster.
type Cluster struct {
	Name    string `json:"name"`
	Epoch   uint64 `json:"epoch"`
	Primary string `json:"primary"`
	Phase   Phase  `json:"phase"`
	// Previous is the primary before the change in progress (phase switching
	// or failing_over): the member a switchover rolls back to and the one to
	// fence. Empty while serving.
	Previous string `json:"previous,omitempty"`
	// PhaseSince is when the phase was entered (the leader's clock, from the
	// command).
	PhaseSince time.Time `json:"phase_since"`
	// SafeSince is the oldest epoch whose primary's acknowledged writes are
	// all on the current primary. A switchover keeps it (the old primary is
	// fenced and the target catches up to its final position before
	// opening); a failover moves it to the new epoch (the old primary may
	// have committed writes after the candidate stopped receiving them).
	SafeSince uint64 `json:"safe_since"`
	// LastFailover is the proposer's clock at the last failover: for people.
	// No decision compares it with another machine's clock.
	LastFailover time.Time              `json:"last_failover,omitempty"`
	Members      map[string]MemberState `json:"members"`
	History      []Decision             `json:"history"`
	// Decisions counts every decision recorded since the group began, by
	// kind (History keeps only the last HistoryLimit): the control plane's
	// metrics read it, the same on every node and across restarts.
	Decisions map[string]uint64 `json:"decisions,omitempty"`
	// Durations is how long the last change of each result took, from its
	// begin to it (switchover_done, failover_done, switchover_aborted).
	Durations map[string]time.Duration `json:"durations,omitempty"`
	// Openings records, per epoch whose primary opened, that primary's
	// server id and GTID position when it opened (oldest first, bounded by
	// HistoryLimit). Together they are the current primary's history: a
	// returning member is judged against them before it may rejoin.
	Openings []Opening `json:"openings,omitempty"`
}

// Opening is where one epoch's primary began taking writes.
type Opening struct {
	Epoch    uint64 `json:"epoch"`
	Member   string `json:"member"`
	ServerID uint32 `json:"server_id"`
	// GTID is the primary's GTID binlog position when it opened.
	GTID string `json:"gtid"`
}

// OpenedAt is what a command that opens a primary says about where it
// opened.
type OpenedAt struct {
	ServerID uint32 `json:"server_id"`
	GTID     string `json:"gtid"`
}

// Proxy is a routerd in role proxy that joined the group as a non-voter (or,
// in State.Arbiters, an arbiter added to a running group).
type Proxy struct {
	ID     string    `json:"id"`
	Raft   string    `json:"raft"`
	Admin  string    `json:"admin,omitempty"`
	Site   string    `json:"site,omitempty"`
	Joined time.Time `json:"joined"`
}

// State is the whole replicated state. A State is never modified after it is
// published; Apply builds the next one (sharing what did not change), so
// readers on the routing path take it with one atomic load.
type State struct {
	// Index is the last log index applied.
	Index    uint64              `json:"index"`
	Clusters map[string]*Cluster `json:"clusters"`
	Proxies  map[string]Proxy    `json:"proxies"`
	// Arbiters added to the running group (not those of the initial
	// configuration, which every node's config lists).
	Arbiters map[string]Proxy `json:"arbiters,omitempty"`
	// Incompatible is set when this node met a command it cannot apply (a
	// newer binary wrote it without FlagIgnoreUnknown). The node then stops
	// applying, so its state never diverges from the others', and routes no
	// writes until it is upgraded. It describes this binary, not the log,
	// so it is never written into a snapshot (and no snapshot is taken
	// while it is set: see FSM.Snapshot): an upgraded node resumes.
	Incompatible string `json:"-"`
}

func emptyState() *State {
	return &State{Clusters: map[string]*Cluster{}, Proxies: map[string]Proxy{}}
}

// Cluster returns the named cluster or nil.
func (s *State) Cluster(name string) *Cluster {
	if s == nil {
		return nil
	}
	return s.Clusters[name]
}

// next returns a shallow copy to build the next state in.
func (s *State) next(index uint64) *State {
	n := *s
	n.Index = index
	n.Clusters = maps.Clone(s.Clusters)
	n.Proxies = maps.Clone(s.Proxies)
	n.Arbiters = maps.Clone(s.Arbiters)
	if n.Arbiters == nil {
		n.Arbiters = map[string]Proxy{}
	}
	return &n
}

// clone copies a cluster deeply enough to modify it.
func (c *Cluster) clone() *Cluster {
	n := *c
	n.Members = maps.Clone(c.Members)
	n.History = slices.Clone(c.History)
	n.Decisions = maps.Clone(c.Decisions)
	n.Durations = maps.Clone(c.Durations)
	n.Openings = slices.Clone(c.Openings)
	return &n
}

// recordOpening notes where the primary of the current epoch opened.
func (c *Cluster) recordOpening(at *OpenedAt) {
	if at == nil {
		return
	}
	c.Openings = append(c.Openings, Opening{Epoch: c.Epoch, Member: c.Primary, ServerID: at.ServerID, GTID: at.GTID})
	if over := len(c.Openings) - HistoryLimit; over > 0 {
		c.Openings = slices.Delete(c.Openings, 0, over)
	}
}

func (c *Cluster) record(d Decision) {
	if c.Decisions == nil {
		c.Decisions = map[string]uint64{}
	}
	c.Decisions[d.Kind]++
	c.History = append(c.History, d)
	if over := len(c.History) - HistoryLimit; over > 0 {
		c.History = slices.Delete(c.History, 0, over)
	}
}

// Writable reports whether writes may go to the primary: serving, with a
// primary named.
func (c *Cluster) Writable() bool {
	return c != nil && c.Phase == PhaseServing && c.Primary != ""
}

// recordDuration notes how long the change that ends now (at, with result
// kind) took since its phase began.
func (c *Cluster) recordDuration(kind string, at time.Time) {
	if c.PhaseSince.IsZero() || at.Before(c.PhaseSince) {
		return
	}
	if c.Durations == nil {
		c.Durations = map[string]time.Duration{}
	}
	c.Durations[kind] = at.Sub(c.PhaseSince)
}
