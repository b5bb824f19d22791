package mysql

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	gm "github.com/go-mysql-org/go-mysql/mysql"
)

// Causal reads (read-your-writes): after a session's write the proxy asks
// the primary connection for the write's GTID (@@last_gtid, one query on the
// connection the write ran on, so it is that write's), and before the
// session's next read on a replica it runs MASTER_GTID_WAIT for it there. A
// replica that does not get there within causal_reads_timeout is not used:
// the read goes to the primary. Each replica known to have the position is
// remembered, so only the first read per replica after a write waits.

// causalState is a session's read-your-writes position.
type causalState struct {
	gtids map[string]string // replication domain → the session's latest GTID in it
	pos   string            // the GTIDs joined, for MASTER_GTID_WAIT
	ok    uint64            // members (by index, < 64) known to have pos
	// primary: the GTID of a write could not be read (its connection
	// failed right after): reads go to the primary until the next write
	// whose GTID is known.
	primary bool
}

func (c *causalState) has(m int) bool { return m < 64 && c.ok&(1<<m) != 0 }

// note records a GTID ("domain-server-seq") the session wrote.
func (c *causalState) note(gtid string) {
	domain, _, ok := strings.Cut(gtid, "-")
	if !ok {
		return
	}
	if c.gtids == nil {
		c.gtids = map[string]string{}
	}
	c.gtids[domain] = gtid
	parts := make([]string, 0, len(c.gtids))
	for _, g := range c.gtids {
		parts = append(parts, g)
	}
	slices.Sort(parts)
	c.pos, c.ok, c.primary = strings.Join(parts, ","), 0, false
}

// noteWrite learns the GTID of the write that just ran on bc. It reports
// false when bc failed (the caller drops it).
func (s *session) noteWrite(bc *backendConn) bool {
	s.scratch = append(s.scratch[:0], gm.COM_QUERY)
	s.scratch = append(s.scratch, "SELECT @@last_gtid"...)
	v, null, err := bc.queryValue(s.scratch)
	switch {
	case err != nil:
		s.causal.primary = true
		var se *ServerError
		return errors.As(err, &se)
	case !null && v != "":
		s.causal.note(v)
	}
	return true
}

// causalWait makes replica m (connection bc) wait for the session's writes.
// It reports whether the replica got there in time; err is a failure of the
// connection.
func (s *session) causalWait(bc *backendConn, m int) (bool, error) {
	s.scratch = append(s.scratch[:0], gm.COM_QUERY)
	s.scratch = fmt.Appendf(s.scratch, "SELECT MASTER_GTID_WAIT('%s', %.3f)", s.causal.pos, s.p.cfg.CausalTimeout.Seconds())
	v, null, err := bc.queryValue(s.scratch)
	if err != nil {
		var se *ServerError
		if errors.As(err, &se) {
			return false, nil // the member refused it: use the primary
		}
		return false, err
	}
	if null || v != "0" {
		return false, nil // -1: timed out
	}
	if m < 64 {
		s.causal.ok |= 1 << m
	}
	return true, nil
}

// queryValue runs a query whose answer is one value (first column of the
// first row) and consumes the whole response.
func (bc *backendConn) queryValue(payload []byte) (v string, null bool, err error) {
	if err := bc.command(payload); err != nil {
		return "", false, fmt.Errorf("%w: %v", errBackendLost, err)
	}
	p, err := bc.pr.readPacket()
	if err != nil {
		return "", false, fmt.Errorf("%w: %v", errBackendLost, err)
	}
	if len(p) > 0 && p[0] == 0xff {
		return "", false, parseErr(p)
	}
	for inRows, rows := false, 0; ; {
		p, err := bc.pr.readPacket()
		if err != nil {
			return "", false, fmt.Errorf("%w: %v", errBackendLost, err)
		}
		switch {
		case len(p) > 0 && p[0] == 0xff:
			return "", false, parseErr(p)
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
				return "", false, fmt.Errorf("%w: malformed row", errBackendLost)
			}
			v = string(b)
		case inRows:
			rows++
		}
	}
}
