package mariadb

import "testing"

func mustSet(t *testing.T, f Flavor, s string) GTIDSet {
	t.Helper()
	g, err := ParseGTIDSet(f, s)
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	return g
}

func TestGTIDContainsAndErrant(t *testing.T) {
	cases := []struct {
		name     string
		flavor   Flavor
		a, b     string
		contains bool   // a ⊇ b
		errant   string // b − a
	}{
		{"mariadb equal", MariaDB, "0-1-42", "0-1-42", true, ""},
		{"mariadb ahead", MariaDB, "0-1-50", "0-1-42", true, ""},
		{"mariadb behind", MariaDB, "0-1-42", "0-1-50", false, "0:43-50"},
		{"mariadb other server same domain", MariaDB, "0-2-60", "0-1-50", true, ""},
		{"mariadb missing domain", MariaDB, "0-1-50", "0-1-50,1-3-7", false, "1:1-7"},
		{"mariadb domains both ways", MariaDB, "0-1-50,2-1-9", "0-1-40,1-3-7", false, "1:1-7"},
		{"mariadb empty contains empty", MariaDB, "", "", true, ""},
		{"mariadb empty vs something", MariaDB, "", "0-1-1", false, "0:1"},
		{"mysql subset", MySQL, "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-10", "3e11fa47-71ca-11e1-9e33-c80aa9429562:2-5", true, ""},
		{"mysql gap", MySQL, "aaa:1-5:7-10", "aaa:1-10", false, "aaa:6"},
		{"mysql other source", MySQL, "aaa:1-10", "aaa:1-10,bbb:1-2", false, "bbb:1-2"},
		{"mysql adjacent merge", MySQL, "aaa:1-5,aaa:6-9", "aaa:1-9", true, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b := mustSet(t, tc.flavor, tc.a), mustSet(t, tc.flavor, tc.b)
			if got := a.Contains(b); got != tc.contains {
				t.Fatalf("Contains = %v, want %v", got, tc.contains)
			}
			if got := b.Subtract(a).String(); got != tc.errant {
				t.Fatalf("errant = %q, want %q", got, tc.errant)
			}
		})
	}
}

func TestGTIDParseErrors(t *testing.T) {
	for _, tc := range []struct {
		f Flavor
		s string
	}{
		{MariaDB, "0-1"}, {MariaDB, "0-x-3"}, {MariaDB, "0-1-3,0-2-4"},
		{MySQL, "aaa"}, {MySQL, "aaa:0"}, {MySQL, "aaa:5-3"}, {MySQL, ":1-2"},
	} {
		if _, err := ParseGTIDSet(tc.f, tc.s); err == nil {
			t.Errorf("ParseGTIDSet(%q) accepted", tc.s)
		}
	}
}

func TestMostAdvanced(t *testing.T) {
	cases := []struct {
		name   string
		flavor Flavor
		sets   []string
		want   int
	}{
		{"one ahead", MariaDB, []string{"0-1-40", "0-1-42", "0-1-41"}, 1},
		{"tie picks first", MariaDB, []string{"0-1-42", "0-1-42"}, 0},
		{"diverged domains", MariaDB, []string{"0-1-42,1-2-1", "0-1-43"}, -1},
		{"mysql", MySQL, []string{"a:1-3", "a:1-5,b:1", "a:1-5"}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var sets []GTIDSet
			for _, s := range tc.sets {
				sets = append(sets, mustSet(t, tc.flavor, s))
			}
			if got := MostAdvanced(sets); got != tc.want {
				t.Fatalf("MostAdvanced = %d, want %d", got, tc.want)
			}
		})
	}
}

func FuzzParseGTIDSet(f *testing.F) {
	f.Add("0-1-42,1-2-7")
	f.Add("aaa:1-5:7-10,bbb:3")
	f.Fuzz(func(t *testing.T, s string) {
		for _, fl := range []Flavor{MariaDB, MySQL} {
			g, err := ParseGTIDSet(fl, s)
			if err != nil {
				continue
			}
			if !g.Contains(g) || !g.Subtract(g).Empty() {
				t.Fatalf("%q: a set must contain itself and leave nothing when subtracted from itself", s)
			}
		}
	})
}
