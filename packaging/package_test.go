package packaging

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestDebianPackage runs `make package` into a temporary dist directory and
// checks the .deb it builds the way an operator would meet it: its name and
// control fields, every file with its mode and owner, the maintainer
// scripts, the units (systemd-analyze verify), and then "installs" it
// without touching this machine (dpkg-deb -x into a temporary root) and runs
// the routerd it contains: --version, check-config on both example configs
// once their placeholders are filled, and a proxy and an arbiter started
// from those examples on loopback ports, answering /healthz and exiting 0
// on SIGTERM (what systemd's stop sends).
func TestDebianPackage(t *testing.T) {
	for _, tool := range []string{"make", "dpkg-deb", "dpkg", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed: the package is built and inspected with it", tool)
		}
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dist := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	out := mustRun(t, ctx, repo, nil, "make", "--no-print-directory", "package", "DIST="+dist)
	t.Logf("make package: %s", time.Since(start).Round(100*time.Millisecond))

	version := strings.TrimSpace(mustRun(t, ctx, repo, nil, "packaging/deb-version.sh"))
	// A Debian upstream version starts with a digit and holds only
	// alphanumerics and . + ~ (no hyphen: the package has no revision).
	if !regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`).MatchString(version) {
		t.Fatalf("packaging/deb-version.sh: %q is not a Debian version", version)
	}
	mustRun(t, ctx, "", nil, "dpkg", "--validate-version", version)
	arch := strings.TrimSpace(mustRun(t, ctx, repo, nil, "dpkg", "--print-architecture"))
	deb := filepath.Join(dist, "dbrouter_"+version+"_"+arch+".deb")
	if _, err := os.Stat(deb); err != nil {
		entries, _ := os.ReadDir(dist)
		t.Fatalf("make package did not write %s (dist holds %v)\n%s", deb, entries, out)
	}

	t.Run("control", func(t *testing.T) {
		for field, want := range map[string]string{
			"Package":      "dbrouter",
			"Version":      version,
			"Architecture": arch,
			"Depends":      "adduser",
		} {
			if got := strings.TrimSpace(mustRun(t, ctx, "", nil, "dpkg-deb", "--field", deb, field)); got != want {
				t.Errorf("control field %s = %q, want %q", field, got, want)
			}
		}
		for _, field := range []string{"Maintainer", "Description", "Installed-Size", "Section", "Priority"} {
			if strings.TrimSpace(mustRun(t, ctx, "", nil, "dpkg-deb", "--field", deb, field)) == "" {
				t.Errorf("control field %s is missing", field)
			}
		}
		info := mustRun(t, ctx, "", nil, "dpkg-deb", "--info", deb)
		for _, member := range []string{"control", "conffiles", "postinst", "prerm", "postrm"} {
			if !regexp.MustCompile(`(?m)^\s+\d+ bytes,\s+\d+ lines\s+\*?\s*` + member + `\b`).MatchString(info) {
				t.Errorf("dpkg-deb --info lists no %s:\n%s", member, info)
			}
		}
		ctrl := t.TempDir()
		mustRun(t, ctx, "", nil, "dpkg-deb", "--control", deb, ctrl)
		conffiles, err := os.ReadFile(filepath.Join(ctrl, "conffiles"))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := strings.Fields(string(conffiles)), []string{"/etc/dbrouter/arbiter.yaml.example", "/etc/dbrouter/proxy.yaml.example"}; !equal(sorted(got), want) {
			t.Errorf("conffiles = %v, want %v", got, want)
		}
		for _, script := range []string{"postinst", "prerm", "postrm"} {
			p := filepath.Join(ctrl, script)
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o755 {
				t.Errorf("%s has mode %v, want 0755", script, fi.Mode().Perm())
			}
			mustRun(t, ctx, "", nil, "sh", "-n", p)
		}
		testPostinst(t, ctx, filepath.Join(ctrl, "postinst"))
	})

	t.Run("contents", func(t *testing.T) {
		// Every file the package installs, with its mode; all owned by root.
		want := map[string]string{
			"./usr/bin/routerd":                             "-rwxr-xr-x",
			"./usr/bin/routerctl":                           "-rwxr-xr-x",
			"./lib/systemd/system/routerd-proxy.service":    "-rw-r--r--",
			"./lib/systemd/system/routerd-arbiter.service":  "-rw-r--r--",
			"./etc/dbrouter/proxy.yaml.example":             "-rw-r--r--",
			"./etc/dbrouter/arbiter.yaml.example":           "-rw-r--r--",
			"./usr/share/doc/dbrouter/README.md":            "-rw-r--r--",
			"./usr/share/doc/dbrouter/docs/operations.md":   "-rw-r--r--",
			"./usr/share/doc/dbrouter/docs/config.md":       "-rw-r--r--",
			"./usr/share/doc/dbrouter/docs/guarantees.md":   "-rw-r--r--",
			"./usr/share/doc/dbrouter/docs/admin.md":        "-rw-r--r--",
			"./usr/share/doc/dbrouter/docs/routing.md":      "-rw-r--r--",
			"./usr/share/doc/dbrouter/docs/architecture.md": "-rw-r--r--",
			"./usr/share/doc/dbrouter/docs/mongo.md":        "-rw-r--r--",
		}
		contents := mustRun(t, ctx, "", nil, "dpkg-deb", "--contents", deb)
		seen := map[string]bool{}
		for _, line := range strings.Split(strings.TrimSpace(contents), "\n") {
			f := strings.Fields(line)
			if len(f) < 6 {
				t.Fatalf("dpkg-deb --contents line %q", line)
			}
			mode, owner, path := f[0], f[1], f[5]
			if owner != "root/root" {
				t.Errorf("%s is owned by %s, want root/root", path, owner)
			}
			if strings.HasPrefix(mode, "d") {
				if mode != "drwxr-xr-x" {
					t.Errorf("directory %s has mode %s", path, mode)
				}
				continue
			}
			seen[path] = true
			w, listed := want[path]
			switch {
			case !listed && strings.HasPrefix(path, "./usr/share/doc/dbrouter/docs/"):
				// other docs pages are fine
			case !listed:
				t.Errorf("unexpected file in the package: %s %s", mode, path)
			case mode != w:
				t.Errorf("%s has mode %s, want %s", path, mode, w)
			}
		}
		for path := range want {
			if !seen[path] {
				t.Errorf("%s is missing from the package", path)
			}
		}
	})

	root := t.TempDir()
	mustRun(t, ctx, "", nil, "dpkg-deb", "-x", deb, root)

	t.Run("units", func(t *testing.T) {
		for _, role := range []string{"proxy", "arbiter"} {
			unit, err := os.ReadFile(filepath.Join(root, "lib/systemd/system/routerd-"+role+".service"))
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range []string{
				"User=dbrouter",
				"ExecStartPre=/usr/bin/routerd check-config /etc/dbrouter/" + role + ".yaml",
				"ExecStart=/usr/bin/routerd --config /etc/dbrouter/" + role + ".yaml",
				"KillSignal=SIGTERM",
				"Restart=on-failure",
				"NoNewPrivileges=yes",
				"ProtectSystem=strict",
				"PrivateTmp=yes",
				"StateDirectory=dbrouter",
			} {
				if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(line) + `$`).Match(unit) {
					t.Errorf("routerd-%s.service lacks %q", role, line)
				}
			}
			// Stopping must outlast routerd's own drain (stop_timeout,
			// 10 s by default) or systemd SIGKILLs sessions it would have
			// let finish.
			m := regexp.MustCompile(`(?m)^TimeoutStopSec=(\d+)s?$`).FindSubmatch(unit)
			if m == nil {
				t.Errorf("routerd-%s.service has no TimeoutStopSec in seconds", role)
			} else if n := atoi(string(m[1])); n <= 10 {
				t.Errorf("routerd-%s.service: TimeoutStopSec=%ds, not above stop_timeout's 10 s default", role, n)
			}
			if m := regexp.MustCompile(`(?m)^LimitNOFILE=(\d+)$`).FindSubmatch(unit); m == nil || atoi(string(m[1])) < 65536 {
				t.Errorf("routerd-%s.service: LimitNOFILE missing or below 65536", role)
			}
		}
		analyze, err := exec.LookPath("systemd-analyze")
		if err != nil {
			t.Log("systemd-analyze is not installed: the units are not verified by systemd")
			return
		}
		// verify needs no running systemd, but it checks ExecStart's binary
		// and the units the service is ordered against (sysinit.target...)
		// under --root: a root holding the host's own units, the package's
		// and its routerd.
		vroot := t.TempDir()
		units := filepath.Join(vroot, "lib/systemd/system")
		if err := os.MkdirAll(filepath.Join(vroot, "usr/bin"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(filepath.Join(root, "usr/bin/routerd"), filepath.Join(vroot, "usr/bin/routerd")); err != nil {
			t.Fatal(err)
		}
		mustRun(t, ctx, "", nil, "mkdir", "-p", filepath.Dir(units))
		mustRun(t, ctx, "", nil, "cp", "-a", "/lib/systemd/system/.", units)
		var paths []string
		for _, role := range []string{"proxy", "arbiter"} {
			p := filepath.Join(units, "routerd-"+role+".service")
			mustRun(t, ctx, "", nil, "cp", filepath.Join(root, "lib/systemd/system/routerd-"+role+".service"), p)
			paths = append(paths, p)
		}
		// Unknown keys and bad values are only warnings (exit 0): any
		// output fails the test.
		out, err := runCmd(ctx, "", nil, analyze, append([]string{"verify", "--man=no", "--root=" + vroot}, paths...)...)
		if err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
		// systemd's own score of the sandboxing (0 locked down .. 10
		// exposed; 1.4 when written): dropping a hardening setting
		// shows here.
		for _, p := range paths {
			out, err := runCmd(ctx, "", nil, analyze, "security", "--offline=yes", "--no-pager", "--root="+vroot, p)
			m := regexp.MustCompile(`Overall exposure level for \S+: (\d+\.\d)`).FindStringSubmatch(out)
			if err != nil || m == nil {
				t.Errorf("systemd-analyze security %s: %v\n%s", filepath.Base(p), err, out)
				continue
			}
			t.Logf("systemd-analyze security %s: exposure %s", filepath.Base(p), m[1])
			if score, _ := strconv.ParseFloat(m[1], 64); score > 2.0 {
				t.Errorf("systemd-analyze security %s: exposure %s, want at most 2.0\n%s", filepath.Base(p), m[1], out)
			}
		}
	})

	bin := filepath.Join(root, "usr/bin/routerd")
	t.Run("version", func(t *testing.T) {
		out := mustRun(t, ctx, "", nil, bin, "--version")
		if !strings.HasPrefix(out, "routerd ") || !strings.Contains(out, runtime.Version()) {
			t.Errorf("routerd --version = %q, want routerd and %s", out, runtime.Version())
		}
		// Go stamps the revision only when .git is a directory (not in a
		// git worktree, whose .git is a file).
		if fi, err := os.Stat(filepath.Join(repo, ".git")); err == nil && fi.IsDir() {
			rev := strings.TrimSpace(mustRun(t, ctx, repo, nil, "git", "rev-parse", "--short=12", "HEAD"))
			if !strings.Contains(out, rev) {
				t.Errorf("routerd --version = %q, want the revision %s", out, rev)
			}
		} else {
			t.Logf("%s/.git is not a directory: Go does not stamp the revision, not checked", repo)
		}
		out, _ = runCmd(ctx, "", nil, filepath.Join(root, "usr/bin/routerctl"), "--help")
		if !strings.Contains(out, "usage: routerctl") {
			t.Errorf("routerctl --help: %q", out)
		}
	})

	t.Run("examples", func(t *testing.T) {
		// As shipped, the examples name files under /etc/dbrouter that an
		// operator creates; check-config refuses them until then.
		for _, role := range []string{"proxy", "arbiter"} {
			example := filepath.Join(root, "etc/dbrouter", role+".yaml.example")
			out, err := runCmd(ctx, "", nil, bin, "check-config", example)
			if code := exitCode(err); code != 2 || !strings.Contains(out, "/etc/dbrouter/") {
				t.Errorf("check-config on the unfilled %s example: exit %d, want 2 naming its secret file\n%s", role, code, out)
			}
			filled := fill(t, root, role, nil)
			if out := mustRun(t, ctx, "", nil, bin, "check-config", filled); !strings.Contains(out, "ok (role "+role+", 1 cluster(s))") {
				t.Errorf("check-config on the filled %s example: %s", role, out)
			}
		}
	})

	t.Run("start", func(t *testing.T) {
		// The two examples started side by side on loopback, as a host
		// running both units would: each serves its admin API and stops
		// with status 0 on SIGTERM. Nothing listens at the members' or the
		// other arbiters' addresses; that does not keep routerd from
		// starting.
		addrs := map[string]string{}
		for _, k := range []string{"admin_proxy", "admin_arbiter", "listen", "raft_proxy", "raft_arb1", "raft_arb2", "raft_arb3", "admin_arb2", "admin_arb3", "db1", "db2", "db3"} {
			addrs[k] = freeAddr(t)
		}
		var wg sync.WaitGroup
		for _, role := range []string{"proxy", "arbiter"} {
			cfg := fill(t, root, role, addrs)
			wg.Add(1)
			go func() {
				defer wg.Done()
				runUntilSIGTERM(t, bin, cfg, role, addrs["admin_"+role])
			}()
		}
		wg.Wait()
	})
}

// TestDebVersion runs packaging/deb-version.sh in a scratch repository
// through a history of tags: each version is one dpkg accepts, and each
// sorts after the one before (dpkg --compare-versions), as an upgrade path
// from untagged builds through a pre-release to releases needs.
func TestDebVersion(t *testing.T) {
	for _, tool := range []string{"git", "dpkg"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed", tool)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "packaging"), 0o755); err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile("deb-version.sh")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "packaging/deb-version.sh"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	day := "2026-12-02"
	git := func(args ...string) string {
		env := []string{"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com",
			"GIT_AUTHOR_DATE=" + day + "T10:00:00Z", "GIT_COMMITTER_DATE=" + day + "T10:00:00Z", "GIT_CONFIG_GLOBAL=/dev/null"}
		return strings.TrimSpace(mustRun(t, ctx, dir, env, "git", args...))
	}
	git("init", "-q")
	prev := ""
	for _, step := range []struct {
		commit, tag string
		day         string // of the commit, when not the previous one's
		want        string // with SHA for the short hash of HEAD
	}{
		{commit: "a", want: "0.0~git20261202.SHA"},
		// A tag not starting with a digit is ignored. Untagged builds of
		// one day do not sort among themselves (the hash decides): a
		// later day's do sort after.
		{tag: "release-x", commit: "b", day: "2026-12-03", want: "0.0~git20261203.SHA"},
		{tag: "v0.9.0-rc1", want: "0.9.0~rc1"},
		{commit: "c", want: "0.9.0~rc1+git1.SHA"},
		{tag: "v0.9.0", want: "0.9.0"},
		{commit: "d", want: "0.9.0+git1.SHA"},
		{commit: "e", want: "0.9.0+git2.SHA"},
		{tag: "v1.0_final", want: "1.0.final"},
	} {
		if step.tag != "" {
			git("tag", step.tag)
		}
		if step.day != "" {
			day = step.day
		}
		if step.commit != "" {
			git("commit", "-q", "--allow-empty", "-m", step.commit)
		}
		want := strings.ReplaceAll(step.want, "SHA", git("rev-parse", "--short", "HEAD"))
		got := strings.TrimSpace(mustRun(t, ctx, dir, nil, "packaging/deb-version.sh"))
		if got != want {
			t.Errorf("after commit %q tag %q: version %q, want %q", step.commit, step.tag, got, want)
			continue
		}
		mustRun(t, ctx, "", nil, "dpkg", "--validate-version", got)
		if prev != "" && prev != got {
			if _, err := runCmd(ctx, "", nil, "dpkg", "--compare-versions", got, "gt", prev); err != nil {
				t.Errorf("version %q does not sort after %q", got, prev)
			}
		}
		prev = got
	}
}

// fill copies the extracted example for role to a temporary file with its
// placeholders filled: the files under /etc/dbrouter written into a
// temporary directory, /var/lib/dbrouter moved there too, and, when addrs
// is given, every address of the example replaced by a loopback one. Each
// replaced string must be in the example, so the test follows the file.
func fill(t *testing.T, root, role string, addrs map[string]string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "etc/dbrouter", role+".yaml.example"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	etc, state := filepath.Join(dir, "etc"), filepath.Join(dir, "state")
	if err := os.Mkdir(etc, 0o700); err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{"secret": "0123456789abcdef-cluster-secret", "monitor.pw": "monitor-pw", "repl.pw": "repl-pw", "app.pw": "app-pw"}
	for name, v := range secrets {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s := string(b)
	replace := func(old, new string) {
		t.Helper()
		if !strings.Contains(s, old) {
			t.Fatalf("%s.yaml.example no longer contains %q", role, old)
		}
		s = strings.ReplaceAll(s, old, new)
	}
	replace("/etc/dbrouter/", etc+"/")
	replace("/var/lib/dbrouter/", state+"/")
	if addrs != nil {
		replace("10.0.1.10:3306", addrs["db1"])
		replace("10.0.1.11:3306", addrs["db2"])
		replace("10.0.2.10:3306", addrs["db3"])
		replace("10.0.1.5:7300", addrs["raft_arb1"])
		replace("10.0.2.5:7300", addrs["raft_arb2"])
		replace("10.9.0.5:7300", addrs["raft_arb3"])
		replace("10.0.1.5:7080", addrs["admin_arbiter"])
		replace("10.0.2.5:7080", addrs["admin_arb2"])
		replace("10.9.0.5:7080", addrs["admin_arb3"])
		if role == "proxy" {
			replace("127.0.0.1:7080", addrs["admin_proxy"])
			replace("127.0.0.1:6033", addrs["listen"])
			replace("10.0.1.50:7300", addrs["raft_proxy"])
		}
		// Nothing of the example's private network may be left: a
		// leftover address would be dialled from this test.
		if m := regexp.MustCompile(`\b10\.\d+\.\d+\.\d+:\d+`).FindString(s); m != "" {
			t.Fatalf("%s.yaml.example: address %s left unfilled", role, m)
		}
	}
	p := filepath.Join(dir, role+".yaml")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// runUntilSIGTERM starts routerd on cfg, waits for its /healthz at admin,
// sends SIGTERM and expects exit status 0 within 20 s, and a start logged
// with the role.
func runUntilSIGTERM(t *testing.T, bin, cfg, role, admin string) {
	var logs syncBuffer
	cmd := exec.Command(bin, "--config", cfg)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Error(err)
		return
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := client.Get("http://" + admin + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-exited:
			t.Errorf("routerd %s exited before serving /healthz: %v\n%s", cfg, err, logs.String())
			return
		default:
		}
		if time.Now().After(deadline) {
			t.Errorf("routerd %s: no /healthz at %s within 15 s\n%s", cfg, admin, logs.String())
			return
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Error(err)
		return
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("routerd %s on SIGTERM: %v\n%s", cfg, err, logs.String())
		}
		if !strings.Contains(logs.String(), `"role": "`+role+`"`) {
			t.Errorf("routerd %s did not log its start as role %s:\n%s", cfg, role, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Errorf("routerd %s still running 20 s after SIGTERM\n%s", cfg, logs.String())
	}
}

// testPostinst runs the package's postinst with stand-ins for getent and
// adduser first on PATH: it must create the system user dbrouter when it
// is missing and leave an existing one alone. The real commands are never
// run; /run/systemd/system does not exist in this container, so the
// script's systemctl calls are skipped as on any host without systemd.
func testPostinst(t *testing.T, ctx context.Context, postinst string) {
	t.Helper()
	for _, tc := range []struct {
		name       string
		userExists bool
		wantAdd    bool
	}{
		{"new user", false, true},
		{"existing user", true, false},
	} {
		stubs := t.TempDir()
		log := filepath.Join(stubs, "calls")
		getent := "#!/bin/sh\necho \"getent $*\" >> " + log + "\nexit 2\n"
		if tc.userExists {
			getent = "#!/bin/sh\necho \"getent $*\" >> " + log + "\necho 'dbrouter:x:999:999::/var/lib/dbrouter:/usr/sbin/nologin'\n"
		}
		for name, body := range map[string]string{
			"getent":    getent,
			"adduser":   "#!/bin/sh\necho \"adduser $*\" >> " + log + "\n",
			"systemctl": "#!/bin/sh\necho \"systemctl $*\" >> " + log + "\n",
		} {
			if err := os.WriteFile(filepath.Join(stubs, name), []byte(body), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		env := []string{"PATH=" + stubs + ":/usr/bin:/bin"}
		mustRun(t, ctx, "", env, "sh", "-e", postinst, "configure", "")
		calls, _ := os.ReadFile(log)
		added := regexp.MustCompile(`(?m)^adduser .*--system.* dbrouter$`).Match(calls)
		if added != tc.wantAdd {
			t.Errorf("postinst configure (%s): adduser --system dbrouter called %v, want %v; calls:\n%s", tc.name, added, tc.wantAdd, calls)
		}
		if _, err := os.Stat("/run/systemd/system"); err != nil && bytes.Contains(calls, []byte("systemctl")) {
			t.Errorf("postinst called systemctl on a host without systemd:\n%s", calls)
		}
	}
}

func mustRun(t *testing.T, ctx context.Context, dir string, env []string, name string, args ...string) string {
	t.Helper()
	out, err := runCmd(ctx, dir, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runCmd(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
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

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func sorted(s []string) []string { s = append([]string(nil), s...); sort.Strings(s); return s }

func equal(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
