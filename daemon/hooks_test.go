package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/chaos/deploy"
	"github.com/dbrouter/dbrouter/hooks"
)

// A switchover through the admin API (routerctl promote) runs the command
// hook on the leading arbiter only, with the switchover_begin and
// switchover_done payloads, and a hook that sleeps far longer than the
// switchover takes does not delay it.
func TestHooksRunOnTheLeaderWithoutDelayingASwitchover(t *testing.T) {
	dir := t.TempDir()
	// Each arbiter would append to its own file: only the leader's may
	// fill. The slow hook outlives the switchover many times over.
	top := fmt.Sprintf(`hooks:
  - name: record
    command: [sh, -c, 'cat >> "$0.$DBROUTER_NODE"; echo >> "$0.$DBROUTER_NODE"', %q]
    on: [switchover_begin, switchover_done]
  - name: slow
    command: [sleep, "60"]
    on: [switchover_begin]
    timeout: 50s
`, filepath.Join(dir, "events"))
	d := start(t, deploy.Options{Proxies: 1, TopLevel: top})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := d.WaitHealthyOnLeader(ctx, "db2", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	st := d.Statuses()
	leader, li := "", -1
	for i, s := range st[:len(d.Arbiters)] {
		if s.Control != nil && s.Control.Leader == s.Control.Node {
			leader, li = s.Control.Node, i
		}
	}
	if leader == "" {
		t.Fatal("no leader")
	}
	begin := time.Now()
	if err := d.Promote(ctx, 0, "db2", 30*time.Second); err != nil {
		t.Fatalf("promote: %v", err)
	}
	took := time.Since(begin)
	var events []hooks.Event
	poll(t, 10*time.Second, "the leader's hook recorded both decisions", func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "events."+leader))
		if err != nil {
			return false
		}
		events = nil
		for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
			var e hooks.Event
			if err := json.Unmarshal(line, &e); err != nil {
				t.Fatalf("hook payload %q: %v", line, err)
			}
			events = append(events, e)
		}
		return len(events) >= 2
	})
	slow, _ := d.Metric(ctx, li, "dbrouter_hook_runs_total", map[string]string{"hook": "slow", "result": "ok"})
	t.Logf("switchover took %s with a 60s hook on its begin (leader %s); payloads %+v", took.Round(time.Millisecond), leader, events)
	if took > 10*time.Second || slow != 0 {
		t.Fatalf("the switchover took %s (slow hook finished: %v): a hook delayed it", took, slow)
	}
	if len(events) != 2 || events[0].Kind != hooks.KindSwitchoverBegin || events[1].Kind != hooks.KindSwitchoverDone {
		t.Fatalf("payloads %+v, want switchover_begin then switchover_done", events)
	}
	for _, e := range events {
		if e.Cluster != "app" || e.From != "db1" || e.To != "db2" || e.Epoch != 2 || e.Node != leader || e.Resent || e.ID != fmt.Sprintf("app/%d", e.Seq) {
			t.Errorf("payload %+v", e)
		}
	}
	if events[1].Seq != events[0].Seq+1 {
		t.Errorf("sequence numbers %d, %d", events[0].Seq, events[1].Seq)
	}
	for _, a := range d.Arbiters {
		if _, err := os.Stat(filepath.Join(dir, "events."+a.Name)); a.Name != leader && err == nil {
			t.Errorf("follower %s ran the hook", a.Name)
		}
	}
	if ok, _ := d.Metric(ctx, li, "dbrouter_hook_runs_total", map[string]string{"hook": "record", "result": "ok"}); ok != 2 {
		t.Errorf("dbrouter_hook_runs_total{hook=record,result=ok} = %v on the leader, want 2", ok)
	}
}
