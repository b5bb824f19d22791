package mongo

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
	"github.com/dbrouter/dbrouter/proxy"
)

// Cursors. A reply carrying a cursor (find, aggregate, listCollections,
// listIndexes...) with a non-zero cursor.id has the id replaced, in place
// (both are int64), by one the proxy issues; the pins table maps it to the
// member, the member connection and the member's id. Members' ids are not
// passed through: FerretDB's ids are small sequential numbers that collide
// across members.

// getMore continues a cursor on the member connection holding it, with the
// member's id written over the proxy's in the request (same width, in
// place), and the proxy's written back over the member's in the reply.
func (s *session) getMore(ctx context.Context, reqID int32, raw []byte, body bsoncore.Document) error {
	v, ok := wire.Lookup(body, "getMore")
	if !ok || v.Type != bsoncore.TypeInt64 || len(v.Data) < 8 {
		return s.answer(reqID, CodeBadValue, s.errmsg(fmt.Errorf("getMore: the cursor id must be an int64, got %s", v.Type)))
	}
	id := v.Int64()
	off := cap(raw) - cap(v.Data)
	e, ok := s.p.pins.cursor(id)
	if !ok {
		return s.answer(reqID, CodeCursorNotFound, s.errmsg(fmt.Errorf("cursor id %d not found (exhausted, killed, timed out after %s idle, or lost with its member connection)",
			id, s.p.cfg.CursorTimeout)))
	}
	if s.memberGone(e.mp) {
		// A member judged unreachable: its answer would come after
		// MemberTimeout, if ever; the cursor is as good as gone.
		s.dropHeldConn(e.mp, e.conn)
		return s.answer(reqID, CodeCursorNotFound, s.errmsg(fmt.Errorf("cursor id %d lost: its member %s is unreachable", id, e.mp.name)))
	}
	if err := s.lockConn(ctx, e.conn); err != nil {
		return s.answer(reqID, CodeCursorNotFound, s.errmsg(fmt.Errorf("cursor id %d: %v", id, err)))
	}
	if !s.p.pins.current(e) {
		unlockConn(e.conn)
		return s.answer(reqID, CodeCursorNotFound, s.errmsg(fmt.Errorf("cursor id %d not found (killed or lost meanwhile)", id)))
	}
	binary.LittleEndian.PutUint64(raw[off:], uint64(e.memberID))
	s.p.metrics.Queries(e.mp.idx, true).Inc()
	reply, _, err := s.sendOn(ctx, e.mp, e.conn, raw, false, nil)
	if err != nil {
		s.p.pins.dropConn(e.conn)
		s.cur.Store(nil)
		unlockConn(e.conn)
		e.mp.Discard(e.conn)
		s.p.metrics.CountError(err)
		return s.answer(reqID, CodeCursorNotFound, s.errmsg(fmt.Errorf("cursor id %d lost with its member connection: %w", id, err)))
	}
	ri := inspectReply(reply)
	if ri.change == scNone {
		s.observe(proxy.RoutePinned)
	}
	done := false
	switch {
	case ri.change != scNone:
		// The member changed state under the cursor: the cursor is
		// reported lost rather than the state change (which would make
		// the driver drop its pool).
		free := s.p.pins.dropCursor(e)
		s.cur.Store(nil)
		unlockConn(e.conn)
		s.putHeld(e.mp, e.conn, free)
		return s.answer(reqID, CodeCursorNotFound, s.errmsg(fmt.Errorf("cursor id %d lost: member %s changed state (code %d)", id, e.mp.name, ri.code)))
	case !ri.ok:
		done = ri.code == codeCursorNotFound
	case ri.cursorOff >= 0 && ri.cursorID != 0:
		binary.LittleEndian.PutUint64(reply[ri.cursorOff:], uint64(e.id))
	default:
		done = true // exhausted: cursor.id 0
	}
	// Forgotten before the client reads the last batch: a client that
	// then asks what is open must not see it.
	free := false
	if done {
		free = s.p.pins.dropCursor(e)
	}
	werr := s.writeReply(reqID, reply)
	s.cur.Store(nil)
	unlockConn(e.conn)
	s.putHeld(e.mp, e.conn, free)
	return werr
}

// putHeld hands a held connection back to the pool once it holds nothing.
func (s *session) putHeld(mp *memberPool, c *memberConn, free bool) {
	if !free {
		return
	}
	if cap(c.buf) > keepBufMax {
		c.buf = nil
	}
	mp.Put(c)
}

// dropHeldConn closes a held connection and forgets what it held.
func (s *session) dropHeldConn(mp *memberPool, c *memberConn) {
	if !tryLockConn(c) {
		return // in use (perhaps waiting on that member): its user settles it
	}
	_, already := s.p.pins.dropConn(c)
	unlockConn(c)
	if !already {
		mp.Discard(c)
	}
}

// memberGone reports whether the topology judges mp's member unreachable.
func (s *session) memberGone(mp *memberPool) bool {
	if s.p.topo == nil {
		return false
	}
	snap := s.p.topo.Snapshot()
	return mp.idx < len(snap.Members) && !snap.Members[mp.idx].Reachable && !snap.Taken.IsZero()
}

// killCursors splits the client's cursors by the member connection
// holding them, kills each group there, and merges the answers into one,
// in the proxy's ids: cursorsKilled, cursorsNotFound (ids the proxy never
// issued or already forgot, and those the member did not know),
// cursorsAlive, cursorsUnknown (a group whose connection failed: the
// connection is closed, which closes FerretDB's cursors; a mongod's time
// out on their own).
func (s *session) killCursors(ctx context.Context, reqID int32, body bsoncore.Document) error {
	coll, ok := wire.Lookup(body, "killCursors")
	collName, okName := stringBytesOf(coll)
	db, okDB := wire.Lookup(body, "$db")
	dbName, okDBName := stringBytesOf(db)
	cv, okCursors := wire.Lookup(body, "cursors")
	arr, okArr := cv.ArrayOK()
	if !ok || !okName || !okDB || !okDBName || !okCursors || !okArr {
		return s.answer(reqID, CodeBadValue, s.errmsg(fmt.Errorf("killCursors needs a collection name, $db and a cursors array")))
	}
	vals, err := arr.Values()
	if err != nil {
		return s.answer(reqID, CodeBadValue, s.errmsg(fmt.Errorf("killCursors: cursors: %w", err)))
	}
	var killed, notFound, alive, unknown []int64
	answered := false // by a member: the command's time is observed
	groups := map[*memberConn][]*cursorEntry{}
	var order []*memberConn
	for _, v := range vals {
		id, ok := v.Int64OK()
		if !ok {
			return s.answer(reqID, CodeBadValue, s.errmsg(fmt.Errorf("killCursors: cursor ids must be int64, got %s", v.Type)))
		}
		e, found := s.p.pins.cursor(id)
		if !found {
			notFound = append(notFound, id)
			continue
		}
		if _, seen := groups[e.conn]; !seen {
			order = append(order, e.conn)
		}
		groups[e.conn] = append(groups[e.conn], e)
	}
	for _, c := range order {
		entries := groups[c]
		mp := entries[0].mp
		byMember := map[int64]*cursorEntry{}
		ids := bsoncore.NewArrayBuilder()
		if err := s.lockConn(ctx, c); err != nil {
			for _, e := range entries {
				unknown = append(unknown, e.id)
			}
			continue
		}
		for _, e := range entries {
			if !s.p.pins.current(e) {
				notFound = append(notFound, e.id)
				continue
			}
			byMember[e.memberID] = e
			ids.AppendInt64(e.memberID)
		}
		if len(byMember) == 0 {
			unlockConn(c)
			continue
		}
		cmd := bsoncore.NewDocumentBuilder().AppendString("killCursors", string(collName)).
			AppendArray("cursors", ids.Build()).AppendString("$db", string(dbName)).Build()
		reply, err := s.commandOn(ctx, mp, c, cmd)
		if err != nil {
			s.log.Debug("killCursors on member failed; connection closed", zap.String("member", mp.name), zap.Error(err))
			for _, e := range byMember {
				unknown = append(unknown, e.id)
			}
			s.p.pins.dropConn(c)
			s.cur.Store(nil)
			unlockConn(c)
			mp.Discard(c)
			continue
		}
		answered = true
		seen := map[int64]bool{}
		for _, field := range []string{"cursorsKilled", "cursorsNotFound", "cursorsAlive", "cursorsUnknown"} {
			av, ok := wire.Lookup(reply, field)
			if !ok {
				continue
			}
			a, ok := av.ArrayOK()
			if !ok {
				continue
			}
			ms, _ := a.Values()
			for _, mv := range ms {
				mid, ok := mv.AsInt64OK()
				e := byMember[mid]
				if !ok || e == nil || seen[mid] {
					continue
				}
				seen[mid] = true
				switch field {
				case "cursorsKilled":
					killed = append(killed, e.id)
				case "cursorsNotFound":
					notFound = append(notFound, e.id)
				case "cursorsAlive":
					alive = append(alive, e.id)
				default:
					unknown = append(unknown, e.id)
				}
			}
		}
		free := false
		for mid, e := range byMember {
			if !seen[mid] {
				unknown = append(unknown, e.id) // the member did not say
			}
			if seen[mid] && containsID(alive, e.id) {
				continue // still open on the member: keep it
			}
			free = s.p.pins.dropCursor(e) || free
		}
		s.cur.Store(nil)
		unlockConn(c)
		s.putHeld(mp, c, free)
	}
	if answered {
		s.observe(proxy.RoutePinned)
	}
	idx, doc := bsoncore.AppendDocumentStart(s.doc[:0])
	doc = appendIDs(doc, "cursorsKilled", killed)
	doc = appendIDs(doc, "cursorsNotFound", notFound)
	doc = appendIDs(doc, "cursorsAlive", alive)
	doc = appendIDs(doc, "cursorsUnknown", unknown)
	doc = bsoncore.AppendDoubleElement(doc, "ok", 1)
	doc, _ = bsoncore.AppendDocumentEnd(doc, idx)
	s.doc = doc
	return s.write(s.replyMsg(reqID, doc))
}

func containsID(ids []int64, id int64) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func appendIDs(dst []byte, key string, ids []int64) []byte {
	aidx, dst := bsoncore.AppendArrayElementStart(dst, key)
	for i, id := range ids {
		dst = bsoncore.AppendInt64Element(dst, strconv.Itoa(i), id)
	}
	dst, _ = bsoncore.AppendArrayEnd(dst, aidx)
	return dst
}

// commandOn runs a command the proxy builds on a held connection and
// returns the reply's body (aliasing c.buf), ok or not.
func (s *session) commandOn(ctx context.Context, mp *memberPool, c *memberConn, cmd bsoncore.Document) (bsoncore.Document, error) {
	msg, err := wire.AppendOpMsg(c.out[:0], 0, 0, 0, cmd)
	if err != nil {
		return nil, err
	}
	c.out = msg
	s.p.metrics.Queries(mp.idx, true).Inc()
	reply, _, err := s.sendOn(ctx, mp, c, msg, false, nil)
	if err != nil {
		return nil, err
	}
	m, err := wire.DecodeOpMsg(reply)
	if err != nil {
		return nil, fmt.Errorf("member %s: %w", mp.name, err)
	}
	return m.Body(), nil
}

// reap drops idle cursors and transactions every interval until ctx ends
// (Serve owns it), closing the connections left holding nothing.
func (p *Proxy) reap(ctx context.Context) {
	every := min(max(min(p.cfg.CursorTimeout, p.cfg.TxnTimeout)/10, 100*time.Millisecond), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, h := range p.pins.expire(time.Now(), p.cfg.CursorTimeout, p.cfg.TxnTimeout) {
			p.log.Debug("idle cursor or transaction timed out; member connection closed", zap.String("member", h.mp.name))
			unlockConn(h.c)
			h.mp.Discard(h.c)
		}
	}
}
