package rssim

import (
	"context"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// fetchBatch bounds the entries one rssimFetch returns.
const fetchBatch = 500

type fetchReq struct {
	Member    string `bson:"member"`
	Term      int64  `bson:"term"`
	After     int64  `bson:"after"`
	AfterTerm int64  `bson:"afterTerm"`
	MaxWaitMS int64  `bson:"maxWaitMS"`
	// Probe asks only whether After/AfterTerm is in the primary's history
	// (rollback's search for the common point): no waiting.
	Probe bool `bson:"probe"`
}

type fetchReply struct {
	Term     int64      `bson:"term"`
	Mismatch bool       `bson:"mismatch"`
	Commit   opTime     `bson:"commit"`
	Entries  []bson.Raw `bson:"entries"`
}

// handleFetch serves a secondary's pull: the entries after its position,
// long-polling when there are none yet. The position is also its report
// of what it has applied, which write concern and the majority point
// count; a position that is not in this primary's history is a mismatch,
// and the secondary must roll back.
func (n *node) handleFetch(ctx context.Context, doc bson.Raw) bson.Raw {
	var req fetchReq
	if err := bson.Unmarshal(doc, &req); err != nil {
		return errf(codeFailedToParse, "rssimFetch: %v", err).reply()
	}
	n.observeTerm(ctx, req.Term, req.Member)
	deadline := time.Now().Add(min(time.Duration(req.MaxWaitMS)*time.Millisecond, 10*time.Second))
	for {
		n.mu.Lock()
		if n.state != statePrimary {
			n.mu.Unlock()
			return errf(codeNotWritablePrimary, "not primary").reply()
		}
		if req.After >= int64(len(n.oplog)) || n.oplog[req.After].Term != req.AfterTerm {
			term := n.term
			n.mu.Unlock()
			return mustMarshal(bson.D{{Key: "ok", Value: 1.0}, {Key: "term", Value: term}, {Key: "mismatch", Value: true}})
		}
		if _, ok := n.peerInfo[req.Member]; ok && n.progress[req.Member] != req.After {
			n.progress[req.Member] = req.After
			n.notifyLocked()
		}
		has := n.lastLocked().Index > req.After
		ch, term, commit := n.changed, n.term, n.majorityLocked()
		n.mu.Unlock()
		if has || req.Probe || !time.Now().Before(deadline) || ctx.Err() != nil {
			var entries []bson.Raw
			if has && !req.Probe {
				var err error
				if entries, err = n.readEntries(ctx, req.After, fetchBatch); err != nil {
					return errf(codeInternalError, "read oplog: %v", err).reply()
				}
			}
			return mustMarshal(bson.D{{Key: "ok", Value: 1.0}, {Key: "term", Value: term}, {Key: "commit", Value: commit},
				{Key: "entries", Value: entries}})
		}
		wait(ctx, ch, time.Until(deadline))
	}
}

// fetchLoop is a secondary's replication: pull from the primary it
// knows, apply in order, report the position with the next pull.
func (n *node) fetchLoop(ctx context.Context) {
	for ctx.Err() == nil {
		n.mu.Lock()
		st, paused, src, ch, last := n.state, n.paused, n.primaryName, n.changed, n.lastLocked()
		term := n.term
		n.mu.Unlock()
		if st != stateSecondary || paused || src == "" {
			wait(ctx, ch, n.cfg.Heartbeat)
			continue
		}
		maxWait := n.cfg.Heartbeat
		cctx, cancel := context.WithTimeout(ctx, maxWait+n.heartbeatTimeout())
		r, err := n.peers[src].run(cctx, "admin", bson.D{{Key: "rssimFetch", Value: 1}, {Key: "member", Value: n.self.Name},
			{Key: "term", Value: term}, {Key: "after", Value: last.Index}, {Key: "afterTerm", Value: last.Term},
			{Key: "maxWaitMS", Value: maxWait.Milliseconds()}})
		cancel()
		var fr fetchReply
		if err == nil {
			err = bson.Unmarshal(r, &fr)
		}
		if err != nil {
			n.log.Debug("fetch failed", "from", src, "err", err)
			if ce, ok := err.(*cmdError); ok && ce.Code == codeNotWritablePrimary {
				n.mu.Lock()
				if n.primaryName == src {
					n.primaryName = ""
				}
				n.mu.Unlock()
			}
			wait(ctx, nil, n.cfg.Heartbeat/2)
			continue
		}
		n.observeTerm(ctx, fr.Term, src)
		if fr.Mismatch {
			if err := n.rollback(ctx, src); err != nil {
				n.log.Warn("rollback failed; will retry", "from", src, "err", err)
				wait(ctx, nil, n.cfg.Heartbeat)
			}
			continue
		}
		n.mu.Lock()
		if n.commit.less(fr.Commit) {
			n.commit = fr.Commit
		}
		if !n.paused { // a pause while the fetch was out drops its reply
			n.pending = fr.Entries
		}
		n.mu.Unlock()
		n.applyPending(ctx)
	}
}

// applyPending applies the fetched entries, each no sooner than its
// write time plus the apply delay, stopping at a pause.
func (n *node) applyPending(ctx context.Context) {
	for ctx.Err() == nil {
		n.mu.Lock()
		if len(n.pending) == 0 || n.paused || n.state != stateSecondary {
			n.mu.Unlock()
			return
		}
		raw, delay, ch := n.pending[0], n.applyDelay, n.changed
		n.mu.Unlock()
		if delay > 0 {
			wall, _ := raw.Lookup("w").TimeOK()
			if d := time.Until(wall.Add(delay)); d > 0 {
				wait(ctx, ch, d) // a control change re-evaluates
				continue
			}
		}
		n.writeMu.Lock()
		n.mu.Lock()
		ok := len(n.pending) > 0 && n.state == stateSecondary
		n.mu.Unlock()
		var err error
		if ok {
			err = n.applyOneLocked(ctx)
		}
		n.writeMu.Unlock()
		if err != nil {
			n.log.Warn("apply failed", "err", err)
			n.mu.Lock()
			n.pending = nil
			n.mu.Unlock()
			return
		}
	}
}

// applyPendingLocked (writeMu held) applies every fetched entry now: a
// winner of an election first applies all it received.
func (n *node) applyPendingLocked(ctx context.Context) {
	for range fetchBatch + 1 {
		n.mu.Lock()
		has := len(n.pending) > 0
		n.mu.Unlock()
		if !has {
			return
		}
		if err := n.applyOneLocked(ctx); err != nil {
			n.log.Warn("apply before promotion failed", "err", err)
			n.mu.Lock()
			n.pending = nil
			n.mu.Unlock()
			return
		}
	}
}

// applyOneLocked (writeMu held) applies the first pending entry.
func (n *node) applyOneLocked(ctx context.Context) error {
	n.mu.Lock()
	raw := n.pending[0]
	n.pending = n.pending[1:]
	want := n.lastLocked().Index + 1
	n.mu.Unlock()
	var e entry
	if err := bson.Unmarshal(raw, &e); err != nil {
		return fmt.Errorf("decode entry: %w", err)
	}
	if e.Index < want {
		return nil // already applied
	}
	if e.Index > want {
		return fmt.Errorf("entry %d after %d: a gap", e.Index, want-1)
	}
	if err := n.applyOps(ctx, e.DB, e.Ops); err != nil {
		return fmt.Errorf("entry %d: %w", e.Index, err)
	}
	// The data first, then the entry: a crash in between applies the
	// entry again after the restart, which is harmless.
	if err := n.storeEntry(ctx, raw); err != nil {
		return fmt.Errorf("store entry %d: %w", e.Index, err)
	}
	n.stored(&e)
	return nil
}

// rollback undoes the entries this member has that the primary's history
// does not: it finds the last common entry, re-fetches every document the
// extra entries touched from the primary (deleting those the primary does
// not have), and truncates its oplog there. DDL in the extra entries is
// not undone (logged).
func (n *node) rollback(ctx context.Context, src string) error {
	n.mu.Lock()
	last := n.lastLocked().Index
	n.mu.Unlock()
	common := int64(-1)
	for i := last - 1; i >= 0; i-- {
		n.mu.Lock()
		if i >= int64(len(n.oplog)) {
			n.mu.Unlock()
			return fmt.Errorf("oplog changed during the search")
		}
		t := n.oplog[i].Term
		n.mu.Unlock()
		cctx, cancel := context.WithTimeout(ctx, n.heartbeatTimeout())
		r, err := n.peers[src].run(cctx, "admin", bson.D{{Key: "rssimFetch", Value: 1}, {Key: "member", Value: n.self.Name},
			{Key: "term", Value: int64(0)}, {Key: "after", Value: i}, {Key: "afterTerm", Value: t}, {Key: "probe", Value: true}})
		cancel()
		if err != nil {
			return fmt.Errorf("probe %d: %w", i, err)
		}
		if m, _ := r.Lookup("mismatch").BooleanOK(); !m {
			common = i
			break
		}
	}
	if common < 0 {
		return fmt.Errorf("no common point with %s", src)
	}
	n.writeMu.Lock()
	defer n.writeMu.Unlock()
	n.mu.Lock()
	if n.state != stateSecondary {
		n.mu.Unlock()
		return fmt.Errorf("no longer a secondary")
	}
	n.pending = nil
	n.mu.Unlock()
	extra, err := n.readEntries(ctx, common, 1<<30)
	if err != nil {
		return err
	}
	type nsKey struct{ db, coll string }
	ids := map[nsKey]map[string]bson.RawValue{}
	var keys []string
	for _, raw := range extra {
		var e entry
		if err := bson.Unmarshal(raw, &e); err != nil {
			return fmt.Errorf("decode entry: %w", err)
		}
		if e.Key != "" {
			keys = append(keys, e.Key)
		}
		for _, o := range e.Ops {
			switch o.Op {
			case "u", "d":
				k := nsKey{e.DB, o.Coll}
				if ids[k] == nil {
					ids[k] = map[string]bson.RawValue{}
				}
				ids[k][idKey(o.ID)] = o.ID
			case "c":
				n.log.Warn("rollback cannot undo a command", "entry", e.Index, "db", e.DB, "cmd", o.O.String())
			}
		}
	}
	for k, set := range ids {
		list := make(bson.A, 0, len(set))
		for _, v := range set {
			list = append(list, v)
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		docs, err := n.peers[src].findAll(cctx, k.db, k.coll, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: list}}}},
			bson.E{Key: "$readPreference", Value: bson.D{{Key: "mode", Value: "primary"}}})
		cancel()
		if err != nil {
			return fmt.Errorf("re-fetch from %s: %w", src, err)
		}
		have := map[string]bson.Raw{}
		for _, d := range docs {
			have[idKey(d.Lookup("_id"))] = d
		}
		var ops []op
		for key, id := range set {
			if d, ok := have[key]; ok {
				ops = append(ops, op{Op: "u", Coll: k.coll, ID: id, O: d})
			} else {
				ops = append(ops, op{Op: "d", Coll: k.coll, ID: id})
			}
		}
		if err := n.applyOps(ctx, k.db, ops); err != nil {
			return fmt.Errorf("rollback: %w", err)
		}
	}
	if err := checkWrite(n.local.run(ctx, privateDB, bson.D{{Key: "delete", Value: "oplog"}, {Key: "deletes", Value: bson.A{
		bson.D{{Key: "q", Value: bson.D{{Key: "_id", Value: bson.D{{Key: "$gt", Value: common}}}}}, {Key: "limit", Value: int32(0)}}}}})); err != nil {
		return fmt.Errorf("truncate oplog: %w", err)
	}
	n.mu.Lock()
	if int64(len(n.oplog)) > common+1 {
		n.oplog = n.oplog[:common+1]
	}
	for _, k := range keys {
		delete(n.dedupe, k)
	}
	n.rollbacks++
	n.notifyLocked()
	n.mu.Unlock()
	n.log.Warn("rolled back", "entries", len(extra), "to", common, "documents", len(ids))
	return n.persistState(ctx)
}
