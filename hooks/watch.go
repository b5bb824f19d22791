package hooks

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/raftfsm"
)

// Source is the control plane as the Watcher reads it: the applied state,
// its change notification, and whether this node leads (raftfsm.Node and
// its FSM).
type Source interface {
	State() *raftfsm.State
	Changed() <-chan struct{}
	IsLeader() bool
}

// Watcher turns the decisions the FSM applies into Events and fires them
// while this node leads the Raft group.
//
// Every arbiter applies every decision, so which node fires is a choice:
// the leader, as each decision is applied, each once (a decision is
// identified by its cluster and its sequence number there, counted in the
// replicated state, so it is the same on every node). A leader that took
// over cannot know which of its predecessor's last decisions were run,
// and a crashed leader's queue is lost: so it also fires the decisions
// recorded less than Window before it took over (by the recording
// leader's clock), marked Resent. Delivery is therefore at least once for
// a decision whose leader lived Window after recording it or which lies
// within Window of a leader change, and may be twice around a change (the
// same ID lets a receiver drop the second); a hook whose leader crashed
// while it waited longer than Window in the queue is lost. Older
// decisions — a restarted node replaying its log, one that was a follower
// for long — are never run again.
type Watcher struct {
	src  Source
	fire func(Event)
	log  *zap.Logger
	// Window: see the type's comment.
	window time.Duration
	poll   time.Duration
	now    func() time.Time

	leading  bool
	since    time.Time
	clusters map[string]*watched
}

// watched is what the Watcher knows of one cluster.
type watched struct {
	// done is the sequence number of the last decision turned into an
	// event; prev the cluster's state then (nil before the first).
	done uint64
	prev *raftfsm.Cluster
	// pending holds, while following, the events recent enough to fire
	// should this node take over.
	pending []Event
}

// NewWatcher returns a Watcher that passes the events to fire (a Runner's
// Fire: it must not block). window is the takeover window (see Watcher).
func NewWatcher(src Source, fire func(Event), window time.Duration, log *zap.Logger) *Watcher {
	return &Watcher{src: src, fire: fire, log: log.Named("hooks"), window: window, poll: 100 * time.Millisecond, now: time.Now,
		clusters: map[string]*watched{}}
}

// Run follows the state until ctx ends. It also polls leadership, which
// changes without a state change.
func (w *Watcher) Run(ctx context.Context) {
	t := time.NewTicker(w.poll)
	defer t.Stop()
	for {
		changed := w.src.Changed()
		w.step(w.now())
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-t.C:
		}
	}
}

// step turns the decisions applied since the last step into events and
// fires those this node owes.
func (w *Watcher) step(now time.Time) {
	leading := w.src.IsLeader()
	if leading && !w.leading {
		w.since = now
		w.log.Info("leading: running hooks", zap.Duration("takeover_window", w.window))
	}
	w.leading = leading
	st := w.src.State()
	if st == nil {
		return
	}
	for _, name := range slices.Sorted(maps.Keys(st.Clusters)) {
		cl := st.Clusters[name]
		wc := w.clusters[name]
		if wc == nil {
			wc = &watched{}
			w.clusters[name] = wc
		}
		wc.pending = append(wc.pending, w.events(wc, cl)...)
		wc.done, wc.prev = lastSeq(cl), cl
		keep := wc.pending[:0]
		for _, e := range wc.pending {
			switch {
			case leading && !e.At.Before(w.since.Add(-w.window)):
				e.Resent = e.At.Before(w.since)
				w.fire(e)
			case !leading && !e.At.Before(now.Add(-w.window)):
				keep = append(keep, e)
			}
		}
		// Bounded: no more than the decisions the state itself keeps.
		wc.pending = slices.Clone(keep[max(0, len(keep)-raftfsm.HistoryLimit):])
	}
}

// lastSeq is the sequence number of the cluster's last decision: the count
// of all it recorded (a state written before the counts were kept counts
// at least its history).
func lastSeq(cl *raftfsm.Cluster) uint64 {
	var n uint64
	for _, c := range cl.Decisions {
		n += c
	}
	return max(n, uint64(len(cl.History)))
}

// events returns the cluster's decisions after wc.done as events.
func (w *Watcher) events(wc *watched, cl *raftfsm.Cluster) []Event {
	last := lastSeq(cl)
	first := last - uint64(len(cl.History)) + 1
	if wc.prev != nil && wc.done+1 < first {
		w.log.Warn("decisions recorded faster than followed: some never reach the hooks", zap.String("cluster", cl.Name),
			zap.Uint64("from", wc.done+1), zap.Uint64("to", first-1))
	}
	var fresh []raftfsm.Decision
	var seqs []uint64
	perMember := map[string]int{}
	for i, d := range cl.History {
		seq := first + uint64(i)
		if seq <= wc.done {
			continue
		}
		fresh, seqs = append(fresh, d), append(seqs, seq)
		if d.Kind == "member" {
			perMember[d.Member]++
		}
	}
	out := make([]Event, 0, len(fresh))
	for i, d := range fresh {
		kind := d.Kind
		if kind == "member" {
			// The member's state before and after the decision is known
			// only when it is the one decision about that member since the
			// last step (two in one step are rare: each waits for a Raft
			// commit, each step only for a wake-up).
			var before, after *raftfsm.MemberState
			if perMember[d.Member] == 1 && wc.prev != nil {
				if b, ok := wc.prev.Members[d.Member]; ok {
					before = &b
				}
				if a, ok := cl.Members[d.Member]; ok {
					after = &a
				}
			}
			kind = memberKind(before, after)
		}
		out = append(out, Event{ID: cl.Name + "/" + strconv.FormatUint(seqs[i], 10), Cluster: cl.Name, Seq: seqs[i], Epoch: d.Epoch,
			Kind: kind, From: d.From, To: d.To, Member: d.Member, Reason: d.Reason, At: d.At})
	}
	return out
}

// memberKind names what a member decision did, from the member's state
// before and after it (nil: unknown, and the event keeps kind member).
func memberKind(before, after *raftfsm.MemberState) string {
	if before == nil || after == nil {
		return KindMember
	}
	switch {
	case after.Errant != "" && after.Errant != before.Errant:
		return KindMemberErrant
	case after.Fenced && !before.Fenced:
		return KindMemberFenced
	case !after.Fenced && before.Fenced:
		return KindMemberRejoined
	case after.Maintenance != before.Maintenance:
		return KindMemberMaintenance
	}
	return KindMember
}
