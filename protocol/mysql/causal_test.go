package mysql

import "testing"

func TestCausalPositionKeepsTheLatestGTIDPerDomain(t *testing.T) {
	var c causalState
	c.ok = 1 << 2
	for _, tc := range []struct{ gtid, want string }{
		{"0-1-5", "0-1-5"},
		{"0-1-7", "0-1-7"},
		{"7-3-1", "0-1-7,7-3-1"},
		{"0-2-9", "0-2-9,7-3-1"}, // a new primary (server 2) in domain 0
		{"garbage", "0-2-9,7-3-1"},
	} {
		c.note(tc.gtid)
		if c.pos != tc.want {
			t.Fatalf("after %q: pos %q, want %q", tc.gtid, c.pos, tc.want)
		}
		if c.has(2) {
			t.Fatalf("after %q: member 2 still counted as having the new position", tc.gtid)
		}
	}
	c.ok |= 1 << 1
	if !c.has(1) || c.has(64) {
		t.Fatal("has: member 1 confirmed, member 64 never")
	}
}
