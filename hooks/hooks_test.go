package hooks

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var at = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

func event(seq uint64, kind string) Event {
	return Event{ID: "app/" + strconv.FormatUint(seq, 10), Cluster: "app", Seq: seq, Epoch: 2, Kind: kind, From: "db1", To: "db2",
		Reason: "switchover requested by operator", At: at}
}

// start runs a Runner for the test; stop ends it and waits.
func start(t *testing.T, hs ...Hook) (r *Runner, runs func(hook, result string) float64, stop func()) {
	t.Helper()
	reg := prometheus.NewRegistry()
	r = New("a1", hs, zap.NewNop(), reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return within 5s of its context ending")
			}
		})
	}
	t.Cleanup(stop)
	return r, func(hook, result string) float64 { return counter(t, reg, hook, result) }, stop
}

// counter reads dbrouter_hook_runs_total{hook, result} from reg.
func counter(t *testing.T, reg *prometheus.Registry, hook, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "dbrouter_hook_runs_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["hook"] == hook && labels["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no dbrouter_hook_runs_total{hook=%q,result=%q}", hook, result)
	return 0
}

func poll(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !ok(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestKindsAreTheConfigsKinds(t *testing.T) {
	if !slices.Equal(Kinds, config.HookKinds) {
		t.Fatalf("hooks.Kinds %v differ from config.HookKinds %v", Kinds, config.HookKinds)
	}
}

// A command gets the event as JSON on stdin and as DBROUTER_* variables.
func TestCommandGetsPayloadOnStdinAndEnv(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	r, runs, _ := start(t, Hook{Name: "h", Command: []string{"sh", "-c", `cat > "$0.json"; env | grep ^DBROUTER_ | sort > "$0.env"`, out}, Timeout: 5 * time.Second})
	r.Fire(event(7, KindSwitchoverBegin))
	poll(t, 5*time.Second, "the command ran", func() bool { return runs("h", ResultOK) == 1 })
	b, err := os.ReadFile(out + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var got Event
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("stdin %q: %v", b, err)
	}
	want := event(7, KindSwitchoverBegin)
	want.Node = "a1"
	if got != want {
		t.Fatalf("payload %+v, want %+v", got, want)
	}
	env, err := os.ReadFile(out + ".env")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"DBROUTER_CLUSTER=app", "DBROUTER_KIND=switchover_begin", "DBROUTER_EPOCH=2", "DBROUTER_SEQ=7", "DBROUTER_ID=app/7",
		"DBROUTER_FROM=db1", "DBROUTER_TO=db2", "DBROUTER_MEMBER=", "DBROUTER_NODE=a1", "DBROUTER_RESENT=false",
		"DBROUTER_REASON=switchover requested by operator", "DBROUTER_AT=2026-12-02T10:00:00Z"} {
		if !slices.Contains(strings.Split(string(env), "\n"), v) {
			t.Errorf("environment lacks %s:\n%s", v, env)
		}
	}
}

// A hook that outlives its timeout is killed with everything it started,
// and counted as a timeout; a command that fails is counted as failed.
func TestCommandKilledAtTimeoutWithItsChildren(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	r, runs, _ := start(t,
		Hook{Name: "hang", Command: []string{"sh", "-c", `sleep 60 & echo $! > "$0"; wait`, pidFile}, Timeout: 300 * time.Millisecond},
		Hook{Name: "fail", Command: []string{"sh", "-c", "echo broken >&2; exit 3"}, Timeout: 5 * time.Second})
	began := time.Now()
	r.Fire(event(1, KindFailoverBegin))
	poll(t, 5*time.Second, "the hanging hook timed out", func() bool { return runs("hang", ResultTimeout) == 1 })
	if took := time.Since(began); took > 3*time.Second {
		t.Fatalf("a hook with a 300ms timeout ran %s", took)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	// The shell's child, in the hook's process group, is gone too (or a
	// zombie waiting for its new parent to reap it).
	poll(t, 5*time.Second, "the hook's child sleep killed", func() bool {
		st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return true
		}
		f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
		return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
	})
	poll(t, 5*time.Second, "the failing hook counted", func() bool { return runs("fail", ResultFailed) == 1 })
	if runs("hang", ResultOK)+runs("hang", ResultFailed)+runs("fail", ResultOK) != 0 {
		t.Fatal("a run counted under the wrong result")
	}
}

// A webhook receives the event as a JSON POST with its headers.
func TestWebhookPostsJSON(t *testing.T) {
	got := make(chan *http.Request, 4)
	bodies := make(chan []byte, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r
		bodies <- b
		if r.URL.Path == "/broken" {
			http.Error(w, "nope", http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	r, runs, stop := start(t,
		Hook{Name: "ok", URL: srv.URL + "/hook", Headers: map[string]string{"Authorization": "Bearer x"}, On: []string{KindSwitchoverDone}, Timeout: 5 * time.Second},
		Hook{Name: "broken", URL: srv.URL + "/broken", On: []string{KindNote}, Timeout: 5 * time.Second})
	r.Fire(event(3, KindSwitchoverBegin)) // neither hook runs on it
	r.Fire(event(4, KindSwitchoverDone))
	req := <-got
	body := <-bodies
	if req.Method != http.MethodPost || req.URL.Path != "/hook" || req.Header.Get("Content-Type") != "application/json" || req.Header.Get("Authorization") != "Bearer x" {
		t.Fatalf("request %s %s %v", req.Method, req.URL, req.Header)
	}
	var e Event
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatal(err)
	}
	if e.Seq != 4 || e.Kind != KindSwitchoverDone || e.Node != "a1" || e.Cluster != "app" || !e.At.Equal(at) {
		t.Fatalf("payload %s", body)
	}
	poll(t, 5*time.Second, "the webhook counted", func() bool { return runs("ok", ResultOK) == 1 })
	r.Fire(event(5, KindNote))
	poll(t, 5*time.Second, "a 500 counted as failed", func() bool { return runs("broken", ResultFailed) == 1 })
	stop()
	if len(got) != 1 { // the note's request; nothing for switchover_begin
		t.Fatalf("%d more requests, want 1", len(got))
	}
}

// A webhook that does not answer is abandoned at its timeout.
func TestWebhookTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	r, runs, _ := start(t, Hook{Name: "slow", URL: srv.URL, Timeout: 200 * time.Millisecond})
	r.Fire(event(1, KindFailoverDone))
	poll(t, 5*time.Second, "the webhook timed out", func() bool { return runs("slow", ResultTimeout) == 1 })
}

// Fire never waits: with a hook hung on an event and its queue full, each
// call returns at once and the events beyond the queue are dropped and
// counted; another hook's events still run.
func TestFireNeverBlocksAndDropsWhenFull(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "ran")
	r, runs, stop := start(t,
		Hook{Name: "hung", Command: []string{"sleep", "60"}, Timeout: time.Minute},
		Hook{Name: "other", Command: []string{"sh", "-c", `echo "$DBROUTER_SEQ" >> "$0"`, marker}, On: []string{KindNote}, Timeout: 5 * time.Second})
	const n = QueueLen + 20
	var slowest time.Duration
	for i := range n {
		kind := KindSwitchoverBegin
		if i == n-1 {
			kind = KindNote
		}
		began := time.Now()
		r.Fire(event(uint64(i+1), kind))
		slowest = max(slowest, time.Since(began))
	}
	if slowest > 50*time.Millisecond {
		t.Fatalf("Fire took %s with a full queue", slowest)
	}
	// The worker took one event (or none yet) off the queue.
	if d := runs("hung", ResultDropped); d != n-QueueLen-1 && d != n-QueueLen {
		t.Fatalf("%v dropped, want %d or %d", d, n-QueueLen-1, n-QueueLen)
	}
	poll(t, 5*time.Second, "the other hook ran despite the hung one", func() bool { return runs("other", ResultOK) == 1 })
	stop() // kills the hung hook; goleak (TestMain) checks nothing is left
	if runs("hung", ResultOK) != 0 {
		t.Fatal("the hung hook counted as ok")
	}
}
