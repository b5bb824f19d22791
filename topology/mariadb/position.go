package mariadb

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// GTID is one MariaDB global transaction id: domain-server-sequence.
type GTID struct {
	Domain uint32
	Server uint32
	Seq    uint64
}

func (g GTID) String() string { return fmt.Sprintf("%d-%d-%d", g.Domain, g.Server, g.Seq) }

// Position is a MariaDB GTID position (@@gtid_binlog_pos and friends): per
// replication domain, the last transaction. Everything before it in the
// domain is implied, but not who wrote it: two servers that both wrote
// sequence 1041 of domain 0 after a failover hold different transactions,
// which only the server id tells apart.
type Position map[uint32]GTID

// ParsePosition parses "0-1-5,7-3-2"; empty is the empty position.
func ParsePosition(s string) (Position, error) {
	p := Position{}
	s = strings.TrimSpace(strings.ReplaceAll(s, "\n", ""))
	if s == "" {
		return p, nil
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		f := strings.Split(part, "-")
		if len(f) != 3 {
			return nil, fmt.Errorf("gtid %q: want domain-server-seq", part)
		}
		d, err1 := strconv.ParseUint(f[0], 10, 32)
		sv, err2 := strconv.ParseUint(f[1], 10, 32)
		seq, err3 := strconv.ParseUint(f[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("gtid %q: not three numbers", part)
		}
		if _, dup := p[uint32(d)]; dup {
			return nil, fmt.Errorf("gtid position %q: domain %d twice", s, d)
		}
		p[uint32(d)] = GTID{Domain: uint32(d), Server: uint32(sv), Seq: seq}
	}
	return p, nil
}

// String prints the position as MariaDB does, by domain.
func (p Position) String() string {
	var parts []string
	for _, d := range slices.Sorted(maps.Keys(p)) {
		parts = append(parts, p[d].String())
	}
	return strings.Join(parts, ",")
}

// Opening is where one epoch's primary began taking writes: its server id
// and its GTID position when it opened. The openings of a cluster, in epoch
// order, describe the current primary's history: in each domain, the
// transactions after one opening's sequence number up to the next opening's
// were written by the earlier opening's primary.
type Opening struct {
	Epoch    uint64
	ServerID uint32
	Pos      Position
}

// Range is a run of transactions of one domain and server that a member
// has and the current primary's history does not.
type Range struct {
	Domain, Server uint32
	From, To       uint64
}

func (r Range) String() string {
	if r.From == r.To {
		return fmt.Sprintf("%d-%d-%d", r.Domain, r.Server, r.To)
	}
	return fmt.Sprintf("%d-%d-%d..%d-%d-%d", r.Domain, r.Server, r.From, r.Domain, r.Server, r.To)
}

// FormatRanges prints errant ranges for people: "0-1-1039..0-1-1041,7-1-1".
func FormatRanges(rs []Range) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// Errant returns the transactions in have (a member's binlog position) that
// are not in the history of the current primary, whose binlog position is
// cur and whose cluster opened primaries at chain (oldest first). Per domain
// the member's last transaction must be one the primary's history holds:
// the same sequence number written by the same server. Nothing errant means
// the member's binlog is a prefix of the primary's and it may replicate from
// it; anything errant means it must not (MariaDB would stop it with error
// 1236, "the slave has diverged", or worse, silently skip).
//
// A member's history is judged only where the chain says who wrote: a last
// transaction older than the first recorded opening is taken as shared.
//
// replicated (the member's gtid_slave_pos, may be nil) only narrows what is
// reported: transactions up to a replicated one that is in the history are
// not errant, which matters for a replica that wrote locally after
// replicating for a while.
func Errant(have, replicated Position, chain []Opening, cur Position) []Range {
	var out []Range
	for _, d := range slices.Sorted(maps.Keys(have)) {
		g := have[d]
		if g.Seq == 0 {
			continue
		}
		c, ok := cur[d]
		switch {
		case !ok:
			out = append(out, Range{Domain: d, Server: g.Server, From: 1, To: g.Seq})
			continue
		case g.Seq > c.Seq:
			// Beyond the primary's end. (Where the member's binlog stops
			// agreeing with the primary's below that, only its last
			// transaction could tell, and that is this one.)
			out = append(out, Range{Domain: d, Server: g.Server, From: c.Seq + 1, To: g.Seq})
			continue
		}
		writer, known := writerOf(d, g.Seq, chain, cur)
		if !known || writer == g.Server {
			continue
		}
		from := forkAfter(d, g.Seq, chain) + 1
		if r, ok := replicated[d]; ok && r.Seq >= from && r.Seq < g.Seq {
			if w, known := writerOf(d, r.Seq, chain, cur); known && w == r.Server {
				from = r.Seq + 1
			}
		}
		out = append(out, Range{Domain: d, Server: g.Server, From: from, To: g.Seq})
	}
	return out
}

// writerOf says which server wrote sequence seq of domain d in the current
// primary's history, when the chain tells.
func writerOf(d uint32, seq uint64, chain []Opening, cur Position) (uint32, bool) {
	if c := cur[d]; c.Seq == seq {
		return c.Server, true
	}
	for i := len(chain) - 1; i >= 0; i-- {
		b := chain[i].Pos[d] // zero when the domain did not exist yet
		switch {
		case b.Seq == seq && seq > 0:
			return b.Server, true
		case b.Seq < seq:
			return chain[i].ServerID, true
		}
	}
	return 0, false
}

// forkAfter is the highest opening boundary of domain d below seq: where a member whose transaction
// at seq differs from the primary's history last agreed with it, as far as
// the chain shows (0 when it shows nothing).
func forkAfter(d uint32, seq uint64, chain []Opening) uint64 {
	var best uint64
	for _, o := range chain {
		if b := o.Pos[d].Seq; b < seq && b > best {
			best = b
		}
	}
	return best
}
