package rssim

import (
	"context"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// privateDB holds the member's replication state in its own FerretDB, so
// that a member killed with -9 and restarted on the same data dir keeps
// its oplog, term, vote and rollback count.
const privateDB = "__rssim"

// opTime is a position in the set's oplog. Index counts entries from 1 (0
// is "nothing"); Term is the election term the entry was written in. They
// order positions as mongod orders optimes: term first, then index.
type opTime struct {
	Index int64          `bson:"i"`
	Term  int64          `bson:"t"`
	TS    bson.Timestamp `bson:"ts"`
	Wall  time.Time      `bson:"w"`
}

func (a opTime) less(b opTime) bool {
	if a.Term != b.Term {
		return a.Term < b.Term
	}
	return a.Index < b.Index
}

// entry is one oplog entry: the effect of one write command, as
// post-images (op "u": the whole document after the write, applied as a
// replace-upsert by _id) and deletions by _id (op "d"), or a command to
// run again (op "c": DDL), or nothing (op "n": a new primary's first
// entry). Applying an entry twice is harmless.
type entry struct {
	Index int64          `bson:"_id"`
	Term  int64          `bson:"t"`
	TS    bson.Timestamp `bson:"ts"`
	Wall  time.Time      `bson:"w"`
	DB    string         `bson:"db"`
	Ops   []op           `bson:"ops"`
	// Key is the retryable write's (lsid, txnNumber), Reply what the
	// client was told: a retry anywhere in the set gets Reply again. It is
	// kept as bytes (BSON binary): FerretDB, like mongod, moves _id first
	// in stored documents, nested ones included, and a retry must get the
	// same bytes.
	Key   string `bson:"key,omitempty"`
	Reply []byte `bson:"reply,omitempty"`
}

type op struct {
	Op   string        `bson:"op"`
	Coll string        `bson:"coll,omitempty"`
	ID   bson.RawValue `bson:"id"`
	O    bson.Raw      `bson:"o,omitempty"`
}

func (e *entry) opTime() opTime { return opTime{Index: e.Index, Term: e.Term, TS: e.TS, Wall: e.Wall} }

var nullID = bson.RawValue{Type: bson.TypeNull}

// retryKey is the dedupe key of a retryable write, "" when the command is
// not one (no lsid or no txnNumber).
func retryKey(doc bson.Raw) string {
	lsid, err := doc.LookupErr("lsid")
	if err != nil {
		return ""
	}
	txn, ok := doc.Lookup("txnNumber").AsInt64OK()
	if !ok {
		return ""
	}
	id := lsid.Value
	if d, ok := lsid.DocumentOK(); ok {
		if v, err := d.LookupErr("id"); err == nil {
			id = v.Value
		}
	}
	return hex.EncodeToString(id) + ":" + strconv.FormatInt(txn, 10)
}

// idKey makes a map key of an _id value.
func idKey(v bson.RawValue) string { return string(rune(v.Type)) + string(v.Value) }

// checkWrite turns a write reply's writeErrors into an error.
func checkWrite(r bson.Raw, err error) error {
	if err != nil {
		return err
	}
	if we, ok := r.Lookup("writeErrors").ArrayOK(); ok {
		if vals, _ := we.Values(); len(vals) > 0 {
			return fmt.Errorf("write error: %s", vals[0])
		}
	}
	return nil
}

// persistState writes term, vote and rollback count.
func (n *node) persistState(ctx context.Context) error {
	n.mu.Lock()
	doc := bson.D{{Key: "_id", Value: "state"}, {Key: "term", Value: n.term}, {Key: "votedTerm", Value: n.votedTerm},
		{Key: "votedFor", Value: n.votedFor}, {Key: "rollbacks", Value: n.rollbacks}}
	n.mu.Unlock()
	n.stateMu.Lock()
	defer n.stateMu.Unlock()
	_, err := n.local.run(ctx, privateDB, bson.D{{Key: "update", Value: "state"}, {Key: "updates", Value: bson.A{
		bson.D{{Key: "q", Value: bson.D{{Key: "_id", Value: "state"}}}, {Key: "u", Value: doc}, {Key: "upsert", Value: true}}}}})
	if err != nil {
		return fmt.Errorf("persist replication state: %w", err)
	}
	return nil
}

// load reads what persistState and the oplog hold.
func (n *node) load(ctx context.Context) error {
	st, err := n.local.findAll(ctx, privateDB, "state", bson.D{{Key: "_id", Value: "state"}})
	if err != nil {
		return fmt.Errorf("load replication state: %w", err)
	}
	if len(st) == 1 {
		var s struct {
			Term, VotedTerm, Rollbacks int64
			VotedFor                   string
		}
		s.Term, _ = st[0].Lookup("term").AsInt64OK()
		s.VotedTerm, _ = st[0].Lookup("votedTerm").AsInt64OK()
		s.Rollbacks, _ = st[0].Lookup("rollbacks").AsInt64OK()
		s.VotedFor, _ = st[0].Lookup("votedFor").StringValueOK()
		n.term, n.votedTerm, n.votedFor, n.rollbacks = s.Term, s.VotedTerm, s.VotedFor, s.Rollbacks
	}
	docs, err := n.local.findAll(ctx, privateDB, "oplog", bson.D{},
		bson.E{Key: "sort", Value: bson.D{{Key: "_id", Value: 1}}},
		bson.E{Key: "projection", Value: bson.D{{Key: "reply", Value: 0}, {Key: "ops", Value: 0}}})
	if err != nil {
		return fmt.Errorf("load oplog: %w", err)
	}
	n.oplog = []opTime{{}}
	n.dedupe = map[string]int64{}
	for _, d := range docs {
		var e entry
		if err := bson.Unmarshal(d, &e); err != nil {
			return fmt.Errorf("load oplog: %w", err)
		}
		if e.Index != int64(len(n.oplog)) {
			// A crash between two inserts cannot leave a gap (one insert
			// per entry, in order), so this is damage: keep the prefix.
			n.log.Warn("oplog has a gap; keeping the entries before it", "at", len(n.oplog), "found", e.Index)
			break
		}
		n.oplog = append(n.oplog, e.opTime())
		if e.Key != "" {
			n.dedupe[e.Key] = e.Index
		}
	}
	if n.term < n.lastLocked().Term {
		n.term = n.lastLocked().Term
	}
	return nil
}

// readEntries returns the raw oplog entries after index, at most limit.
func (n *node) readEntries(ctx context.Context, after int64, limit int) ([]bson.Raw, error) {
	return n.local.findAll(ctx, privateDB, "oplog", bson.D{{Key: "_id", Value: bson.D{{Key: "$gt", Value: after}}}},
		bson.E{Key: "sort", Value: bson.D{{Key: "_id", Value: 1}}}, bson.E{Key: "limit", Value: int64(limit)})
}

// storeEntry appends raw (an entry) to the local oplog.
func (n *node) storeEntry(ctx context.Context, raw bson.Raw) error {
	return checkWrite(n.local.run(ctx, privateDB, bson.D{{Key: "insert", Value: "oplog"}, {Key: "documents", Value: bson.A{raw}}}))
}

// applyOps makes the local data match an entry's ops.
func (n *node) applyOps(ctx context.Context, db string, ops []op) error {
	for _, o := range ops {
		var err error
		switch o.Op {
		case "u":
			err = checkWrite(n.local.run(ctx, db, bson.D{{Key: "update", Value: o.Coll}, {Key: "updates", Value: bson.A{
				bson.D{{Key: "q", Value: bson.D{{Key: "_id", Value: o.ID}}}, {Key: "u", Value: o.O}, {Key: "upsert", Value: true}}}}}))
		case "d":
			err = checkWrite(n.local.run(ctx, db, bson.D{{Key: "delete", Value: o.Coll}, {Key: "deletes", Value: bson.A{
				bson.D{{Key: "q", Value: bson.D{{Key: "_id", Value: o.ID}}}, {Key: "limit", Value: int32(1)}}}}}))
		case "c":
			var cmd bson.D
			if err := bson.Unmarshal(o.O, &cmd); err != nil || len(cmd) == 0 {
				return fmt.Errorf("apply command entry: %v", err)
			}
			// Replaying DDL that already took effect (a collection that
			// exists, an index already dropped) fails harmlessly.
			if _, cerr := n.local.run(ctx, db, cmd); cerr != nil {
				if _, isCmd := cerr.(*cmdError); !isCmd {
					err = cerr
				} else {
					n.log.Debug("replayed command failed", "db", db, "cmd", cmd[0].Key, "err", cerr)
				}
			}
		case "n":
		default:
			return fmt.Errorf("apply: unknown op %q", o.Op)
		}
		if err != nil {
			return fmt.Errorf("apply %s on %s.%s: %w", o.Op, db, o.Coll, err)
		}
	}
	return nil
}
