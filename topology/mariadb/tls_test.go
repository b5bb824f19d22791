package mariadb_test

import (
	"context"
	"crypto/tls"
	"database/sql"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/topology"
	"github.com/dbrouter/dbrouter/topology/mariadb"
)

// startTLSMonitor runs a monitor whose probes use tc (nil: plaintext).
func startTLSMonitor(t *testing.T, c *chaos.Cluster, tc *tls.Config) *topology.Monitor {
	t.Helper()
	var ms []topology.MemberConfig
	for _, m := range c.Members {
		ms = append(ms, topology.MemberConfig{Name: m.Name, Addr: m.Addr()})
	}
	mon, err := mariadb.NewMonitor(mariadb.MonitorConfig{Cluster: "t", Members: ms, User: chaos.AdminUser, Password: chaos.AdminPassword,
		ProbeInterval: probe, MaxReplicaLag: time.Second, HeartbeatID: t.Name(), TLS: tc}, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); mon.Run(ctx) }()
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { cancel(); <-done }) })
	return mon
}

// TestMemberTLSProbesAndActions: against members that refuse plaintext TCP
// clients (require_secure_transport=ON), the monitor's probes and the
// arbiters' steps work with member_tls, a replica repointed under it
// replicates over TLS, and with a CA that did not sign the members'
// certificates every probe and step fails within its timeout, saying why
// (x509), instead of hanging or falling back to plaintext.
func TestMemberTLSProbesAndActions(t *testing.T) {
	certs := chaos.NewCertsT(t, "members")
	other := chaos.NewCertsT(t, "other")
	c := chaos.StartT(t, chaos.Options{Members: 2, TLS: certs})
	db1, db2 := c.Members[0], c.Members[1]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("plaintext is refused", func(t *testing.T) {
		// The harness's members are TLS-only, so what passes below passes
		// over TLS. MariaDB 10.11 refuses a plaintext login under
		// require_secure_transport as a wrong password (1045), though the
		// password is right.
		mon := startTLSMonitor(t, c, nil)
		waitFor(t, mon, 5*time.Second, "a plaintext probe refused", func(s *topology.Snapshot) bool {
			return strings.Contains(s.Members[0].ProbeError, "Error 1045") && !s.Members[0].Reachable
		})
	})

	t.Run("monitor", func(t *testing.T) {
		mon := startTLSMonitor(t, c, certs.ClientTLS())
		waitFor(t, mon, 5*time.Second, "both members probed over TLS", func(s *topology.Snapshot) bool {
			return s.PrimaryName() == db1.Name && s.Members[1].Reachable && s.Members[1].IORunning && s.Members[1].SQLRunning
		})
	})

	t.Run("actions", func(t *testing.T) {
		a := actionsFor()
		a.TLS = certs.ClientTLS()
		// A repointed replica connects to its TLS-only source over TLS
		// (MASTER_SSL=1), or its IO thread is refused.
		if err := a.Repoint(ctx, db2.Addr(), db1.Addr()); err != nil {
			t.Fatal(err)
		}
		var last mariadb.ServerState
		err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
			st, err := a.Position(ctx, db2.Addr())
			last = st
			return err == nil && st.IORunning && st.SQLRunning, err
		})
		if err != nil {
			t.Fatalf("db2 not replicating after the repoint: %v (%+v)", err, last)
		}
		if got := slaveStatus(t, ctx, db2, "Master_SSL_Allowed"); got != "Yes" {
			t.Fatalf("db2 replicates with Master_SSL_Allowed %q, want Yes", got)
		}
		if err := a.Fence(ctx, db1.Addr()); err != nil {
			t.Fatal(err)
		}
		if st, err := a.Position(ctx, db1.Addr()); err != nil || !st.ReadOnly {
			t.Fatalf("db1 after the fence: %+v, %v", st, err)
		}
		if err := a.Open(ctx, db1.Addr()); err != nil {
			t.Fatal(err)
		}
		if st, err := a.Position(ctx, db1.Addr()); err != nil || st.ReadOnly {
			t.Fatalf("db1 after the open: %+v, %v", st, err)
		}
	})

	t.Run("wrong CA", func(t *testing.T) {
		mon := startTLSMonitor(t, c, other.ClientTLS())
		waitFor(t, mon, 5*time.Second, "probes failing with the x509 reason", func(s *topology.Snapshot) bool {
			for _, m := range s.Members {
				if m.Reachable || !strings.Contains(m.ProbeError, "x509: certificate signed by unknown authority") {
					return false
				}
			}
			return true
		})
		a := actionsFor()
		a.TLS = other.ClientTLS()
		for _, step := range []struct {
			name string
			run  func() error
		}{
			{"position", func() error { _, err := a.Position(ctx, db1.Addr()); return err }},
			{"fence", func() error { return a.Fence(ctx, db1.Addr()) }},
			{"repoint", func() error { return a.Repoint(ctx, db2.Addr(), db1.Addr()) }},
		} {
			start := time.Now()
			err := step.run()
			if err == nil || !strings.Contains(err.Error(), "x509: certificate signed by unknown authority") {
				t.Fatalf("%s with the wrong CA: %v, want the x509 reason", step.name, err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("%s with the wrong CA took %v", step.name, d)
			}
		}
		// A name the certificate does not carry is refused as well.
		a.TLS = certs.ClientTLS()
		a.TLS.ServerName = "db1.example"
		if _, err := a.Position(ctx, db1.Addr()); err == nil || !strings.Contains(err.Error(), "x509: certificate is valid for") {
			t.Fatalf("position with the wrong server name: %v, want the x509 reason", err)
		}
	})
}

// slaveStatus is one column of the member's SHOW SLAVE STATUS.
func slaveStatus(t *testing.T, ctx context.Context, m *chaos.Member, col string) string {
	t.Helper()
	db, err := m.DB()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SHOW SLAVE STATUS")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	if !rows.Next() {
		t.Fatalf("%s: not a replica", m.Name)
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		t.Fatal(err)
	}
	for i, c := range cols {
		if c == col {
			return vals[i].String
		}
	}
	t.Fatalf("%s: no column %s", m.Name, col)
	return ""
}
