package mariadb

import (
	"testing"
)

func pos(t *testing.T, s string) Position {
	t.Helper()
	p, err := ParsePosition(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParsePosition(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		bad      bool
	}{
		{in: "", want: ""},
		{in: "0-1-5", want: "0-1-5"},
		{in: "7-3-2, 0-1-5", want: "0-1-5,7-3-2"},
		{in: "0-1-5,\n1-2-3", want: "0-1-5,1-2-3"},
		{in: "0-1", bad: true},
		{in: "0-x-5", bad: true},
		{in: "0-1-5,0-2-6", bad: true},
		{in: "0-1-99999999999999999999", bad: true},
	} {
		p, err := ParsePosition(tc.in)
		if (err != nil) != tc.bad {
			t.Errorf("%q: err %v, want bad=%v", tc.in, err, tc.bad)
			continue
		}
		if err == nil && p.String() != tc.want {
			t.Errorf("%q: got %q, want %q", tc.in, p.String(), tc.want)
		}
	}
}

// The chain below: db1 (server 1) opened at bootstrap at 0-1-5; db2
// (server 2) opened at epoch 2 after a failover at 0-1-1038 and has written
// up to 0-2-3616 since.
func TestErrantJudgesServerIDsNotOnlySequences(t *testing.T) {
	chain := []Opening{
		{Epoch: 1, ServerID: 1, Pos: Position{0: {0, 1, 5}}},
		{Epoch: 2, ServerID: 2, Pos: Position{0: {0, 1, 1038}}},
	}
	cur := Position{0: {0, 2, 3616}}
	for _, tc := range []struct {
		name       string
		have       string
		replicated string // the member's gtid_slave_pos
		cur        string // overrides cur when set
		want       string
	}{
		{name: "the failed primary's writes after the failover point are errant, though their sequence numbers are below the primary's", have: "0-1-1041", want: "0-1-1039..0-1-1041"},
		{name: "one write after the failover point", have: "0-1-1039", want: "0-1-1039"},
		{name: "exactly the failover point is the primary's history", have: "0-1-1038", want: ""},
		{name: "a replica that stopped before the failover", have: "0-1-700", want: ""},
		{name: "a replica that followed the new primary", have: "0-2-2000", want: ""},
		{name: "a replica level with the primary", have: "0-2-3616", want: ""},
		{name: "more than the primary", have: "0-2-3620", want: "0-2-3617..0-2-3620"},
		{name: "a domain the primary never had", have: "0-2-2000,7-1-3", want: "7-1-1..7-1-3"},
		{name: "a failed primary whose successor has written less than it", have: "0-1-1041", cur: "0-2-1039", want: "0-1-1040..0-1-1041"},
		{name: "history older than the first opening is not judged", have: "0-9-3", want: ""},
		{name: "the bootstrap point itself", have: "0-1-5", want: ""},
		{name: "someone else's transaction at the bootstrap point", have: "0-9-5", want: "0-9-1..0-9-5"},
		{name: "an injected transaction the primary now has too", have: "0-2-3616,7-1-1", cur: "0-2-3616,7-1-1", want: ""},
		{name: "empty member", have: "", want: ""},
		{name: "a replica of the new primary that then wrote locally", have: "0-1-3000", replicated: "0-2-2999", want: "0-1-3000"},
		{name: "a local write after replicating, but the replicated part is not history either", have: "0-1-3000", replicated: "0-9-2999", want: "0-1-1039..0-1-3000"},
	} {
		c := cur
		if tc.cur != "" {
			c = pos(t, tc.cur)
		}
		got := FormatRanges(Errant(pos(t, tc.have), pos(t, tc.replicated), chain, c))
		if got != tc.want {
			t.Errorf("%s: Errant(%s) = %q, want %q", tc.name, tc.have, got, tc.want)
		}
	}
}

// A switchover keeps the history linear: the target opens at the old
// primary's final position, so a fenced old primary holding exactly that
// rejoins, and one write more is errant.
func TestErrantAfterSwitchovers(t *testing.T) {
	chain := []Opening{
		{Epoch: 1, ServerID: 1, Pos: Position{0: {0, 1, 10}}},
		{Epoch: 2, ServerID: 2, Pos: Position{0: {0, 1, 50}}},
		{Epoch: 4, ServerID: 1, Pos: Position{0: {0, 2, 80}}},
	}
	cur := Position{0: {0, 1, 95}}
	for have, want := range map[string]string{
		"0-1-50": "",
		"0-2-80": "",
		"0-2-60": "",
		"0-1-60": "0-1-51..0-1-60", // db1 wrote while db2 was primary
		"0-1-90": "",
		"0-2-90": "0-2-81..0-2-90", // db2 wrote after it handed back
	} {
		if got := FormatRanges(Errant(pos(t, have), nil, chain, cur)); got != want {
			t.Errorf("Errant(%s) = %q, want %q", have, got, want)
		}
	}
}

// Positions come from servers; whatever they say, parsing and judging them
// must not panic, and what parses prints back the same.
func FuzzParsePosition(f *testing.F) {
	for _, s := range []string{"", "0-1-5", "0-1-5,7-3-2", "0-1", "a-b-c", "0-1-5,0-2-6", "4294967295-4294967295-18446744073709551615", "0-1-5,\n1-2-3"} {
		f.Add(s, "0-1-3")
	}
	chain := []Opening{{Epoch: 1, ServerID: 1, Pos: Position{0: {0, 1, 5}}}, {Epoch: 2, ServerID: 2, Pos: Position{0: {0, 1, 9}}}}
	f.Fuzz(func(t *testing.T, have, cur string) {
		h, err := ParsePosition(have)
		if err != nil {
			return
		}
		again, err := ParsePosition(h.String())
		if err != nil || again.String() != h.String() {
			t.Fatalf("%q printed as %q, which parses as %q (%v)", have, h.String(), again.String(), err)
		}
		c, err := ParsePosition(cur)
		if err != nil {
			return
		}
		for _, r := range Errant(h, c, chain, c) {
			if r.From > r.To || r.From == 0 {
				t.Fatalf("range %+v", r)
			}
		}
	})
}
