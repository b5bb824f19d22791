package chaos

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// The Mongo-wire members are ferretmember processes (cmd/ferretmember): an
// embedded FerretDB on SQLite, since no mongod package exists here. What
// FerretDB v1.24.2 is not, measured: it has no endSessions, transactions or
// replSet* commands; it ignores lsid, txnNumber and $readPreference; it
// reports maxWireVersion 21; it answers even moreToCome requests; and its
// cursor ids can collide across processes, so a proxy must key cursors by
// member. Replica-set behaviour is the member simulator's job, not FerretDB's.

// FerretMemberEnv names a prebuilt ferretmember binary to use instead of
// building cmd/ferretmember (a sandbox or CI image that ships one).
const FerretMemberEnv = "DBROUTER_FERRETMEMBER"

// ErrNoGo is returned when the harness must build cmd/ferretmember and no go
// command is on PATH. Callers must not turn it into a skip.
var ErrNoGo = errors.New("go not found on PATH: the Mongo harness builds cmd/ferretmember with it (go test puts it there), or set " + FerretMemberEnv + " to a built ferretmember")

// MongoOptions shapes a group of Mongo-wire members.
type MongoOptions struct {
	// Members is the number of servers (default 1).
	Members int
	// Dir is the work dir; a temp dir is created (and removed) when empty.
	Dir string
	// Log receives progress lines; nil discards them.
	Log func(format string, args ...any)
}

// MongoCluster is a group of independent Mongo-wire members. They do not
// replicate: each is a standalone server with its own data.
type MongoCluster struct {
	Members []*MongoMember
	dir     string
	ownDir  bool
}

// MongoMember is one ferretmember process with its port and data dir, both
// kept across restarts.
type MongoMember struct {
	Name    string
	Port    int
	DataDir string
	// Arbiter is set on a replica set's arbiter (votes, holds no data).
	Arbiter bool
	// caFile is set on a member listening with TLS only: its URI and
	// client options then use TLS and trust this CA.
	caFile string
	bin    string
	// args is the whole command line after the binary when set (a replica
	// set member's); nil runs a standalone ferretmember on Port and DataDir.
	args []string

	proc
}

// StartMongo brings up opts.Members ferretmember processes in parallel and
// returns once each answers hello. On error everything started is stopped.
func StartMongo(ctx context.Context, opts MongoOptions) (*MongoCluster, error) {
	if opts.Members <= 0 {
		opts.Members = 1
	}
	if opts.Log == nil {
		opts.Log = func(string, ...any) {}
	}
	began := time.Now()
	bin, err := ferretMemberBinary()
	if err != nil {
		return nil, err
	}
	if d := time.Since(began); d > time.Second {
		opts.Log("mongo: ferretmember built in %s", d.Round(time.Millisecond))
	}
	c := &MongoCluster{dir: opts.Dir}
	if c.dir == "" {
		if c.dir, err = os.MkdirTemp("", "dbrouter-mongo-"); err != nil {
			return nil, fmt.Errorf("mongo work dir: %w", err)
		}
		c.ownDir = true
	}
	ok := false
	defer func() {
		if !ok {
			_ = c.Close()
		}
	}()
	for i := range opts.Members {
		m, err := c.newMember(i, bin)
		if err != nil {
			return nil, err
		}
		c.Members = append(c.Members, m)
	}
	if err := startAll(ctx, procs(c.Members), opts.Log); err != nil {
		return nil, err
	}
	ok = true
	addrs := make([]string, len(c.Members))
	for i, m := range c.Members {
		addrs[i] = m.Name + "=" + m.Addr()
	}
	opts.Log("mongo: %d members up in %s: %s", len(c.Members), c.dir, strings.Join(addrs, " "))
	return c, nil
}

func (c *MongoCluster) newMember(i int, bin string) (*MongoMember, error) {
	name := fmt.Sprintf("mongo%d", i+1)
	dir := filepath.Join(c.dir, name)
	m := &MongoMember{
		Name:    name,
		DataDir: filepath.Join(dir, "data"),
		bin:     bin,
		// With client connections open a stop takes about 3 s: FerretDB
		// lets requests in flight finish for that long (and ferretmember
		// gives up after 10 s).
		proc: proc{name: name, logPath: filepath.Join(dir, "member.log"), stopGrace: 15 * time.Second},
	}
	m.proc.start = m.start
	if err := os.MkdirAll(m.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: data dir: %w", name, err)
	}
	port, err := FreePort()
	if err != nil {
		return nil, fmt.Errorf("%s: free port: %w", name, err)
	}
	m.Port = port
	return m, nil
}

// start launches the process and waits until it answers hello.
func (m *MongoMember) start(ctx context.Context) error {
	// The log is appended to across restarts, with a line per start, so a
	// failure message shows what the member did before it was killed.
	logf, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: log: %w", m.Name, err)
	}
	fmt.Fprintf(logf, "--- harness: starting %s on %s at %s\n", m.Name, m.Addr(), time.Now().UTC().Format(time.RFC3339Nano))
	args := m.args
	if args == nil {
		args = []string{"-port", strconv.Itoa(m.Port), "-dir", m.DataDir}
	}
	cmd := exec.Command(m.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	done, err := m.proc.launch(cmd)
	logf.Close() // the child holds its own descriptor
	if err != nil {
		return err
	}
	err = poll(ctx, 20*time.Second, func() (bool, error) {
		select {
		case <-done:
			return false, fmt.Errorf("exited during start-up")
		default:
		}
		// A dial first: it fails in microseconds while the port is closed,
		// where a driver's server selection would wait out a heartbeat.
		conn, err := net.DialTimeout("tcp", m.Addr(), time.Second)
		if err != nil {
			return false, err
		}
		conn.Close()
		hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := m.Hello(hctx); err != nil {
			return false, err
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("start %s: %w\n%s", m.Name, err, m.LogTail(3000))
	}
	return nil
}

// Addr is the member's TCP address on 127.0.0.1.
func (m *MongoMember) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(m.Port)) }

// URI is a mongodb:// URI for this member alone (directConnection=true), so
// a driver talks to it as given and never goes looking for a replica set;
// for a TLS-only member it asks for TLS and names the CA.
func (m *MongoMember) URI() string {
	return "mongodb://" + m.Addr() + "/?directConnection=true" + tlsParams(m.caFile)
}

// tlsParams are the URI options of a TLS client trusting caFile (none
// without one).
func tlsParams(caFile string) string {
	if caFile == "" {
		return ""
	}
	return "&tls=true&tlsCAFile=" + url.QueryEscape(caFile)
}

// ClientOptions are driver options for this member with timeouts short
// enough that a test sees a dead or frozen member as an error in seconds
// (the driver's defaults wait 30 s for server selection).
func (m *MongoMember) ClientOptions() *options.ClientOptions {
	return options.Client().ApplyURI(m.URI()).
		SetServerSelectionTimeout(2 * time.Second).
		SetConnectTimeout(2 * time.Second)
}

// Hello runs hello on a fresh connection and returns the reply.
func (m *MongoMember) Hello(ctx context.Context) (bson.Raw, error) {
	cl, err := mongo.Connect(m.ClientOptions())
	if err != nil {
		return nil, fmt.Errorf("%s: connect: %w", m.Name, err)
	}
	defer func() { _ = cl.Disconnect(context.Background()) }()
	reply, err := cl.Database("admin").RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Raw()
	if err != nil {
		return nil, fmt.Errorf("%s: hello: %w", m.Name, err)
	}
	return reply, nil
}

// Close stops every member and removes the work dir it created.
func (c *MongoCluster) Close() error {
	stopAll(procs(c.Members))
	if c.ownDir {
		if err := os.RemoveAll(c.dir); err != nil {
			return fmt.Errorf("remove mongo work dir: %w", err)
		}
	}
	return nil
}

// Dir is the cluster's work dir.
func (c *MongoCluster) Dir() string { return c.dir }

var ferretBin struct {
	once sync.Once
	path string
	err  error
}

// ferretMemberBinary builds cmd/ferretmember once per process. The binary
// goes to a dir per source tree, under an flock: the go command then finds
// it up to date and only the first test binary of a run pays for the link
// (the first build ever compiles FerretDB and SQLite: minutes on two cores),
// and worktrees with different code never share one.
func ferretMemberBinary() (string, error) {
	ferretBin.once.Do(func() {
		if p := os.Getenv(FerretMemberEnv); p != "" {
			if _, err := os.Stat(p); err != nil {
				ferretBin.err = fmt.Errorf("%s: %w", FerretMemberEnv, err)
				return
			}
			ferretBin.path = p
			return
		}
		ferretBin.path, ferretBin.err = buildFerretMember()
	})
	return ferretBin.path, ferretBin.err
}

const ferretMemberPkg = "github.com/dbrouter/dbrouter/cmd/ferretmember"

func buildFerretMember() (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", ErrNoGo
	}
	root := moduleRoot()
	sum := sha256.Sum256([]byte(root))
	dir := filepath.Join(os.TempDir(), "dbrouter-ferretmember-"+hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("build ferretmember: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("build ferretmember: %w", err)
	}
	defer lock.Close() // closing releases the flock
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("build ferretmember: lock: %w", err)
	}
	bin := filepath.Join(dir, "ferretmember")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, ferretMemberPkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s in %s: %w\n%s", ferretMemberPkg, root, err, tail(out, 3000))
	}
	return bin, nil
}

// moduleRoot is the source tree this package was compiled from, so a test
// in any package (any working directory) builds the member from the same
// code; the working directory is the fallback for a binary moved elsewhere.
func moduleRoot() string {
	if _, file, _, ok := runtime.Caller(0); ok {
		root := filepath.Dir(filepath.Dir(file))
		if b, err := os.ReadFile(filepath.Join(root, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/dbrouter/dbrouter\n") {
			return root
		}
	}
	wd, _ := os.Getwd()
	return wd
}

// ---- replica sets ----
//
// A replica set is ferretmember processes run with -rs: each member is
// embedded FerretDB behind the replica-set member simulator (chaos/rssim,
// docs/mongosim.md), one OS process per member so that Kill, Pause and
// Restart are real. With RealMongod the same API starts mongod --replSet
// members instead (a separate code path below, for machines that have
// mongod; untested where they do not).

// ErrNoPrimary is returned by Primary when no member says it is primary.
var ErrNoPrimary = errors.New("no member is primary")

// ReplicaSetOptions shapes a replica set.
type ReplicaSetOptions struct {
	// Name is the set name (default "rs0").
	Name string
	// Members is the number of data-bearing members (default 3), named
	// db1, db2, ...
	Members int
	// Arbiter adds one arbiter, named arb (a PSA set with Members: 2).
	Arbiter bool
	// ElectionTimeout (default 2 s, mongod's is 10 s) and Heartbeat
	// (default 250 ms) are the members' timings.
	ElectionTimeout time.Duration
	Heartbeat       time.Duration
	// Links makes members dial each other through a Link per direction
	// (ReplicaSet.Link), so that a test can cut or slow the path between
	// two members; clients still reach every member directly.
	Links bool
	// Tags are per-member hello tags, by member name.
	Tags map[string]map[string]string
	// TLS makes every member listen with TLS only (mongod's requireTLS)
	// with TLS.CertFile, and reach its peers verifying TLS.CAFile; the
	// members' URIs and client options then use TLS. Simulated members
	// only.
	TLS *Certs
	// RealMongod starts mongod --replSet members (mongod must be on PATH)
	// instead of simulated ones. Links and SetApplyDelay are then refused,
	// and PauseReplication uses mongod's stopReplProducer fail point. Not
	// tested: no mongod exists where these tests run.
	RealMongod bool
	// Dir is the work dir; a temp dir is created (and removed) when empty.
	Dir string
	// Log receives progress lines; nil discards them.
	Log func(format string, args ...any)
}

// ReplicaSet is a running replica set.
type ReplicaSet struct {
	Name    string
	Members []*MongoMember
	opts    ReplicaSetOptions
	links   map[[2]string]*Link
	dir     string
	ownDir  bool
}

// StartReplicaSet starts every member in parallel and returns once each
// answers hello; it does not wait for a primary (WaitPrimary does). On
// error everything started is stopped.
func StartReplicaSet(ctx context.Context, opts ReplicaSetOptions) (*ReplicaSet, error) {
	if opts.Name == "" {
		opts.Name = "rs0"
	}
	if opts.Members <= 0 {
		opts.Members = 3
	}
	if opts.ElectionTimeout <= 0 {
		opts.ElectionTimeout = 2 * time.Second
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 250 * time.Millisecond
	}
	if opts.Log == nil {
		opts.Log = func(string, ...any) {}
	}
	rs := &ReplicaSet{Name: opts.Name, opts: opts, links: map[[2]string]*Link{}, dir: opts.Dir}
	var err error
	if rs.dir == "" {
		if rs.dir, err = os.MkdirTemp("", "dbrouter-mongors-"); err != nil {
			return nil, fmt.Errorf("replica set work dir: %w", err)
		}
		rs.ownDir = true
	}
	ok := false
	defer func() {
		if !ok {
			_ = rs.Close()
		}
	}()
	if opts.RealMongod {
		if err := rs.startMongod(ctx); err != nil {
			return nil, err
		}
		ok = true
		return rs, nil
	}
	bin, err := ferretMemberBinary()
	if err != nil {
		return nil, err
	}
	if err := rs.newMembers(bin); err != nil {
		return nil, err
	}
	if opts.TLS != nil {
		for _, m := range rs.Members {
			m.caFile = opts.TLS.CAFile
		}
	}
	if opts.Links {
		for _, a := range rs.Members {
			for _, b := range rs.Members {
				if a == b {
					continue
				}
				l, err := NewLink(fmt.Sprintf("%s-%s-%s-%d", opts.Name, a.Name, b.Name, time.Now().UnixNano()), b.Addr())
				if err != nil {
					return nil, err
				}
				rs.links[[2]string{a.Name, b.Name}] = l
			}
		}
	}
	for _, m := range rs.Members {
		m.args = rs.memberArgs(m)
	}
	if err := startAll(ctx, procs(rs.Members), opts.Log); err != nil {
		return nil, err
	}
	ok = true
	opts.Log("mongo replica set %s: %d members up in %s: %s", opts.Name, len(rs.Members), rs.dir, rs.URI())
	return rs, nil
}

// newMembers makes the members db1..dbN, then arb, each with a port and
// a data dir, running bin.
func (rs *ReplicaSet) newMembers(bin string) error {
	mc := &MongoCluster{dir: rs.dir}
	n := rs.opts.Members
	if rs.opts.Arbiter {
		n++
	}
	for i := range n {
		m, err := mc.newMember(i, bin)
		if err != nil {
			return err
		}
		m.Name = fmt.Sprintf("db%d", i+1)
		if rs.opts.Arbiter && i == n-1 {
			m.Name, m.Arbiter = "arb", true
		}
		m.proc.name = m.Name
		rs.Members = append(rs.Members, m)
	}
	return nil
}

// memberArgs is a simulated member's ferretmember command line.
func (rs *ReplicaSet) memberArgs(m *MongoMember) []string {
	args := []string{"-port", strconv.Itoa(m.Port), "-dir", m.DataDir, "-rs", rs.Name, "-member", m.Name,
		"-election-timeout", rs.opts.ElectionTimeout.String(), "-heartbeat", rs.opts.Heartbeat.String()}
	for _, p := range rs.Members {
		v := p.Name + "=" + p.Addr()
		if l := rs.links[[2]string{m.Name, p.Name}]; l != nil {
			v += ",dial=" + l.Addr
		}
		if p.Arbiter {
			v += ",arbiter"
		}
		args = append(args, "-peer", v)
	}
	for k, v := range rs.opts.Tags[m.Name] {
		args = append(args, "-tag", k+"="+v)
	}
	if c := rs.opts.TLS; c != nil {
		args = append(args, "-tls-cert", c.CertFile, "-tls-key", c.KeyFile, "-tls-ca", c.CAFile)
	}
	return args
}

// StartReplicaSetT starts a replica set for a test and stops it when the
// test ends; member logs are printed when the test failed.
func StartReplicaSetT(t testing.TB, opts ReplicaSetOptions) *ReplicaSet {
	t.Helper()
	if _, err := ferretMemberBinary(); err != nil && !opts.RealMongod {
		t.Fatalf("start replica set: %v", err)
	}
	if opts.Log == nil {
		opts.Log = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rs, err := StartReplicaSet(ctx, opts)
	if err != nil {
		t.Fatalf("start replica set: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, m := range rs.Members {
				t.Logf("%s log tail (FerretDB's own lines left out):\n%s", m.Name, m.simLogTail(8000))
			}
		}
		_ = rs.Close()
	})
	return rs
}

// simLogTail is the end of a member's log without FerretDB's lines (one
// per connection), which drown the simulator's.
func (m *MongoMember) simLogTail(n int) string {
	b, _ := os.ReadFile(m.logPath)
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, "part=ferretdb") {
			keep = append(keep, l)
		}
	}
	return string(tail([]byte(strings.Join(keep, "\n")), n))
}

// Member returns the member with that name, nil when there is none.
func (rs *ReplicaSet) Member(name string) *MongoMember {
	for _, m := range rs.Members {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// Link is the link member from dials to reach member to (nil without
// ReplicaSetOptions.Links).
func (rs *ReplicaSet) Link(from, to *MongoMember) *Link {
	return rs.links[[2]string{from.Name, to.Name}]
}

// Isolate cuts every link to and from m (Links only): the other members
// cannot reach it nor it them; clients still can.
func (rs *ReplicaSet) Isolate(m *MongoMember) error {
	if len(rs.links) == 0 {
		return errors.New("isolate: the set was started without Links")
	}
	for k, l := range rs.links {
		if k[0] == m.Name || k[1] == m.Name {
			l.Cut()
		}
	}
	return nil
}

// Heal restores every cut link.
func (rs *ReplicaSet) Heal() error {
	var errs []error
	for _, l := range rs.links {
		if err := l.Restore(); err != nil && !strings.Contains(err.Error(), "already") {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// URI is a replicaSet= URI listing every member.
func (rs *ReplicaSet) URI() string {
	hosts := make([]string, len(rs.Members))
	for i, m := range rs.Members {
		hosts[i] = m.Addr()
	}
	uri := "mongodb://" + strings.Join(hosts, ",") + "/?replicaSet=" + rs.Name
	if rs.opts.TLS != nil {
		uri += tlsParams(rs.opts.TLS.CAFile)
	}
	return uri
}

// ClientOptions are driver options for the whole set with timeouts short
// enough for tests.
func (rs *ReplicaSet) ClientOptions() *options.ClientOptions {
	return options.Client().ApplyURI(rs.URI()).
		SetServerSelectionTimeout(5 * time.Second).
		SetConnectTimeout(2 * time.Second).
		SetHeartbeatInterval(500 * time.Millisecond)
}

// Command runs cmd in the admin database of one member (a direct
// connection) and returns the reply; a reply with ok: 0 is an error (a
// mongo.CommandError).
func (m *MongoMember) Command(ctx context.Context, cmd bson.D) (bson.Raw, error) {
	cl, err := mongo.Connect(m.ClientOptions())
	if err != nil {
		return nil, fmt.Errorf("%s: connect: %w", m.Name, err)
	}
	defer func() { _ = cl.Disconnect(context.Background()) }()
	reply, err := cl.Database("admin").RunCommand(ctx, cmd).Raw()
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", m.Name, cmd[0].Key, err)
	}
	return reply, nil
}

// Primary asks every running member once and returns the one that says
// it is the writable primary (the newest electionId when more than one
// does, as drivers choose); ErrNoPrimary when none does.
func (rs *ReplicaSet) Primary(ctx context.Context) (*MongoMember, error) {
	var best *MongoMember
	var bestID bson.ObjectID
	for _, m := range rs.Members {
		if !m.Running() || m.Arbiter {
			continue
		}
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		h, err := m.Hello(hctx)
		cancel()
		if err != nil {
			continue
		}
		if w, _ := h.Lookup("isWritablePrimary").BooleanOK(); !w {
			continue
		}
		id, _ := h.Lookup("electionId").ObjectIDOK()
		if best == nil || bytes.Compare(id[:], bestID[:]) > 0 {
			best, bestID = m, id
		}
	}
	if best == nil {
		return nil, ErrNoPrimary
	}
	return best, nil
}

// WaitPrimary polls until a member is primary, within d.
func (rs *ReplicaSet) WaitPrimary(ctx context.Context, d time.Duration) (*MongoMember, error) {
	var p *MongoMember
	err := poll(ctx, d, func() (bool, error) {
		var err error
		p, err = rs.Primary(ctx)
		return err == nil, err
	})
	if err != nil {
		return nil, fmt.Errorf("replica set %s: wait for a primary: %w", rs.Name, err)
	}
	return p, nil
}

// Status is replSetGetStatus on m.
func (rs *ReplicaSet) Status(ctx context.Context, m *MongoMember) (bson.Raw, error) {
	return m.Command(ctx, bson.D{{Key: "replSetGetStatus", Value: 1}})
}

// PauseReplication stops (true) or resumes (false) m's replication: a
// paused secondary pulls nothing, so it neither applies nor acknowledges.
func (rs *ReplicaSet) PauseReplication(ctx context.Context, m *MongoMember, paused bool) error {
	if rs.opts.RealMongod {
		mode := "off"
		if paused {
			mode = "alwaysOn"
		}
		_, err := m.Command(ctx, bson.D{{Key: "configureFailPoint", Value: "stopReplProducer"}, {Key: "mode", Value: mode}})
		return err
	}
	_, err := m.Command(ctx, bson.D{{Key: "rssimControl", Value: 1}, {Key: "pauseReplication", Value: paused}})
	return err
}

// SetApplyDelay makes m apply each entry no sooner than d after the
// primary wrote it (0: as soon as it arrives). Simulated members only.
func (rs *ReplicaSet) SetApplyDelay(ctx context.Context, m *MongoMember, d time.Duration) error {
	if rs.opts.RealMongod {
		return errors.New("set apply delay: not supported on real mongod members (reconfigure secondaryDelaySecs instead)")
	}
	_, err := m.Command(ctx, bson.D{{Key: "rssimControl", Value: 1}, {Key: "applyDelayMS", Value: d.Milliseconds()}})
	return err
}

// Close stops every member and link and removes the work dir it created.
func (rs *ReplicaSet) Close() error {
	stopAll(procs(rs.Members))
	for _, l := range rs.links {
		l.Close()
	}
	if rs.ownDir {
		if err := os.RemoveAll(rs.dir); err != nil {
			return fmt.Errorf("remove replica set work dir: %w", err)
		}
	}
	return nil
}

// Dir is the set's work dir.
func (rs *ReplicaSet) Dir() string { return rs.dir }

// ---- real mongod (only where mongod is installed; not tested here) ----

// startMongod starts mongod --replSet members and initiates the set with
// the options' timings; the arbiter is arbiterOnly.
func (rs *ReplicaSet) startMongod(ctx context.Context) error {
	bin, err := exec.LookPath("mongod")
	if err != nil {
		return fmt.Errorf("RealMongod: mongod not found on PATH: %w", err)
	}
	if rs.opts.Links {
		return errors.New("RealMongod: Links are not supported (mongod members advertise the addresses they are configured with)")
	}
	if rs.opts.TLS != nil {
		return errors.New("RealMongod: TLS is not supported (it is the simulated members' option)")
	}
	if err := rs.newMembers(bin); err != nil {
		return err
	}
	for _, m := range rs.Members {
		m.args = []string{"--replSet", rs.Name, "--port", strconv.Itoa(m.Port), "--bind_ip", "127.0.0.1",
			"--dbpath", m.DataDir, "--setParameter", "enableTestCommands=1"}
	}
	if err := startAll(ctx, procs(rs.Members), rs.opts.Log); err != nil {
		return err
	}
	var members bson.A
	for i, m := range rs.Members {
		md := bson.D{{Key: "_id", Value: i}, {Key: "host", Value: m.Addr()}}
		if m.Arbiter {
			md = append(md, bson.E{Key: "arbiterOnly", Value: true})
		}
		if tags := rs.opts.Tags[m.Name]; len(tags) > 0 {
			md = append(md, bson.E{Key: "tags", Value: tags})
		}
		members = append(members, md)
	}
	cfg := bson.D{{Key: "_id", Value: rs.Name}, {Key: "members", Value: members}, {Key: "settings", Value: bson.D{
		{Key: "electionTimeoutMillis", Value: rs.opts.ElectionTimeout.Milliseconds()},
		{Key: "heartbeatIntervalMillis", Value: rs.opts.Heartbeat.Milliseconds()}}}}
	if _, err := rs.Members[0].Command(ctx, bson.D{{Key: "replSetInitiate", Value: cfg}}); err != nil {
		return fmt.Errorf("replSetInitiate: %w", err)
	}
	return nil
}
