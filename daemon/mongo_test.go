package daemon

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/admin"
	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/config"
)

// A routerd whose config has a kind mongodb cluster serves it: a driver
// with its default settings authenticates at the proxy's listener and
// writes and reads a document on the replica set's member; the admin API
// shows the cluster with its kind and members; stopping it leaves no
// goroutine behind.
func TestMongoClusterServedFromConfig(t *testing.T) {
	mc := chaos.StartMongoT(t, 1)
	before := goleak.IgnoreCurrent()
	listen, adminAddr := addr(t), addr(t)
	yaml := fmt.Sprintf(`role: proxy
admin: {listen: %q}
clusters:
  - name: docs
    kind: mongodb
    listen: %q
    probe_interval: 100ms
    users: [{name: app, password: s3cret}]
    members:
      - {name: m1, addr: %q}
`, adminAddr, listen, mc.Members[0].Addr())
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() { done <- Run(runCtx, cfg, zap.NewNop(), Options{Ready: func(string) { close(ready) }}) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			stop()
			<-done
		}
	}()

	cl, err := mongo.Connect(options.Client().ApplyURI("mongodb://app:s3cret@" + listen + "/?authSource=admin"))
	if err != nil {
		t.Fatal(err)
	}
	coll := cl.Database("shop").Collection("orders")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 7}, {Key: "item", Value: "tea"}}); err != nil {
		t.Fatalf("insert through the proxy: %v", err)
	}
	var got struct{ Item string }
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: 7}}).Decode(&got); err != nil || got.Item != "tea" {
		t.Fatalf("find through the proxy: %+v, %v", got, err)
	}
	// A wrong password is refused at the proxy.
	bad, err := mongo.Connect(options.Client().ApplyURI("mongodb://app:wrong@" + listen + "/?authSource=admin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Ping(ctx, nil); err == nil || !strings.Contains(err.Error(), "Authentication failed") {
		t.Fatalf("wrong password: %v, want an authentication failure", err)
	}
	_ = bad.Disconnect(ctx)
	_ = cl.Disconnect(ctx)

	// The proxy's metrics are on routerd's /metrics, as a MySQL
	// cluster's are: the insert and the find went to m1, the wrong
	// password was counted.
	metrics := scrape(t, ctx, adminAddr)
	for _, want := range []string{
		`dbrouter_queries_total{cluster="docs",member="m1",route="routed"} `,
		`dbrouter_query_duration_seconds_count{cluster="docs",kind="write",route="primary"} 1`,
		`dbrouter_query_duration_seconds_count{cluster="docs",kind="read",route="primary"} 1`,
		`dbrouter_auth_failures_total{cluster="docs"} `,
		`dbrouter_client_sessions{cluster="docs"} `,
		`dbrouter_backend_connections{cluster="docs",member="m1",state="open"} `,
		`dbrouter_pinned_sessions{cluster="docs",reason="cursor"} 0`,
		`dbrouter_errors_total{cluster="docs",kind="no_primary"} 0`,
	} {
		if !strings.Contains(metrics, "\n"+want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
	if strings.Contains(metrics, `dbrouter_auth_failures_total{cluster="docs"} 0`) {
		t.Error("/metrics: the wrong password was not counted")
	}

	var st admin.Status
	if err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
		err := (&admin.Client{Addr: adminAddr}).Do(ctx, "GET", "/status", nil, &st)
		return err == nil && len(st.Clusters) == 1 && len(st.Clusters[0].Members) == 1 && st.Clusters[0].Members[0].Reachable, nil
	}); err != nil {
		t.Fatalf("status never showed m1 reachable: %+v", st)
	}
	if c := st.Clusters[0]; c.Kind != config.KindMongoDB || c.Name != "docs" {
		t.Fatalf("status cluster %q kind %q", c.Name, c.Kind)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	stopped = true
	goleak.VerifyNone(t, before)
}

// scrape reads routerd's /metrics.
func scrape(t *testing.T, ctx context.Context, adminAddr string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+adminAddr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s, %v", resp.Status, err)
	}
	return string(b)
}
