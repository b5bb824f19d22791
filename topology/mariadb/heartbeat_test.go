package mariadb

import (
	"testing"
	"time"
)

func TestHeartbeatLag(t *testing.T) {
	var h heartbeats
	now := time.UnixMicro(10_000_000)
	if got := h.lag(0, now); got != -1 {
		t.Fatalf("no writes yet: lag %v, want unknown", got)
	}
	for _, ts := range []int64{9_000_000, 9_500_000, 9_900_000} {
		h.add(hbPoint{ts: ts, at: time.UnixMicro(ts)})
	}
	tests := []struct {
		seen int64
		want time.Duration
	}{
		{9_900_000, 0},
		{9_500_000, 100 * time.Millisecond},
		{9_000_000, 500 * time.Millisecond},
		{0, time.Second},
	}
	for _, tt := range tests {
		if got := h.lag(tt.seen, now); got != tt.want {
			t.Errorf("seen %d: lag %v, want %v", tt.seen, got, tt.want)
		}
	}
}

func TestObservedHeartbeats(t *testing.T) {
	var h heartbeats
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// Round 1 only learns the rows; nothing is known to be live yet.
	h.observe(map[string]int64{"old-leader": 900, "a1": 100}, at(0))
	if h.source() != "" || h.lag(0, at(0)) != -1 {
		t.Fatalf("after one round: following %q, lag %v", h.source(), h.lag(0, at(0)))
	}
	// a1 keeps writing (with a clock far behind old-leader's); old-leader
	// stopped. a1 is followed, timed by when its values were first seen.
	h.observe(map[string]int64{"old-leader": 900, "a1": 200}, at(500))
	h.observe(map[string]int64{"old-leader": 900, "a1": 300}, at(1000))
	if h.source() != "a1" {
		t.Fatalf("following %q, want the live writer a1", h.source())
	}
	for _, tt := range []struct {
		replica int64
		want    time.Duration
	}{{300, 0}, {200, 200 * time.Millisecond}, {100, 700 * time.Millisecond}} {
		if got := h.lag(tt.replica, at(1200)); got != tt.want {
			t.Errorf("replica at %d: lag %v, want %v", tt.replica, got, tt.want)
		}
	}
	if !h.fresh(at(1200), time.Second) || h.fresh(at(2500), time.Second) {
		t.Fatal("freshness: a point 200 ms old is fresh, 1.5 s old is not")
	}
	// a1 stops, a2 takes over: a2 is followed from scratch.
	h.observe(map[string]int64{"a1": 300, "a2": 50}, at(1500))
	h.observe(map[string]int64{"a1": 300, "a2": 60}, at(2000))
	if h.source() != "a2" {
		t.Fatalf("following %q, want a2", h.source())
	}
	if got := h.lag(60, at(2100)); got != 0 {
		t.Fatalf("replica with a2's newest value: lag %v", got)
	}
	if got := h.lag(50, at(2100)); got != 100*time.Millisecond {
		t.Fatalf("replica one a2 value behind: lag %v, want 100ms", got)
	}
}
