package daemon_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	osexec "os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/chaos/deploy"
)

// TestHAProxyFollowsASwitchover runs a real HAProxy in front of the
// members (the layout of deployments that keep one), its httpchk pointed at
// a proxy's /primary and /replica (docs/admin.md): the writer port reaches
// only the primary, the reader port only replicas, and both follow a
// routerctl promote.
func TestHAProxyFollowsASwitchover(t *testing.T) {
	bin, err := osexec.LookPath("haproxy")
	if err != nil {
		t.Fatal("haproxy is not installed (make deps installs it): ", err)
	}
	d := start(t, deploy.Options{Proxies: 1})
	writer, reader := freeAddr(t), freeAddr(t)
	cfg := fmt.Sprintf(`global
  log stderr format raw local0 notice
defaults
  mode tcp
  log global
  timeout connect 1s
  timeout client 30s
  timeout server 30s
backend writer
  option httpchk
  http-check send meth GET uri-lf /primary?cluster=app&member=%%[srv_name]
  http-check expect status 200
  default-server inter 100ms fall 1 rise 1 on-marked-down shutdown-sessions
  server db1 %[2]s check addr %[1]s
  server db2 %[3]s check addr %[1]s
  server db3 %[4]s check addr %[1]s
backend reader
  balance roundrobin
  option httpchk
  http-check send meth GET uri-lf /replica?cluster=app&member=%%[srv_name]&lag=2000
  http-check expect status 200
  default-server inter 100ms fall 1 rise 1 on-marked-down shutdown-sessions
  server db1 %[2]s check addr %[1]s
  server db2 %[3]s check addr %[1]s
  server db3 %[4]s check addr %[1]s
frontend writes
  bind %[5]s
  default_backend writer
frontend reads
  bind %[6]s
  default_backend reader
`, hostPort(t, d.Proxies[0].Admin), d.Member("db1").Addr(), d.Member("db2").Addr(), d.Member("db3").Addr(), writer, reader)
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := osexec.Command(bin, "-db", "-f", path)
	var logs lockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy:\n%s", logs.String())
		}
	})

	// serverIDs connects n times through addr (new connections, so HAProxy
	// balances each) and returns the @@server_id of each.
	serverIDs := func(addr string, n int) []int {
		db, err := sql.Open("mysql", fmt.Sprintf("%s:%s@tcp(%s)/?timeout=1s&readTimeout=2s", chaos.AppUser, chaos.AppPassword, addr))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		db.SetMaxIdleConns(0)
		var ids []int
		for i := 0; i < n; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			var id int
			err := db.QueryRowContext(ctx, "SELECT @@server_id").Scan(&id)
			cancel()
			if err != nil {
				return nil
			}
			ids = append(ids, id)
		}
		return ids
	}
	only := func(addr string, ok func(id int) bool) func() bool {
		return func() bool {
			ids := serverIDs(addr, 6)
			for _, id := range ids {
				if !ok(id) {
					return false
				}
			}
			return len(ids) == 6
		}
	}
	primaryIs := func(id int) func(int) bool { return func(got int) bool { return got == id } }
	replicaOf := func(primary int) func(int) bool { return func(got int) bool { return got != primary } }

	poll(t, 20*time.Second, "the writer port reaches only db1", only(writer, primaryIs(1)))
	poll(t, 20*time.Second, "the reader port reaches only replicas", only(reader, replicaOf(1)))
	if ids := serverIDs(reader, 6); !(contains(ids, 2) && contains(ids, 3)) {
		t.Fatalf("reader port answered by %v: want both replicas (round robin)", ids)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := d.WaitHealthyOnLeader(ctx, "db2", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := d.Promote(ctx, 0, "db2", 30*time.Second); err != nil {
		t.Fatalf("promote: %v", err)
	}
	promoted := time.Now()
	poll(t, 10*time.Second, "the writer port reaches only db2", only(writer, primaryIs(2)))
	t.Logf("HAProxy's writer port followed the switchover %s after promote returned", time.Since(promoted).Round(time.Millisecond))
	poll(t, 20*time.Second, "the reader port reaches only replicas of db2", only(reader, replicaOf(2)))
	controlMetricsAfterASwitchover(t, ctx, d)
}

// controlMetricsAfterASwitchover checks the control plane's metrics on
// every node after one switchover from epoch 1 (docs/admin.md).
func controlMetricsAfterASwitchover(t *testing.T, ctx context.Context, d *deploy.Deployment) {
	t.Helper()
	nodes := len(d.Arbiters) + len(d.Proxies)
	leaders := 0
	for i := 0; i < nodes; i++ {
		want := []struct {
			name   string
			labels map[string]string
			ok     func(float64) bool
		}{
			{"dbrouter_build_info", nil, func(v float64) bool { return v == 1 }},
			{"dbrouter_epoch", map[string]string{"cluster": "app"}, func(v float64) bool { return v == 2 }},
			{"dbrouter_primary", map[string]string{"cluster": "app", "member": "db2"}, func(v float64) bool { return v == 1 }},
			{"dbrouter_phase", map[string]string{"cluster": "app", "phase": "serving"}, func(v float64) bool { return v == 1 }},
			{"dbrouter_phase", map[string]string{"cluster": "app", "phase": "switching"}, func(v float64) bool { return v == 0 }},
			{"dbrouter_decisions_total", map[string]string{"cluster": "app", "kind": "switchover_done"}, func(v float64) bool { return v == 1 }},
			{"dbrouter_change_duration_seconds", map[string]string{"cluster": "app", "result": "switchover_done"}, func(v float64) bool { return v > 0 && v < 30 }},
			{"dbrouter_control_term", nil, func(v float64) bool { return v >= 1 }},
		}
		if i >= len(d.Arbiters) {
			want = append(want, struct {
				name   string
				labels map[string]string
				ok     func(float64) bool
			}{"dbrouter_lease_ok", nil, func(v float64) bool { return v == 1 }})
		}
		// A node applies the switchover's last entry by itself: poll.
		for _, w := range want {
			var v float64
			var err error
			if perr := chaos.Poll(ctx, 5*time.Second, func() (bool, error) {
				v, err = d.Metric(ctx, i, w.name, w.labels)
				return err == nil && w.ok(v), nil
			}); perr != nil {
				t.Errorf("node %d: %s%v = %v (%v)", i, w.name, w.labels, v, err)
			}
		}
		if v, err := d.Metric(ctx, i, "dbrouter_control_leader", nil); err == nil && v == 1 {
			leaders++
		}
	}
	if leaders != 1 {
		t.Errorf("%d nodes say they lead", leaders)
	}
}

func contains(ids []int, id int) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func hostPort(t *testing.T, addr string) string {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("admin address %q: %v", addr, err)
	}
	return host + " port " + port
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
