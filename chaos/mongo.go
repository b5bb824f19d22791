package chaos

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
	bin     string

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
	cmd := exec.Command(m.bin, "-port", strconv.Itoa(m.Port), "-dir", m.DataDir)
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
// a driver talks to it as given and never goes looking for a replica set.
func (m *MongoMember) URI() string { return "mongodb://" + m.Addr() + "/?directConnection=true" }

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
