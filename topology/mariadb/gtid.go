package mariadb

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Flavor says how a server writes GTIDs.
type Flavor int

// Flavors.
const (
	// MariaDB positions: "domain-server-seq,..." — per replication domain the
	// last transaction, everything up to seq in that domain implied.
	MariaDB Flavor = iota
	// MySQL GTID sets: "uuid:1-5:7,uuid2:1-3" — explicit intervals per source.
	MySQL
)

// interval is a closed range of sequence numbers.
type interval struct{ lo, hi uint64 }

// GTIDSet is a set of transactions in either flavor, reduced to one model:
// per stream (a MariaDB domain or a MySQL source uuid) a sorted list of
// disjoint intervals. A MariaDB position covers 1..seq of its domain. One
// model means candidate selection, catch-up checks and errant detection are
// the same code for both servers.
type GTIDSet struct {
	flavor  Flavor
	streams map[string][]interval
	// servers remembers, per MariaDB domain, the server id of the last
	// transaction, for printing.
	servers map[string]string
}

// ParseGTIDSet parses a MariaDB position or a MySQL GTID set. Empty is the
// empty set.
func ParseGTIDSet(f Flavor, s string) (GTIDSet, error) {
	g := GTIDSet{flavor: f, streams: map[string][]interval{}, servers: map[string]string{}}
	s = strings.TrimSpace(strings.ReplaceAll(s, "\n", ""))
	if s == "" {
		return g, nil
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		switch f {
		case MariaDB:
			f := strings.Split(part, "-")
			if len(f) != 3 {
				return g, fmt.Errorf("gtid %q: want domain-server-seq", part)
			}
			var nums [3]uint64
			for i, x := range f {
				n, err := strconv.ParseUint(x, 10, 64)
				if err != nil {
					return g, fmt.Errorf("gtid %q: %q is not a number", part, x)
				}
				nums[i] = n
			}
			dom := f[0]
			if _, dup := g.streams[dom]; dup {
				return g, fmt.Errorf("gtid position %q: domain %s twice", s, dom)
			}
			if nums[2] > 0 {
				g.streams[dom] = []interval{{1, nums[2]}}
			} else {
				g.streams[dom] = nil
			}
			g.servers[dom] = f[1]
		case MySQL:
			f := strings.Split(part, ":")
			if len(f) < 2 || f[0] == "" {
				return g, fmt.Errorf("gtid set %q: want uuid:interval[:interval]", part)
			}
			uuid := strings.ToLower(f[0])
			for _, iv := range f[1:] {
				lo, hi, ok := strings.Cut(iv, "-")
				a, err := strconv.ParseUint(lo, 10, 64)
				if err != nil || a == 0 {
					return g, fmt.Errorf("gtid set %q: bad interval %q", part, iv)
				}
				b := a
				if ok {
					if b, err = strconv.ParseUint(hi, 10, 64); err != nil || b < a {
						return g, fmt.Errorf("gtid set %q: bad interval %q", part, iv)
					}
				}
				g.streams[uuid] = addInterval(g.streams[uuid], interval{a, b})
			}
		}
	}
	return g, nil
}

// addInterval inserts iv and merges overlapping or adjacent intervals.
func addInterval(ivs []interval, iv interval) []interval {
	ivs = append(ivs, iv)
	slices.SortFunc(ivs, func(a, b interval) int {
		switch {
		case a.lo < b.lo:
			return -1
		case a.lo > b.lo:
			return 1
		}
		return 0
	})
	out := ivs[:1]
	for _, x := range ivs[1:] {
		last := &out[len(out)-1]
		if x.lo <= last.hi+1 {
			last.hi = max(last.hi, x.hi)
			continue
		}
		out = append(out, x)
	}
	return out
}

// Contains reports whether every transaction in o is in g.
func (g GTIDSet) Contains(o GTIDSet) bool {
	for k, ivs := range o.streams {
		for _, iv := range ivs {
			if !covered(g.streams[k], iv) {
				return false
			}
		}
	}
	return true
}

func covered(ivs []interval, iv interval) bool {
	for _, x := range ivs {
		if x.lo <= iv.lo && iv.hi <= x.hi {
			return true
		}
	}
	return false
}

// Subtract returns the transactions in g that o lacks: on a returning old
// primary, its errant transactions.
func (g GTIDSet) Subtract(o GTIDSet) GTIDSet {
	out := GTIDSet{flavor: g.flavor, streams: map[string][]interval{}, servers: g.servers}
	for k, ivs := range g.streams {
		for _, iv := range ivs {
			rest := []interval{iv}
			for _, x := range o.streams[k] {
				var next []interval
				for _, r := range rest {
					if x.hi < r.lo || x.lo > r.hi {
						next = append(next, r)
						continue
					}
					if r.lo < x.lo {
						next = append(next, interval{r.lo, x.lo - 1})
					}
					if r.hi > x.hi {
						next = append(next, interval{x.hi + 1, r.hi})
					}
				}
				rest = next
			}
			for _, r := range rest {
				out.streams[k] = addInterval(out.streams[k], r)
			}
		}
	}
	return out
}

// Empty reports whether the set holds no transaction.
func (g GTIDSet) Empty() bool { return g.Count() == 0 }

// Count is the number of transactions in the set.
func (g GTIDSet) Count() uint64 {
	var n uint64
	for _, ivs := range g.streams {
		for _, iv := range ivs {
			n += iv.hi - iv.lo + 1
		}
	}
	return n
}

// String prints the set in MySQL interval notation, per stream in order
// ("0:1-42" for MariaDB domain 0), which also shows a MariaDB difference
// that a position cannot express.
func (g GTIDSet) String() string {
	keys := slices.Sorted(maps.Keys(g.streams))
	var parts []string
	for _, k := range keys {
		ivs := g.streams[k]
		if len(ivs) == 0 {
			continue
		}
		var b strings.Builder
		b.WriteString(k)
		for _, iv := range ivs {
			if iv.lo == iv.hi {
				fmt.Fprintf(&b, ":%d", iv.lo)
			} else {
				fmt.Fprintf(&b, ":%d-%d", iv.lo, iv.hi)
			}
		}
		parts = append(parts, b.String())
	}
	return strings.Join(parts, ",")
}

// MostAdvanced returns the index of the set that contains every other one,
// or -1 when none does (diverged histories: a human must choose).
func MostAdvanced(sets []GTIDSet) int {
	for i, a := range sets {
		all := true
		for j, b := range sets {
			if i != j && !a.Contains(b) {
				all = false
				break
			}
		}
		if all {
			return i
		}
	}
	return -1
}

// Union returns the transactions in g or o (both of one flavor): what a
// replica holds when o is what it received and g what it applied.
func (g GTIDSet) Union(o GTIDSet) GTIDSet {
	out := GTIDSet{flavor: g.flavor, streams: map[string][]interval{}, servers: map[string]string{}}
	for _, src := range []GTIDSet{g, o} {
		for k, ivs := range src.streams {
			for _, iv := range ivs {
				out.streams[k] = addInterval(out.streams[k], iv)
			}
			if _, ok := out.streams[k]; !ok {
				out.streams[k] = nil
			}
		}
		maps.Copy(out.servers, src.servers)
	}
	return out
}
