package daemon_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.uber.org/zap/zaptest"

	"github.com/dbrouter/dbrouter/admin"
	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/chaos/deploy"
	"github.com/dbrouter/dbrouter/config"
	"github.com/dbrouter/dbrouter/daemon"
)

// TestMongoTLSDeployment: arbiters and a proxy configured with
// mongodb.member_tls in front of members that listen with TLS only, the
// proxy with tls: require. A driver with the proxy's CA writes and reads;
// a switchover (the arbiters' hello, step-up and status reads, all over
// TLS) moves the primary and writes follow it. A routerd whose member_tls
// names another CA shows every member unreachable, the x509 reason in its
// status.
func TestMongoTLSDeployment(t *testing.T) {
	members := chaos.NewCertsT(t, "members")
	clients := chaos.NewCertsT(t, "clients")
	clientTLS := fmt.Sprintf("    tls: {cert_file: %q, key_file: %q, require: true}\n", clients.CertFile, clients.KeyFile)
	d := start(t, deploy.Options{Proxies: 1, Cluster: clientTLS,
		Mongo: &chaos.ReplicaSetOptions{Members: 3, ElectionTimeout: 10 * time.Second, TLS: members}})
	waitStatus(t, d, 20*time.Second, "the arbiters serve a primary", func(st []admin.Status) bool {
		return len(st[0].Clusters) > 0 && st[0].Clusters[0].Phase == "serving" && st[0].Clusters[0].Primary != ""
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	uri := "mongodb://" + d.Proxies[0].Listen + "/?tls=true&tlsCAFile=" + url.QueryEscape(clients.CAFile)
	cl, err := mongo.Connect(options.Client().ApplyURI(uri).SetServerSelectionTimeout(15 * time.Second).SetTimeout(20 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cl.Disconnect(context.Background()) }()
	coll := cl.Database("shop").Collection("orders")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatalf("insert through the proxy over TLS: %v", err)
	}
	plain, err := mongo.Connect(options.Client().ApplyURI("mongodb://" + d.Proxies[0].Listen + "/").SetServerSelectionTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.Ping(ctx, nil); err == nil {
		t.Fatal("a plaintext client was served under tls.require")
	}
	_ = plain.Disconnect(ctx)

	st, _ := leaderCluster(d.Statuses(), len(d.Arbiters))
	target := "db2"
	if st.Primary == target {
		target = "db3"
	}
	poll(t, 20*time.Second, "promote accepted", func() bool {
		err = d.Promote(ctx, 0, target, 20*time.Second)
		return err == nil || !strings.Contains(err.Error(), "cooldown")
	})
	if err != nil {
		t.Fatalf("promote %s over TLS: %v", target, err)
	}
	if p, err := d.RS.Primary(ctx); err != nil || p.Name != target {
		t.Fatalf("set primary %v (%v), want %s", p, err, target)
	}
	waitStatus(t, d, 10*time.Second, "every node serves the target", func(st []admin.Status) bool {
		for _, s := range st {
			if len(s.Clusters) == 0 || s.Clusters[0].Primary != target || s.Clusters[0].Phase != "serving" {
				return false
			}
		}
		return true
	})
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 2}}); err != nil {
		t.Fatalf("insert after the switchover: %v", err)
	}

	// A proxy trusting another CA: each member unreachable, with the reason.
	adminAddr := freeAddr(t)
	in := fmt.Sprintf("role: proxy\nadmin: {listen: %q}\nclusters:\n  - name: app\n    kind: mongodb\n    listen: %q\n    probe_interval: 100ms\n    mongodb: {member_tls: {ca_file: %q}}\n    members:\n",
		adminAddr, freeAddr(t), clients.CAFile)
	for _, m := range d.RS.Members {
		in += fmt.Sprintf("      - {name: %s, addr: %q}\n", m.Name, m.Addr())
	}
	wrongCAShowsX509(t, ctx, in, adminAddr, len(d.RS.Members))
}

func freeAddr(t *testing.T) string {
	t.Helper()
	p, err := chaos.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
}

// wrongCAShowsX509 runs a routerd from cfgYAML (a proxy whose member TLS
// trusts another CA, its admin API on adminAddr) and waits until its
// status shows every one of its members unreachable with the x509 reason.
func wrongCAShowsX509(t *testing.T, ctx context.Context, cfgYAML, adminAddr string, members int) {
	t.Helper()
	cfg, err := config.Parse([]byte(cfgYAML))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- daemon.Run(runCtx, cfg, zaptest.NewLogger(t), daemon.Options{}) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	var wrong admin.Status
	if err := chaos.Poll(ctx, 15*time.Second, func() (bool, error) {
		if err := (&admin.Client{Addr: adminAddr}).Do(ctx, "GET", "/status", nil, &wrong); err != nil || len(wrong.Clusters) != 1 {
			return false, nil
		}
		for _, m := range wrong.Clusters[0].Members {
			if m.Reachable || !strings.Contains(m.Error, "x509: certificate signed by unknown authority") {
				return false, nil
			}
		}
		return len(wrong.Clusters[0].Members) == members, nil
	}); err != nil {
		t.Fatalf("with another CA, status %+v: want every member unreachable with the x509 reason", wrong)
	}
}
