package raftfsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

var t0 = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

func bp(b bool) *bool { return &b }

func entry(t testing.TB, i uint64, c *Command) *raft.Log {
	t.Helper()
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: i, Type: raft.LogCommand, Data: b}
}

// applyAll applies commands in order and returns each result.
func applyAll(t testing.TB, f *FSM, cmds ...*Command) []Result {
	t.Helper()
	var out []Result
	for _, c := range cmds {
		out = append(out, f.Apply(entry(t, f.State().Index+1, c)).(Result))
	}
	return out
}

func bootstrap() *Command {
	return &Command{Type: TypeBootstrap, Cluster: "shop", At: t0, Primary: "db1", Members: []string{"db1", "db2", "db3"}, Reason: "observed writable"}
}

func TestCommandsCompareAndSetOnEpoch(t *testing.T) {
	cases := []struct {
		name  string
		cmds  []*Command
		want  error // of the last command
		epoch uint64
		prim  string
		phase Phase
	}{
		{"bootstrap", []*Command{bootstrap()}, nil, 1, "db1", PhaseServing},
		{"second bootstrap refused", []*Command{bootstrap(), bootstrap()}, ErrStaleEpoch, 1, "db1", PhaseServing},
		{"begin switchover", []*Command{bootstrap(),
			{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db2", Phase: PhaseSwitching}}, nil, 2, "db2", PhaseSwitching},
		{"stale begin refused", []*Command{bootstrap(),
			{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db2", Phase: PhaseSwitching},
			{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db3", Phase: PhaseFailingOver}}, ErrStaleEpoch, 2, "db2", PhaseSwitching},
		{"begin while switching refused", []*Command{bootstrap(),
			{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db2", Phase: PhaseSwitching},
			{Type: TypeBegin, Cluster: "shop", Epoch: 2, At: t0, Primary: "db3", Phase: PhaseSwitching}}, ErrPhase, 2, "db2", PhaseSwitching},
		{"open", []*Command{bootstrap(),
			{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db2", Phase: PhaseSwitching},
			{Type: TypeOpen, Cluster: "shop", Epoch: 2, At: t0}}, nil, 2, "db2", PhaseServing},
		{"open while serving refused", []*Command{bootstrap(),
			{Type: TypeOpen, Cluster: "shop", Epoch: 1, At: t0}}, ErrPhase, 1, "db1", PhaseServing},
		{"abort goes back to the previous primary at a new epoch", []*Command{bootstrap(),
			{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db2", Phase: PhaseSwitching},
			{Type: TypeAbort, Cluster: "shop", Epoch: 2, At: t0}}, nil, 3, "db1", PhaseServing},
		{"abort of a failover refused", []*Command{bootstrap(),
			{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db2", Phase: PhaseFailingOver},
			{Type: TypeAbort, Cluster: "shop", Epoch: 2, At: t0}}, ErrPhase, 2, "db2", PhaseFailingOver},
		{"failover picks another candidate", []*Command{bootstrap(),
			{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db2", Phase: PhaseFailingOver},
			{Type: TypeBegin, Cluster: "shop", Epoch: 2, At: t0, Primary: "db3", Phase: PhaseFailingOver}}, nil, 3, "db3", PhaseFailingOver},
		{"a failover preempts a switchover whose old primary died", []*Command{bootstrap(),
			{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db2", Phase: PhaseSwitching},
			{Type: TypeBegin, Cluster: "shop", Epoch: 2, At: t0, Primary: "db3", Phase: PhaseFailingOver}}, nil, 3, "db3", PhaseFailingOver},
		{"a failover from a switchover never back to the lost primary", []*Command{bootstrap(),
			{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db2", Phase: PhaseSwitching},
			{Type: TypeBegin, Cluster: "shop", Epoch: 2, At: t0, Primary: "db1", Phase: PhaseFailingOver}}, ErrInvalid, 2, "db2", PhaseSwitching},
		{"begin to the primary refused", []*Command{bootstrap(),
			{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db1", Phase: PhaseSwitching}}, ErrInvalid, 1, "db1", PhaseServing},
		{"begin to an unknown member refused", []*Command{bootstrap(),
			{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db9", Phase: PhaseSwitching}}, ErrUnknownMember, 1, "db1", PhaseServing},
		{"begin to a member in maintenance refused", []*Command{bootstrap(),
			{Type: TypeMember, Cluster: "shop", Epoch: 1, At: t0, Member: "db2", Maintenance: bp(true)},
			{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db2", Phase: PhaseSwitching}}, ErrInvalid, 1, "db1", PhaseServing},
		{"fencing the serving primary refused", []*Command{bootstrap(),
			{Type: TypeMember, Cluster: "shop", Epoch: 1, At: t0, Member: "db1", Fenced: bp(true)}}, ErrInvalid, 1, "db1", PhaseServing},
		{"unknown cluster", []*Command{bootstrap(),
			{Type: TypeOpen, Cluster: "blog", Epoch: 1, At: t0}}, ErrUnknownCluster, 1, "db1", PhaseServing},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFSM()
			res := applyAll(t, f, tc.cmds...)
			last := res[len(res)-1]
			if !errors.Is(last.Err, tc.want) || (tc.want == nil) != (last.Err == nil) {
				t.Fatalf("last command: err %v, want %v", last.Err, tc.want)
			}
			cl := f.State().Cluster("shop")
			if cl.Epoch != tc.epoch || cl.Primary != tc.prim || cl.Phase != tc.phase {
				t.Fatalf("state epoch %d primary %s phase %s, want %d %s %s", cl.Epoch, cl.Primary, cl.Phase, tc.epoch, tc.prim, tc.phase)
			}
			if f.State().Index != uint64(len(tc.cmds)) {
				t.Fatalf("applied index %d, want %d", f.State().Index, len(tc.cmds))
			}
		})
	}
}

func TestRefusedCommandChangesNothing(t *testing.T) {
	f := NewFSM()
	applyAll(t, f, bootstrap())
	before, _ := json.Marshal(f.State().Cluster("shop"))
	// Maintenance flips first inside applyMember, then the primary check
	// refuses: the refusal must not leave the flip behind.
	res := applyAll(t, f, &Command{Type: TypeMember, Cluster: "shop", Epoch: 1, At: t0, Member: "db1", Maintenance: bp(true)})
	if res[0].Err == nil {
		t.Fatal("maintenance on the serving primary was accepted")
	}
	after, _ := json.Marshal(f.State().Cluster("shop"))
	if !bytes.Equal(before, after) {
		t.Fatalf("refused command changed the cluster:\n%s\n%s", before, after)
	}
}

func TestHistoryIsBounded(t *testing.T) {
	f := NewFSM()
	applyAll(t, f, bootstrap())
	for i := 0; i < HistoryLimit+20; i++ {
		applyAll(t, f, &Command{Type: TypeNote, Cluster: "shop", At: t0.Add(time.Duration(i) * time.Second), Reason: fmt.Sprint(i)})
	}
	h := f.State().Cluster("shop").History
	if len(h) != HistoryLimit {
		t.Fatalf("history has %d entries, want %d", len(h), HistoryLimit)
	}
	if h[len(h)-1].Reason != fmt.Sprint(HistoryLimit+19) {
		t.Fatalf("newest entry %q", h[len(h)-1].Reason)
	}
}

func TestDecisionsCarryTimeAndReason(t *testing.T) {
	f := NewFSM()
	at := t0.Add(time.Hour)
	applyAll(t, f, bootstrap(), &Command{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: at, Primary: "db2", Phase: PhaseFailingOver, Reason: "db1 unreachable from 2/3 arbiters"})
	cl := f.State().Cluster("shop")
	d := cl.History[len(cl.History)-1]
	if d.Kind != "failover_begin" || d.From != "db1" || d.To != "db2" || !d.At.Equal(at) || d.Reason == "" || d.Epoch != 2 {
		t.Fatalf("decision %+v", d)
	}
	if !cl.LastFailover.Equal(at) || cl.Previous != "db1" {
		t.Fatalf("last failover %v previous %q", cl.LastFailover, cl.Previous)
	}
}

func TestUnknownCommands(t *testing.T) {
	f := NewFSM()
	applyAll(t, f, bootstrap())
	// A newer node's command marked ignorable is skipped.
	r := f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: append([]byte{formatVersion, 200, FlagIgnoreUnknown}, "{}"...)}).(Result)
	if r.Err != nil || f.State().Incompatible != "" || f.State().Index != 2 {
		t.Fatalf("ignorable unknown command: %v, incompatible %q", r.Err, f.State().Incompatible)
	}
	// One that is not stops the node applying, rather than diverge.
	r = f.Apply(&raft.Log{Index: 3, Type: raft.LogCommand, Data: append([]byte{formatVersion, 201, 0}, "{}"...)}).(Result)
	if !errors.Is(r.Err, ErrIncompatible) || f.State().Incompatible == "" {
		t.Fatalf("unknown command: %v, incompatible %q", r.Err, f.State().Incompatible)
	}
	r = applyAll(t, f, &Command{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db2", Phase: PhaseSwitching})[0]
	if !errors.Is(r.Err, ErrIncompatible) || f.State().Cluster("shop").Epoch != 1 {
		t.Fatalf("stopped FSM applied a command: %v", r.Err)
	}
}

// A node stopped at a command it cannot apply must come back once upgraded:
// its snapshots never carry the stop, and it takes none while stopped (one
// would let raft compact away the entries its state lacks).
func TestIncompatibleNodeResumesAfterUpgrade(t *testing.T) {
	const newType Type = 201
	log := []*raft.Log{
		entry(t, 1, bootstrap()),
		{Index: 2, Type: raft.LogCommand, Data: append([]byte{formatVersion, byte(newType), 0}, `{"cluster":"shop","epoch":1,"reason":"new"}`...)},
		entry(t, 3, &Command{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db2", Phase: PhaseSwitching}),
	}
	old := NewFSM()
	for _, l := range log {
		old.Apply(l)
	}
	if old.State().Incompatible == "" {
		t.Fatal("old binary applied a command it does not know")
	}
	if _, err := old.Snapshot(); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("snapshot while incompatible: %v, want ErrNoSnapshot", err)
	}
	if b, _ := json.Marshal(old.State()); bytes.Contains(b, []byte("incompatible")) {
		t.Fatalf("serialised state carries the stop: %s", b)
	}

	// A snapshot taken before the stop, restored by the upgraded binary,
	// which then applies the rest of the log.
	before := NewFSM()
	before.Apply(log[0])
	snap, err := before.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	appliers[newType] = applyNote
	defer delete(appliers, newType)
	upgraded := NewFSM()
	if err := upgraded.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	for _, l := range log[1:] {
		if r := upgraded.Apply(l).(Result); r.Err != nil {
			t.Fatalf("upgraded node, index %d: %v", l.Index, r.Err)
		}
	}
	if st := upgraded.State(); st.Incompatible != "" || st.Cluster("shop").Epoch != 2 {
		t.Fatalf("upgraded node did not resume: incompatible %q, epoch %d", st.Incompatible, st.Cluster("shop").Epoch)
	}
}

// Every command that opens a primary records where it opened; the chain is
// what a returning member is judged against.
func TestOpeningsRecordWherePrimariesOpened(t *testing.T) {
	f := NewFSM()
	b := bootstrap()
	b.Opened = &OpenedAt{ServerID: 1, GTID: "0-1-5"}
	applyAll(t, f, b,
		&Command{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db2", Phase: PhaseFailingOver},
		&Command{Type: TypeOpen, Cluster: "shop", Epoch: 2, At: t0, Opened: &OpenedAt{ServerID: 2, GTID: "0-1-1038"}},
		&Command{Type: TypeBegin, Cluster: "shop", Epoch: 2, At: t0, Primary: "db3", Phase: PhaseSwitching},
		&Command{Type: TypeAbort, Cluster: "shop", Epoch: 3, At: t0, Opened: &OpenedAt{ServerID: 2, GTID: "0-2-2000"}})
	got := f.State().Cluster("shop").Openings
	want := []Opening{{1, "db1", 1, "0-1-5"}, {2, "db2", 2, "0-1-1038"}, {4, "db2", 2, "0-2-2000"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("openings %v, want %v", got, want)
	}
	for i := 0; i < HistoryLimit+5; i++ {
		e := f.State().Cluster("shop").Epoch
		applyAll(t, f, &Command{Type: TypeBegin, Cluster: "shop", Epoch: e, At: t0, Primary: []string{"db1", "db3"}[i%2], Phase: PhaseSwitching},
			&Command{Type: TypeOpen, Cluster: "shop", Epoch: e + 1, At: t0, Opened: &OpenedAt{ServerID: 9, GTID: "0-9-1"}})
	}
	if n := len(f.State().Cluster("shop").Openings); n != HistoryLimit {
		t.Fatalf("%d openings kept, want the last %d", n, HistoryLimit)
	}
}

func TestDecodeRejectsMalformedEntries(t *testing.T) {
	for _, b := range [][]byte{nil, {1}, {1, 2}, {9, 1, 0, '{', '}'}, {1, 1, 0, '{'}, {1, 1, 0, '[', ']'}} {
		if _, err := Decode(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("Decode(%q) = %v, want ErrMalformed", b, err)
		}
	}
	c := &Command{Type: TypeBegin, Flags: FlagIgnoreUnknown, Cluster: "shop", Epoch: 7, At: t0, Primary: "db2", Phase: PhaseSwitching, Reason: "operator"}
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Type != c.Type || got.Flags != c.Flags || got.Epoch != 7 || got.Primary != "db2" || !got.At.Equal(t0) {
		t.Fatalf("round trip: %+v", got)
	}
}

func FuzzDecode(f *testing.F) {
	b, _ := bootstrap().Encode()
	f.Add(b)
	f.Add([]byte{1, 2, 0, '{', '}'})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Decode(data)
		if err != nil {
			return
		}
		fsm := NewFSM()
		fsm.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data})
		if _, err := c.Encode(); err != nil {
			t.Fatalf("decoded command does not encode: %v", err)
		}
	})
}

type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { return nil }

func TestSnapshotRestoreRoundTrips(t *testing.T) {
	f := NewFSM()
	applyAll(t, f, bootstrap(),
		&Command{Type: TypeMember, Cluster: "shop", Epoch: 1, At: t0, Member: "db3", Maintenance: bp(true), Reason: "disk swap"},
		&Command{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db2", Phase: PhaseSwitching},
		&Command{Type: TypeProxyJoin, At: t0, Proxy: &Proxy{ID: "p1", Raft: "127.0.0.1:1", Site: "lon"}},
		&Command{Type: TypeArbiterJoin, At: t0, Arbiter: &Proxy{ID: "a4", Raft: "127.0.0.1:2", Admin: "127.0.0.1:3"}})
	if f.State().Arbiters["a4"].Admin != "127.0.0.1:3" {
		t.Fatalf("arbiters %v", f.State().Arbiters)
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM()
	if err := g.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(f.State())
	got, _ := json.Marshal(g.State())
	if !bytes.Equal(want, got) {
		t.Fatalf("restored state differs:\n%s\n%s", want, got)
	}
	// The restored FSM goes on applying from where the original was.
	r := applyAll(t, g, &Command{Type: TypeOpen, Cluster: "shop", Epoch: 2, At: t0})
	if r[0].Err != nil || g.State().Cluster("shop").Phase != PhaseServing {
		t.Fatalf("apply after restore: %v", r[0].Err)
	}
	if err := NewFSM().Restore(io.NopCloser(bytes.NewReader([]byte("{not json")))); err == nil {
		t.Fatal("restore of garbage succeeded")
	}
}

func TestApplyIsDeterministic(t *testing.T) {
	cmds := []*Command{bootstrap(),
		{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db3", Phase: PhaseFailingOver},
		{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db2", Phase: PhaseSwitching},
		{Type: TypeOpen, Cluster: "shop", Epoch: 2, At: t0.Add(time.Second)},
		{Type: TypeMember, Cluster: "shop", Epoch: 2, At: t0, Member: "db1", Fenced: bp(true), Errant: new(string)},
	}
	a, b := NewFSM(), NewFSM()
	applyAll(t, a, cmds...)
	applyAll(t, b, cmds...)
	ja, _ := json.Marshal(a.State())
	jb, _ := json.Marshal(b.State())
	if !bytes.Equal(ja, jb) {
		t.Fatal("same log, different states")
	}
}

func TestAcknowledgeableAcrossChanges(t *testing.T) {
	f := NewFSM()
	applyAll(t, f, bootstrap(),
		&Command{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: t0, Primary: "db2", Phase: PhaseSwitching},
		&Command{Type: TypeOpen, Cluster: "shop", Epoch: 2, At: t0})
	cl := f.State().Cluster("shop")
	if !cl.Acknowledgeable(1) || !cl.Acknowledgeable(2) {
		t.Fatal("after a switchover, the old primary's acknowledged writes are on the new one")
	}
	applyAll(t, f, &Command{Type: TypeBegin, Cluster: "shop", Epoch: 2, At: t0, Primary: "db3", Phase: PhaseFailingOver})
	cl = f.State().Cluster("shop")
	if cl.Acknowledgeable(1) || cl.Acknowledgeable(2) || !cl.Acknowledgeable(3) || cl.Acknowledgeable(4) {
		t.Fatalf("after a failover only the new epoch's acks stand (safe since %d)", cl.SafeSince)
	}
}

func TestArbiterJoinAndLeave(t *testing.T) {
	f := NewFSM()
	r := applyAll(t, f,
		&Command{Type: TypeArbiterJoin, At: t0, Arbiter: &Proxy{ID: "a4", Raft: "r", Admin: "adm"}},
		&Command{Type: TypeArbiterJoin, At: t0, Arbiter: &Proxy{ID: "a5", Raft: "r"}}, // no admin address
		&Command{Type: TypeArbiterLeave, At: t0, Arbiter: &Proxy{ID: "a4"}},
		&Command{Type: TypeArbiterLeave, At: t0})
	if r[0].Err != nil || !errors.Is(r[1].Err, ErrInvalid) || r[2].Err != nil || !errors.Is(r[3].Err, ErrInvalid) {
		t.Fatalf("results %+v", r)
	}
	if len(f.State().Arbiters) != 0 {
		t.Fatalf("arbiters after leave: %v", f.State().Arbiters)
	}
}

// TestDecisionCountsAndDurations: every decision is counted by kind beyond
// the bounded history, and each change's duration (begin to result) kept.
func TestDecisionCountsAndDurations(t *testing.T) {
	f := NewFSM()
	at := t0.Add(time.Hour)
	applyAll(t, f, bootstrap(),
		&Command{Type: TypeBegin, Cluster: "shop", Epoch: 1, At: at, Primary: "db2", Phase: PhaseFailingOver, Reason: "db1 down"},
		&Command{Type: TypeOpen, Cluster: "shop", Epoch: 2, At: at.Add(1500 * time.Millisecond)},
		&Command{Type: TypeBegin, Cluster: "shop", Epoch: 2, At: at.Add(time.Minute), Primary: "db1", Phase: PhaseSwitching, Reason: "promote"},
		&Command{Type: TypeAbort, Cluster: "shop", Epoch: 3, At: at.Add(time.Minute + 700*time.Millisecond), Reason: "target lagging"})
	for i := 0; i < HistoryLimit+5; i++ {
		applyAll(t, f, &Command{Type: TypeNote, Cluster: "shop", At: at.Add(2 * time.Minute), Reason: fmt.Sprint(i)})
	}
	cl := f.State().Cluster("shop")
	want := map[string]uint64{"bootstrap": 1, "failover_begin": 1, "failover_done": 1, "switchover_begin": 1, "switchover_aborted": 1, "note": HistoryLimit + 5}
	for k, n := range want {
		if cl.Decisions[k] != n {
			t.Errorf("decisions[%s] = %d, want %d (all: %v)", k, cl.Decisions[k], n, cl.Decisions)
		}
	}
	if d := cl.Durations["failover_done"]; d != 1500*time.Millisecond {
		t.Errorf("failover took %s, want 1.5s", d)
	}
	if d := cl.Durations["switchover_aborted"]; d != 700*time.Millisecond {
		t.Errorf("aborted switchover took %s, want 700ms", d)
	}
}
