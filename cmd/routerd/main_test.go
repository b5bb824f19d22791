package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestBadInvocationsExitTwo(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("role: proxy\nclusters:\n  - name: a\n    listen: 127.0.0.1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unknown := filepath.Join(dir, "unknown.yaml")
	if err := os.WriteFile(unknown, []byte("rolle: proxy\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{},
		{"--bogus"},
		{"--config", bad},
		{"--config", unknown},
		{"--config", filepath.Join(dir, "missing.yaml")},
		{"--config", bad, "extra"},
	} {
		if got := run(args); got != 2 {
			t.Errorf("routerd %v exited %d, want 2", args, got)
		}
	}
}

func TestRuntimeTuned(t *testing.T) {
	made := []debug.BuildSetting{{Key: "-compiler", Value: "gc"}, {Key: "-ldflags", Value: "-X=runtime.godebugDefault=schedtrace=2147483647"}}
	plain := []debug.BuildSetting{{Key: "-compiler", Value: "gc"}, {Key: "-ldflags", Value: "-s -w"}}
	for _, tc := range []struct {
		godebug string
		build   []debug.BuildSetting
		want    bool
	}{
		{"", made, true},
		{"", plain, false},
		{"", nil, false},
		{"schedtrace=100000", plain, true},
		{"madvdontneed=1,schedtrace=2147483647", nil, true},
		{"schedtrace=0", made, false}, // $GODEBUG overrides the build's default
		{"madvdontneed=1", plain, false},
	} {
		if got := runtimeTuned(tc.godebug, tc.build); got != tc.want {
			t.Errorf("runtimeTuned(%q, %v) = %v, want %v", tc.godebug, tc.build, got, tc.want)
		}
	}
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte(goodConfig("127.0.0.1:7080", "127.0.0.1:6033", "127.0.0.1:3306")), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("role: proxy\nclusters:\n  - name: a\n    listen: 127.0.0.1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badFormat := filepath.Join(dir, "format.yaml")
	if err := os.WriteFile(badFormat, []byte("log: {format: xml}\n"+goodConfig("127.0.0.1:7080", "127.0.0.1:6033", "127.0.0.1:3306")), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args     []string
		code     int
		out, err string // substrings of stdout, stderr
	}{
		{[]string{good}, 0, "good.yaml: ok (role proxy, 1 cluster(s))", ""},
		{[]string{bad}, 2, "", "clusters[0].listen"},
		{[]string{filepath.Join(dir, "missing.yaml")}, 2, "", "missing.yaml"},
		{[]string{}, 2, "", "usage: routerd check-config FILE"},
		{[]string{good, good}, 2, "", "usage"},
		{[]string{"--bogus"}, 2, "", "usage"},
		{[]string{badFormat}, 2, "", `log.format: "xml" is not a format`},
	} {
		var out, errb strings.Builder
		code := checkConfig(tc.args, &out, &errb)
		if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errb.String(), tc.err) {
			t.Errorf("check-config %v: exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
				tc.args, code, out.String(), errb.String(), tc.code, tc.out, tc.err)
		}
	}
}

func goodConfig(adminAddr, listen, member string) string {
	return "role: proxy\nname: test\nadmin: {listen: \"" + adminAddr + "\"}\nclusters:\n  - name: app\n    listen: \"" + listen + "\"\n" +
		"    members:\n      - {name: db1, addr: \"" + member + "\"}\n    monitor: {user: m, password: {value: x}}\n" +
		"    users:\n      - {name: app, password: {value: x}}\n"
}

// TestSignals runs the built routerd: --version prints the build's
// revision, SIGHUP (logrotate's signal) leaves it serving, SIGTERM stops it
// with status 0.
func TestSignals(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "routerd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "routerd ") || !strings.Contains(string(out), runtime.Version()) {
		t.Fatalf("routerd --version: %q, %v", out, err)
	}

	adminAddr, listen, member := freeAddr(t), freeAddr(t), freeAddr(t) // member: nothing listens there
	cfg := filepath.Join(t.TempDir(), "routerd.yaml")
	if err := os.WriteFile(cfg, []byte("log: {format: json}\n"+goodConfig(adminAddr, listen, member)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfg)
	var logs syncBuffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	healthy := func() bool {
		resp, err := http.Get("http://" + adminAddr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	poll(t, 10*time.Second, "routerd serving its admin API", healthy)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	poll(t, 5*time.Second, "routerd logging the SIGHUP", func() bool { return strings.Contains(logs.String(), "SIGHUP received") })
	select {
	case err := <-exited:
		t.Fatalf("routerd exited on SIGHUP: %v\n%s", err, logs.String())
	default:
	}
	if !healthy() {
		t.Fatalf("routerd stopped serving after SIGHUP\n%s", logs.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("routerd on SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("routerd still running 15 s after SIGTERM\n%s", logs.String())
	}
	// log.format: json: every line is one JSON object with a message.
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil || m["msg"] == nil || m["level"] == nil {
			t.Fatalf("log line is not a JSON object with msg and level: %q (%v)", l, err)
		}
	}
	if len(lines) < 3 {
		t.Fatalf("only %d log lines", len(lines))
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func poll(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
