package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/proxy"
	"github.com/dbrouter/dbrouter/topology"
)

// fakeProxy is a cluster's proxy as the admin API sees it: counts.
type fakeProxy struct {
	sessions int
	conns    map[string]proxy.ConnStats
}

func (fakeProxy) Serve(context.Context, net.Listener) error { return nil }
func (f fakeProxy) Sessions() int                           { return f.sessions }
func (f fakeProxy) MemberConns() map[string]proxy.ConnStats { return f.conns }

func TestStatusJSONShape(t *testing.T) {
	snap := &topology.Snapshot{Cluster: "app", Primary: 0, Members: []topology.Member{
		{Name: "db1", Addr: "a:1", Reachable: true, Role: topology.RolePrimary, SemiSyncOn: true, Lag: 0, RTT: 1500 * time.Microsecond,
			SemiSyncWaitPoint: "AFTER_COMMIT", SemiSyncTimeout: 10 * time.Second},
		{Name: "db2", Addr: "a:2", Reachable: true, ReadOnly: true, Role: topology.RoleReplica, Eligible: true, Lag: 40 * time.Millisecond,
			SemiSyncWaitPoint: "AFTER_SYNC", SemiSyncTimeout: time.Second, SemiSyncReplica: true},
		{Name: "db3", Addr: "a:3", Role: topology.RoleUnknown, Lag: -1, ProbeError: "refused"},
	}}
	c := Cluster{Name: "app", Kind: "mysql", Snapshot: func() *topology.Snapshot { return snap }, Failover: 5 * time.Second,
		Proxy: fakeProxy{sessions: 4, conns: map[string]proxy.ConnStats{"db2": {Open: 3, Idle: 2}}}}
	rec := httptest.NewRecorder()
	New([]Cluster{c}, nil, prometheus.NewRegistry(), zap.NewNop()).Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/status", nil))
	var doc struct {
		Clusters []struct {
			Name, Kind, Primary, Phase string
			Epoch                      uint64
			Sessions                   int `json:"client_sessions"`
			Members                    []map[string]any
			Warnings                   []struct{ Member, Check, Message string }
		}
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	cl := doc.Clusters[0]
	if cl.Name != "app" || cl.Kind != "mysql" || cl.Primary != "db1" || cl.Phase != "serving" || cl.Sessions != 4 || len(cl.Members) != 3 {
		t.Fatalf("%+v", cl)
	}
	for _, k := range []string{"name", "addr", "role", "healthy", "lag_ms", "rtt_ms"} {
		if _, ok := cl.Members[0][k]; !ok {
			t.Errorf("member lacks %q", k)
		}
	}
	// Durability: db1 commits visibly before a replica has it, db2 would
	// fall back to async before a failover is done.
	var warned []string
	for _, w := range cl.Warnings {
		warned = append(warned, w.Member+"/"+w.Check)
		if w.Message == "" {
			t.Errorf("warning without a message: %+v", w)
		}
	}
	if fmt.Sprint(warned) != "[db1/semi_sync_wait_point db2/semi_sync_master_timeout]" {
		t.Errorf("warnings %v", warned)
	}
	m1, m2, m3 := cl.Members[0], cl.Members[1], cl.Members[2]
	if m1["semi_sync"] != "off (fell back to async)" || m1["rtt_ms"] != 1.5 || m1["healthy"] != true {
		t.Errorf("primary %v", m1)
	}
	if m2["lag_ms"] != 40.0 || m2["backend_connections"] != 3.0 || m2["backend_connections_idle"] != 2.0 || m2["healthy"] != true {
		t.Errorf("replica %v", m2)
	}
	if m3["lag_ms"] != -1.0 || m3["healthy"] != false || m3["error"] != "refused" || m3["role"] != "unknown" {
		t.Errorf("unreachable %v", m3)
	}
}

// A replica set's status says nothing about semi-sync (MariaDB's): its
// primary never has it, and "semi-sync disabled" would be a false alarm.
func TestReplicaSetStatusHasNoSemiSync(t *testing.T) {
	snap := &topology.Snapshot{Cluster: "docs", Primary: 0, Members: []topology.Member{
		{Name: "m1", Addr: "a:1", Reachable: true, Role: topology.RolePrimary},
		{Name: "m2", Addr: "a:2", Reachable: true, ReadOnly: true, Role: topology.RoleReplica, Eligible: true},
	}}
	for _, kind := range []string{"mongodb", "mariadb"} {
		c := Cluster{Name: "docs", Kind: kind, Snapshot: func() *topology.Snapshot { return snap }}
		rec := httptest.NewRecorder()
		New([]Cluster{c}, nil, prometheus.NewRegistry(), zap.NewNop()).Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/status", nil))
		var doc struct {
			Clusters []struct {
				SemiSync string `json:"semi_sync"`
			}
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"mongodb": "", "mariadb": "disabled"}[kind]
		if got := doc.Clusters[0].SemiSync; got != want {
			t.Errorf("kind %s: semi_sync %q, want %q", kind, got, want)
		}
	}
}
