package mysql_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"database/sql"
	sqldriver "database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gmclient "github.com/go-mysql-org/go-mysql/client"
	driver "github.com/go-sql-driver/mysql"

	"github.com/dbrouter/dbrouter/chaos"
	pmysql "github.com/dbrouter/dbrouter/protocol/mysql"
)

func errCode(err error) uint16 {
	var me *driver.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// TestProtocol covers commands and client libraries on one cluster.
func TestProtocol(t *testing.T) {
	e := newEnv(t, envOpts{})
	db := e.db(t, "")
	ctx := context.Background()
	mustExec(t, db, "CREATE TABLE blobs (id INT PRIMARY KEY, b LONGBLOB)")

	t.Run("WrongPasswordAndUnknownUserAreRefused", func(t *testing.T) {
		for _, dsn := range []string{
			fmt.Sprintf("app:wrong@tcp(%s)/app", e.addr),
			fmt.Sprintf("nobody:app@tcp(%s)/app", e.addr),
		} {
			bad, _ := sql.Open("mysql", dsn)
			err := bad.PingContext(ctx)
			bad.Close()
			if errCode(err) != pmysql.CodeAccessDenied {
				t.Fatalf("%s: error %v, want 1045", dsn, err)
			}
		}
	})
	t.Run("PacketsOver16MiBBothWays", func(t *testing.T) {
		big := bytes.Repeat([]byte("0123456789abcdef"), 20<<20/16) // 20 MiB
		big[12345] = 'X'
		mustExec(t, db, "INSERT INTO blobs VALUES (1, ?)", big)
		var got []byte
		if err := db.QueryRowContext(ctx, "SELECT /* dbrouter:primary */ b FROM blobs WHERE id = 1").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, big) {
			t.Fatalf("blob of %d bytes came back as %d bytes", len(big), len(got))
		}
	})
	t.Run("LoadDataLocalInfile", func(t *testing.T) {
		mustExec(t, db, "CREATE TABLE loaded (a INT, b VARCHAR(10))")
		f := filepath.Join(t.TempDir(), "rows.tsv")
		var sb strings.Builder
		for i := 0; i < 1000; i++ {
			fmt.Fprintf(&sb, "%d\trow%d\n", i, i)
		}
		if err := os.WriteFile(f, []byte(sb.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		driver.RegisterLocalFile(f)
		r := mustExec(t, db, fmt.Sprintf("LOAD DATA LOCAL INFILE '%s' INTO TABLE loaded", f))
		if n, _ := r.RowsAffected(); n != 1000 {
			t.Fatalf("loaded %d rows", n)
		}
	})
	t.Run("SendLongData", func(t *testing.T) {
		// A small maxAllowedPacket makes go-sql-driver send big arguments
		// with COM_STMT_SEND_LONG_DATA before the execute.
		ldb := e.db(t, "&maxAllowedPacket=4096")
		val := bytes.Repeat([]byte{'z'}, 10000)
		mustExec(t, ldb, "INSERT INTO blobs VALUES (?, ?)", 2, val)
		var n int
		if err := db.QueryRowContext(ctx, "SELECT /* dbrouter:primary */ LENGTH(b) FROM blobs WHERE id = 2").Scan(&n); err != nil || n != len(val) {
			t.Fatalf("long data length %d, %v", n, err)
		}
	})
	t.Run("CachedPreparedStatementAcrossConnections", func(t *testing.T) {
		e.waitHealthy(t, 2) // big writes above may have left replicas briefly lagging
		// A session reads from one replica while it stays eligible; when
		// it leaves the read set, the session's executes move to the other
		// replica, where the statement must be prepared transparently with
		// the parameter types the client bound once.
		c := e.conn(t, db)
		st, err := c.PrepareContext(ctx, "SELECT ? + 1, @@server_id")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		exec := func(i int) int {
			t.Helper()
			var v, id int
			if err := st.QueryRowContext(ctx, i).Scan(&v, &id); err != nil {
				t.Fatal(err)
			}
			if v != i+1 {
				t.Fatalf("? + 1 with %d = %d", i, v)
			}
			return id
		}
		first := exec(0)
		if !isReplica(first) {
			t.Fatalf("execute answered by %d, want a replica", first)
		}
		for i := 1; i < 10; i++ {
			if id := exec(i); id != first {
				t.Fatalf("execute %d answered by %d, the session's earlier ones by %d", i, id, first)
			}
		}
		m := e.cluster.Members[first-1]
		mdb, err := m.DB()
		if err != nil {
			t.Fatal(err)
		}
		defer mdb.Close()
		mustExec(t, mdb, "STOP SLAVE SQL_THREAD")
		defer func() {
			mustExec(t, mdb, "START SLAVE SQL_THREAD")
			e.waitHealthy(t, 2)
		}()
		if err := chaos.Poll(ctx, 5*time.Second, func() (bool, error) { return !e.mon.Snapshot().Members[first-1].Eligible, nil }); err != nil {
			t.Fatalf("%s never left the read set: %v", m.Name, err)
		}
		// The other replica answers, freshly prepared there. Under load
		// (-race, two cores) it can itself drift past max_replica_lag for
		// a probe or two, and then the primary rightly answers instead; so
		// the test asks that the statement never runs on the stopped
		// replica and that the other one answers most of the executes.
		other := 0
		for i := 10; i < 30; i++ {
			id := exec(i)
			if id == first {
				t.Fatalf("with %s out of the read set, execute %d answered by it", m.Name, i)
			}
			if isReplica(id) {
				other++
			}
		}
		if other < 10 {
			t.Fatalf("with %s out of the read set, the other replica answered %d of 20 executes", m.Name, other)
		}
	})
	t.Run("GoMySQLClient", func(t *testing.T) {
		e.waitHealthy(t, 2) // big writes above may have left replicas briefly lagging
		c, err := gmclient.Connect(e.addr, chaos.AppUser, chaos.AppPassword, chaos.AppDatabase)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Ping(); err != nil {
			t.Fatal(err)
		}
		if err := c.UseDB("sbtest"); err != nil {
			t.Fatal(err)
		}
		r, err := c.Execute("SELECT DATABASE(), @@server_id")
		if err != nil {
			t.Fatal(err)
		}
		dbname, _ := r.GetString(0, 0)
		id, _ := r.GetInt(0, 1)
		if dbname != "sbtest" || !isReplica(int(id)) {
			t.Fatalf("COM_INIT_DB then read: db %q on %d", dbname, id)
		}
		if err := c.UseDB("app"); err != nil {
			t.Fatal(err)
		}
		fields, err := c.FieldList("blobs", "")
		if err != nil || len(fields) != 2 {
			t.Fatalf("COM_FIELD_LIST: %d fields, %v", len(fields), err)
		}
		st, err := c.Prepare("SELECT ? * 2")
		if err != nil {
			t.Fatal(err)
		}
		r, err = st.Execute(21)
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := r.GetInt(0, 0); v != 42 {
			t.Fatalf("prepared ? * 2 = %d", v)
		}
		st.Close()
		_, err = c.Execute("SELECT * FROM no_such_table")
		if err == nil || !strings.Contains(err.Error(), "1146") {
			t.Fatalf("error = %v", err)
		}
	})
	t.Run("MariaDBCommandLineClient", func(t *testing.T) {
		e.waitHealthy(t, 2) // big writes above may have left replicas briefly lagging
		host, port, _ := net.SplitHostPort(e.addr)
		out, err := exec.Command("mariadb", "-h", host, "-P", port, "-u", chaos.AppUser, "-p"+chaos.AppPassword, "--batch", "--skip-column-names", chaos.AppDatabase,
			"-e", "SELECT @@server_id; START TRANSACTION; SELECT @@server_id; COMMIT; SELECT COUNT(*) FROM blobs").CombinedOutput()
		if err != nil {
			t.Fatalf("mariadb: %v\n%s", err, out)
		}
		lines := strings.Fields(string(out))
		if len(lines) != 3 || lines[1] != "1" || (lines[0] != "2" && lines[0] != "3") || lines[2] != "2" {
			t.Fatalf("mariadb output %q: want replica, primary, 2", lines)
		}
	})
	t.Run("MalformedPacketClosesOnlyThatClient", func(t *testing.T) {
		other := e.conn(t, db)
		nc, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
		hdr := make([]byte, 4)
		if _, err := io.ReadFull(nc, hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(io.Discard, nc, int64(hdr[0])|int64(hdr[1])<<8|int64(hdr[2])<<16); err != nil {
			t.Fatal(err)
		}
		// A handshake response too short to hold a user name.
		if _, err := nc.Write([]byte{3, 0, 0, 1, 0xff, 0xff, 0xff}); err != nil {
			t.Fatal(err)
		}
		rest, _ := io.ReadAll(nc)
		if len(rest) < 5 || rest[4] != 0xff || !bytes.Contains(rest, []byte("malformed")) {
			t.Fatalf("reply to a malformed handshake: %q", rest)
		}
		if id := serverID(t, other, "SELECT @@server_id"); id == 0 {
			t.Fatal("other client disturbed")
		}
	})
}

// TestMultiplexing: many idle clients that each ran a statement hold only a
// few backend connections.
func TestMultiplexing(t *testing.T) {
	e := newEnv(t, envOpts{})
	const clients = 300
	var mu sync.Mutex
	connector, err := driver.NewConnector(mustConfig(t, e.dsn("")))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	sem := make(chan struct{}, 20)
	var held []interface{ Close() error }
	for i := 0; i < clients; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := connector.Connect(ctx)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
			if err := pingQuery(ctx, c); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := 0
	for _, oc := range e.proxy.MemberConns() {
		total += oc.Open
	}
	if e.proxy.Sessions() != clients {
		t.Fatalf("sessions = %d, want %d", e.proxy.Sessions(), clients)
	}
	if total > 3*20 {
		t.Fatalf("%d idle clients hold %d backend connections; want at most %d", clients, total, 3*20)
	}
	t.Logf("%d idle clients, %d backend connections", clients, total)
	for _, c := range held {
		c.Close()
	}
}

// pingQuery runs one SELECT on a raw driver connection.
func pingQuery(ctx context.Context, c sqldriver.Conn) error {
	rows, err := c.(sqldriver.QueryerContext).QueryContext(ctx, "SELECT @@server_id", nil)
	if err != nil {
		return err
	}
	dest := make([]sqldriver.Value, 1)
	if err := rows.Next(dest); err != nil {
		return err
	}
	return rows.Close()
}

func mustConfig(t *testing.T, dsn string) *driver.Config {
	cfg, err := driver.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestMemberFailures: a replica that dies costs idle clients nothing and an
// in-flight read an error, not a hang.
func TestMemberFailures(t *testing.T) {
	e := newEnv(t, envOpts{})
	db := e.db(t, "")
	ctx := context.Background()
	idle := e.conn(t, db)
	if id := serverID(t, idle, "SELECT @@server_id"); !isReplica(id) {
		t.Fatalf("read went to %d", id)
	}

	t.Run("IdleSessionsSurviveReplicaRestart", func(t *testing.T) {
		for _, m := range e.cluster.Members[1:] {
			if err := m.Restart(ctx); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < 10; i++ {
			if _, err := idle.ExecContext(ctx, "SELECT 1"); err != nil {
				t.Fatalf("read %d after replica restarts: %v", i, err)
			}
		}
		e.waitHealthy(t, 2)
	})

	// A member that closes a pooled connection between two statements: the
	// next statement on it finds out when it waits for the answer (the
	// command it sent draws a reset), and the read runs elsewhere — it
	// does not wait for the answer to a command the member never got.
	t.Run("PooledConnectionClosedByTheMember", func(t *testing.T) {
		for round := 0; round < 3; round++ {
			for i := 0; i < 8; i++ { // leave fresh connections in the pool
				serverID(t, db, "SELECT @@server_id")
			}
			killed := 0
			for _, m := range e.cluster.Members[1:] {
				killed += killIdleProxyConns(t, m)
			}
			if killed == 0 {
				t.Fatal("no pooled connection found on the replicas")
			}
			start := time.Now()
			for i := 0; i < 8; i++ {
				if id := serverID(t, db, "SELECT @@server_id"); id == 0 {
					t.Fatal("no server id")
				}
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("8 reads after the member closed %d pooled connections took %v", killed, d)
			}
		}
	})

	t.Run("KilledReplicaMidReadIsAnErrorNotAHang", func(t *testing.T) {
		c := e.conn(t, db)
		type result struct {
			id  int
			err error
		}
		done := make(chan result, 1)
		start := time.Now()
		go func() {
			var r result
			var slept int
			r.err = c.QueryRowContext(ctx, "SELECT SLEEP(3), @@server_id").Scan(&slept, &r.id)
			done <- r
		}()
		// Find the replica running the sleep and kill it.
		var victim *chaos.Member
		err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
			for _, m := range e.cluster.Members[1:] {
				mdb, _ := m.DB()
				var n int
				err := mdb.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(3)%' AND STATE = 'User sleep'").Scan(&n)
				mdb.Close()
				if err == nil && n > 0 {
					victim = m
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			t.Fatalf("the sleep never showed up on a replica: %v", err)
		}
		if err := victim.Kill(); err != nil {
			t.Fatal(err)
		}
		// Both outcomes are promised: if part of the response had reached
		// the client, error 9005 at once; if none had (MariaDB may send the
		// result metadata only with the row), the read is retried once on
		// another member. Never a hang.
		select {
		case r := <-done:
			switch {
			case r.err != nil && errCode(r.err) != pmysql.CodeBackendLost:
				t.Fatalf("in-flight read on a killed replica: %v, want error %d", r.err, pmysql.CodeBackendLost)
			case r.err != nil:
				if n := e.counter(t, "dbrouter_errors_total", map[string]string{"kind": "backend_lost"}); n < 1 {
					t.Fatalf("dbrouter_errors_total{kind=backend_lost} = %v", n)
				}
			case r.id == victim.ServerID:
				t.Fatalf("retried read answered by the killed member %d", r.id)
			}
			if time.Since(start) > 12*time.Second {
				t.Fatalf("answer took %v for a 3 s statement", time.Since(start))
			}
		case <-time.After(15 * time.Second):
			t.Fatal("client hung after its replica died")
		}
		// Reads keep working: a dead pooled connection is retried on the
		// other replica (or the primary) before any byte reaches the client.
		for i := 0; i < 20; i++ {
			id := serverID(t, db, "SELECT @@server_id")
			if id == victim.ServerID {
				t.Fatalf("read answered by the killed member %d", id)
			}
		}
		if err := victim.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		e.waitHealthy(t, 2)
	})
}

// TestCachingSHA2AndTLS: clients using caching_sha2_password, and TLS
// termination with require.
func TestCachingSHA2AndTLS(t *testing.T) {
	certFile, keyFile := selfSigned(t)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOpts{members: 2, mutate: func(c *pmysql.Config) {
		c.AuthPlugin = "caching_sha2_password"
		c.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		c.RequireTLS = true
	}})
	ctx := context.Background()
	plain := e.db(t, "")
	if err := plain.PingContext(ctx); errCode(err) != pmysql.CodeTLSRequired {
		t.Fatalf("plain-text client: %v, want %d", err, pmysql.CodeTLSRequired)
	}
	secure := e.db(t, "&tls=skip-verify")
	var one int
	if err := secure.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("TLS + caching_sha2_password client: %v", err)
	}
	wrong, _ := sql.Open("mysql", fmt.Sprintf("app:nope@tcp(%s)/app?tls=skip-verify", e.addr))
	defer wrong.Close()
	if err := wrong.PingContext(ctx); errCode(err) != pmysql.CodeAccessDenied {
		t.Fatalf("wrong password over caching_sha2: %v", err)
	}
}

// selfSigned is a server certificate and key for 127.0.0.1, from the
// chaos harness's throwaway CA (shared with the Mongo proxy's TLS tests).
func selfSigned(t *testing.T) (string, string) {
	t.Helper()
	c := chaos.NewCertsT(t, "dbrouter-test")
	return c.CertFile, c.KeyFile
}

// TestSysbenchThroughProxy: sysbench's workloads (prepared statements,
// transactions, inserts and deletes) run without a single error through the
// proxy. Errors are not ignored; read_write runs one thread because its own
// threads deadlock each other on a small table, which is the database's
// behaviour, not the proxy's.
func TestSysbenchThroughProxy(t *testing.T) {
	if _, err := exec.LookPath("sysbench"); err != nil {
		t.Fatal("sysbench not found: install it with `apt-get install -y sysbench` (or run `make test`)")
	}
	e := newEnv(t, envOpts{members: 2})
	host, port, _ := net.SplitHostPort(e.addr)
	common := []string{"--mysql-host=" + host, "--mysql-port=" + port, "--mysql-user=app", "--mysql-password=app",
		"--mysql-db=sbtest", "--tables=1", "--table-size=1000", "--db-ps-mode=auto", "--mysql-ignore-errors=none"}
	if out, err := exec.Command("sysbench", append([]string{"oltp_read_write"}, append(common, "prepare")...)...).CombinedOutput(); err != nil {
		t.Fatalf("sysbench prepare: %v\n%s", err, out)
	}
	e.waitHealthy(t, 1)
	for _, run := range [][]string{
		{"oltp_read_write", "--threads=1"},
		{"oltp_read_only", "--threads=4"},
	} {
		args := append(append(run, common...), "--time=3", "run")
		out, err := exec.Command("sysbench", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("sysbench %s: %v\n%s", run[0], err, out)
		}
		var tx, errs int
		for _, l := range strings.Split(string(out), "\n") {
			l = strings.TrimSpace(l)
			if strings.HasPrefix(l, "transactions:") {
				fmt.Sscanf(strings.TrimPrefix(l, "transactions:"), "%d", &tx)
			}
			if strings.HasPrefix(l, "ignored errors:") {
				fmt.Sscanf(strings.TrimPrefix(l, "ignored errors:"), "%d", &errs)
			}
		}
		if tx == 0 || errs != 0 {
			t.Fatalf("sysbench %s: %d transactions, %d errors\n%s", run[0], tx, errs, out)
		}
	}
}
