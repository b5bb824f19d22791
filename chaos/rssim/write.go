package rssim

import (
	"context"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// stripped are the fields the shim consumes and FerretDB must not see (it
// ignores most, but the shim is the one that implements them).
var stripped = map[string]bool{
	"lsid": true, "txnNumber": true, "writeConcern": true, "$readPreference": true, "$clusterTime": true,
	"autocommit": true, "startTransaction": true, "$db": true,
}

// rebuild copies doc without the stripped fields, with replacements
// (a nil value drops the key), and with $db last when db is not "".
func rebuild(doc bson.Raw, db string, replace map[string]any) bson.Raw {
	elems, _ := doc.Elements()
	d := make(bson.D, 0, len(elems)+1)
	for _, e := range elems {
		k := e.Key()
		if stripped[k] {
			continue
		}
		if v, ok := replace[k]; ok {
			if v != nil {
				d = append(d, bson.E{Key: k, Value: v})
			}
			continue
		}
		d = append(d, bson.E{Key: k, Value: e.Value()})
	}
	if db != "" {
		d = append(d, bson.E{Key: "$db", Value: db})
	}
	return mustMarshal(d)
}

// withElem returns doc with key: v appended.
func withElem(doc bson.Raw, key string, v any) bson.Raw {
	elems, _ := doc.Elements()
	d := make(bson.D, 0, len(elems)+1)
	for _, e := range elems {
		d = append(d, bson.E{Key: e.Key(), Value: e.Value()})
	}
	return mustMarshal(append(d, bson.E{Key: key, Value: v}))
}

type writeConcern struct {
	w        int
	majority bool
	timeout  time.Duration
}

func parseWriteConcern(doc bson.Raw) (writeConcern, error) {
	wc := writeConcern{w: 1}
	d, ok := doc.Lookup("writeConcern").DocumentOK()
	if !ok {
		return wc, nil
	}
	if v, err := d.LookupErr("w"); err == nil {
		if s, ok := v.StringValueOK(); ok {
			if s != "majority" {
				return wc, errf(79, "unrecognized write concern w: %q (the member simulator knows numbers and \"majority\")", s)
			}
			wc.majority = true
		} else if i, ok := v.AsInt64OK(); ok {
			wc.w = int(i)
		} else {
			return wc, errf(codeFailedToParse, "writeConcern.w: %s", v)
		}
	}
	if ms, ok := d.Lookup("wtimeout").AsInt64OK(); ok {
		wc.timeout = time.Duration(ms) * time.Millisecond
	}
	return wc, nil
}

// write runs a write command on the primary: it finds the documents the
// command can touch, runs it on FerretDB, reads their post-images and
// records them as one oplog entry (with the reply, for retries), all
// under writeMu, then waits for the write concern outside it.
func (n *node) write(ctx context.Context, name, db string, doc bson.Raw) bson.Raw {
	wc, err := parseWriteConcern(doc)
	if err != nil {
		return err.(*cmdError).reply()
	}
	if wc.majority {
		if n.majority > n.dataBearing {
			return errf(codeUnsatisfiableWC, "Not enough data-bearing nodes").reply()
		}
	} else if wc.w > n.dataBearing {
		return errf(codeUnsatisfiableWC, "Not enough data-bearing nodes").reply()
	}
	key := retryKey(doc)
	n.mu.Lock()
	term := n.term
	idx, seen := n.dedupe[key]
	n.mu.Unlock()
	if key != "" && seen {
		reply, err := n.recordedReply(ctx, idx)
		if err != nil {
			return errf(codeInternalError, "read the recorded reply of a retried write: %v", err).reply()
		}
		return n.concern(ctx, reply, wc, idx, term)
	}
	n.writeMu.Lock()
	n.mu.Lock()
	idx, seen = n.dedupe[key]
	n.mu.Unlock()
	if key != "" && seen {
		// The same retry arrived twice at once: the first one ran.
		n.writeMu.Unlock()
		reply, err := n.recordedReply(ctx, idx)
		if err != nil {
			return errf(codeInternalError, "read the recorded reply of a retried write: %v", err).reply()
		}
		return n.concern(ctx, reply, wc, idx, term)
	}
	reply, at, err := n.writeLocked(ctx, name, db, doc, key)
	n.writeMu.Unlock()
	if err != nil {
		if ce, ok := err.(*cmdError); ok {
			return ce.reply()
		}
		return errf(codeInternalError, "%s: %v", name, err).reply()
	}
	if at.Index == 0 {
		return reply // nothing to replicate
	}
	return n.concern(ctx, reply, wc, at.Index, at.Term)
}

func (n *node) recordedReply(ctx context.Context, idx int64) (bson.Raw, error) {
	docs, err := n.local.findAll(ctx, privateDB, "oplog", bson.D{{Key: "_id", Value: idx}})
	if err != nil {
		return nil, err
	}
	if len(docs) != 1 {
		return nil, fmt.Errorf("entry %d missing", idx)
	}
	_, b, ok := docs[0].Lookup("reply").BinaryOK()
	if !ok || bson.Raw(b).Validate() != nil {
		return nil, fmt.Errorf("entry %d has no reply", idx)
	}
	return bson.Raw(b), nil
}

// crud are the commands whose effect is recorded as post-images; anything
// else that writes is recorded as the command itself.
var crud = map[string]string{"insert": "documents", "update": "updates", "delete": "deletes", "findAndModify": "", "findandmodify": ""}

func (n *node) writeLocked(ctx context.Context, name, db string, doc bson.Raw, key string) (bson.Raw, opTime, error) {
	n.mu.Lock()
	st, term := n.state, n.term
	n.mu.Unlock()
	if st != statePrimary {
		return nil, opTime{}, errf(codeNotWritablePrimary, "not primary")
	}
	coll, _ := doc.Lookup(name).StringValueOK()
	_, isCRUD := crud[name]
	ids := map[string]bson.RawValue{}
	replace := map[string]any{}
	if isCRUD {
		if coll == "" {
			return nil, opTime{}, errf(codeFailedToParse, "%s: collection name must be a string", name)
		}
		switch name {
		case "insert":
			// Every document gets its _id here, so the shim knows it.
			arr, _ := doc.Lookup("documents").ArrayOK()
			vals, _ := arr.Values()
			docs := make(bson.A, 0, len(vals))
			for _, v := range vals {
				d, ok := v.DocumentOK()
				if !ok {
					return nil, opTime{}, errf(codeFailedToParse, "insert: documents must be documents")
				}
				id, err := d.LookupErr("_id")
				if err != nil {
					oid := bson.NewObjectID()
					d = prependID(d, oid)
					id = d.Lookup("_id")
				}
				ids[idKey(id)] = id
				docs = append(docs, d)
			}
			replace["documents"] = docs
		case "update", "delete":
			field := crud[name]
			arr, _ := doc.Lookup(field).ArrayOK()
			vals, _ := arr.Values()
			for _, v := range vals {
				q, _ := v.Document().Lookup("q").DocumentOK()
				if err := n.matchIDs(ctx, db, coll, q, ids); err != nil {
					return nil, opTime{}, err
				}
			}
		default:
			q, ok := doc.Lookup("query").DocumentOK()
			if !ok {
				q = mustMarshal(bson.D{})
			}
			if err := n.matchIDs(ctx, db, coll, q, ids); err != nil {
				return nil, opTime{}, err
			}
		}
	}
	reply, err := n.local.run(ctx, db, bsonD(rebuild(doc, "", replace)))
	if _, isCmd := err.(*cmdError); err != nil && !isCmd {
		return nil, opTime{}, err
	}
	e := &entry{DB: db}
	if isCRUD {
		switch name {
		case "update":
			arr, _ := reply.Lookup("upserted").ArrayOK()
			vals, _ := arr.Values()
			for _, v := range vals {
				id := v.Document().Lookup("_id")
				ids[idKey(id)] = id
			}
		case "findAndModify", "findandmodify":
			if id, err := reply.LookupErr("lastErrorObject", "upserted"); err == nil {
				ids[idKey(id)] = id
			}
		}
		if len(ids) > 0 {
			list := make(bson.A, 0, len(ids))
			for _, v := range ids {
				list = append(list, v)
			}
			docs, ferr := n.local.findAll(ctx, db, coll, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: list}}}})
			if ferr != nil {
				return nil, opTime{}, fmt.Errorf("read post-images: %w", ferr)
			}
			have := map[string]bson.Raw{}
			for _, d := range docs {
				have[idKey(d.Lookup("_id"))] = d
			}
			for k, id := range ids {
				if d, ok := have[k]; ok {
					e.Ops = append(e.Ops, op{Op: "u", Coll: coll, ID: id, O: d})
				} else {
					e.Ops = append(e.Ops, op{Op: "d", Coll: coll, ID: id})
				}
			}
		}
	} else if err == nil {
		e.Ops = []op{{Op: "c", ID: nullID, O: rebuild(doc, "", nil)}}
	}
	if err != nil {
		// A command that failed changed nothing, and a failure is not
		// recorded for retries: a retry runs again, as on mongod.
		return reply, opTime{}, nil
	}
	if len(e.Ops) == 0 && key == "" {
		return reply, opTime{}, nil
	}
	if key != "" {
		e.Key, e.Reply = key, reply
	}
	at, aerr := n.appendLocked(ctx, e, term)
	if aerr == nil {
		n.mu.Lock()
		moved := n.term != term || n.state != statePrimary
		n.mu.Unlock()
		if moved {
			// It ran and is recorded, in a term that has ended: the new
			// primary's history decides whether it survives.
			return nil, opTime{}, errf(codeInterruptedReplChange, "operation was interrupted because a node stepped down")
		}
	}
	if aerr != nil {
		// The data changed and the entry may be missing: the write's
		// outcome is unknown, which 11602 tells a driver (it retries).
		n.log.Warn("write ran but its oplog entry was not recorded", "cmd", name, "err", aerr)
		return nil, opTime{}, errf(codeInterruptedReplChange, "operation was interrupted because a node stepped down (%v)", aerr)
	}
	return reply, at, nil
}

func bsonD(raw bson.Raw) bson.D {
	var d bson.D
	elems, _ := raw.Elements()
	for _, e := range elems {
		d = append(d, bson.E{Key: e.Key(), Value: e.Value()})
	}
	return d
}

func prependID(d bson.Raw, id bson.ObjectID) bson.Raw {
	out := bson.D{{Key: "_id", Value: id}}
	elems, _ := d.Elements()
	for _, e := range elems {
		out = append(out, bson.E{Key: e.Key(), Value: e.Value()})
	}
	return mustMarshal(out)
}

// matchIDs adds the _ids of the documents q matches.
func (n *node) matchIDs(ctx context.Context, db, coll string, q bson.Raw, ids map[string]bson.RawValue) error {
	if q == nil {
		q = mustMarshal(bson.D{})
	}
	docs, err := n.local.findAll(ctx, db, coll, q, bson.E{Key: "projection", Value: bson.D{{Key: "_id", Value: 1}}})
	if err != nil {
		if _, ok := err.(*cmdError); ok {
			return nil // the write itself will report what is wrong
		}
		return fmt.Errorf("find the documents to write: %w", err)
	}
	for _, d := range docs {
		id := d.Lookup("_id")
		ids[idKey(id)] = id
	}
	return nil
}

// concern waits for the write concern of an entry at index written in
// term, and adds a writeConcernError to reply when it is not met.
func (n *node) concern(ctx context.Context, reply bson.Raw, wc writeConcern, index, term int64) bson.Raw {
	need := wc.w
	if wc.majority {
		need = n.majority
	}
	if need <= 1 {
		return reply
	}
	var timeout <-chan time.Time
	if wc.timeout > 0 {
		t := time.NewTimer(wc.timeout)
		defer t.Stop()
		timeout = t.C
	}
	for {
		n.mu.Lock()
		acks, st, tm, ch := n.acksLocked(index), n.state, n.term, n.changed
		n.mu.Unlock()
		if acks >= need {
			return reply
		}
		if st != statePrimary || tm != term {
			r := withElem(reply, "writeConcernError", bson.D{{Key: "code", Value: int32(codeInterruptedReplChange)},
				{Key: "codeName", Value: codeNames[codeInterruptedReplChange]},
				{Key: "errmsg", Value: "operation was interrupted because a node stepped down while waiting for replication"}})
			return withElem(r, "errorLabels", bson.A{"RetryableWriteError"})
		}
		select {
		case <-ch:
		case <-timeout:
			return withElem(reply, "writeConcernError", bson.D{{Key: "code", Value: int32(codeWriteConcernFailed)},
				{Key: "codeName", Value: codeNames[codeWriteConcernFailed]},
				{Key: "errmsg", Value: "waiting for replication timed out"},
				{Key: "errInfo", Value: bson.D{{Key: "wtimeout", Value: true}, {Key: "writeConcern", Value: writeConcernDoc(wc)}}}})
		case <-ctx.Done():
			return withElem(reply, "writeConcernError", bson.D{{Key: "code", Value: int32(codeInterruptedReplChange)},
				{Key: "codeName", Value: codeNames[codeInterruptedReplChange]},
				{Key: "errmsg", Value: "the member is shutting down"}})
		}
	}
}

func writeConcernDoc(wc writeConcern) bson.D {
	var w any = int32(wc.w)
	if wc.majority {
		w = "majority"
	}
	return bson.D{{Key: "w", Value: w}, {Key: "wtimeout", Value: wc.timeout.Milliseconds()}}
}
