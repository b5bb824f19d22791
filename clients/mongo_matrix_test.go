package clients_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/config"
	"github.com/dbrouter/dbrouter/daemon"
)

// The Mongo client matrix: real MongoDB drivers, each at its default
// settings, through a routerd serving a kind mongodb cluster (daemon.Run
// from a config file's YAML, no control plane) in front of FerretDB
// members (chaos.StartMongoT). The clients authenticate at the proxy with
// SCRAM-SHA-256 and a URI an application would write:
// mongodb://app:PASSWORD@127.0.0.1:PORT/?authSource=admin.
//
// The programs speak the protocol of the package doc ("ok CHECK", "fail
// CHECK: why", "info ..."), take the mode as their argument, and find the
// proxy, the account, their own database and a collection prefix in
// DBR_HOST, DBR_PORT, DBR_USER, DBR_PASSWORD, DBR_DATABASE and DBR_TABLE.

// The matrix's account at the proxy.
const (
	mongoUser     = "app"
	mongoPassword = "app-s3cret"
)

// Sizes the checks use; the programs in python/ and node/ use the same.
const (
	mongoCursorDocs     = 10000
	mongoInsertManyDocs = 100000
)

// mongoPhase is one pass of the matrix: every client runs its program in
// one mode, which reports the phase's checks; verify then checks, on the
// members directly, what a client reported as done. Checks that need the
// test to act while the clients run (promote: a planned switchover;
// retryable: a member connection broken under a write) get a phase of
// their own with a hook for that action; the others (read_preference,
// transaction) join the workload mode.
type mongoPhase struct {
	mode   string
	checks []string
	verify map[string]func(ctx context.Context, e *mongoEnv, tg target) error
}

var mongoPhases = []mongoPhase{
	{
		mode: "workload",
		// connect: the driver connects, authenticates and lists its
		// database's collections (a command the proxy's auth gate refuses
		// before authentication; ping it allows). crud: insert, find,
		// update, delete with their results checked. cursor: a
		// 10,000-document find read with getMore at the driver's default
		// batch size, every document seen exactly once. insert_many:
		// 100,000 documents in one insertMany call. errors: a duplicate key
		// is code 11000 as the driver's typed error.
		checks: []string{"connect", "crud", "cursor", "insert_many", "errors"},
		verify: map[string]func(ctx context.Context, e *mongoEnv, tg target) error{
			"insert_many": func(ctx context.Context, e *mongoEnv, tg target) error {
				return e.countOnPrimary(ctx, tg.database, tg.table+"_many", mongoInsertManyDocs)
			},
		},
	},
}

// mongoAllChecks is every phase's checks, in the order the matrix reports
// them.
func mongoAllChecks() []string {
	var all []string
	for _, p := range mongoPhases {
		all = append(all, p.checks...)
	}
	return all
}

func mongoMatrix() []*client {
	return []*client{goMongoDriver(), pyMongo(), nodeMongo()}
}

// mongoEnv is the deployment the matrix runs against.
type mongoEnv struct {
	members *chaos.MongoCluster
	listen  string // the routerd's Mongo listener
}

// countOnPrimary checks, on the member writes go to and not through the
// proxy, that db.coll holds want documents. (With one member it is the
// first; the member simulator's primary later.)
func (e *mongoEnv) countOnPrimary(ctx context.Context, db, coll string, want int64) error {
	cl, err := mongo.Connect(e.members.Members[0].ClientOptions())
	if err != nil {
		return err
	}
	defer func() { _ = cl.Disconnect(context.Background()) }()
	n, err := cl.Database(db).Collection(coll).CountDocuments(ctx, bson.D{})
	if err != nil {
		return fmt.Errorf("count %s.%s on %s: %w", db, coll, e.members.Members[0].Name, err)
	}
	if n != want {
		return fmt.Errorf("%s.%s on %s holds %d documents, want %d", db, coll, e.members.Members[0].Name, n, want)
	}
	return nil
}

// mongoURI is the URI an application writes for the proxy: the account,
// escaped as a URI needs it, and authSource=admin (the proxy's users are
// admin's).
func mongoURI(tg target) string {
	u := url.URL{Scheme: "mongodb", User: url.UserPassword(tg.user, tg.password), Host: tg.addr(), Path: "/", RawQuery: "authSource=admin"}
	return u.String()
}

// TestMongoClientMatrix runs every Mongo client of the matrix, at its
// default settings, through a routerd's Mongo proxy: each client's
// workload, one client after another, every check a subtest named
// client/check.
func TestMongoClientMatrix(t *testing.T) {
	began := time.Now()
	// A bound for a loaded machine; the matrix takes well under a minute on
	// an idle one.
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	res := &results{m: map[string]map[string]string{}}
	clients := installed(mongoMatrix(), res)
	// In a subtest, so that a fatal step still leaves the matrix reported
	// (and the members and the routerd stopped) below.
	t.Run("deployment", func(t *testing.T) { mongoPhasesRun(ctx, t, clients, res) })
	report(t, "mongo client matrix", res, mongoMatrix(), mongoAllChecks(), began)
}

func mongoPhasesRun(ctx context.Context, t *testing.T, clients []*client, res *results) {
	e := &mongoEnv{members: chaos.StartMongoT(t, 1)}
	e.listen = startMongoRouter(ctx, t, e.members)
	host, port, err := net.SplitHostPort(e.listen)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	targets := map[string]target{}
	for _, c := range clients {
		// A database per client: FerretDB keeps each in its own SQLite
		// file, so no client waits on another's writes.
		targets[c.name] = target{host: host, port: port, user: mongoUser, password: mongoPassword,
			database: "mx_" + strings.ReplaceAll(c.name, "-", "_"), table: "mx", stopFile: filepath.Join(dir, "stop")}
	}
	clients = setUp(ctx, t, clients, dir, res)
	for _, p := range mongoPhases {
		phase := time.Now()
		for _, c := range clients {
			checks := only(c, p.checks)
			if len(checks) == 0 {
				continue
			}
			began := time.Now()
			start(ctx, t, c, p.mode, targets[c.name], res).finish(res, checks)
			ran := time.Since(began)
			for _, ch := range checks {
				v := p.verify[ch]
				if why, _ := res.get(c.name, ch); v == nil || why != "" {
					continue
				}
				if err := v(ctx, e, targets[c.name]); err != nil {
					res.set(c.name, ch, "verified on the member: "+err.Error())
				}
			}
			t.Logf("%s %s: %s", c.name, p.mode, ran.Round(time.Millisecond))
		}
		t.Logf("%s phase: %s", p.mode, time.Since(phase).Round(time.Millisecond))
	}
}

// startMongoRouter runs a routerd as cmd/routerd does (daemon.Run from a
// config file's YAML) with one kind mongodb cluster in front of the
// members, authenticating the matrix's user, and stops it when the test
// ends. It returns the cluster's listener.
func startMongoRouter(ctx context.Context, t *testing.T, mc *chaos.MongoCluster) string {
	t.Helper()
	var ports [2]int
	for i := range ports {
		p, err := chaos.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = p
	}
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	adminAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	var members strings.Builder
	for _, m := range mc.Members {
		fmt.Fprintf(&members, "      - {name: %s, addr: %q}\n", m.Name, m.Addr())
	}
	yaml := fmt.Sprintf(`role: proxy
admin: {listen: %q}
clusters:
  - name: mx
    kind: mongodb
    listen: %q
    users: [{name: %s, password: %q}]
    members:
%s`, adminAddr, listen, mongoUser, mongoPassword, members.String())
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("routerd config: %v\n%s", err, yaml)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	ready := make(chan struct{})
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	go func() { done <- daemon.Run(runCtx, cfg, log, daemon.Options{Ready: func(string) { close(ready) }}) }()
	select {
	case <-ready:
	case err := <-done:
		stop()
		t.Fatalf("routerd: %v", err)
	case <-time.After(30 * time.Second):
		stop()
		<-done
		t.Fatal("routerd: not ready within 30 s")
	}
	// Registered after the members' clean-up, so it runs before it: the
	// proxy goes first.
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("routerd: %v", err)
		}
	})
	return listen
}
