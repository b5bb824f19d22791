package mysql

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	gm "github.com/go-mysql-org/go-mysql/mysql"
)

// KILL names proxy sessions, not member threads: the id a client knows is
// the one in the proxy's handshake (what Connector/J sends to cancel a
// statement), and a member thread id sent to the primary as-is would kill
// whichever unrelated connection has that id there. The proxy finds the
// session, and if it is running a statement, kills that statement on the
// member connection it runs on.

// firstSessionID starts proxy session ids far above member thread ids, so a
// member id (from CONNECTION_ID(), which a member answers) given to KILL is
// reported unknown rather than taken for some other session.
const firstSessionID = 1 << 30

// KillTarget parses `KILL [HARD|SOFT] [CONNECTION|QUERY] <id>`. Other forms
// (KILL QUERY ID, KILL USER) are not session kills and are not matched.
func KillTarget(sql []byte) (id uint32, query bool, ok bool) {
	l := lexer{s: sql}
	k, s, e := l.next()
	if k != tWord || !eqFold(sql[s:e], "KILL") {
		return 0, false, false
	}
	k, s, e = l.next()
	if k == tWord && (eqFold(sql[s:e], "HARD") || eqFold(sql[s:e], "SOFT")) {
		k, s, e = l.next()
	}
	if k == tWord && eqFold(sql[s:e], "CONNECTION") {
		k, s, e = l.next()
	} else if k == tWord && eqFold(sql[s:e], "QUERY") {
		query = true
		k, s, e = l.next()
	}
	if k != tWord {
		return 0, false, false
	}
	n, err := strconv.ParseUint(string(sql[s:e]), 10, 32)
	if err != nil {
		return 0, false, false
	}
	switch k, _, _ := l.next(); k {
	case tEOF:
	case tSemicolon:
		if k, _, _ := l.next(); k != tEOF {
			return 0, false, false
		}
	default:
		return 0, false, false
	}
	return uint32(n), query, true
}

// setBusy records the member connection this session's statement runs on
// (nil when none), for a KILL from another session, and counts the
// statements waiting on each member (Proxy.InFlight).
func (s *session) setBusy(bc *backendConn) {
	s.killMu.Lock()
	if s.busy != nil {
		s.busy.pool.AddInFlight(-1)
	}
	if bc != nil {
		bc.pool.AddInFlight(1)
	}
	s.busy = bc
	s.killMu.Unlock()
}

// kill carries out KILL [QUERY] id from this session.
func (s *session) kill(ctx context.Context, id uint32, query bool) error {
	if id == s.id {
		if query {
			return s.writeOK(s.pr.seq, 0, 0) // the KILL itself is the only statement running
		}
		_ = s.writeErr(s.pr.seq, &ServerError{Code: CodeConnectionKilled, State: "70100", Message: "Connection was killed"})
		return errQuit
	}
	v := s.p.session(id)
	if v == nil {
		return s.writeErr(s.pr.seq, &ServerError{Code: CodeNoSuchThread, State: "HY000", Message: fmt.Sprintf("Unknown thread id: %d", id)})
	}
	if se := s.killLocked(ctx, v, query); se != nil {
		return s.writeErr(s.pr.seq, se)
	}
	return s.writeOK(s.pr.seq, 0, 0)
}

// killLocked does the kill under the victim's killMu and reports what went
// wrong; the answer to the client is written after the lock is released.
func (s *session) killLocked(ctx context.Context, v *session, query bool) *ServerError {
	v.killMu.Lock()
	defer v.killMu.Unlock()
	if v.owner != s.user.Name {
		return &ServerError{Code: CodeKillDenied, State: "HY000", Message: fmt.Sprintf("You are not owner of thread %d", v.id)}
	}
	// While killMu is held the victim cannot hand its connection back to the
	// pool, so the KILL cannot reach a statement of another session that
	// took the connection meanwhile.
	if bc := v.busy; bc != nil {
		if err := s.killOnMember(ctx, bc); err != nil {
			var se *ServerError
			if !errors.As(err, &se) {
				se = toServerError(s.p.cfg.Cluster, fmt.Errorf("kill %d on member %s: %w", v.id, bc.pool.name, err))
			}
			return se
		}
	}
	if !query {
		// Closing the socket ends the victim's session; its pinned
		// connection is reset (rolling back a transaction) on the way out.
		v.raw.Close()
	}
	return nil
}

// killOnMember sends KILL QUERY for bc's member thread on another connection
// to the same member, as this session's backend user (the member applies
// its own privilege check).
func (s *session) killOnMember(ctx context.Context, bc *backendConn) error {
	pool := s.p.pools[bc.pool.idx]
	key := s.key
	key.noDB = true
	k, err := pool.Get(ctx, key, s.cred, s.p.cfg.PoolTimeout, nil)
	if err != nil {
		return err
	}
	setDeadlineLazy(k.nc, &k.deadline, s.p.cfg.QueryTimeout)
	s.scratch = append(s.scratch[:0], gm.COM_QUERY)
	s.scratch = fmt.Appendf(s.scratch, "KILL QUERY %d", bc.threadID)
	if _, err := k.exec(s.scratch); err != nil {
		var se *ServerError
		if errors.As(err, &se) {
			pool.Put(k)
		} else {
			pool.Discard(k)
		}
		return err
	}
	pool.Put(k)
	return nil
}

// session returns the live session with proxy id id, or nil.
func (p *Proxy) session(id uint32) *session {
	p.mu.Lock()
	defer p.mu.Unlock()
	for s := range p.sessions {
		if s.id == id {
			return s
		}
	}
	return nil
}
