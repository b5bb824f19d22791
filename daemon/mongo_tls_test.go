package daemon

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.uber.org/zap/zaptest"

	"github.com/dbrouter/dbrouter/admin"
	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/config"
)

// TestMongoTLSFromConfig: a routerd whose kind mongodb cluster has tls:
// (require) and mongodb.member_tls serves TLS clients in front of members
// that listen with TLS only: a driver with the proxy's CA writes and reads,
// routerctl status names the primary. With member_tls naming another CA
// the status shows every member unreachable with the x509 reason.
func TestMongoTLSFromConfig(t *testing.T) {
	members := chaos.NewCertsT(t, "members")
	rs := chaos.StartReplicaSetT(t, chaos.ReplicaSetOptions{Members: 3, TLS: members})
	clients := chaos.NewCertsT(t, "clients")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// serve runs a routerd for the set with member_tls trusting ca; it
	// stops at the end of the test.
	serve := func(ca string) (listen, adminAddr string) {
		listen, adminAddr = addr(t), addr(t)
		in := fmt.Sprintf(`role: proxy
admin: {listen: %q}
clusters:
  - name: docs
    kind: mongodb
    listen: %q
    probe_interval: 100ms
    tls: {cert_file: %q, key_file: %q, require: true}
    mongodb: {member_tls: {ca_file: %q}}
    members:
`, adminAddr, listen, clients.CertFile, clients.KeyFile, ca)
		for _, m := range rs.Members {
			in += fmt.Sprintf("      - {name: %s, addr: %q}\n", m.Name, m.Addr())
		}
		cfg, err := config.Parse([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		ready := make(chan struct{})
		go func() { done <- Run(runCtx, cfg, zaptest.NewLogger(t), Options{Ready: func(string) { close(ready) }}) }()
		select {
		case <-ready:
		case err := <-done:
			t.Fatal(err)
		}
		t.Cleanup(func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		})
		return listen, adminAddr
	}
	status := func(adminAddr string, ok func(admin.ClusterStatus) bool) admin.ClusterStatus {
		t.Helper()
		var st admin.Status
		if err := chaos.Poll(ctx, 15*time.Second, func() (bool, error) {
			err := (&admin.Client{Addr: adminAddr}).Do(ctx, "GET", "/status", nil, &st)
			return err == nil && len(st.Clusters) == 1 && ok(st.Clusters[0]), nil
		}); err != nil {
			t.Fatalf("status never got there: %+v", st)
		}
		return st.Clusters[0]
	}

	listen, adminAddr := serve(members.CAFile)
	cs := status(adminAddr, func(c admin.ClusterStatus) bool { return c.Primary != "" })
	cl, err := mongo.Connect(options.Client().ApplyURI("mongodb://" + listen + "/?tls=true&tlsCAFile=" + url.QueryEscape(clients.CAFile)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cl.Disconnect(ctx) }()
	coll := cl.Database("shop").Collection("orders")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 7}, {Key: "item", Value: "tea"}}); err != nil {
		t.Fatalf("insert through the proxy (primary %s): %v", cs.Primary, err)
	}
	var got struct{ Item string }
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: 7}}).Decode(&got); err != nil || got.Item != "tea" {
		t.Fatalf("find through the proxy: %+v, %v", got, err)
	}

	// member_tls with the clients' CA, which did not sign the members'.
	_, adminAddr = serve(clients.CAFile)
	status(adminAddr, func(c admin.ClusterStatus) bool {
		for _, m := range c.Members {
			if m.Reachable || !strings.Contains(m.Error, "x509: certificate signed by unknown authority") {
				return false
			}
		}
		return len(c.Members) == 3
	})
}
