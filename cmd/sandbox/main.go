// Command sandbox is `make run`: a whole local deployment on loopback — three
// real mariadbd (GTID, semi-sync) and a routerd proxy — in the foreground
// until Ctrl-C, which stops everything it started.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/dbrouter/dbrouter/chaos"
)

func main() { os.Exit(run()) }

func run() int {
	listen := flag.String("listen", "127.0.0.1:6033", "MySQL listener of the proxy")
	adminAddr := flag.String("admin", "127.0.0.1:7080", "admin API of the proxy")
	dir := flag.String("dir", "", "work dir (default: a new temp dir, removed on exit)")
	remoteLatency := flag.Duration("remote-latency", 5*time.Millisecond, "latency each way to db3, a simulated second site (0: db3 is local)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "sandbox: unexpected argument %q\n", flag.Arg(0))
		return 2
	}
	for _, a := range []string{*listen, *adminAddr} {
		l, err := net.Listen("tcp", a)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sandbox: %s is not free (is another sandbox running?): %v\n", a, err)
			return 1
		}
		l.Close()
	}
	routerd, err := sibling("routerd")
	if err != nil {
		fmt.Fprintf(os.Stderr, "sandbox: %v (run `make build`)\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Println("sandbox: starting 3 mariadbd (GTID, semi-sync AFTER_SYNC) ...")
	c, err := chaos.Start(ctx, chaos.Options{Members: 3, Dir: *dir, Log: func(f string, a ...any) { fmt.Printf("sandbox: "+f+"\n", a...) }})
	if err != nil {
		fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
		return 1
	}
	defer func() {
		fmt.Println("sandbox: stopping mariadbd ...")
		c.Close()
	}()
	// db3 sits in a simulated second site: the proxy reaches it through a
	// link adding latency each way, so "nearest" has something to show.
	addrs := []string{c.Members[0].Addr(), c.Members[1].Addr(), c.Members[2].Addr()}
	sites := []string{"local", "local", "local"}
	remoteNote := ""
	if *remoteLatency > 0 {
		remote, err := chaos.NewLink("sandbox-db3", c.Members[2].Addr())
		if err != nil {
			fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
			return 1
		}
		defer remote.Close()
		if err := remote.SetLatency(*remoteLatency); err != nil {
			fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
			return 1
		}
		addrs[2], sites[2] = remote.Addr, "remote"
		remoteNote = fmt.Sprintf("\n                            (the proxy reaches db3 through a link adding %v each way: site \"remote\")", *remoteLatency)
	}
	cfgPath := filepath.Join(c.Dir(), "routerd.yaml")
	if err := os.WriteFile(cfgPath, []byte(routerdConfig(c, addrs, sites, *listen, *adminAddr)), 0o600); err != nil {
		fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
		return 1
	}
	cmd := exec.Command(routerd, "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "sandbox: start routerd: %v\n", err)
		return 1
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	if err := waitReady(ctx, *adminAddr, exited); err != nil {
		fmt.Fprintf(os.Stderr, "sandbox: routerd: %v\n", err)
		return 1
	}
	host, port, _ := net.SplitHostPort(*listen)
	fmt.Printf(`
dbrouter sandbox is up (work dir %s)

  MySQL through the proxy:  mariadb -h %s -P %s -u %s -p%s %s
  status:                   bin/routerctl status        (admin API http://%s/status)
  metrics:                  curl http://%s/metrics
  members (direct):         %s%s

Ctrl-C stops everything.
`, c.Dir(), host, port, chaos.AppUser, chaos.AppPassword, chaos.AppDatabase, *adminAddr, *adminAddr, memberList(c), remoteNote)
	select {
	case <-ctx.Done():
		fmt.Println("\nsandbox: stopping routerd ...")
		return 0
	case err := <-exited:
		exited <- err
		fmt.Fprintf(os.Stderr, "sandbox: routerd exited: %v\n", err)
		return 1
	}
}

func memberList(c *chaos.Cluster) string {
	var parts []string
	for i, m := range c.Members {
		role := "replica"
		if i == 0 {
			role = "primary"
		}
		parts = append(parts, fmt.Sprintf("%s %s (%s)", m.Name, m.Addr(), role))
	}
	return strings.Join(parts, ", ")
}

func routerdConfig(c *chaos.Cluster, addrs, sites []string, listen, adminAddr string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "role: proxy\nname: sandbox-proxy\nsite: local\nadmin:\n  listen: %s\nclusters:\n  - name: app\n    kind: mysql\n    listen: %s\n", adminAddr, listen)
	fmt.Fprintf(&b, "    monitor: {user: %s, password: %s}\n    users:\n      - {name: %s, password: %s}\n    members:\n", chaos.AdminUser, chaos.AdminPassword, chaos.AppUser, chaos.AppPassword)
	for i, m := range c.Members {
		fmt.Fprintf(&b, "      - {name: %s, addr: \"%s\", site: %s}\n", m.Name, addrs[i], sites[i])
	}
	return b.String()
}

func waitReady(ctx context.Context, adminAddr string, exited chan error) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("exited during start-up: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		resp, err := http.Get("http://" + adminAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			return nil
		}
	}
	return errors.New("admin API not up after 20s")
}

// sibling finds another of the project's binaries next to this one, then on
// PATH.
func sibling(name string) (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return exec.LookPath(name)
}
