package mysql

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	gm "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/dbrouter/dbrouter/proxy"
)

// Causal reads (read-your-writes, causal_reads). Member connections
// negotiate session tracking and track last_gtid, so the OK packet of each
// commit carries the commit's GTID (relay reads it, sessionState): no
// query per write. Before a read on a replica, the replica runs
// MASTER_GTID_WAIT for what must be visible:
//
//   - session (the default): the session's own writes, the latest GTID per
//     domain; each replica known to have them is remembered by the
//     session, so only the first read per replica after a write waits.
//   - proxy: the newest GTID per domain any session of this proxy wrote,
//     for applications whose pool writes on one connection and reads on
//     another. It is one atomic pointer per cluster (Proxy.latest), and
//     each member remembers the newest version it is known to have, so a
//     read costs two atomic loads when nothing new was written.
//
// A replica that does not get there within causal_reads_timeout is not
// used: the read goes to the primary. A transaction's GTID is its
// COMMIT's (MariaDB reports last_gtid at commit, on whatever statement
// commits: COMMIT, an implicit commit, SET autocommit=1).

// gtid is a MariaDB GTID, domain-server-seq.
type gtid struct {
	domain, server uint32
	seq            uint64
}

// parseGTID reads "domain-server-seq" (decimal), as @@last_gtid and the
// session-state info report it. Bytes from a member: checked, never
// trusted.
func parseGTID(b []byte) (gtid, bool) {
	var g gtid
	d, b, ok := cutUint(b, 32)
	if !ok || len(b) == 0 || b[0] != '-' {
		return g, false
	}
	sv, b, ok := cutUint(b[1:], 32)
	if !ok || len(b) == 0 || b[0] != '-' {
		return g, false
	}
	seq, b, ok := cutUint(b[1:], 64)
	if !ok || len(b) != 0 {
		return g, false
	}
	return gtid{domain: uint32(d), server: uint32(sv), seq: seq}, true
}

// cutUint reads the decimal number b starts with (at least one digit, no
// more than bits wide) and returns the rest.
func cutUint(b []byte, bits uint) (uint64, []byte, bool) {
	var v uint64
	i := 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		d := uint64(b[i] - '0')
		if v > (1<<bits-1-d)/10 {
			return 0, b, false
		}
		v = v*10 + d
	}
	return v, b[i:], i > 0
}

// appendGTIDs formats a position for MASTER_GTID_WAIT ("0-1-5,7-3-1").
func appendGTIDs(b []byte, gs []gtid) []byte {
	for i, g := range gs {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(g.domain), 10)
		b = append(b, '-')
		b = strconv.AppendUint(b, uint64(g.server), 10)
		b = append(b, '-')
		b = strconv.AppendUint(b, g.seq, 10)
	}
	return b
}

// causalState is a session's read-your-writes position.
type causalState struct {
	gtids []gtid // the session's latest GTID per replication domain, by domain
	pos   []byte // gtids formatted for MASTER_GTID_WAIT ("" = nothing written)
	ok    uint64 // members (by index, < 64) known to have pos
	// primary: the GTID of a write could not be learned (its connection
	// failed right after): reads go to the primary until the next write
	// whose GTID is known.
	primary bool
}

func (c *causalState) has(m int) bool { return m < 64 && c.ok&(1<<m) != 0 }

// note records a GTID the session wrote: it replaces the session's GTID in
// its domain (the session's writes are serial: the latest is the one to
// wait for). It allocates only when the session writes in a new domain.
func (c *causalState) note(g gtid) {
	i, found := slices.BinarySearchFunc(c.gtids, g.domain, func(x gtid, d uint32) int { return cmp.Compare(x.domain, d) })
	if found {
		c.gtids[i] = g
	} else {
		c.gtids = slices.Insert(c.gtids, i, g)
	}
	c.pos, c.ok, c.primary = appendGTIDs(c.pos[:0], c.gtids), 0, false
}

// latestWrites is what causal_reads: proxy waits for: the highest GTID per
// domain that any session of the proxy wrote. It is immutable, published
// through Proxy.latest and replaced whole (copy on write): readers take it
// with one atomic load and no lock; only a write that moves a domain
// forward allocates a new one.
type latestWrites struct {
	version uint64 // grows by one with each replacement
	gtids   []gtid // by domain
	pos     []byte // gtids formatted for MASTER_GTID_WAIT
}

// wrote publishes GTID g as written through this proxy (causal_reads:
// proxy). A GTID no newer than what is published in its domain changes
// nothing: MASTER_GTID_WAIT compares sequence numbers per domain.
func (p *Proxy) wrote(g gtid) {
	for {
		cur := p.latest.Load()
		var gs []gtid
		var version uint64
		if cur != nil {
			i, found := slices.BinarySearchFunc(cur.gtids, g.domain, func(x gtid, d uint32) int { return cmp.Compare(x.domain, d) })
			if found && cur.gtids[i].seq >= g.seq {
				return
			}
			gs = slices.Clone(cur.gtids)
			if found {
				gs[i] = g
			} else {
				gs = slices.Insert(gs, i, g)
			}
			version = cur.version
		} else {
			gs = []gtid{g}
		}
		next := &latestWrites{version: version + 1, gtids: gs, pos: appendGTIDs(nil, gs)}
		if p.latest.CompareAndSwap(cur, next) {
			return
		}
	}
}

// confirm records that member pool has every write of version v (it
// waited for them): reads on it skip the wait until a newer write.
func (pool *memberPool) confirm(v uint64) {
	for {
		cur := pool.confirmed.Load()
		if cur >= v || pool.confirmed.CompareAndSwap(cur, v) {
			return
		}
	}
}

// learnedGTID takes the GTID a member reported for a statement of this
// session (the session-state info of its OK packet: a commit).
func (s *session) learnedGTID(g gtid) {
	switch s.p.causal {
	case causalSession:
		s.causal.note(g)
	case causalProxy:
		s.causal.primary = false
		s.p.wrote(g)
	}
}

// noteWrite asks bc for the GTID of the write that just ran on it
// (@@last_gtid, on the connection the write ran on, so it is that
// write's), when its response could not say: the member does not track
// last_gtid for the connection (it refused, or the client replaced
// session_track_system_variables), or the response ended in a result set
// (INSERT ... RETURNING), whose EOF carries no session state. It reports
// false when bc failed (the caller drops it).
func (s *session) noteWrite(bc *backendConn) bool {
	s.scratch = append(s.scratch[:0], gm.COM_QUERY)
	s.scratch = append(s.scratch, "SELECT @@last_gtid"...)
	v, null, err := bc.queryValue(s.scratch, s.execBuf[:0])
	switch {
	case err != nil:
		s.causal.primary = true
		var se *ServerError
		return errors.As(err, &se)
	case !null && len(v) > 0:
		if g, ok := parseGTID(v); ok {
			s.learnedGTID(g)
		}
	}
	s.execBuf = v[:0]
	return true
}

// causalPos is what a command of class c (answered as kind) on member m,
// connection bc, must wait for first: nil when nothing (the session, or
// with causal_reads: proxy every session, wrote nothing the replica is not
// known to have). version identifies the proxy-wide position waited for
// (causal_reads: proxy). Only reads on a replica wait: a prepare reads no
// rows; a pinned or held connection is the session's own; a read sent to
// the primary, after a replica was too slow or by a hint, has everything.
func (s *session) causalPos(bc *backendConn, m int, c Class, kind respKind) (pos []byte, version uint64) {
	if c.Kind != KindRead || kind == respPrepare || c.Hint == HintPrimary || bc == s.pinned || bc == s.held {
		return nil, 0
	}
	switch s.p.causal {
	case causalSession:
		if len(s.causal.pos) == 0 || s.causal.has(m) {
			return nil, 0
		}
		pos = s.causal.pos
	case causalProxy:
		cur := s.p.latest.Load()
		if cur == nil || s.p.pools[m].confirmed.Load() >= cur.version {
			return nil, 0
		}
		pos, version = cur.pos, cur.version
	default:
		return nil, 0
	}
	if !s.onReplica {
		return nil, 0
	}
	return pos, version
}

// containsFold reports whether s contains substr (ASCII, any case).
func containsFold(s, substr string) bool {
	for i := 0; i+len(substr) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(substr)], substr) {
			return true
		}
	}
	return false
}

// causalWait makes replica m (connection bc) wait for pos (see
// causalPos). It reports whether the replica got there in time; err is a
// failure of the connection.
func (s *session) causalWait(bc *backendConn, m int, pos []byte, version uint64) (bool, error) {
	s.scratch = append(s.scratch[:0], gm.COM_QUERY)
	s.scratch = append(s.scratch, "SELECT MASTER_GTID_WAIT('"...)
	s.scratch = append(s.scratch, pos...)
	s.scratch = append(s.scratch, "', "...)
	s.scratch = strconv.AppendFloat(s.scratch, s.p.cfg.CausalTimeout.Seconds(), 'f', 3, 64)
	s.scratch = append(s.scratch, ')')
	v, null, err := bc.queryValue(s.scratch, s.execBuf[:0])
	if err != nil {
		var se *ServerError
		if errors.As(err, &se) {
			return false, nil // the member refused it: use the primary
		}
		return false, err
	}
	s.execBuf = v[:0]
	if null || string(v) != "0" {
		return false, nil // -1: timed out
	}
	switch {
	case s.p.causal == causalProxy:
		s.p.pools[m].confirm(version)
	case m < 64:
		s.causal.ok |= 1 << m
	}
	return true, nil
}

// queryValue runs a query whose answer is one value (first column of the
// first row), appended to dst, and consumes the whole response.
func (bc *backendConn) queryValue(payload, dst []byte) (v []byte, null bool, err error) {
	v = dst
	if err := bc.command(payload); err != nil {
		return v, false, fmt.Errorf("%w: %v", proxy.ErrBackendLost, err)
	}
	p, err := bc.pr.readPacket()
	if err != nil {
		return v, false, fmt.Errorf("%w: %v", proxy.ErrBackendLost, err)
	}
	if len(p) > 0 && p[0] == 0xff {
		return v, false, parseErr(p)
	}
	for inRows, rows := false, 0; ; {
		p, err := bc.pr.readPacket()
		if err != nil {
			return v, false, fmt.Errorf("%w: %v", proxy.ErrBackendLost, err)
		}
		switch {
		case len(p) > 0 && p[0] == 0xff:
			return v, false, parseErr(p)
		case isEOF(p, false) && inRows:
			return v, null || rows == 0, nil
		case isEOF(p, false):
			inRows = true
		case inRows && rows == 0:
			rows++
			if p[0] == 0xfb {
				null = true
				continue
			}
			b, _, ok := readLenEncBytes(p, 0)
			if !ok {
				return v, false, fmt.Errorf("%w: malformed row", proxy.ErrBackendLost)
			}
			v = append(v, b...)
		case inRows:
			rows++
		}
	}
}
