package mongo

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"

	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
	"github.com/dbrouter/dbrouter/topology"
)

// metric sums the series of name on reg whose labels include want: a
// counter's or gauge's value, a histogram's sample count.
func metric(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for k, v := range want {
				if !hasLabel(m, k, v) {
					continue series
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// TestMetricsCountWhatTheProxyDid: the Mongo proxy exports the proxy
// metrics of docs/admin.md, under the MySQL proxy's names and labels, and
// they move with what clients do: writes and primary reads on the primary,
// secondary reads on a replica, a cursor's getMore on its pinned
// connection (and the cursor in dbrouter_pinned_sessions while open), a
// read no member may serve as an error of its kind, a wrong password, a
// malformed frame. Before, the Mongo proxy exported none of them.
func TestMetricsCountWhatTheProxyDid(t *testing.T) {
	mc, ft := routedSet(t, 2) // m0 primary, m1 secondary
	reg := prometheus.NewRegistry()
	cfg := Config{Cluster: "c1", Topology: ft, Users: testUsers}
	for _, m := range mc.Members {
		cfg.Members = append(cfg.Members, Member{Name: m.Name, Addr: m.Addr()})
	}
	addr, _ := startProxyReg(t, cfg, reg)
	ctx := testCtx(t)
	primary, secondary := mc.Members[0].Name, mc.Members[1].Name
	c1 := map[string]string{"cluster": "c1"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{"cluster": "c1"}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	type want struct {
		name   string
		labels map[string]string
		min    float64 // at least
		max    float64 // at most (-1: no bound)
	}
	check := func(step string, ws ...want) {
		t.Helper()
		for _, w := range ws {
			got := metric(t, reg, w.name, w.labels)
			if got < w.min || w.max >= 0 && got > w.max {
				t.Errorf("%s: %s%v = %v, want within [%v, %v]", step, w.name, w.labels, got, w.min, w.max)
			}
		}
	}
	check("before any client",
		want{"dbrouter_client_sessions", c1, 0, 0},
		want{"dbrouter_queries_total", c1, 0, 0},
		want{"dbrouter_backend_connections", with("member", primary, "state", "open"), 0, 0},
		want{"dbrouter_pinned_sessions", with("reason", "cursor"), 0, 0},
		want{"dbrouter_pinned_sessions", with("reason", "transaction"), 0, 0},
		want{"dbrouter_auth_failures_total", c1, 0, 0},
		want{"dbrouter_client_protocol_errors_total", c1, 0, 0})

	// Not connect's: these clients leave before the test ends, to see
	// the sessions gauge fall.
	dial := func(uri string) *mongo.Client {
		c, err := mongo.Connect(options.Client().ApplyURI(uri).SetServerSelectionTimeout(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
		return c
	}
	client := dial("mongodb://alice:s3cret%20pass@" + addr + "/?authSource=admin")
	db := client.Database("app")
	docs := make([]any, 5)
	for i := range docs {
		docs[i] = bson.D{{Key: "_id", Value: i}, {Key: "n", Value: i}}
	}
	if _, err := db.Collection("m").InsertMany(ctx, docs); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Collection("m").UpdateOne(ctx, bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "$set", Value: bson.D{{Key: "n", Value: 10}}}}); err != nil {
		t.Fatal(err)
	}
	check("after two writes",
		want{"dbrouter_queries_total", with("member", primary, "route", "routed"), 2, -1},
		want{"dbrouter_query_duration_seconds", with("route", "primary", "kind", "write"), 2, -1},
		want{"dbrouter_query_duration_seconds", with("route", "replica"), 0, 0},
		want{"dbrouter_client_sessions", c1, 1, -1},
		want{"dbrouter_backend_connections", with("member", primary, "state", "open"), 1, -1})

	// A secondary read: the marker document of m1.
	var marker struct{ Member string }
	sec := client.Database("app", options.Database().SetReadPreference(readpref.Secondary()))
	if err := sec.Collection("marker").FindOne(ctx, bson.D{{Key: "_id", Value: 1}}).Decode(&marker); err != nil || marker.Member != secondary {
		t.Fatalf("secondary read: %+v, %v", marker, err)
	}
	check("after a secondary read",
		want{"dbrouter_queries_total", with("member", secondary, "route", "routed"), 1, 1},
		want{"dbrouter_query_duration_seconds", with("route", "replica", "kind", "read"), 1, 1},
		want{"dbrouter_query_duration_seconds", with("route", "primary", "kind", "read"), 0, 0})

	// A cursor: 5 documents in batches of 2 from the primary.
	cur, err := db.Collection("m").Find(ctx, bson.D{}, options.Find().SetBatchSize(2))
	if err != nil {
		t.Fatal(err)
	}
	check("with a cursor open",
		want{"dbrouter_pinned_sessions", with("reason", "cursor"), 1, 1},
		want{"dbrouter_query_duration_seconds", with("route", "primary", "kind", "read"), 1, 1})
	n := 0
	for cur.Next(ctx) {
		n++
	}
	if err := cur.Err(); err != nil || n != 5 {
		t.Fatalf("cursor read %d documents, %v; want 5", n, err)
	}
	_ = cur.Close(ctx)
	check("after the cursor ran out",
		want{"dbrouter_pinned_sessions", with("reason", "cursor"), 0, 0},
		want{"dbrouter_queries_total", with("member", primary, "route", "pinned"), 2, 3},
		want{"dbrouter_query_duration_seconds", with("route", "pinned", "kind", "read"), 2, 3})

	// A secondary read with no secondary left: the proxy's own error.
	ft.set(0, func(ms []topology.Member) { ms[1].Reachable, ms[1].Eligible = false, false })
	if err := sec.Collection("marker").FindOne(ctx, bson.D{{Key: "_id", Value: 1}}).Err(); err == nil || !strings.Contains(err.Error(), "DbrouterNoReplica") {
		t.Fatalf("secondary read without a secondary: %v, want DbrouterNoReplica", err)
	}
	check("after a read no member could serve",
		want{"dbrouter_errors_total", with("kind", "no_replica"), 1, 1},
		want{"dbrouter_errors_total", c1, 1, 1})

	// A wrong password, refused at the proxy.
	bad := dial("mongodb://alice:nope@" + addr + "/?authSource=admin")
	if err := bad.Ping(ctx, nil); err == nil {
		t.Fatal("wrong password: no error")
	}
	check("after a wrong password", want{"dbrouter_auth_failures_total", c1, 1, -1})

	// A frame the codec refuses (a length below the header's) closes the
	// session.
	rc := dialRaw(t, addr)
	rc.send(wire.AppendHeader(nil, wire.Header{MessageLength: 5, RequestID: 3, OpCode: wire.OpCodeMsg}))
	rc.wantClosed()
	if err := chaos.Poll(ctx, 5*time.Second, func() (bool, error) {
		return metric(t, reg, "dbrouter_client_protocol_errors_total", c1) == 1, nil
	}); err != nil {
		t.Errorf("dbrouter_client_protocol_errors_total after a malformed frame: %v, want 1",
			metric(t, reg, "dbrouter_client_protocol_errors_total", c1))
	}
	if err := client.Disconnect(context.Background()); err != nil {
		t.Fatal(err)
	}
	_ = bad.Disconnect(context.Background())
	if err := chaos.Poll(ctx, 5*time.Second, func() (bool, error) {
		return metric(t, reg, "dbrouter_client_sessions", c1) == 0, nil
	}); err != nil {
		t.Errorf("dbrouter_client_sessions after every client left: %v, want 0", metric(t, reg, "dbrouter_client_sessions", c1))
	}
}
