package mongo

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
	"github.com/dbrouter/dbrouter/topology"
	tmongo "github.com/dbrouter/dbrouter/topology/mongo"
)

// tlsProxy starts a proxy forwarding to mc's first member (none: mc nil)
// with client TLS from a fresh CA; the proxy's log lines are observed.
func tlsProxy(t *testing.T, mc *chaos.MongoCluster, require bool, handshake time.Duration) (string, *chaos.Certs, *observer.ObservedLogs) {
	t.Helper()
	certs := chaos.NewCertsT(t, "proxy")
	srv, err := certs.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
	var members []Member
	if mc != nil {
		members = []Member{{Name: mc.Members[0].Name, Addr: mc.Members[0].Addr()}}
	}
	addr, _ := startProxyLog(t, Config{Cluster: "c1", Members: members,
		TLS: srv, RequireTLS: require, TLSHandshakeTimeout: handshake}, log)
	return addr, certs, logs
}

// tlsURI is the proxy's URI for a TLS client trusting certs' CA.
func tlsURI(addr string, certs *chaos.Certs) string {
	return "mongodb://" + addr + "/?tls=true&tlsCAFile=" + url.QueryEscape(certs.CAFile)
}

// crud runs an insert, a find and a delete through c.
func crud(ctx context.Context, c *mongo.Client, id int) error {
	coll := c.Database("app").Collection("tls")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "v", Value: "x"}}); err != nil {
		return err
	}
	var got bson.M
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&got); err != nil {
		return err
	}
	if got["v"] != "x" {
		return errors.New("find returned another document")
	}
	_, err := coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}})
	return err
}

// logged reports whether a line with msg has an error field containing
// reason.
func logged(logs *observer.ObservedLogs, msg, reason string) bool {
	for _, e := range logs.FilterMessage(msg).All() {
		if err, ok := e.ContextMap()["error"].(string); ok && strings.Contains(err, reason) {
			return true
		}
	}
	return false
}

// plainClient is the Go driver without TLS and with a short server
// selection, so a refused connection is an error in a second.
func plainClient(t *testing.T, addr string) *mongo.Client {
	t.Helper()
	c, err := mongo.Connect(options.Client().ApplyURI("mongodb://" + addr + "/").SetServerSelectionTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c
}

// TestClientTLS: with a certificate the proxy speaks TLS from the first
// byte. Under require a plaintext client is closed and the log says why;
// without it TLS and plaintext clients share the port (mongod's
// preferTLS), the first bytes telling them apart. The Go driver v2 and
// PyMongo 3.11 verify the proxy's certificate against the CA.
func TestClientTLS(t *testing.T) {
	mc := chaos.StartMongoT(t, 1)
	t.Run("require", func(t *testing.T) {
		addr, certs, logs := tlsProxy(t, mc, true, 0)
		ctx := testCtx(t)
		if err := crud(ctx, connect(t, tlsURI(addr, certs)), 1); err != nil {
			t.Fatalf("CRUD over TLS: %v", err)
		}
		err := plainClient(t, addr).Ping(ctx, nil)
		if err == nil {
			t.Fatal("a plaintext client was served under tls.require")
		}
		if !logged(logs, "client connection closed before its session", "plaintext client refused: tls.require is set") {
			t.Fatalf("no log line says a plaintext client was refused; logs: %v", logs.All())
		}
		r := runPyMongo(t, tlsURI(addr, certs), "5000", "crud")
		if r.Error != "" || r.Found != "ada" || r.Deleted != 1 || r.Batched != 1000 {
			t.Fatalf("PyMongo over TLS: %+v", r)
		}
	})
	t.Run("prefer", func(t *testing.T) {
		addr, certs, _ := tlsProxy(t, mc, false, 0)
		ctx := testCtx(t)
		if err := crud(ctx, connect(t, tlsURI(addr, certs)), 2); err != nil {
			t.Fatalf("CRUD over TLS: %v", err)
		}
		if err := crud(ctx, plainClient(t, addr), 3); err != nil {
			t.Fatalf("CRUD in plaintext on the same port: %v", err)
		}
	})
	t.Run("wrong CA", func(t *testing.T) {
		addr, _, _ := tlsProxy(t, mc, true, 0)
		other := chaos.NewCertsT(t, "other")
		c, err := mongo.Connect(options.Client().ApplyURI(tlsURI(addr, other)).SetServerSelectionTimeout(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Disconnect(context.Background()) }()
		if err := c.Ping(testCtx(t), nil); err == nil || !strings.Contains(err.Error(), "x509") {
			t.Fatalf("a client trusting another CA: %v, want an x509 error", err)
		}
	})
}

// TestClientTLSHandshakeDeadline: a client that connects and sends
// nothing is closed once the handshake timeout passes, with a log line;
// it does not hold a goroutine for ever.
func TestClientTLSHandshakeDeadline(t *testing.T) {
	for _, require := range []bool{true, false} {
		addr, _, logs := tlsProxy(t, nil, require, 300*time.Millisecond)
		nc, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = nc.Read(make([]byte, 1))
		nc.Close()
		if !errors.Is(err, io.EOF) {
			t.Fatalf("require %v: a silent client read %v, want EOF (closed by the proxy)", require, err)
		}
		if d := time.Since(began); d > 3*time.Second {
			t.Fatalf("require %v: closed after %s", require, d)
		}
		if got := logs.FilterMessage("client connection closed before its session").Len(); got != 1 {
			t.Fatalf("require %v: %d log lines about the closed client, want 1: %v", require, got, logs.All())
		}
	}
}

// TestMemberTLS: against members that listen with TLS only (mongod's
// requireTLS), the proxy's member pool, the monitor's probes and the
// arbiters' actions (tmongo.Actions) all work with the members' CA: the
// monitor names the primary, CRUD goes through the proxy, a step-up is
// run and followed. With another CA every one of them fails at once with
// the x509 reason (the monitor's probe_error, the pool's error), never a
// hang.
func TestMemberTLS(t *testing.T) {
	certs := chaos.NewCertsT(t, "members")
	rs := chaos.StartReplicaSetT(t, chaos.ReplicaSetOptions{Members: 3, ElectionTimeout: rsElectionTimeout, TLS: certs})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first, err := rs.WaitPrimary(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// TLS only: a plaintext client gets nothing from a member.
	plain, err := mongo.Connect(options.Client().ApplyURI("mongodb://" + first.Addr() + "/?directConnection=true").SetServerSelectionTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.Ping(ctx, nil); err == nil {
		t.Fatal("a TLS-only member answered a plaintext client")
	}
	_ = plain.Disconnect(ctx)

	// routed starts a monitor and a proxy reaching the members with tc.
	routed := func(tc *tls.Config) (string, *Proxy, *topology.Monitor) {
		var mcs []topology.MemberConfig
		var members []Member
		for _, m := range rs.Members {
			mcs = append(mcs, topology.MemberConfig{Name: m.Name, Addr: m.Addr()})
			members = append(members, Member{Name: m.Name, Addr: m.Addr()})
		}
		mon, err := tmongo.NewMonitor(tmongo.MonitorConfig{Cluster: "rs", Members: mcs, ReplicaSet: rs.Name,
			ProbeInterval: 100 * time.Millisecond, MaxReplicaLag: 5 * time.Second, TLS: tc}, zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		mctx, mcancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); mon.Run(mctx) }()
		t.Cleanup(func() { mcancel(); <-done })
		addr, px := startProxy(t, Config{Cluster: "rs", Members: members, Topology: mon, MemberTLS: tc,
			WriteHold: time.Second, MemberConnectTimeout: 2 * time.Second})
		return addr, px, mon
	}

	t.Run("right CA", func(t *testing.T) {
		addr, _, mon := routed(certs.ClientTLS())
		if err := chaos.Poll(ctx, 15*time.Second, func() (bool, error) {
			return mon.Snapshot().PrimaryName() == first.Name, nil
		}); err != nil {
			t.Fatalf("the monitor never named %s primary over TLS: %v; snapshot %+v", first.Name, err, mon.Snapshot().Members)
		}
		c := connect(t, "mongodb://"+addr+"/")
		if err := crud(ctx, c, 1); err != nil {
			t.Fatalf("CRUD through the proxy to TLS-only members: %v", err)
		}
		// The arbiters' actions: hello and a step-up of a secondary.
		act := &tmongo.Actions{TLS: certs.ClientTLS(), Timeout: 5 * time.Second}
		defer act.Close()
		var next *chaos.MongoMember
		for _, m := range rs.Members {
			if m != first {
				next = m
				break
			}
		}
		if _, err := act.Hello(ctx, next.Addr()); err != nil {
			t.Fatalf("arbiter's hello over TLS: %v", err)
		}
		if err := chaos.Poll(ctx, 15*time.Second, func() (bool, error) {
			// A secondary a heartbeat behind refuses; it catches up.
			return act.StepUp(ctx, next.Addr()) == nil, nil
		}); err != nil {
			t.Fatalf("arbiter's step-up of %s over TLS: %v", next.Name, err)
		}
		if err := chaos.Poll(ctx, 15*time.Second, func() (bool, error) {
			return mon.Snapshot().PrimaryName() == next.Name, nil
		}); err != nil {
			t.Fatalf("the monitor never followed the step-up to %s: %v", next.Name, err)
		}
		if err := chaos.Poll(ctx, 15*time.Second, func() (bool, error) {
			return crud(ctx, c, 2) == nil, nil
		}); err != nil {
			t.Fatalf("CRUD through the proxy after the step-up: %v", err)
		}
	})

	t.Run("wrong CA", func(t *testing.T) {
		other := chaos.NewCertsT(t, "other")
		_, px, mon := routed(other.ClientTLS())
		began := time.Now()
		if err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
			for _, m := range mon.Snapshot().Members {
				if !strings.Contains(m.ProbeError, "x509") {
					return false, nil
				}
			}
			return true, nil
		}); err != nil {
			t.Fatalf("members with another CA: probe errors %+v, want each to give the x509 reason: %v", mon.Snapshot().Members, err)
		}
		_, err := px.members[0].dial(ctx, poolKey{}, px.login)
		if err == nil || !strings.Contains(err.Error(), "x509: certificate signed by unknown authority") {
			t.Fatalf("the proxy's connection to a member with another CA: %v, want the x509 reason", err)
		}
		if d := time.Since(began); d > 5*time.Second {
			t.Fatalf("the x509 failures took %s: a wrong CA must fail at once, not time out", d)
		}
		act := &tmongo.Actions{TLS: other.ClientTLS(), Timeout: 2 * time.Second}
		defer act.Close()
		if _, err := act.Hello(ctx, first.Addr()); err == nil || !strings.Contains(err.Error(), "x509") {
			t.Fatalf("arbiter's hello with another CA: %v, want the x509 reason", err)
		}
	})
}

// TestPreferTLSServesPlaintextStartingWith0x16: without tls.require, a
// plaintext message whose length's low byte is 0x16 (a TLS record's type)
// is still served as plaintext: the sniff checks the ClientHello's shape
// (version bytes, handshake type), as mongod does, not one byte. A
// request's responseTo is 0, where a ClientHello has its version.
func TestPreferTLSServesPlaintextStartingWith0x16(t *testing.T) {
	addr, _, _ := tlsProxy(t, nil, false, time.Second)
	for _, size := range []int{0x116, 0x316} {
		c := dialRaw(t, addr)
		// hello with a padding string sized so that the message is size
		// bytes long.
		build := func(pad int) []byte {
			doc := bsoncore.NewDocumentBuilder().AppendInt32("hello", 1).AppendString("pad", strings.Repeat("x", pad)).
				AppendString("$db", "admin").Build()
			msg, err := wire.AppendOpMsg(nil, 1, 0, 0, doc)
			if err != nil {
				t.Fatal(err)
			}
			return msg
		}
		msg := build(0)
		msg = build(size - len(msg))
		if len(msg) != size || msg[0] != 0x16 {
			t.Fatalf("message of %d bytes, first byte %#x: want %d and 0x16", len(msg), msg[0], size)
		}
		c.id = 1
		c.send(msg)
		body := c.replyBody(wire.OpCodeMsg)
		if v, ok := wire.Lookup(body, "isWritablePrimary"); !ok || !v.Boolean() {
			t.Fatalf("size %d: hello reply %v, want isWritablePrimary true", size, body)
		}
	}
}
