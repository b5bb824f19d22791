package mysql

import (
	"sync"
	"testing"
)

func TestCausalPositionKeepsTheLatestGTIDPerDomain(t *testing.T) {
	var c causalState
	c.ok = 1 << 2
	for _, tc := range []struct {
		g    gtid
		want string
	}{
		{gtid{0, 1, 5}, "0-1-5"},
		{gtid{0, 1, 7}, "0-1-7"},
		{gtid{7, 3, 1}, "0-1-7,7-3-1"},
		{gtid{0, 2, 9}, "0-2-9,7-3-1"}, // a new primary (server 2) in domain 0
		{gtid{3, 2, 4}, "0-2-9,3-2-4,7-3-1"},
	} {
		c.note(tc.g)
		if string(c.pos) != tc.want {
			t.Fatalf("after %v: pos %q, want %q", tc.g, c.pos, tc.want)
		}
		if c.has(2) {
			t.Fatalf("after %v: member 2 still counted as having the new position", tc.g)
		}
	}
	c.ok |= 1 << 1
	if !c.has(1) || c.has(64) {
		t.Fatal("has: member 1 confirmed, member 64 never")
	}
}

// TestParseGTIDChecksEveryPart: a GTID from a member is three decimal
// numbers that fit their widths, and nothing else.
func TestParseGTIDChecksEveryPart(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want gtid
		ok   bool
	}{
		{"0-1-5", gtid{0, 1, 5}, true},
		{"4294967295-4294967295-18446744073709551615", gtid{1<<32 - 1, 1<<32 - 1, 1<<64 - 1}, true},
		{"4294967296-1-1", gtid{}, false},
		{"0-4294967296-1", gtid{}, false},
		{"0-1-18446744073709551616", gtid{}, false},
		{"", gtid{}, false},
		{"0", gtid{}, false},
		{"0-1", gtid{}, false},
		{"0-1-", gtid{}, false},
		{"-1-5", gtid{}, false},
		{"0--5", gtid{}, false},
		{"0-1-5,1-1-5", gtid{}, false},
		{"0-1-5 ", gtid{}, false},
		{"+0-1-5", gtid{}, false},
		{"a-b-c", gtid{}, false},
	} {
		g, ok := parseGTID([]byte(tc.in))
		if ok != tc.ok || ok && g != tc.want {
			t.Errorf("parseGTID(%q) = %v, %v; want %v, %v", tc.in, g, ok, tc.want, tc.ok)
		}
	}
}

// TestProxyWideWritesOnlyMoveForward: causal_reads: proxy publishes the
// highest sequence number per domain any session wrote, whatever order
// sessions report them in, and concurrent writers lose none.
func TestProxyWideWritesOnlyMoveForward(t *testing.T) {
	p := &Proxy{}
	p.wrote(gtid{0, 1, 5})
	v := p.latest.Load().version
	p.wrote(gtid{0, 1, 3}) // an older write reported later
	if cur := p.latest.Load(); string(cur.pos) != "0-1-5" || cur.version != v {
		t.Fatalf("an older GTID moved the position: %q (version %d, was %d)", cur.pos, cur.version, v)
	}
	p.wrote(gtid{2, 1, 1})
	p.wrote(gtid{0, 2, 6})
	if cur := p.latest.Load(); string(cur.pos) != "0-2-6,2-1-1" || cur.version <= v {
		t.Fatalf("pos %q version %d", cur.pos, cur.version)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				p.wrote(gtid{uint32(w), 1, uint64(100 + i)})
			}
		}()
	}
	wg.Wait()
	if cur := p.latest.Load(); string(cur.pos) != "0-1-599,1-1-599,2-1-599,3-1-599" {
		t.Fatalf("after concurrent writers: %q", cur.pos)
	}
	var pool memberPool
	pool.confirm(3)
	pool.confirm(2)
	if pool.confirmed.Load() != 3 {
		t.Fatalf("confirmed went back to %d", pool.confirmed.Load())
	}
}
