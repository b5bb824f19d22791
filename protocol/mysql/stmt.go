package mysql

import (
	"bytes"
	"context"
	"fmt"

	gm "github.com/go-mysql-org/go-mysql/mysql"
)

func (s *session) comStmtPrepare(ctx context.Context, pkt []byte) error {
	sql := bytes.Clone(pkt[1:])
	s.nextStmt++
	st := &stmt{id: s.nextStmt, sql: sql, class: Classify(sql)}
	// Preparing has no effect on session state; the statement's own class
	// decides where it runs, so a read is prepared where reads go.
	c := st.class
	c.Pin = 0
	return s.runOn(ctx, pkt, c, respPrepare, st)
}

// recordPrepared keeps the client statement and caches the member statement on
// the connection that prepared it.
func (s *session) recordPrepared(bc *backendConn, st *stmt, res relayOut) {
	st.params = res.params
	if s.stmts == nil {
		s.stmts = map[uint32]*stmt{}
	}
	s.stmts[st.id] = st
	if old, ok := bc.stmts[string(st.sql)]; ok {
		_ = bc.closeStmt(old)
	}
	if len(bc.stmts) >= maxCachedStmts {
		_ = bc.forgetStmts()
	}
	bc.stmts[string(st.sql)] = res.stmtID
}

func (s *session) lookupStmt(pkt []byte) (*stmt, error) {
	id, _, ok := readUint32(pkt, 1)
	if !ok {
		return nil, &ServerError{Code: CodeMalformedPacket, State: "HY000", Message: "dbrouter: malformed packet: statement id missing"}
	}
	st := s.stmts[id]
	if st == nil {
		return nil, &ServerError{Code: CodeUnknownStmt, State: "HY000", Message: fmt.Sprintf("Unknown prepared statement handler (%d) given to mysqld_stmt_execute", id)}
	}
	return st, nil
}

func (s *session) comStmtExecute(ctx context.Context, pkt []byte) error {
	st, err := s.lookupStmt(pkt)
	if err != nil {
		return s.writeErr(s.pr.seq, err.(*ServerError))
	}
	c := st.class
	cursor := len(pkt) > 5 && pkt[5]&0x01 != 0
	if cursor {
		c.Pin |= PinCursor
	}
	err = s.runOn(ctx, pkt, c, respResult, st)
	if s.pin&PinLongData != 0 {
		s.unpin(PinLongData)
	}
	if cursor && s.pin&PinCursor != 0 && s.pinned != nil && s.pinned.lastStatus&statusCursorExists == 0 {
		s.unpin(PinCursor)
	}
	return err
}

// executePacket returns the COM_STMT_EXECUTE to send on bc: the member's
// statement id in place of the proxy's (preparing it there first if needed),
// and the parameter types re-sent when the client bound them on another
// connection.
func (s *session) executePacket(bc *backendConn, st *stmt, pkt []byte) ([]byte, error) {
	id, err := s.memberStmt(bc, st)
	if err != nil {
		return nil, err
	}
	pkt[1], pkt[2], pkt[3], pkt[4] = byte(id), byte(id>>8), byte(id>>16), byte(id>>24)
	if st.params == 0 {
		return pkt, nil
	}
	bound := 10 + (int(st.params)+7)/8
	if bound >= len(pkt) {
		return pkt, nil // malformed: let the member say so
	}
	ntypes := 2 * int(st.params)
	switch {
	case pkt[bound] == 1 && bound+1+ntypes <= len(pkt):
		st.types = append(st.types[:0], pkt[bound+1:bound+1+ntypes]...)
		return pkt, nil
	case pkt[bound] == 0 && len(st.types) == ntypes:
		s.execBuf = append(s.execBuf[:0], pkt[:bound]...)
		s.execBuf = append(s.execBuf, 1)
		s.execBuf = append(s.execBuf, st.types...)
		s.execBuf = append(s.execBuf, pkt[bound+1:]...)
		return s.execBuf, nil
	}
	return pkt, nil
}

// memberStmt returns the member statement id for st on bc, preparing it there
// when this connection has not seen it.
func (s *session) memberStmt(bc *backendConn, st *stmt) (uint32, error) {
	if id, ok := bc.stmts[string(st.sql)]; ok {
		return id, nil
	}
	if len(bc.stmts) >= maxCachedStmts {
		if err := bc.forgetStmts(); err != nil {
			return 0, err
		}
	}
	id, buf, err := bc.prepare(st.sql, s.execBuf)
	s.execBuf = buf
	if err != nil {
		return 0, err
	}
	bc.stmts[string(st.sql)] = id
	return id, nil
}

func (s *session) comStmtClose(pkt []byte) error {
	if id, _, ok := readUint32(pkt, 1); ok {
		delete(s.stmts, id)
	}
	return nil // COM_STMT_CLOSE has no reply
}

// comStmtLongData pins the session: the data accumulates on one member
// connection until the execute.
func (s *session) comStmtLongData(ctx context.Context, pkt []byte) error {
	st, err := s.lookupStmt(pkt)
	if err != nil {
		return nil // no reply is allowed; the execute will fail
	}
	bc, _, err := s.acquire(ctx, st.class, -1)
	if err != nil {
		return nil
	}
	id, err := s.memberStmt(bc, st)
	if err != nil {
		s.dropConn(bc)
		return nil
	}
	pkt[1], pkt[2], pkt[3], pkt[4] = byte(id), byte(id>>8), byte(id>>16), byte(id>>24)
	if err := bc.command(pkt); err != nil {
		s.dropConn(bc)
		return nil
	}
	st.longData = true
	s.pin |= PinLongData
	if s.pinned == nil {
		s.pinned = bc
	}
	return nil
}

func (s *session) comStmtReset(ctx context.Context, pkt []byte) error {
	st, err := s.lookupStmt(pkt)
	if err != nil {
		return s.writeErr(s.pr.seq, err.(*ServerError))
	}
	st.longData = false
	if s.pinned == nil {
		return s.writeOK(s.pr.seq, 0, 0)
	}
	bc := s.pinned
	id, err := s.memberStmt(bc, st)
	if err != nil {
		s.dropConn(bc)
		return s.writeErr(s.pr.seq, toServerError(s.p.cfg.Cluster, err))
	}
	pkt[1], pkt[2], pkt[3], pkt[4] = byte(id), byte(id>>8), byte(id>>16), byte(id>>24)
	res, err := s.execOn(bc, pkt, respSingle, Class{Kind: KindRead, KeepsTxn: true})
	if err != nil {
		return ignoreHandled(err)
	}
	s.settle(bc, Class{Kind: KindWrite}, res, respSingle)
	if s.pin&(PinLongData|PinCursor) != 0 {
		s.unpin(PinLongData | PinCursor)
	}
	return nil
}

func (s *session) comStmtFetch(ctx context.Context, pkt []byte) error {
	st, err := s.lookupStmt(pkt)
	if err != nil {
		return s.writeErr(s.pr.seq, err.(*ServerError))
	}
	if s.pinned == nil || s.pin&PinCursor == 0 {
		return s.writeErr(s.pr.seq, &ServerError{Code: 1421, State: "HY000", Message: "The statement (" + fmt.Sprint(st.id) + ") has no open cursor."})
	}
	bc := s.pinned
	id, ok := bc.stmts[string(st.sql)]
	if !ok {
		return s.writeErr(s.pr.seq, &ServerError{Code: 1421, State: "HY000", Message: "The statement has no open cursor."})
	}
	pkt[1], pkt[2], pkt[3], pkt[4] = byte(id), byte(id>>8), byte(id>>16), byte(id>>24)
	res, err := s.execOn(bc, pkt, respFetch, Class{Kind: KindRead, KeepsTxn: true})
	if err != nil {
		return ignoreHandled(err)
	}
	if res.serverErr || (res.haveStatus && res.status&statusLastRowSent != 0) {
		res.haveStatus = false
		s.unpin(PinCursor)
		if s.pinned == nil {
			return nil
		}
	}
	s.settle(bc, Class{Kind: KindWrite}, relayOut{haveStatus: false}, respFetch)
	return nil
}

func ignoreHandled(err error) error {
	if err == errHandled {
		return nil
	}
	return err
}

var _ = gm.COM_STMT_FETCH
