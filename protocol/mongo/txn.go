package mongo

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/proxy"
	tmongo "github.com/dbrouter/dbrouter/topology/mongo"
)

// Transactions. A transaction (lsid + txnNumber, startTransaction on its
// first command, autocommit: false on every one) runs on one member
// connection of the primary it started on: its first command goes to the
// primary, and the pins table keeps that connection for the transaction's
// next commands, whichever proxy session a driver sends them on, until
// commitTransaction or abortTransaction (or TxnTimeout idle). If that
// member stops being the primary, the transaction is gone (a primary
// aborts open transactions when it steps down): the client gets
// DbrouterTransactionLost with TransientTransactionError, and the driver
// (WithTransaction) runs it again from the start, on the new primary.

// txnMinWireVersion is the first wire version with replica-set
// transactions (MongoDB 4.0).
const txnMinWireVersion = 7

// txnCommand runs a command of a transaction. handled is false for a
// commitTransaction or abortTransaction of a transaction the proxy does
// not hold (a driver retrying a commit that already finished): forward
// sends it to the primary, which knows how it ended.
func (s *session) txnCommand(ctx context.Context, reqID int32, raw []byte, name string, tx txnInfo) (handled bool, err error) {
	p := s.p
	ending := name == "commitTransaction" || name == "abortTransaction"
	if tx.start {
		return true, s.startTxn(ctx, reqID, raw, tx)
	}
	e, ok := p.pins.txn(tx.lsid)
	if !ok || e.txnNumber != tx.txnNumber {
		if ending {
			return false, nil
		}
		return true, s.answer(reqID, CodeNoSuchTransaction, s.errmsg(fmt.Errorf("transaction %d not found: it ended, timed out after %s idle, or was lost with its member",
			tx.txnNumber, p.cfg.TxnTimeout)), errorLabelTransient)
	}
	if p.topo != nil {
		if snap := p.topo.Snapshot(); p.namedPrimary(snap) != e.member {
			s.endTxn(ctx, e, false)
			return true, s.answerErr(reqID, fmt.Errorf("%w: its member %s is no longer the primary", proxy.ErrTxnLost, e.mp.name), errorLabelTransient)
		}
	}
	if err := s.lockConn(ctx, e.conn); err != nil {
		return true, s.answerErr(reqID, fmt.Errorf("%w: %v", proxy.ErrTxnLost, err), errorLabelTransient)
	}
	if !p.pins.currentTxn(e) {
		unlockConn(e.conn)
		return true, s.answerErr(reqID, fmt.Errorf("%w: it ended or was lost meanwhile", proxy.ErrTxnLost), errorLabelTransient)
	}
	p.metrics.Queries(e.mp.idx, true).Inc()
	reply, _, err := s.sendOn(ctx, e.mp, e.conn, raw, false, nil)
	if err != nil {
		p.pins.dropConn(e.conn)
		s.cur.Store(nil)
		unlockConn(e.conn)
		e.mp.Discard(e.conn)
		if name == "commitTransaction" {
			return true, s.answerErr(reqID, fmt.Errorf("%w: the commit was sent and its connection lost: %w", proxy.ErrOutcomeUnknown, err),
				errorLabelUnknownCommit)
		}
		return true, s.answerErr(reqID, fmt.Errorf("%w: %w", proxy.ErrTxnLost, err), errorLabelTransient)
	}
	ri := inspectReply(reply)
	if ri.change != scNone {
		free := p.pins.dropTxn(e)
		s.cur.Store(nil)
		unlockConn(e.conn)
		s.putHeld(e.mp, e.conn, free)
		s.log.Debug("member state change in a transaction kept from the client", zap.String("member", e.mp.name), zap.Int32("code", ri.code))
		if name == "commitTransaction" && (ri.change == scInterrupted || ri.wce) {
			return true, s.answerErr(reqID, fmt.Errorf("%w: member %s changed state during the commit (code %d)",
				proxy.ErrOutcomeUnknown, e.mp.name, ri.code), errorLabelUnknownCommit)
		}
		return true, s.answerErr(reqID, fmt.Errorf("%w: member %s changed state (code %d)", proxy.ErrTxnLost, e.mp.name, ri.code),
			errorLabelTransient)
	}
	s.observe(proxy.RoutePinned)
	if ri.ok && ri.cursorOff >= 0 && ri.cursorID != 0 {
		id := p.pins.addCursor(e.mp, e.conn, ri.cursorID)
		putID(reply, ri.cursorOff, id)
	}
	free := false
	if ending {
		free = p.pins.dropTxn(e)
	}
	werr := s.writeReply(reqID, reply)
	s.cur.Store(nil)
	unlockConn(e.conn)
	s.putHeld(e.mp, e.conn, free)
	return true, werr
}

// startTxn sends a transaction's first command to the primary, after
// checking that the primary can run transactions at all: a standalone
// (FerretDB, a mongod without a replica set) would run each command on
// its own, so a transaction there is refused rather than run without
// atomicity.
func (s *session) startTxn(ctx context.Context, reqID int32, raw []byte, tx txnInfo) error {
	p := s.p
	deadline := time.Now().Add(p.cfg.WriteHold)
	idx, _, _, err := s.target(ctx, true, ReadPref{}, 0, deadline)
	if err != nil {
		return s.answerErr(reqID, err, errorLabelTransient)
	}
	mp := p.members[idx]
	if why := s.noTxnSupport(idx); why != "" {
		return s.answer(reqID, CodeIllegalOperation, s.errmsg(fmt.Errorf("transactions are not supported: member %s %s; the transaction was not started (nothing ran)",
			mp.name, why)))
	}
	c, reply, _, err := s.send(ctx, mp, raw, false, nil)
	if err != nil {
		return s.answerErr(reqID, fmt.Errorf("%w: %w", proxy.ErrTxnLost, err), errorLabelTransient)
	}
	ri := inspectReply(reply)
	if ri.change != scNone {
		s.release(mp, c, true)
		return s.answerErr(reqID, fmt.Errorf("%w: member %s changed state (code %d)", proxy.ErrTxnLost, mp.name, ri.code),
			errorLabelTransient)
	}
	s.observe(proxy.RoutePrimary)
	if !ri.ok {
		// The member refused the first command: no transaction is open.
		return s.deliver(ctx, reqID, mp, c, reply, ri)
	}
	if err := s.lockConn(ctx, c); err != nil {
		s.release(mp, c, false)
		return s.answerErr(reqID, fmt.Errorf("%w: %v", proxy.ErrTxnLost, err), errorLabelTransient)
	}
	if freed := p.pins.addTxn(tx.lsid, tx.txnNumber, idx, mp, c); freed != nil {
		s.closeFreed(ctx, *freed)
	}
	if ri.cursorOff >= 0 && ri.cursorID != 0 {
		putID(reply, ri.cursorOff, p.pins.addCursor(mp, c, ri.cursorID))
	}
	werr := s.writeReply(reqID, reply)
	s.cur.Store(nil)
	unlockConn(c)
	return werr
}

// closeFreed closes a connection the table let go of.
func (s *session) closeFreed(ctx context.Context, h held) {
	if s.lockConn(ctx, h.c) != nil {
		return
	}
	unlockConn(h.c)
	h.mp.Discard(h.c)
}

// endTxn forgets a transaction whose member is no longer the primary and
// closes its connection unless something else lives on it: the member
// aborted the transaction when it stepped down.
func (s *session) endTxn(ctx context.Context, e *txnEntry, _ bool) {
	if s.lockConn(ctx, e.conn) != nil {
		return
	}
	free := s.p.pins.dropTxn(e)
	unlockConn(e.conn)
	if free {
		e.mp.Discard(e.conn)
	}
}

// noTxnSupport says why member idx cannot run a transaction, "" when it
// can: it must be a replica set member (a standalone has no
// transactions) with wire version 7 (MongoDB 4.0) or later. Without a
// topology nothing is known of the member, and a transaction is refused
// rather than risked.
func (s *session) noTxnSupport(idx int) string {
	if s.p.topo == nil {
		return "is of unknown kind (the proxy has no topology), so it may be a standalone"
	}
	snap := s.p.topo.Snapshot()
	if idx >= len(snap.Members) {
		return "is not in the topology"
	}
	d, ok := tmongo.DetailOf(snap.Members[idx])
	switch {
	case !ok:
		return "has not been observed yet"
	case d.SetName == "":
		return "is a standalone, not a replica set member"
	case d.MaxWireVersion < txnMinWireVersion:
		return fmt.Sprintf("speaks wire version %d, below %d (MongoDB 4.0)", d.MaxWireVersion, txnMinWireVersion)
	}
	return ""
}

func putID(reply []byte, off int, id int64) {
	reply[off] = byte(id)
	reply[off+1] = byte(id >> 8)
	reply[off+2] = byte(id >> 16)
	reply[off+3] = byte(id >> 24)
	reply[off+4] = byte(id >> 32)
	reply[off+5] = byte(id >> 40)
	reply[off+6] = byte(id >> 48)
	reply[off+7] = byte(id >> 56)
}
