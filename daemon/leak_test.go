package daemon

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/admin"
	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/config"
)

func addr(t *testing.T) string {
	t.Helper()
	p, err := chaos.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
}

// A routerd (an arbiter of a one-voter group and a proxy joined to it) that
// is stopped leaves no goroutine behind.
func TestStoppedNodesLeaveNoGoroutines(t *testing.T) {
	c := chaos.StartT(t, chaos.Options{Members: 1})
	before := goleak.IgnoreCurrent()
	arbRaft, arbAdmin := addr(t), addr(t)
	control := fmt.Sprintf("  secret: leak-test-secret-0123\n  arbiters:\n    - {name: a1, raft: %q, admin: %q}\n", arbRaft, arbAdmin)
	cluster := fmt.Sprintf("clusters:\n  - name: app\n    probe_interval: 100ms\n    monitor: {user: %s, password: %s}\n    replication: {user: %s, password: %s}\n    members:\n      - {name: db1, addr: %q}\n",
		chaos.AdminUser, chaos.AdminPassword, chaos.ReplUser, chaos.ReplPassword, c.Members[0].Addr())
	arbYAML := fmt.Sprintf("role: arbiter\nname: a1\nadmin: {listen: %q}\ncontrol:\n  raft_listen: %q\n  dir: %q\n%s%s", arbAdmin, arbRaft, filepath.Join(t.TempDir(), "a1"), control, cluster)
	pxAdmin := addr(t)
	pxYAML := fmt.Sprintf("role: proxy\nname: p1\nadmin: {listen: %q}\ncontrol:\n  raft_listen: %q\n  dir: %q\n%s%s    listen: %q\n    users:\n      - {name: app, password: app}\n",
		pxAdmin, addr(t), filepath.Join(t.TempDir(), "p1"), control, cluster, addr(t))
	var stops []func()
	for _, y := range []string{arbYAML, pxYAML} {
		cfg, err := config.Parse([]byte(y))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		ready := make(chan struct{})
		go func() { done <- Run(ctx, cfg, zap.NewNop(), Options{Ready: func(string) { close(ready) }}) }()
		select {
		case <-ready:
		case err := <-done:
			t.Fatal(err)
		}
		stops = append(stops, func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
	// Let the proxy join and take a lease, so every loop has run.
	if err := chaos.Poll(context.Background(), 20*time.Second, func() (bool, error) {
		var st admin.Status
		err := (&admin.Client{Addr: pxAdmin}).Do(context.Background(), "GET", "/status", nil, &st)
		return err == nil && st.Control != nil && st.Control.LeaseOK, nil
	}); err != nil {
		t.Fatal("the proxy never held a lease")
	}
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
	goleak.VerifyNone(t, before)
}
