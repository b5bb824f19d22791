package daemon_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/admin"
	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/chaos/deploy"
)

// TestMariaDBMemberTLSDeployment: arbiters and a proxy configured with
// member_tls in front of MariaDB members that refuse plaintext TCP clients
// (require_secure_transport=ON). Writes go through the proxy under a
// writer's load; a switchover (the arbiters' fence, catch-up, open and
// repoints, all over TLS) moves the primary with no client error, and the
// old primary replicates from the new one (over TLS: its source refuses
// anything else). A routerd whose member_tls names another CA shows every
// member unreachable, with the x509 reason in its status.
func TestMariaDBMemberTLSDeployment(t *testing.T) {
	members := chaos.NewCertsT(t, "members")
	other := chaos.NewCertsT(t, "other")
	d := start(t, deploy.Options{Proxies: 1, MariaDBTLS: members, Cluster: fmt.Sprintf("    member_tls: {ca_file: %q}\n", members.CAFile)})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := proxyDB(t, d, 0)
	exec(t, db, "CREATE TABLE tls_w (id INT PRIMARY KEY)")
	if err := d.WaitHealthyOnLeader(ctx, "db2", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	w := deploy.StartWriter(ctx, db, "tls_w", 1, false)
	poll(t, 20*time.Second, "writes start", func() bool { return w.Acked() > 50 })
	// The arbiters give each replica their heartbeat period once, soon
	// after they start (STOP SLAVE, CHANGE MASTER, START SLAVE): a
	// switchover asked in that window is refused as "not replicating".
	var err error
	poll(t, 20*time.Second, "promote accepted", func() bool {
		err = d.Promote(ctx, 0, "db2", 30*time.Second)
		return err == nil || !strings.Contains(err.Error(), "is not replicating")
	})
	if err != nil {
		t.Fatalf("promote over TLS: %v", err)
	}
	n := w.Acked()
	poll(t, 20*time.Second, "writes continue after the switchover", func() bool { return w.Acked() > n+50 })
	acked, _, errs := w.Finish()
	for _, e := range errs {
		t.Error("client saw an error during the switchover: " + e)
	}
	if wr := d.WritableMembers(ctx); len(wr) != 1 || wr[0] != "db2" {
		t.Fatalf("writable members %v, want only db2", wr)
	}
	if lost := missing(t, d, "db2", "tls_w", acked); len(lost) > 0 {
		t.Fatalf("lost writes %v", lost)
	}
	waitStatus(t, d, 20*time.Second, "db1 replicates from db2", func(st []admin.Status) bool {
		for _, s := range st {
			if len(s.Clusters) == 0 || s.Clusters[0].Primary != "db2" {
				return false
			}
			for _, m := range s.Clusters[0].Members {
				if m.Name == "db1" && (!m.Healthy || m.Role != "replica") {
					return false
				}
			}
		}
		return true
	})

	// A proxy trusting another CA: each member unreachable, with the reason.
	adminAddr := freeAddr(t)
	in := fmt.Sprintf("role: proxy\nadmin: {listen: %q}\nclusters:\n  - name: app\n    listen: %q\n    probe_interval: 100ms\n    member_tls: {ca_file: %q}\n    monitor: {user: %s, password: %s}\n    users: [{name: %s, password: %s}]\n    members:\n",
		adminAddr, freeAddr(t), other.CAFile, chaos.AdminUser, chaos.AdminPassword, chaos.AppUser, chaos.AppPassword)
	for _, m := range d.DB.Members {
		in += fmt.Sprintf("      - {name: %s, addr: %q}\n", m.Name, m.Addr())
	}
	wrongCAShowsX509(t, ctx, in, adminAddr, len(d.DB.Members))
}
