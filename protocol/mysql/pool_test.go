package mysql

import (
	"context"
	"testing"
	"time"
)

// idlePool builds a pool holding n idle connections of key k (no sockets:
// get never dials while an idle connection of the key exists).
func idlePool(n int, k poolKey) (*memberPool, []*backendConn) {
	p := newMemberPool(0, "db1", "127.0.0.1:1", 8, time.Second, 1<<20)
	var conns []*backendConn
	for i := 0; i < n; i++ {
		bc := &backendConn{pool: p, key: k, lastUsed: time.Now()}
		conns = append(conns, bc)
		p.idle[k] = append(p.idle[k], bc)
	}
	p.open = n
	return p, conns
}

func TestPoolPrefersTheSessionsLastConnection(t *testing.T) {
	k := poolKey{user: "app", collation: defaultCollationID}
	other := poolKey{user: "other", collation: defaultCollationID}
	_, elsewhere := idlePool(1, k)
	for _, tc := range []struct {
		name   string
		prefer func(conns []*backendConn) *backendConn
		want   func(conns []*backendConn) *backendConn
	}{
		{"idle preferred connection from the bottom of the stack",
			func(c []*backendConn) *backendConn { return c[0] }, func(c []*backendConn) *backendConn { return c[0] }},
		{"idle preferred connection in the middle",
			func(c []*backendConn) *backendConn { return c[1] }, func(c []*backendConn) *backendConn { return c[1] }},
		{"no preference: the most recently used",
			func([]*backendConn) *backendConn { return nil }, func(c []*backendConn) *backendConn { return c[2] }},
		{"preferred connection is busy (not idle): the most recently used",
			func([]*backendConn) *backendConn { return &backendConn{key: k} }, func(c []*backendConn) *backendConn { return c[2] }},
		{"preferred connection belongs to another member",
			func([]*backendConn) *backendConn { return elsewhere[0] }, func(c []*backendConn) *backendConn { return c[2] }},
		{"preferred connection has another key",
			func(c []*backendConn) *backendConn { c[0].key = other; return c[0] }, func(c []*backendConn) *backendConn { return c[2] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, conns := idlePool(3, k)
			prefer := tc.prefer(conns)
			want := tc.want(conns)
			got, err := p.get(context.Background(), k, credentials{}, time.Second, prefer)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("got connection %p, want %p", got, want)
			}
			// The rest stay idle, in order, and none twice.
			seen := map[*backendConn]bool{got: true}
			for _, bc := range p.idle[k] {
				if seen[bc] {
					t.Fatalf("connection %p both handed out and idle, or idle twice", bc)
				}
				seen[bc] = true
			}
			if n := len(p.idle[k]); n != 2 {
				t.Fatalf("%d idle connections left, want 2", n)
			}
		})
	}
}
