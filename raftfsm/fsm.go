// Package raftfsm owns the replicated state of dbrouter's control plane:
// per cluster the epoch, primary, phase, member states and a bounded history
// of decisions, plus the proxies in the group. It defines the commands that
// change that state, the Raft FSM that applies them, and the Node that runs
// hashicorp/raft (raft-boltdb log and stable store, file snapshots) over an
// authenticated transport.
//
// Safety rests on two properties kept here: every cluster command is a
// compare-and-set on the cluster's epoch, so a decision taken on a stale view
// never applies; and Apply is deterministic (time travels in the command), so
// every voter and every proxy computes the same state from the same log.
package raftfsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Errors a command can be refused with. Callers branch on them with
// errors.Is; the wrapped message says which cluster and epochs.
var (
	ErrStaleEpoch     = errors.New("stale epoch")
	ErrUnknownCluster = errors.New("unknown cluster")
	ErrUnknownMember  = errors.New("unknown member")
	ErrPhase          = errors.New("not allowed in this phase")
	ErrInvalid        = errors.New("invalid command")
	ErrIncompatible   = errors.New("command from a newer version")
)

// Result is what Apply returns for each entry (raft hands it to the
// ApplyFuture of the node that proposed it).
type Result struct {
	// Epoch is the cluster's epoch after the command.
	Epoch uint64
	// Index is the command's log index (set by Node.Propose).
	Index uint64
	Err   error
}

// FSM applies commands to the State. It is safe for one Raft goroutine to
// apply while any number of readers call State.
type FSM struct {
	state atomic.Pointer[State]

	mu      sync.Mutex
	changed chan struct{}
}

// NewFSM returns an FSM with no clusters.
func NewFSM() *FSM {
	f := &FSM{changed: make(chan struct{})}
	f.state.Store(emptyState())
	return f
}

// State returns the current state; never modify it.
func (f *FSM) State() *State { return f.state.Load() }

// Changed returns a channel closed at the next state change.
func (f *FSM) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *FSM) publish(s *State) {
	f.state.Store(s)
	f.mu.Lock()
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// Apply implements raft.FSM.
func (f *FSM) Apply(l *raft.Log) any {
	cur := f.State()
	if l.Type != raft.LogCommand {
		return Result{}
	}
	if cur.Incompatible != "" {
		return Result{Err: fmt.Errorf("%w: %s", ErrIncompatible, cur.Incompatible)}
	}
	c, err := Decode(l.Data)
	if err != nil {
		return f.stop(cur, l.Index, fmt.Sprintf("log index %d: %v", l.Index, err))
	}
	apply, ok := appliers[c.Type]
	if !ok {
		if c.Flags&FlagIgnoreUnknown != 0 {
			next := cur.next(l.Index)
			f.publish(next)
			return Result{}
		}
		return f.stop(cur, l.Index, fmt.Sprintf("log index %d: unknown command %s without the ignore-unknown flag; upgrade this node", l.Index, c.Type))
	}
	next := cur.next(l.Index)
	epoch, err := apply(next, c)
	if err != nil {
		// A refused command changes nothing but the applied index.
		next = cur.next(l.Index)
	}
	f.publish(next)
	return Result{Epoch: epoch, Err: err}
}

func (f *FSM) stop(cur *State, index uint64, why string) Result {
	next := cur.next(index)
	next.Incompatible = why
	f.publish(next)
	return Result{Err: fmt.Errorf("%w: %s", ErrIncompatible, why)}
}

type applier func(s *State, c *Command) (uint64, error)

var appliers = map[Type]applier{
	TypeBootstrap:    applyBootstrap,
	TypeBegin:        applyBegin,
	TypeOpen:         applyOpen,
	TypeAbort:        applyAbort,
	TypeMember:       applyMember,
	TypeProxyJoin:    applyProxyJoin,
	TypeProxyLeave:   applyProxyLeave,
	TypeNote:         applyNote,
	TypeArbiterJoin:  applyArbiterJoin,
	TypeArbiterLeave: applyArbiterLeave,
}

// cas returns a modifiable copy of the cluster the command names, if the
// cluster is still at the command's epoch.
func cas(s *State, c *Command) (*Cluster, error) {
	cl := s.Clusters[c.Cluster]
	if cl == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownCluster, c.Cluster)
	}
	if cl.Epoch != c.Epoch {
		return nil, fmt.Errorf("cluster %s: %w: decided at epoch %d, cluster is at %d", c.Cluster, ErrStaleEpoch, c.Epoch, cl.Epoch)
	}
	n := cl.clone()
	s.Clusters[c.Cluster] = n
	return n, nil
}

func applyBootstrap(s *State, c *Command) (uint64, error) {
	if c.Cluster == "" || c.Primary == "" {
		return 0, fmt.Errorf("%w: bootstrap needs a cluster and a primary", ErrInvalid)
	}
	if !slices.Contains(c.Members, c.Primary) {
		return 0, fmt.Errorf("%w: bootstrap primary %s is not among members %v", ErrInvalid, c.Primary, c.Members)
	}
	if cl := s.Clusters[c.Cluster]; cl != nil {
		return cl.Epoch, fmt.Errorf("cluster %s: %w: already bootstrapped at epoch %d", c.Cluster, ErrStaleEpoch, cl.Epoch)
	}
	if c.Epoch != 0 {
		return 0, fmt.Errorf("cluster %s: %w: bootstrap decided at epoch %d, cluster is new", c.Cluster, ErrStaleEpoch, c.Epoch)
	}
	cl := &Cluster{Name: c.Cluster, Epoch: 1, Primary: c.Primary, Phase: PhaseServing, PhaseSince: c.At, SafeSince: 1, Members: map[string]MemberState{}}
	for _, m := range c.Members {
		cl.Members[m] = MemberState{}
	}
	cl.record(Decision{Epoch: 1, At: c.At, Kind: "bootstrap", To: c.Primary, Reason: c.Reason})
	cl.recordOpening(c.Opened)
	s.Clusters[c.Cluster] = cl
	return 1, nil
}

func applyBegin(s *State, c *Command) (uint64, error) {
	cl, err := cas(s, c)
	if err != nil {
		return epochOf(s, c), err
	}
	if _, ok := cl.Members[c.Primary]; !ok {
		return cl.Epoch, fmt.Errorf("cluster %s: %w %q", c.Cluster, ErrUnknownMember, c.Primary)
	}
	switch {
	case c.Phase != PhaseSwitching && c.Phase != PhaseFailingOver:
		return cl.Epoch, fmt.Errorf("%w: begin with phase %q", ErrInvalid, c.Phase)
	case cl.Phase == PhaseServing:
		if c.Primary == cl.Primary {
			return cl.Epoch, fmt.Errorf("cluster %s: %w: %s is already the primary", c.Cluster, ErrInvalid, c.Primary)
		}
		cl.Previous = cl.Primary
	case cl.Phase == PhaseFailingOver && c.Phase == PhaseFailingOver:
		// A failover whose candidate failed picks another; Previous stays the
		// primary that was lost.
	case cl.Phase == PhaseSwitching && c.Phase == PhaseFailingOver:
		// The old primary died during a switchover: the switchover can
		// neither finish (the target has not caught up with it) nor roll
		// back (it cannot be reopened), so a failover preempts it.
		// Previous stays the old primary, the one that was lost.
		if c.Primary == cl.Previous {
			return cl.Epoch, fmt.Errorf("cluster %s: %w: %s is the primary being failed over from", c.Cluster, ErrInvalid, c.Primary)
		}
	default:
		return cl.Epoch, fmt.Errorf("cluster %s: %w: %s while %s", c.Cluster, ErrPhase, c.Phase, cl.Phase)
	}
	if ms := cl.Members[c.Primary]; ms.Maintenance || ms.Fenced {
		return cl.Epoch, fmt.Errorf("cluster %s: %w: %s is in maintenance or fenced", c.Cluster, ErrInvalid, c.Primary)
	}
	cl.Epoch++
	cl.Primary = c.Primary
	cl.Phase = c.Phase
	cl.PhaseSince = c.At
	if c.Phase == PhaseFailingOver {
		cl.LastFailover = c.At
		cl.SafeSince = cl.Epoch
	}
	kind := "switchover"
	if c.Phase == PhaseFailingOver {
		kind = "failover"
	}
	cl.record(Decision{Epoch: cl.Epoch, At: c.At, Kind: kind + "_begin", From: cl.Previous, To: c.Primary, Reason: c.Reason})
	return cl.Epoch, nil
}

func applyOpen(s *State, c *Command) (uint64, error) {
	cl, err := cas(s, c)
	if err != nil {
		return epochOf(s, c), err
	}
	if cl.Phase == PhaseServing {
		return cl.Epoch, fmt.Errorf("cluster %s: %w: already serving", c.Cluster, ErrPhase)
	}
	kind := "switchover_done"
	if cl.Phase == PhaseFailingOver {
		kind = "failover_done"
	}
	cl.record(Decision{Epoch: cl.Epoch, At: c.At, Kind: kind, From: cl.Previous, To: cl.Primary, Reason: c.Reason})
	cl.recordDuration(kind, c.At)
	cl.Phase = PhaseServing
	cl.PhaseSince = c.At
	cl.Previous = ""
	cl.recordOpening(c.Opened)
	return cl.Epoch, nil
}

func applyAbort(s *State, c *Command) (uint64, error) {
	cl, err := cas(s, c)
	if err != nil {
		return epochOf(s, c), err
	}
	if cl.Phase != PhaseSwitching || cl.Previous == "" {
		return cl.Epoch, fmt.Errorf("cluster %s: %w: abort while %s", c.Cluster, ErrPhase, cl.Phase)
	}
	cl.Epoch++
	cl.record(Decision{Epoch: cl.Epoch, At: c.At, Kind: "switchover_aborted", From: cl.Primary, To: cl.Previous, Reason: c.Reason})
	cl.recordDuration("switchover_aborted", c.At)
	cl.Primary = cl.Previous
	cl.Previous = ""
	cl.Phase = PhaseServing
	cl.PhaseSince = c.At
	cl.recordOpening(c.Opened)
	return cl.Epoch, nil
}

func applyMember(s *State, c *Command) (uint64, error) {
	cl, err := cas(s, c)
	if err != nil {
		return epochOf(s, c), err
	}
	ms, ok := cl.Members[c.Member]
	if !ok {
		return cl.Epoch, fmt.Errorf("cluster %s: %w %q", c.Cluster, ErrUnknownMember, c.Member)
	}
	if c.Maintenance != nil {
		ms.Maintenance = *c.Maintenance
	}
	if c.Fenced != nil {
		ms.Fenced = *c.Fenced
	}
	if c.Errant != nil {
		ms.Errant = *c.Errant
	}
	if c.Member == cl.Primary && (ms.Fenced || ms.Maintenance) && cl.Phase == PhaseServing {
		return cl.Epoch, fmt.Errorf("cluster %s: %w: %s is the serving primary; switch over first", c.Cluster, ErrInvalid, c.Member)
	}
	cl.Members[c.Member] = ms
	cl.record(Decision{Epoch: cl.Epoch, At: c.At, Kind: "member", Member: c.Member, Reason: c.Reason})
	return cl.Epoch, nil
}

func applyProxyJoin(s *State, c *Command) (uint64, error) {
	return 0, join(s.Proxies, c.Proxy, c.At, "proxy")
}

func applyProxyLeave(s *State, c *Command) (uint64, error) {
	return 0, leave(s.Proxies, c.Proxy, "proxy")
}

func applyArbiterJoin(s *State, c *Command) (uint64, error) {
	if c.Arbiter != nil && c.Arbiter.Admin == "" {
		return 0, fmt.Errorf("%w: arbiter join without an admin address", ErrInvalid)
	}
	return 0, join(s.Arbiters, c.Arbiter, c.At, "arbiter")
}

func applyArbiterLeave(s *State, c *Command) (uint64, error) {
	return 0, leave(s.Arbiters, c.Arbiter, "arbiter")
}

// join and leave keep a map of group nodes (proxies, added arbiters).
func join(m map[string]Proxy, p *Proxy, at time.Time, what string) error {
	if p == nil || p.ID == "" {
		return fmt.Errorf("%w: %s join without an id", ErrInvalid, what)
	}
	n := *p
	n.Joined = at
	m[n.ID] = n
	return nil
}

func leave(m map[string]Proxy, p *Proxy, what string) error {
	if p == nil || p.ID == "" {
		return fmt.Errorf("%w: %s leave without an id", ErrInvalid, what)
	}
	delete(m, p.ID)
	return nil
}

func applyNote(s *State, c *Command) (uint64, error) {
	cl := s.Clusters[c.Cluster]
	if cl == nil {
		return 0, fmt.Errorf("%w %q", ErrUnknownCluster, c.Cluster)
	}
	n := cl.clone()
	n.record(Decision{Epoch: n.Epoch, At: c.At, Kind: "note", Member: c.Member, Reason: c.Reason})
	s.Clusters[c.Cluster] = n
	return n.Epoch, nil
}

func epochOf(s *State, c *Command) uint64 {
	if cl := s.Clusters[c.Cluster]; cl != nil {
		return cl.Epoch
	}
	return 0
}

// Acknowledgeable reports whether a write that the primary of epoch
// acknowledged is on the current primary (see Cluster.SafeSince).
func (c *Cluster) Acknowledgeable(epoch uint64) bool {
	return c != nil && epoch >= c.SafeSince && epoch <= c.Epoch
}

// ErrNoSnapshot: a node that stopped at a command it cannot apply takes no
// snapshot, because raft would then compact away the log entries its state
// lacks, and the upgraded node would resume from a state that skipped them.
var ErrNoSnapshot = errors.New("no snapshot while incompatible")

// Snapshot implements raft.FSM. The state is immutable, so the snapshot is
// the current pointer; Persist runs concurrently with later Applies.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	st := f.State()
	if st.Incompatible != "" {
		return nil, fmt.Errorf("%w: %s", ErrNoSnapshot, st.Incompatible)
	}
	return snapshot{st}, nil
}

// Restore implements raft.FSM.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	s := emptyState()
	if err := json.NewDecoder(rc).Decode(s); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	if s.Clusters == nil {
		s.Clusters = map[string]*Cluster{}
	}
	if s.Proxies == nil {
		s.Proxies = map[string]Proxy{}
	}
	f.publish(s)
	return nil
}

type snapshot struct{ s *State }

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(s.s); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (snapshot) Release() {}
