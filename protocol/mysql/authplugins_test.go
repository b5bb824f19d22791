package mysql_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	gmclient "github.com/go-mysql-org/go-mysql/client"
	gm "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/packet"

	"github.com/dbrouter/dbrouter/chaos"
	pmysql "github.com/dbrouter/dbrouter/protocol/mysql"
)

// cliAuth runs the mariadb CLI against the proxy with extra options and
// returns its output, or an error with what it printed on stderr.
func cliAuth(t *testing.T, addr, password string, extra ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("mariadb"); err != nil {
		t.Fatal("mariadb not found: install it with `apt-get install -y mariadb-client` (or run `make test`)")
	}
	host, port, _ := net.SplitHostPort(addr)
	args := append([]string{"--host=" + host, "--port=" + port, "--user=" + chaos.AppUser, "--password=" + password,
		"--batch", "--skip-column-names"}, extra...)
	args = append(args, "-e", "SELECT 1", chaos.AppDatabase)
	out, err := exec.Command("mariadb", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// TestEd25519MemberAccount: the proxy logs in to members as an account that
// uses MariaDB's ed25519 plugin (the member asks for it with an auth
// switch), on the primary and on a replica.
func TestEd25519MemberAccount(t *testing.T) {
	e := newEnv(t, envOpts{members: 2, mutate: func(c *pmysql.Config) {
		c.Users[chaos.AppUser].BackendUser = "ed"
		c.Users[chaos.AppUser].BackendPassword = "ed-secret"
	}})
	ctx := context.Background()
	// The plugin is not replicated: every member loads it before the
	// account, which is, is created on the primary.
	for _, m := range e.cluster.Members {
		adm, err := m.DB()
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, adm, "INSTALL SONAME 'auth_ed25519'")
		adm.Close()
	}
	prim, err := e.cluster.Members[0].DB()
	if err != nil {
		t.Fatal(err)
	}
	defer prim.Close()
	mustExec(t, prim, "CREATE USER 'ed'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('ed-secret')")
	mustExec(t, prim, "GRANT ALL PRIVILEGES ON app.* TO 'ed'@'%'")
	// MariaDB stores the password's public key; the proxy derives the same
	// one, which is what it checks clients' ed25519 signatures against.
	var stored string
	if err := prim.QueryRowContext(ctx, "SELECT JSON_VALUE(Priv, '$.authentication_string') FROM mysql.global_priv WHERE User = 'ed'").Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if want := base64.RawStdEncoding.EncodeToString(pmysql.Ed25519PublicKey("ed-secret")); stored != want {
		t.Fatalf("MariaDB's public key %s, the proxy's %s", stored, want)
	}
	repl, err := e.cluster.Members[1].DB()
	if err != nil {
		t.Fatal(err)
	}
	defer repl.Close()
	err = chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
		var n int
		err := repl.QueryRowContext(ctx, "SELECT COUNT(*) FROM mysql.global_priv WHERE User = 'ed'").Scan(&n)
		return n == 1, err
	})
	if err != nil {
		t.Fatalf("the account on the replica: %v", err)
	}

	db := e.db(t, "")
	mustExec(t, db, "CREATE TABLE ed (id INT PRIMARY KEY)")
	mustExec(t, db, "INSERT INTO ed VALUES (1)")
	if id := serverID(t, db, "SELECT @@server_id"); id != e.cluster.Members[1].ServerID {
		t.Fatalf("read answered by server %d, want the replica", id)
	}
	var user string
	if err := db.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&user); err != nil || user != "ed@%" {
		t.Fatalf("member account %q, %v; want ed@%%", user, err)
	}
}

// ed25519Login logs in as a client whose own plugin is client_ed25519, as
// libmariadb's does with --default-auth=client_ed25519: the handshake
// response names the plugin and carries no auth data, and the client
// insists on it (the real one would follow a switch to another plugin,
// which would hide whether the proxy speaks ed25519).
func ed25519Login(addr, password string) error {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	pc := packet.NewConn(nc)
	if _, err := pc.ReadPacket(); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	caps := gm.CLIENT_PROTOCOL_41 | gm.CLIENT_SECURE_CONNECTION | gm.CLIENT_PLUGIN_AUTH |
		gm.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | gm.CLIENT_LONG_PASSWORD | gm.CLIENT_TRANSACTIONS
	b := make([]byte, 4, 128) // the packet header, filled in by WritePacket
	b = binary.LittleEndian.AppendUint32(b, caps)
	b = binary.LittleEndian.AppendUint32(b, 1<<24)
	b = append(b, 45)
	b = append(b, make([]byte, 23)...)
	b = append(append(b, chaos.AppUser...), 0)
	b = append(b, 0) // no auth data
	b = append(append(b, "client_ed25519"...), 0)
	if err := pc.WritePacket(b); err != nil {
		return err
	}
	sw, err := pc.ReadPacket()
	if err != nil {
		return fmt.Errorf("auth switch: %w", err)
	}
	if len(sw) == 0 || sw[0] != 0xfe {
		return fmt.Errorf("no auth switch: %x", sw)
	}
	plugin, nonce, _ := bytes.Cut(sw[1:], []byte{0})
	if string(plugin) != "client_ed25519" || len(nonce) != 32 {
		return fmt.Errorf("switched to %q with %d bytes of data, want client_ed25519 with a 32-byte nonce", plugin, len(nonce))
	}
	sig, err := gm.CalcEd25519Password(nonce, password)
	if err != nil {
		return err
	}
	if err := pc.WritePacket(append(make([]byte, 4), sig...)); err != nil {
		return err
	}
	res, err := pc.ReadPacket()
	switch {
	case err != nil:
		return fmt.Errorf("auth result: %w", err)
	case len(res) > 0 && res[0] == 0x00:
		return nil
	case len(res) >= 3 && res[0] == 0xff:
		return &gm.MyError{Code: binary.LittleEndian.Uint16(res[1:3]), Message: string(res[3:])}
	}
	return fmt.Errorf("auth result %x", res)
}

// TestEd25519Clients: a client that asks for ed25519 authenticates with it,
// and so does every client when the proxy asks for it.
func TestEd25519Clients(t *testing.T) {
	e := newEnv(t, envOpts{members: 2})
	t.Run("a client that asks for it", func(t *testing.T) {
		if err := ed25519Login(e.addr, chaos.AppPassword); err != nil {
			t.Fatal(err)
		}
		var se *gm.MyError
		if err := ed25519Login(e.addr, "wrong"); !errors.As(err, &se) || se.Code != pmysql.CodeAccessDenied {
			t.Fatalf("wrong password: %v, want 1045", err)
		}
	})
	t.Run("the proxy asks every client", func(t *testing.T) {
		pmysql.SetAuthPlugin(e.proxy, "client_ed25519")
		defer pmysql.SetAuthPlugin(e.proxy, "mysql_native_password")
		if out, err := cliAuth(t, e.addr, chaos.AppPassword); err != nil || out != "1" {
			t.Fatalf("mariadb: %q, %v", out, err)
		}
		var one int
		if err := e.db(t, "").QueryRowContext(context.Background(), "SELECT 1").Scan(&one); err != nil {
			t.Fatalf("go-sql-driver: %v", err)
		}
		wrong, err := sql.Open("mysql", fmt.Sprintf("%s:wrong@tcp(%s)/%s", chaos.AppUser, e.addr, chaos.AppDatabase))
		if err != nil {
			t.Fatal(err)
		}
		defer wrong.Close()
		if err := wrong.Ping(); errCode(err) != pmysql.CodeAccessDenied {
			t.Fatalf("go-sql-driver, wrong password: %v, want 1045", err)
		}
		c, err := gmclient.Connect(e.addr, chaos.AppUser, chaos.AppPassword, chaos.AppDatabase)
		if err != nil {
			t.Fatalf("go-mysql: %v", err)
		}
		defer c.Close()
		if _, err := c.Execute("SELECT 1"); err != nil {
			t.Fatalf("go-mysql: %v", err)
		}
		_, err = gmclient.Connect(e.addr, chaos.AppUser, "wrong", chaos.AppDatabase)
		if me := (*gm.MyError)(nil); !errors.As(err, &me) || me.Code != pmysql.CodeAccessDenied {
			t.Fatalf("go-mysql, wrong password: %v, want 1045", err)
		}
	})
}

// TestClearPasswordNeedsTLS: mysql_clear_password is refused on a
// connection without TLS, with an error that says why, and accepted over
// TLS.
func TestClearPasswordNeedsTLS(t *testing.T) {
	certFile, keyFile := selfSigned(t)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOpts{members: 2, mutate: func(c *pmysql.Config) {
		c.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}})
	clear := "--default-auth=mysql_clear_password"
	_, err = cliAuth(t, e.addr, chaos.AppPassword, clear, "--skip-ssl")
	if err == nil || !strings.Contains(err.Error(), "ERROR 1045") || !strings.Contains(err.Error(), "without TLS") {
		t.Fatalf("clear password without TLS: %v, want ERROR 1045 saying TLS is needed", err)
	}
	// Nor in a COM_CHANGE_USER on a plain connection.
	c, err := gmclient.Connect(e.addr, chaos.AppUser, chaos.AppPassword, chaos.AppDatabase)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cu := append(make([]byte, 4), 0x11)
	cu = append(append(cu, chaos.AppUser...), 0)
	cu = append(append(cu, byte(len(chaos.AppPassword)+1)), chaos.AppPassword+"\x00"...)
	cu = append(append(cu, chaos.AppDatabase...), 0)
	cu = append(cu, 45, 0)
	cu = append(append(cu, "mysql_clear_password"...), 0)
	c.ResetSequence()
	if err := c.WritePacket(cu); err != nil {
		t.Fatal(err)
	}
	res, err := c.ReadPacket()
	if err != nil || len(res) < 3 || res[0] != 0xff || binary.LittleEndian.Uint16(res[1:3]) != pmysql.CodeAccessDenied || !bytes.Contains(res, []byte("without TLS")) {
		t.Fatalf("COM_CHANGE_USER with a clear password: %q, %v; want 1045 saying TLS is needed", res, err)
	}
	if out, err := cliAuth(t, e.addr, chaos.AppPassword, clear, "--ssl"); err != nil || out != "1" {
		t.Fatalf("clear password over TLS: %q, %v", out, err)
	}
	if _, err := cliAuth(t, e.addr, "wrong", clear, "--ssl"); err == nil || !strings.Contains(err.Error(), "ERROR 1045") {
		t.Fatalf("wrong clear password over TLS: %v, want ERROR 1045", err)
	}
}
