// Command sandbox is `make run`: a whole local deployment on loopback — three
// real mariadbd (GTID, semi-sync), a three-member MongoDB replica set (the
// harness's member simulator over embedded FerretDB), three routerd arbiters
// (the Raft control plane) and two routerd proxies serving both — in the
// foreground until Ctrl-C, which stops everything it started.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/dbrouter/dbrouter/admin"
	"github.com/dbrouter/dbrouter/chaos"
)

func main() { os.Exit(run()) }

// node is one routerd the sandbox runs.
type node struct {
	name, role, admin, raft, listen string
	// mongoListen is a proxy's Mongo listener ("" for none).
	mongoListen string
	// addrs are the member addresses this node dials (nil: the real ones).
	addrs  []string
	cmd    *exec.Cmd
	exited chan error
}

func run() int {
	listen := flag.String("listen", "127.0.0.1:6033", "MySQL listener of the first proxy")
	listen2 := flag.String("listen2", "127.0.0.1:6034", "MySQL listener of the second proxy")
	adminAddr := flag.String("admin", "127.0.0.1:7080", "admin API of the first proxy (routerctl's default)")
	admin2 := flag.String("admin2", "127.0.0.1:7090", "admin API of the second proxy")
	dir := flag.String("dir", "", "work dir (default: a new temp dir, removed on exit)")
	remoteLatency := flag.Duration("remote-latency", 5*time.Millisecond, "latency each way to db3, a simulated second site (0: db3 is local)")
	mongoListen := flag.String("mongo-listen", "127.0.0.1:27017", "Mongo listener of the first proxy")
	mongoListen2 := flag.String("mongo-listen2", "127.0.0.1:27018", "Mongo listener of the second proxy")
	withMongo := flag.Bool("mongo", true, "also run a MongoDB replica set (simulated members) behind the proxies")
	controlPorts := flag.Int("control-ports", 7300, "first of the ports for the control plane: arbiters' Raft at +1..+3, proxies' Raft at +11, +12, arbiters' admin APIs at -219..-217 (7081-7083 by default)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "sandbox: unexpected argument %q\n", flag.Arg(0))
		return 2
	}
	if *controlPorts < 1024 || *controlPorts > 65000 {
		fmt.Fprintf(os.Stderr, "sandbox: -control-ports %d: want 1024 to 65000\n", *controlPorts)
		return 2
	}
	nodes := []*node{
		{name: "a1", role: "arbiter", admin: port(*controlPorts - 219), raft: port(*controlPorts + 1)},
		{name: "a2", role: "arbiter", admin: port(*controlPorts - 218), raft: port(*controlPorts + 2)},
		{name: "a3", role: "arbiter", admin: port(*controlPorts - 217), raft: port(*controlPorts + 3)},
		{name: "p1", role: "proxy", admin: *adminAddr, raft: port(*controlPorts + 11), listen: *listen},
		{name: "p2", role: "proxy", admin: *admin2, raft: port(*controlPorts + 12), listen: *listen2},
	}
	if *withMongo {
		nodes[3].mongoListen, nodes[4].mongoListen = *mongoListen, *mongoListen2
	}
	for _, n := range nodes {
		for _, a := range []string{n.admin, n.raft, n.listen, n.mongoListen} {
			if a == "" {
				continue
			}
			l, err := net.Listen("tcp", a)
			if err != nil {
				fmt.Fprintf(os.Stderr, "sandbox: %s is not free (is another sandbox running?): %v\n", a, err)
				return 1
			}
			l.Close()
		}
	}
	routerd, err := sibling("routerd")
	if err != nil {
		fmt.Fprintf(os.Stderr, "sandbox: %v (run `make build`)\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Println("sandbox: starting 3 mariadbd (GTID, semi-sync AFTER_SYNC) ...")
	c, err := chaos.Start(ctx, chaos.Options{Members: 3, Dir: *dir, SemiSyncTimeout: 10 * time.Second, Log: func(f string, a ...any) { fmt.Printf("sandbox: "+f+"\n", a...) }})
	if err != nil {
		fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
		return 1
	}
	defer func() {
		fmt.Println("sandbox: stopping mariadbd ...")
		c.Close()
	}()
	var rs *chaos.ReplicaSet
	if *withMongo {
		// make build puts ferretmember beside the sandbox; without it the
		// harness builds one (which needs go on PATH).
		if os.Getenv(chaos.FerretMemberEnv) == "" {
			if fm, err := sibling("ferretmember"); err == nil {
				os.Setenv(chaos.FerretMemberEnv, fm)
			}
		}
		fmt.Println("sandbox: starting a 3-member MongoDB replica set (simulated members over FerretDB) ...")
		// mongod's own election timeout: what an application would see.
		rs, err = chaos.StartReplicaSet(ctx, chaos.ReplicaSetOptions{Members: 3, ElectionTimeout: 10 * time.Second,
			Dir: filepath.Join(c.Dir(), "mongo"), Log: func(f string, a ...any) { fmt.Printf("sandbox: "+f+"\n", a...) }})
		if err != nil {
			fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
			return 1
		}
		defer func() {
			fmt.Println("sandbox: stopping the replica set ...")
			rs.Close()
		}()
	}
	// db3 sits in a simulated second site: the proxies reach it through a
	// link adding latency each way, so "nearest" has something to show. The
	// arbiters use its real address: it is the identity replicas name.
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
		sites[2] = "remote"
		remoteNote = fmt.Sprintf("\n                            (the proxies reach db3 through a link adding %v each way: site \"remote\")", *remoteLatency)
		proxyAddrs := append([]string(nil), addrs...)
		proxyAddrs[2] = remote.Addr
		for _, n := range nodes {
			if n.role == "proxy" {
				n.addrs = proxyAddrs
			}
		}
	}
	secretFile := filepath.Join(c.Dir(), "secret")
	secret := make([]byte, 24)
	if _, err := rand.Read(secret); err != nil {
		fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
		return 1
	}
	if err := os.WriteFile(secretFile, []byte(hex.EncodeToString(secret)+"\n"), 0o600); err != nil {
		fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
		return 1
	}
	defer func() {
		for i := len(nodes) - 1; i >= 0; i-- {
			nodes[i].stop()
		}
	}()
	for _, n := range nodes {
		maddrs := addrs
		if n.addrs != nil {
			maddrs = n.addrs
		}
		cfgPath := filepath.Join(c.Dir(), n.name+".yaml")
		if n.name == "p1" {
			cfgPath = filepath.Join(c.Dir(), "routerd.yaml") // bench/run.sh reads this one
		}
		if err := os.WriteFile(cfgPath, []byte(routerdConfig(c, rs, n, nodes, maddrs, sites, secretFile)), 0o600); err != nil {
			fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
			return 1
		}
		n.cmd = exec.Command(routerd, "--config", cfgPath)
		n.cmd.Stdout, n.cmd.Stderr = prefixed(n.name, os.Stdout), prefixed(n.name, os.Stderr)
		n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
		if err := n.cmd.Start(); err != nil {
			fmt.Fprintf(os.Stderr, "sandbox: start routerd %s: %v\n", n.name, err)
			return 1
		}
		n.exited = make(chan error, 1)
		go func() { n.exited <- n.cmd.Wait() }()
	}
	for _, n := range nodes {
		if err := waitReady(ctx, n); err != nil {
			fmt.Fprintf(os.Stderr, "sandbox: routerd %s: %v\n", n.name, err)
			return 1
		}
	}
	if rs != nil {
		// A fresh set elects its first primary when the arbiters ask one
		// to step up (failure_threshold), well before its own 10 s:
		// "up" means Mongo writes work too.
		if _, err := rs.WaitPrimary(ctx, 60*time.Second); err != nil {
			fmt.Fprintf(os.Stderr, "sandbox: replica set: %v\n", err)
			return 1
		}
	}
	host, port, _ := net.SplitHostPort(*listen)
	_, port2, _ := net.SplitHostPort(*listen2)
	fmt.Printf(`
dbrouter sandbox is up (work dir %s)

  MySQL through proxy p1:   mariadb -h %s -P %s -u %s -p%s %s
  MySQL through proxy p2:   mariadb -h %s -P %s -u %s -p%s %s
  status:                   bin/routerctl status        (admin API http://%s/status)
  switchover:               export DBROUTER_SECRET_FILE=%s
                            bin/routerctl promote app db2
  history, raft members:    bin/routerctl history app; bin/routerctl members
  metrics:                  curl http://%s/metrics
  arbiters:                 a1 %s, a2 %s, a3 %s (admin APIs; routerctl --admin ADDR)
  members (direct):         %s%s
%s
Ctrl-C stops everything.
`, c.Dir(), host, port, chaos.AppUser, chaos.AppPassword, chaos.AppDatabase, host, port2, chaos.AppUser, chaos.AppPassword, chaos.AppDatabase,
		*adminAddr, secretFile, *adminAddr, nodes[0].admin, nodes[1].admin, nodes[2].admin, memberList(c), remoteNote, mongoNote(rs, nodes))
	exits := make(chan string, len(nodes))
	for _, n := range nodes {
		go func() {
			err := <-n.exited
			n.exited <- err
			exits <- fmt.Sprintf("%s: %v", n.name, err)
		}()
	}
	select {
	case <-ctx.Done():
		fmt.Println("\nsandbox: stopping routerd ...")
		return 0
	case e := <-exits:
		fmt.Fprintf(os.Stderr, "sandbox: routerd exited: %s\n", e)
		return 1
	}
}

func port(p int) string { return net.JoinHostPort("127.0.0.1", fmt.Sprint(p)) }

// stop sends SIGTERM and waits (SIGKILL after 10 s).
func (n *node) stop() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-n.exited:
		n.exited <- err
	case <-time.After(10 * time.Second):
		_ = n.cmd.Process.Kill()
	}
}

// prefixed writes each line with the node's name in front.
func prefixed(name string, w io.Writer) io.Writer {
	pr, pw := io.Pipe()
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			fmt.Fprintf(w, "[%s] %s\n", name, sc.Text())
		}
	}()
	return pw
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

func routerdConfig(c *chaos.Cluster, rs *chaos.ReplicaSet, n *node, nodes []*node, addrs, sites []string, secretFile string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "role: %s\nname: %s\nsite: local\nadmin:\n  listen: %s\n", n.role, n.name, n.admin)
	fmt.Fprintf(&b, "control:\n  secret: {file: %q}\n  raft_listen: %s\n  dir: %q\n  arbiters:\n", secretFile, n.raft, filepath.Join(c.Dir(), "raft", n.name))
	for _, a := range nodes {
		if a.role == "arbiter" {
			fmt.Fprintf(&b, "    - {name: %s, raft: %q, admin: %q}\n", a.name, a.raft, a.admin)
		}
	}
	fmt.Fprintf(&b, "clusters:\n  - name: app\n    kind: mariadb\n")
	if n.role == "proxy" {
		fmt.Fprintf(&b, "    listen: %s\n    users:\n      - {name: %s, password: %s}\n", n.listen, chaos.AppUser, chaos.AppPassword)
	}
	fmt.Fprintf(&b, "    monitor: {user: %s, password: %s}\n    replication: {user: %s, password: %s}\n    members:\n", chaos.AdminUser, chaos.AdminPassword, chaos.ReplUser, chaos.ReplPassword)
	for i, m := range c.Members {
		fmt.Fprintf(&b, "      - {name: %s, addr: \"%s\", site: %s}\n", m.Name, addrs[i], sites[i])
	}
	// The replica set, under the same control plane: the arbiters record
	// its elected primary as the epoch, step a secondary up when the
	// primary is lost, and promote on request.
	if rs != nil {
		fmt.Fprintf(&b, "  - name: docs\n    kind: mongodb\n    mongodb: {replica_set: %s}\n", rs.Name)
		if n.role == "proxy" {
			fmt.Fprintf(&b, "    listen: %s\n    users:\n      - {name: %s, password: %s}\n", n.mongoListen, chaos.AppUser, chaos.AppPassword)
		}
		fmt.Fprintf(&b, "    members:\n")
		for _, m := range rs.Members {
			fmt.Fprintf(&b, "      - {name: %s, addr: \"%s\", site: local}\n", "mongo-"+m.Name, m.Addr())
		}
	}
	return b.String()
}

// mongoNote is the part of the banner about the replica set ("" without
// one).
func mongoNote(rs *chaos.ReplicaSet, nodes []*node) string {
	if rs == nil {
		return ""
	}
	var b strings.Builder
	for _, n := range nodes {
		if n.mongoListen != "" {
			fmt.Fprintf(&b, "  MongoDB through proxy %s: mongosh \"mongodb://%s:%s@%s/?authSource=admin\"\n", n.name, chaos.AppUser, chaos.AppPassword, n.mongoListen)
		}
	}
	fmt.Fprintf(&b, "                            (any driver, its defaults; no replicaSet= in the URI: the proxy is a mongos)\n")
	fmt.Fprintf(&b, "  MongoDB switchover:       bin/routerctl promote docs mongo-db2   (members mongo-db1..3; routerctl status shows the primary)\n")
	var ms []string
	for _, m := range rs.Members {
		ms = append(ms, m.Name+" "+m.Addr())
	}
	fmt.Fprintf(&b, "  replica set %s (direct):  %s  (mongosh \"%s\")\n", rs.Name, strings.Join(ms, ", "), rs.URI())
	return b.String()
}

// waitReady waits for a node's admin API; for a proxy, until it holds a
// write lease and every cluster serves (allServing), so "sandbox is up"
// means writes and replica reads work.

func waitReady(ctx context.Context, n *node) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-n.exited:
			n.exited <- err
			return fmt.Errorf("exited during start-up: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		var st admin.Status
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		err := (&admin.Client{Addr: n.admin}).Do(cctx, "GET", "/status", nil, &st)
		cancel()
		if err == nil && (n.role == "arbiter" || (st.Control != nil && st.Control.LeaseOK && allServing(st.Clusters))) {
			return nil
		}
	}
	return errors.New("not ready after 60s")
}

// allServing: every cluster has an epoch and every member serves (the
// primary writes, each replica is eligible for reads): what a user trying
// the sandbox right after "up" expects.
func allServing(cs []admin.ClusterStatus) bool {
	for _, c := range cs {
		if c.Epoch == 0 {
			return false
		}
		for _, m := range c.Members {
			if !m.Healthy {
				return false
			}
		}
	}
	return len(cs) > 0
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
