package arbiter

import (
	"errors"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/raftfsm"
	"github.com/dbrouter/dbrouter/topology/mariadb"
)

// A relay log may be reset only when what it received and has not applied
// is in the new source's history — by server id, not sequence number.
func TestRelayLogSafeJudgesServerIDs(t *testing.T) {
	chain := []mariadb.Opening{
		{Epoch: 1, ServerID: 1, Pos: mariadb.Position{0: {Domain: 0, Server: 1, Seq: 5}}},
		{Epoch: 2, ServerID: 2, Pos: mariadb.Position{0: {Domain: 0, Server: 1, Seq: 200}}},
	}
	for _, tc := range []struct {
		name       string
		io, bin    string
		source     string
		wantUnique bool
	}{
		{"everything applied", "0-1-200", "0-1-200", "0-2-210", false},
		{"unapplied, and the new primary has it", "0-1-200", "0-1-150", "0-2-210", false},
		{"unapplied, not in the history though the source passed its sequence number", "0-1-201", "0-1-200", "0-2-210", true},
		{"unapplied beyond the source's end", "0-2-215", "0-2-210", "0-2-210", true},
		{"not a replica", "", "0-1-200", "0-2-210", false},
	} {
		err := relayLogSafe(mariadb.ServerState{IOPos: tc.io, BinlogPos: tc.bin}, tc.source, chain)
		if got := errors.Is(err, errUniqueRelayLog); got != tc.wantUnique {
			t.Errorf("%s: %v, want unique=%v", tc.name, err, tc.wantUnique)
		}
	}
}

// The cooldown counts a failover this arbiter never saw in failing_over
// (it began and ended between two looks): the replicated LastFailover
// changed. A restarted arbiter counts from its start.
func TestWitnessedFailovers(t *testing.T) {
	t0 := time.Unix(1000, 0)
	cl := func(epoch uint64, phase raftfsm.Phase, lastFO time.Time) *raftfsm.Cluster {
		return &raftfsm.Cluster{Epoch: epoch, Phase: phase, LastFailover: lastFO}
	}
	var w witnessed
	w.observe(cl(1, raftfsm.PhaseServing, time.Time{}), t0)
	if _, _, _, ok := w.since(t0); ok {
		t.Fatal("a failover witnessed at the bootstrap")
	}
	// Proposer's clock an hour off: only the change matters.
	w.observe(cl(2, raftfsm.PhaseServing, t0.Add(time.Hour)), t0.Add(10*time.Second))
	if _, fo, _, ok := w.since(t0.Add(15 * time.Second)); !ok || fo != 5*time.Second {
		t.Fatalf("failover seen %v ago (%v), want 5s", fo, ok)
	}
	var restarted witnessed
	restarted.observe(cl(2, raftfsm.PhaseServing, t0), t0.Add(time.Minute))
	if _, fo, _, ok := restarted.since(t0.Add(time.Minute)); !ok || fo != 0 {
		t.Fatalf("a restarted arbiter's cooldown starts %v ago (%v), want now", fo, ok)
	}
}
