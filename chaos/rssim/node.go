package rssim

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

type memberState int

const (
	stateSecondary memberState = iota
	statePrimary
	stateArbiter
)

// stateStr and stateCode are replSetGetStatus's names and numbers.
func (s memberState) String() string {
	switch s {
	case statePrimary:
		return "PRIMARY"
	case stateArbiter:
		return "ARBITER"
	}
	return "SECONDARY"
}

func stateCode(s string) int32 {
	switch s {
	case "PRIMARY":
		return 1
	case "SECONDARY":
		return 2
	case "ARBITER":
		return 7
	}
	return 8 // DOWN
}

// peerState is what heartbeats tell of a peer.
type peerState struct {
	healthy       bool
	lastHeard     time.Time // last heartbeat reply or request
	lastHeartbeat time.Time // last heartbeat sent
	state         string
	term          int64
	last          opTime
	ping          time.Duration
}

// node is one member's replication state machine.
type node struct {
	cfg     Config
	self    Member
	log     *slog.Logger
	local   *client
	peers   map[string]*client
	started time.Time
	// voters is every member (all vote, arbiters too); majority of them
	// elects a primary and acknowledges w: "majority".
	majority    int
	dataBearing int
	wireMin     int32
	wireMax     int32

	// writeMu serializes what changes data: the primary's writes, a
	// secondary's apply and rollback, a promotion.
	writeMu sync.Mutex
	// electMu lets one election run at a time.
	electMu sync.Mutex
	stateMu sync.Mutex // serializes persistState

	mu           sync.Mutex
	state        memberState
	term         int64
	votedTerm    int64
	votedFor     string
	primaryName  string    // the primary as last heard, "" when unknown
	heardPrimary time.Time // when it was last heard
	timer        time.Time // the election timer's start
	jitter       time.Duration
	becamePrim   time.Time
	oplog        []opTime // oplog[i] is entry i's position; oplog[0] is zero
	commit       opTime   // the majority point this member knows
	progress     map[string]int64
	peerInfo     map[string]*peerState
	frozenUntil  time.Time
	rollbacks    int64
	paused       bool
	applyDelay   time.Duration
	pending      []bson.Raw // fetched, not yet applied
	dedupe       map[string]int64
	changed      chan struct{} // closed and replaced on every change

	wg sync.WaitGroup
	// ctx is open's: the member's life, for work no request owns.
	ctx context.Context
}

func newNode(cfg Config, log *slog.Logger) *node {
	n := &node{cfg: cfg, log: log, local: newClient(cfg.Backend, nil), peers: map[string]*client{},
		progress: map[string]int64{}, peerInfo: map[string]*peerState{}, changed: make(chan struct{}),
		oplog: []opTime{{}}, dedupe: map[string]int64{}, wireMax: 21}
	n.majority = len(cfg.Members)/2 + 1
	for _, m := range cfg.Members {
		if !m.Arbiter {
			n.dataBearing++
		}
		if m.Name == cfg.Self {
			n.self = m
			continue
		}
		n.peers[m.Name] = newClient(m.Dial, peerTLS(cfg.PeerTLS, m.Host))
		n.peerInfo[m.Name] = &peerState{}
	}
	if n.self.Arbiter {
		n.state = stateArbiter
	}
	n.jitter = n.newJitter()
	return n
}

// peerTLS is the TLS configuration for reaching peer host (nil:
// plaintext): the peer's certificate is verified for the host clients use,
// also when the member dials a link in front of it.
func peerTLS(tc *tls.Config, host string) *tls.Config {
	if tc == nil {
		return nil
	}
	c := tc.Clone()
	if c.ServerName == "" {
		c.ServerName, _, _ = net.SplitHostPort(host)
	}
	return c
}

func (n *node) newJitter() time.Duration {
	return time.Duration(rand.Int64N(int64(n.cfg.ElectionTimeout)/2 + 1))
}

func (n *node) member(name string) Member {
	for _, m := range n.cfg.Members {
		if m.Name == name {
			return m
		}
	}
	return Member{}
}

// open waits for the local FerretDB, loads the persisted state and starts
// the heartbeat, election and replication loops, which stop with ctx.
func (n *node) open(ctx context.Context) error {
	n.started, n.ctx = time.Now(), ctx
	err := poll(ctx, 30*time.Second, func() error {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		r, err := n.local.run(cctx, "admin", bson.D{{Key: "hello", Value: 1}})
		if err == nil {
			if v, ok := r.Lookup("maxWireVersion").AsInt64OK(); ok {
				n.wireMax = int32(v)
			}
			if v, ok := r.Lookup("minWireVersion").AsInt64OK(); ok {
				n.wireMin = int32(v)
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("backend %s: %w", n.cfg.Backend, err)
	}
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := n.load(lctx); err != nil {
		return err
	}
	n.timer = time.Now()
	n.log.Info("member open", "set", n.cfg.SetName, "state", n.state.String(),
		"term", n.term, "last", n.lastLocked().Index, "rollbacks", n.rollbacks)
	for name := range n.peers {
		n.wg.Go(func() { n.heartbeatLoop(ctx, name) })
	}
	if n.state != stateArbiter {
		n.wg.Go(func() { n.electionLoop(ctx) })
		n.wg.Go(func() { n.fetchLoop(ctx) })
	}
	return nil
}

// close waits for the loops (their ctx must be done) and closes clients.
func (n *node) close() {
	n.wg.Wait()
	n.local.close()
	for _, c := range n.peers {
		c.close()
	}
}

func poll(ctx context.Context, d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (n *node) lastLocked() opTime { return n.oplog[len(n.oplog)-1] }

// notifyLocked wakes everyone waiting for a change (fetchers, write
// concern, step-down catch-up).
func (n *node) notifyLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
}

// wait blocks until ch closes, d passes or ctx ends.
func wait(ctx context.Context, ch <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-ch:
	case <-t.C:
	}
}

// observeTerm adopts a higher term seen in any message; a primary that
// sees one steps down, as in mongod.
func (n *node) observeTerm(ctx context.Context, t int64, from string) {
	n.mu.Lock()
	if t <= n.term {
		n.mu.Unlock()
		return
	}
	n.term = t
	n.primaryName = ""
	if n.state == statePrimary {
		n.stepDownLocked("saw a higher term", "term", t, "from", from)
	}
	n.notifyLocked()
	n.mu.Unlock()
	if err := n.persistState(ctx); err != nil {
		n.log.Warn("persist term", "err", err)
	}
}

func (n *node) stepDownLocked(reason string, args ...any) {
	n.state = stateSecondary
	n.primaryName = ""
	n.timer = time.Now()
	n.notifyLocked()
	n.log.Warn("stepping down: "+reason, append(args, "term", n.term)...)
}

// electionID is mongod's: 0x7fffffff then the term, so it grows with it.
func electionID(term int64) bson.ObjectID {
	var id bson.ObjectID
	binary.BigEndian.PutUint32(id[0:4], 0x7fffffff)
	binary.BigEndian.PutUint64(id[4:12], uint64(term))
	return id
}

// majorityLocked is the newest position a majority of voters has applied
// (on the primary, from its followers' progress; elsewhere, as the
// primary last said).
func (n *node) majorityLocked() opTime {
	if n.state != statePrimary {
		return n.commit
	}
	acked := []int64{n.lastLocked().Index}
	for name, i := range n.progress {
		if !n.member(name).Arbiter {
			acked = append(acked, i)
		}
	}
	if len(acked) < n.majority {
		return n.commit
	}
	// The majority-th largest.
	for i := range acked {
		for j := i + 1; j < len(acked); j++ {
			if acked[j] > acked[i] {
				acked[i], acked[j] = acked[j], acked[i]
			}
		}
	}
	idx := acked[n.majority-1]
	if idx < int64(len(n.oplog)) && n.commit.less(n.oplog[idx]) {
		n.commit = n.oplog[idx]
	}
	return n.commit
}

// acksLocked counts the data-bearing members that hold entry index.
func (n *node) acksLocked(index int64) int {
	acks := 0
	if n.lastLocked().Index >= index {
		acks++
	}
	for name, i := range n.progress {
		if i >= index && !n.member(name).Arbiter {
			acks++
		}
	}
	return acks
}

// ---- heartbeats ----

type heartbeatMsg struct {
	From  string `bson:"from"`
	Term  int64  `bson:"term"`
	State string `bson:"state"`
	Last  opTime `bson:"last"`
}

func (n *node) heartbeatTimeout() time.Duration {
	return max(2*n.cfg.Heartbeat, 500*time.Millisecond)
}

func (n *node) heartbeatLoop(ctx context.Context, peer string) {
	t := time.NewTicker(n.cfg.Heartbeat)
	defer t.Stop()
	for {
		n.heartbeatOnce(ctx, peer)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (n *node) heartbeatOnce(ctx context.Context, peer string) {
	n.mu.Lock()
	req := bson.D{{Key: "rssimHeartbeat", Value: 1}, {Key: "from", Value: n.self.Name}, {Key: "term", Value: n.term},
		{Key: "state", Value: n.state.String()}, {Key: "last", Value: n.lastLocked()}}
	n.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, n.heartbeatTimeout())
	defer cancel()
	began := time.Now()
	r, err := n.peers[peer].run(cctx, "admin", req)
	var h heartbeatMsg
	if err == nil {
		err = bson.Unmarshal(r, &h)
	}
	n.mu.Lock()
	ps := n.peerInfo[peer]
	ps.lastHeartbeat = began
	if err != nil {
		if ps.healthy {
			n.log.Info("peer unreachable", "peer", peer, "err", err)
		}
		ps.healthy = false
		n.mu.Unlock()
		return
	}
	if !ps.healthy {
		n.log.Info("peer reachable", "peer", peer, "state", h.State)
	}
	ps.healthy, ps.lastHeard, ps.state, ps.term, ps.last, ps.ping = true, time.Now(), h.State, h.Term, h.Last, time.Since(began)
	n.mu.Unlock()
	n.observeTerm(ctx, h.Term, peer)
	if h.State == "PRIMARY" {
		n.heardFromPrimary(peer, h.Term)
	}
}

func (n *node) heardFromPrimary(name string, term int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	// Arbiters keep track too: hello reports the primary, and a voter
	// that can see one refuses a dry run.
	if term == n.term && n.state != statePrimary {
		if n.primaryName != name {
			n.primaryName = name
			n.notifyLocked()
		}
		n.heardPrimary = time.Now()
		n.timer = n.heardPrimary
	}
}

func (n *node) handleHeartbeat(ctx context.Context, doc bson.Raw) bson.Raw {
	var h heartbeatMsg
	if err := bson.Unmarshal(doc, &h); err != nil {
		return errf(codeFailedToParse, "rssimHeartbeat: %v", err).reply()
	}
	n.observeTerm(ctx, h.Term, h.From)
	n.mu.Lock()
	if ps := n.peerInfo[h.From]; ps != nil {
		ps.lastHeard, ps.state, ps.term, ps.last = time.Now(), h.State, h.Term, h.Last
	}
	n.mu.Unlock()
	if h.State == "PRIMARY" {
		n.heardFromPrimary(h.From, h.Term)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return mustMarshal(bson.D{{Key: "ok", Value: 1.0}, {Key: "from", Value: n.self.Name}, {Key: "term", Value: n.term},
		{Key: "state", Value: n.state.String()}, {Key: "last", Value: n.lastLocked()}})
}

// ---- elections ----

func (n *node) electionLoop(ctx context.Context) {
	t := time.NewTicker(min(n.cfg.Heartbeat, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		n.mu.Lock()
		st := n.state
		if st == statePrimary {
			// A primary that cannot see a majority stops taking writes
			// after the election timeout, as mongod does: the other side
			// may be electing a new one.
			seen := 1
			for name, ps := range n.peerInfo {
				_ = name
				if now.Sub(ps.lastHeard) < n.cfg.ElectionTimeout {
					seen++
				}
			}
			if seen < n.majority && now.Sub(n.becamePrim) > n.cfg.ElectionTimeout {
				n.stepDownLocked("cannot see a majority", "seen", seen, "need", n.majority)
			}
			n.mu.Unlock()
			continue
		}
		due := now.Sub(n.timer) > n.cfg.ElectionTimeout+n.jitter && now.After(n.frozenUntil)
		n.mu.Unlock()
		if due {
			if err := n.runElection(ctx, false, false); err != nil {
				n.log.Info("election failed", "err", err)
			}
		}
	}
}

type voteReq struct {
	Candidate string `bson:"candidate"`
	Term      int64  `bson:"term"`
	Last      opTime `bson:"last"`
	DryRun    bool   `bson:"dryRun"`
	StepUp    bool   `bson:"stepUp"`
}

type voteReply struct {
	Term    int64  `bson:"term"`
	Granted bool   `bson:"granted"`
	Reason  string `bson:"reason"`
}

var errElectionRunning = errors.New("an election is already running")

// runElection asks for votes in term+1 (a dry run first unless skipped,
// so that a member cut off from the primary does not disrupt it when it
// comes back) and becomes primary on a majority.
func (n *node) runElection(ctx context.Context, stepUp, skipDryRun bool) error {
	if !n.electMu.TryLock() {
		return errElectionRunning
	}
	defer n.electMu.Unlock()
	n.mu.Lock()
	if n.state != stateSecondary {
		n.mu.Unlock()
		return fmt.Errorf("not a secondary (%s)", n.state)
	}
	term, last := n.term, n.lastLocked()
	n.timer, n.jitter = time.Now(), n.newJitter()
	n.mu.Unlock()
	if !skipDryRun {
		if yes, why := n.requestVotes(ctx, voteReq{Candidate: n.self.Name, Term: term + 1, Last: last, DryRun: true, StepUp: stepUp}); yes < n.majority {
			return fmt.Errorf("dry run for term %d: %d of %d votes needed (%s)", term+1, yes, n.majority, why)
		}
	}
	n.mu.Lock()
	if n.term != term || n.state != stateSecondary {
		n.mu.Unlock()
		return fmt.Errorf("term moved to %d during the dry run", n.term)
	}
	n.term, n.votedTerm, n.votedFor, n.primaryName = term+1, term+1, n.self.Name, ""
	n.notifyLocked()
	n.mu.Unlock()
	if err := n.persistState(ctx); err != nil {
		return err
	}
	n.log.Info("election", "term", term+1, "last", last.Index, "stepUp", stepUp)
	if yes, why := n.requestVotes(ctx, voteReq{Candidate: n.self.Name, Term: term + 1, Last: last, StepUp: stepUp}); yes < n.majority {
		return fmt.Errorf("election for term %d: %d of %d votes needed (%s)", term+1, yes, n.majority, why)
	}
	return n.becomePrimary(ctx, term+1)
}

// requestVotes returns the votes (its own included) once a majority has
// granted or every peer has answered or timed out.
func (n *node) requestVotes(ctx context.Context, req voteReq) (int, string) {
	type answer struct {
		peer string
		r    voteReply
		err  error
	}
	ch := make(chan answer, len(n.peers))
	cctx, cancel := context.WithTimeout(ctx, max(n.cfg.ElectionTimeout/2, time.Second))
	defer cancel()
	body := bson.D{{Key: "rssimVote", Value: 1}, {Key: "candidate", Value: req.Candidate}, {Key: "term", Value: req.Term},
		{Key: "last", Value: req.Last}, {Key: "dryRun", Value: req.DryRun}, {Key: "stepUp", Value: req.StepUp}}
	for name, c := range n.peers {
		n.wg.Go(func() {
			r, err := c.run(cctx, "admin", body)
			var v voteReply
			if err == nil {
				err = bson.Unmarshal(r, &v)
			}
			ch <- answer{name, v, err}
		})
	}
	yes, why := 1, ""
	for range n.peers {
		a := <-ch
		switch {
		case a.err != nil:
			why += a.peer + ": " + a.err.Error() + "; "
		case a.r.Granted:
			yes++
		default:
			why += a.peer + ": " + a.r.Reason + "; "
			n.observeTerm(ctx, a.r.Term, a.peer)
		}
		if yes >= n.majority {
			break
		}
	}
	return yes, why
}

// seesPrimaryWindow is how recently a voter must have heard from a
// primary to refuse a dry run because of it: long enough to span several
// heartbeats (a member cut off from a healthy primary does not disrupt
// it), short enough to have passed when a candidate's election timeout,
// counted from its own last contact, fires after the primary died.
func (n *node) seesPrimaryWindow() time.Duration {
	return max(n.cfg.ElectionTimeout/2, 2*n.cfg.Heartbeat)
}

func (n *node) handleVote(ctx context.Context, doc bson.Raw) bson.Raw {
	var req voteReq
	if err := bson.Unmarshal(doc, &req); err != nil {
		return errf(codeFailedToParse, "rssimVote: %v", err).reply()
	}
	if !req.DryRun {
		n.observeTerm(ctx, req.Term, req.Candidate)
	}
	n.mu.Lock()
	now := time.Now()
	grant, reason := true, ""
	last := n.lastLocked()
	switch {
	case req.DryRun && req.Term <= n.term, !req.DryRun && req.Term < n.term:
		grant, reason = false, fmt.Sprintf("candidate's term %d is stale, mine is %d", req.Term, n.term)
	case !req.DryRun && n.votedTerm == req.Term && n.votedFor != req.Candidate:
		grant, reason = false, fmt.Sprintf("already voted for %s in term %d", n.votedFor, req.Term)
	case req.Last.less(last):
		grant, reason = false, fmt.Sprintf("candidate's optime (%d, %d) is behind mine (%d, %d)", req.Last.Term, req.Last.Index, last.Term, last.Index)
	case req.DryRun && !req.StepUp && n.state == statePrimary:
		grant, reason = false, "I am primary"
	case req.DryRun && !req.StepUp && n.primaryName != "" && now.Sub(n.heardPrimary) < n.seesPrimaryWindow():
		grant, reason = false, "I can see primary "+n.primaryName
	}
	if grant && !req.DryRun {
		n.votedTerm, n.votedFor, n.timer = req.Term, req.Candidate, now
	}
	term := n.term
	n.mu.Unlock()
	if grant && !req.DryRun {
		// The vote is on disk before the candidate hears of it: a voter
		// restarted after kill -9 never votes twice in a term.
		if err := n.persistState(ctx); err != nil {
			grant, reason = false, err.Error()
		}
	}
	return mustMarshal(bson.D{{Key: "ok", Value: 1.0}, {Key: "term", Value: term}, {Key: "granted", Value: grant}, {Key: "reason", Value: reason}})
}

// becomePrimary opens the member for writes in term, once it has applied
// everything it had received, and writes the term's first entry (a
// no-op) so that its followers find where their histories part.
func (n *node) becomePrimary(ctx context.Context, term int64) error {
	n.writeMu.Lock()
	defer n.writeMu.Unlock()
	n.applyPendingLocked(ctx)
	n.mu.Lock()
	if n.term != term || n.state != stateSecondary {
		n.mu.Unlock()
		return fmt.Errorf("term moved to %d before the win", n.term)
	}
	n.state, n.primaryName, n.becamePrim, n.progress = statePrimary, n.self.Name, time.Now(), map[string]int64{}
	n.notifyLocked()
	n.mu.Unlock()
	n.log.Info("became primary", "term", term)
	if _, err := n.appendLocked(ctx, &entry{Ops: []op{{Op: "n", ID: nullID}}}, term); err != nil {
		n.mu.Lock()
		n.stepDownLocked("could not write the term's first entry", "err", err)
		n.mu.Unlock()
		return err
	}
	return nil
}

// appendLocked (writeMu held) gives e the next position, in term (the term
// the write ran in), and stores it.
func (n *node) appendLocked(ctx context.Context, e *entry, term int64) (opTime, error) {
	// No check of the state here: a write that ran on FerretDB is recorded
	// in the term it ran in even when the member stepped down meanwhile,
	// so that a rollback finds it and undoes it.
	n.mu.Lock()
	last := n.lastLocked()
	now := time.Now()
	e.Index, e.Term, e.Wall = last.Index+1, term, now
	e.TS = bson.Timestamp{T: uint32(now.Unix()), I: 1}
	if e.TS.T <= last.TS.T {
		e.TS = bson.Timestamp{T: last.TS.T, I: last.TS.I + 1}
	}
	n.mu.Unlock()
	raw, err := bson.Marshal(e)
	if err != nil {
		return opTime{}, fmt.Errorf("encode oplog entry: %w", err)
	}
	if err := n.storeEntry(ctx, raw); err != nil {
		return opTime{}, fmt.Errorf("store oplog entry %d: %w", e.Index, err)
	}
	n.stored(e)
	return e.opTime(), nil
}

// stored (writeMu held) takes a stored entry into the member's position
// and retry records, and wakes whoever waits for it.
func (n *node) stored(e *entry) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.oplog = append(n.oplog, e.opTime())
	if e.Key != "" {
		n.dedupe[e.Key] = e.Index
	}
	n.notifyLocked()
}
