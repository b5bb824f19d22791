package mysql_test

import (
	"context"
	"database/sql"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/dbrouter/dbrouter/chaos"
	pmysql "github.com/dbrouter/dbrouter/protocol/mysql"
	"github.com/dbrouter/dbrouter/router"
)

// TestMemberTLS: in front of members that refuse plaintext TCP clients
// (require_secure_transport=ON), a proxy with MemberTLS upgrades every
// member connection after the greeting (SSLRequest), so writes, replica
// reads, transactions and prepared statements work and each member session
// runs over TLS; an idle pooled TLS connection the member closed is still
// found before a write is sent on it. A proxy trusting another CA fails
// each statement quickly with the x509 reason.
func TestMemberTLS(t *testing.T) {
	certs := chaos.NewCertsT(t, "members")
	other := chaos.NewCertsT(t, "other")
	e := newEnv(t, envOpts{members: 2, tls: certs, mutate: func(c *pmysql.Config) { c.MemberTLS = certs.ClientTLS() }})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db := e.db(t, "")

	t.Run("statements", func(t *testing.T) {
		db := e.conn(t, db) // one session: read-your-writes is per session
		mustExec(t, db, "CREATE TABLE tls_t (id INT PRIMARY KEY, v VARCHAR(10))")
		mustExec(t, db, "INSERT INTO tls_t VALUES (1, 'a')")
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO tls_t VALUES (?, ?)", 2, "b"); err != nil { // prepared on the member
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		// A read, on a replica (read-your-writes waits for the commit).
		var n int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM tls_t").Scan(&n); err != nil || n != 2 {
			t.Fatalf("count %d, %v", n, err)
		}
		// Each member's session is encrypted: the proxy's, not the
		// client's (which is plaintext to the proxy).
		for _, q := range []string{"SHOW SESSION STATUS LIKE 'Ssl_version'", "/* route=primary */ SHOW SESSION STATUS LIKE 'Ssl_version'"} {
			var name, v string
			if err := db.QueryRowContext(ctx, q).Scan(&name, &v); err != nil || !strings.HasPrefix(v, "TLSv1.") {
				t.Fatalf("%s: %q, %v: want a TLS version", q, v, err)
			}
		}
	})

	t.Run("a pooled connection the member closed", func(t *testing.T) {
		conns := make([]*sql.Conn, 3)
		for i := range conns { // several sessions: several idle connections
			conns[i] = e.conn(t, db)
			mustExec(t, conns[i], "INSERT INTO tls_t VALUES (?, 'c')", 10+i)
		}
		for _, c := range conns {
			c.Close()
		}
		if killed := killIdleProxyConns(t, e.cluster.Members[0]); killed == 0 {
			t.Fatal("no idle proxy connection on db1")
		}
		for i := 0; i < 3; i++ {
			if _, err := db.ExecContext(ctx, "INSERT INTO tls_t VALUES (?, 'd')", 20+i); err != nil {
				t.Fatalf("write after the member closed idle TLS connections: %v", err)
			}
		}
	})

	t.Run("wrong CA", func(t *testing.T) {
		// The same monitor (which trusts the right CA) and another proxy
		// that trusts another CA: its member connections are refused.
		p, err := pmysql.New(pmysql.Config{Cluster: "app", Members: []pmysql.Member{{Name: "db1", Addr: e.cluster.Members[0].Addr()}, {Name: "db2", Addr: e.cluster.Members[1].Addr()}},
			Users:     map[string]*pmysql.User{chaos.AppUser: {Name: chaos.AppUser, Password: chaos.AppPassword, BackendUser: chaos.AppUser, BackendPassword: chaos.AppPassword}},
			MemberTLS: other.ClientTLS(), MaxConnsPerMember: 4, ConnectTimeout: time.Second, PoolTimeout: 2 * time.Second},
			router.New(router.Config{Cluster: "app"}, e.mon), zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		sctx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = p.Serve(sctx, ln) }()
		defer func() { stop(); <-done }()
		bad := *e
		bad.addr = ln.Addr().String()
		bdb := bad.db(t, "")
		for _, q := range []string{"INSERT INTO tls_t VALUES (100, 'x')", "SELECT COUNT(*) FROM tls_t"} {
			start := time.Now()
			_, err := bdb.ExecContext(ctx, q)
			if err == nil || !strings.Contains(err.Error(), "x509: certificate signed by unknown authority") {
				t.Fatalf("%s through a proxy trusting another CA: %v, want the x509 reason", q, err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("%s failed only after %v", q, d)
			}
			t.Logf("%s: %v (after %v)", q, err, time.Since(start).Round(time.Millisecond))
		}
	})
}
