package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/config"
)

// TestRouterdConfigParses: every file the sandbox writes is one routerd
// accepts (bench/run.sh starts its raw-* proxies from p1's), so a config
// change that breaks them fails here rather than at `make run`.
func TestRouterdConfigParses(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &chaos.Cluster{Members: []*chaos.Member{{Name: "db1", Port: 3306}, {Name: "db2", Port: 3307}, {Name: "db3", Port: 3308}}}
	addrs := []string{c.Members[0].Addr(), c.Members[1].Addr(), c.Members[2].Addr()}
	sites := []string{"local", "local", "remote"}
	nodes := []*node{
		{name: "a1", role: "arbiter", admin: "127.0.0.1:7081", raft: "127.0.0.1:7301"},
		{name: "a2", role: "arbiter", admin: "127.0.0.1:7082", raft: "127.0.0.1:7302"},
		{name: "a3", role: "arbiter", admin: "127.0.0.1:7083", raft: "127.0.0.1:7303"},
		{name: "p1", role: "proxy", admin: "127.0.0.1:7080", raft: "127.0.0.1:7311", listen: "127.0.0.1:6033", mongoListen: "127.0.0.1:27017"},
	}
	rs := &chaos.ReplicaSet{Name: "rs0", Members: []*chaos.MongoMember{{Name: "db1", Port: 27101}, {Name: "db2", Port: 27102}, {Name: "db3", Port: 27103}}}
	for _, n := range nodes {
		cfg, err := config.Parse([]byte(routerdConfig(c, rs, n, nodes, addrs, sites, secret)))
		if err != nil {
			t.Fatalf("%s: %v", n.name, err)
		}
		if k := cfg.Clusters[0].Kind; k != config.KindMariaDB {
			t.Errorf("%s: kind %q, want %q", n.name, k, config.KindMariaDB)
		}
		// Every node has the replica set too (the proxies on their Mongo
		// listener): the control plane governs it.
		if len(cfg.Clusters) != 2 {
			t.Fatalf("%s: %d clusters, want 2", n.name, len(cfg.Clusters))
		}
		m := cfg.Clusters[1]
		if m.Kind != config.KindMongoDB || m.Listen != n.mongoListen || m.MongoDB.ReplicaSet != "rs0" || len(m.Members) != 3 || m.Members[2].Addr != "127.0.0.1:27103" {
			t.Fatalf("%s: mongo cluster %+v", n.name, m)
		}
	}
}
