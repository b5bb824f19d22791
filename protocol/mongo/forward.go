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

// proxyAnswered are the commands the proxy answers itself even when it has
// members: the handshake must describe the proxy (a mongos), not a member;
// authentication is terminated here; endSessions has nothing to end on a
// member that keeps no sessions (FerretDB has no endSessions); ping is the
// driver's check of the proxy, answered without a member round trip.
func proxyAnswered(name string) bool {
	switch name {
	case "hello", "isMaster", "ismaster", "ping", "buildInfo", "buildinfo",
		"saslStart", "saslContinue", "endSessions":
		return true
	}
	return false
}

// forwarded reports whether a command goes to a member: the proxy has
// members, the session passed the auth gate, and the proxy does not answer
// it itself.
func (s *session) forwarded(name string) bool {
	return len(s.p.members) > 0 && !proxyAnswered(name) && (s.p.auth == nil || s.user != "")
}

// errorLabelRetryableWrite is the label drivers retry a write on
// (retryable-writes spec): they send it again once, with the same lsid and
// txnNumber.
const errorLabelRetryableWrite = "RetryableWriteError"

// errorLabelNoWritesPerformed: the attempt did not reach a server.
const errorLabelNoWritesPerformed = "NoWritesPerformed"

// forward sends the client's OP_MSG to the first member and writes the
// member's reply back to the client itself, because the reply lives in the
// member connection's buffer, which is reused once the connection is handed
// back. It returns an error only when the client connection failed.
//
// Only the header is rewritten: requestID to the member connection's own
// sequence (so a stray reply can be told from the awaited one) and, on the
// way back, responseTo to the client's requestID. Sections travel as they
// came: lsid, $clusterTime, txnNumber and $readPreference (FerretDB ignores
// the last; routing by it comes later). A checksum is stripped rather than
// recomputed, both ways: the header it covered changed, and TCP already
// guards the bytes between proxy and member. ExhaustAllowed is cleared, so
// the member answers each request once.
func (s *session) forward(ctx context.Context, m wire.Message, msg wire.OpMsg) error {
	reqID := m.Header.RequestID
	moreToCome := msg.Flags&wire.MoreToCome != 0
	mp := s.p.members[0]
	c, err := mp.Get(ctx, poolKey{}, s.p.login, s.p.cfg.MemberWait, nil)
	if err != nil {
		return s.forwardFailed(reqID, msg, moreToCome, err)
	}
	// Both deadlines are set before c is published in s.cur and never
	// again for this command: shutdown's past deadline (serve's AfterFunc)
	// must not be overwritten by a later one. Storing c before checking ctx
	// means either this check or that callback sees the other.
	now := time.Now()
	_ = c.nc.SetWriteDeadline(now.Add(s.p.cfg.WriteTimeout))
	_ = c.nc.SetReadDeadline(now.Add(s.p.cfg.MemberTimeout))
	s.cur.Store(c)
	if ctx.Err() != nil {
		s.release(mp, c, false) // it may carry shutdown's past deadline
		return s.forwardFailed(reqID, msg, moreToCome, fmt.Errorf("%w: proxy shutting down", proxy.ErrBackendDown))
	}

	raw := m.Raw
	flags := msg.Flags &^ wire.ExhaustAllowed
	if flags&wire.ChecksumPresent != 0 {
		raw = raw[:len(raw)-4]
		flags &^= wire.ChecksumPresent
	}
	c.nextID++
	id := c.nextID
	binary.LittleEndian.PutUint32(raw[0:], uint32(len(raw)))
	binary.LittleEndian.PutUint32(raw[4:], uint32(id))
	binary.LittleEndian.PutUint32(raw[8:], 0)
	binary.LittleEndian.PutUint32(raw[16:], uint32(flags))

	mp.AddInFlight(1)
	_, err = c.nc.Write(raw)
	if err != nil {
		mp.AddInFlight(-1)
		s.release(mp, c, false)
		return s.forwardFailed(reqID, msg, moreToCome,
			fmt.Errorf("member %s: send: %w: %v", mp.name, proxy.ErrBackendLost, err))
	}
	if moreToCome {
		// The client expects no reply. mongod sends none, FerretDB sends one
		// anyway; draining it would hang on mongod and waiting for it would
		// cost a round trip. The connection is discarded instead: nothing
		// can then read that stray reply as another request's answer.
		mp.AddInFlight(-1)
		s.release(mp, c, false)
		return nil
	}
	rm, err := c.readReply(id)
	mp.AddInFlight(-1)
	if err != nil {
		s.release(mp, c, false)
		return s.forwardFailed(reqID, msg, false,
			fmt.Errorf("member %s: awaiting reply: %w: %v", mp.name, proxy.ErrBackendLost, err))
	}
	reply := rm.Raw
	if len(reply) < wire.HeaderLen+4 {
		s.release(mp, c, false)
		return s.forwardFailed(reqID, msg, false,
			fmt.Errorf("member %s: reply of %d bytes: %w", mp.name, len(reply), proxy.ErrBackendLost))
	}
	rflags := wire.MsgFlags(binary.LittleEndian.Uint32(reply[16:]))
	if rflags&wire.MoreToCome != 0 {
		// An exhaust stream the proxy did not ask for: out of step.
		s.release(mp, c, false)
		return s.forwardFailed(reqID, msg, false,
			fmt.Errorf("member %s: unrequested moreToCome reply: %w", mp.name, proxy.ErrBackendLost))
	}
	if rflags&wire.ChecksumPresent != 0 {
		reply = reply[:len(reply)-4]
		binary.LittleEndian.PutUint32(reply[0:], uint32(len(reply)))
		binary.LittleEndian.PutUint32(reply[16:], uint32(rflags&^wire.ChecksumPresent))
	}
	s.lastReqID++
	binary.LittleEndian.PutUint32(reply[4:], uint32(s.lastReqID))
	binary.LittleEndian.PutUint32(reply[8:], uint32(reqID))
	werr := s.write(reply)
	if cap(c.buf) > keepBufMax {
		c.buf = nil
	}
	s.release(mp, c, true)
	return werr
}

// release hands c back (keep) or discards it, after unpublishing it from
// s.cur: once another session holds it, this session's shutdown must not
// touch its deadlines. A kept connection's deadlines are left as they
// are: the next command sets its own before using it.
func (s *session) release(mp *memberPool, c *memberConn, keep bool) {
	s.cur.Store(nil)
	if keep {
		mp.Put(c)
	} else {
		mp.Discard(c)
	}
}

// forwardFailed answers a command the member did not answer with the
// proxy's code for err's kind. A retryable write (txnNumber outside a
// transaction) gets RetryableWriteError, the label a 4.4+ server puts on a
// retryable error, and only when the driver sent a txnNumber: the driver
// retries once with the same txnNumber, which a real mongod deduplicates.
// When nothing reached the member (BackendDown) it also gets
// NoWritesPerformed, which tells the driver this attempt's error is not
// the one to report if the retry fails too. A read gets no label (the spec
// has none for reads); the application sees the error.
func (s *session) forwardFailed(reqID int32, msg wire.OpMsg, moreToCome bool, err error) error {
	s.log.Debug("forward failed", zap.Error(err))
	if moreToCome {
		return nil // unacknowledged: the client reads no answer
	}
	c := codeOf(err)
	doc := appendError(s.doc[:0], c, s.errmsg(err))
	if retryableWrite(msg.Body()) {
		if proxy.KindOf(err) == proxy.KindBackendDown {
			doc = appendLabels(doc, errorLabelRetryableWrite, errorLabelNoWritesPerformed)
		} else {
			doc = appendLabels(doc, errorLabelRetryableWrite)
		}
	}
	s.doc = doc
	return s.write(s.replyMsg(reqID, doc))
}

// retryableWrite: the driver sent a txnNumber outside a transaction
// (autocommit is only present inside one), so it will retry the write.
func retryableWrite(body bsoncore.Document) bool {
	if _, ok := wire.Lookup(body, "txnNumber"); !ok {
		return false
	}
	_, inTxn := wire.Lookup(body, "autocommit")
	return !inTxn
}

// appendLabels adds errorLabels: [labels...] to the error document doc,
// which starts at doc[0].
func appendLabels(doc []byte, labels ...string) []byte {
	doc = doc[:len(doc)-1] // reopen: drop the terminating 0
	aidx, doc := bsoncore.AppendArrayElementStart(doc, "errorLabels")
	for i, l := range labels {
		doc = bsoncore.AppendStringElement(doc, strconv.Itoa(i), l)
	}
	doc, _ = bsoncore.AppendArrayEnd(doc, aidx)
	doc = append(doc, 0)
	binary.LittleEndian.PutUint32(doc[0:], uint32(len(doc)))
	return doc
}
