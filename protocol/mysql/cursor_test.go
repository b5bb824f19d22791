package mysql

import (
	"encoding/binary"
	"testing"

	gm "github.com/go-mysql-org/go-mysql/mysql"
	"go.uber.org/zap/zaptest"

	"github.com/dbrouter/dbrouter/chaos"
)

// realProxy puts a proxy with a fixed route in front of one real member.
func realProxy(t *testing.T) string {
	t.Helper()
	c := chaos.StartT(t, chaos.Options{Members: 1})
	return serveProxy(t, Config{Cluster: "real", Members: []Member{{Name: "db1", Addr: c.Members[0].Addr()}},
		Users: map[string]*User{"app": {Name: "app", Password: "app", BackendUser: "app", BackendPassword: "app"}}},
		zaptest.NewLogger(t))
}

func expectOK(t *testing.T, p []byte, what string) {
	t.Helper()
	if len(p) == 0 || p[0] != 0 {
		t.Fatalf("%s: %q", what, p)
	}
}

func TestCursorFetchStaysOnItsConnection(t *testing.T) {
	addr := realProxy(t)
	c, ok := dialRaw(t, addr, "app", "app")
	expectOK(t, ok, "login")
	c.send(t, 0, append([]byte{gm.COM_INIT_DB}, "app"...))
	expectOK(t, c.read(t), "init db")
	for _, q := range []string{"CREATE TABLE cur (id INT PRIMARY KEY)", "INSERT INTO cur VALUES (1),(2),(3),(4),(5)"} {
		c.send(t, 0, append([]byte{gm.COM_QUERY}, q...))
		expectOK(t, c.read(t), q)
	}
	c.send(t, 0, append([]byte{gm.COM_STMT_PREPARE}, "SELECT id FROM cur ORDER BY id"...))
	prep := c.read(t)
	expectOK(t, prep, "prepare")
	id := binary.LittleEndian.Uint32(prep[1:])
	c.read(t) // column definition
	c.read(t) // EOF
	exec := appendUint32([]byte{gm.COM_STMT_EXECUTE}, id)
	exec = append(exec, 1) // CURSOR_TYPE_READ_ONLY
	exec = appendUint32(exec, 1)
	c.send(t, 0, exec)
	if p := c.read(t); p[0] != 1 {
		t.Fatalf("execute: column count %q", p)
	}
	c.read(t) // column definition
	if st := eofStatus(c.read(t), false); st&statusCursorExists == 0 {
		t.Fatalf("no cursor opened (status %#x)", st)
	}
	// Other statements between fetches run on the same connection, and the
	// cursor survives them.
	c.send(t, 0, append([]byte{gm.COM_QUERY}, "DO 1"...))
	expectOK(t, c.read(t), "statement between fetches")
	rows := 0
	for fetches := 0; fetches < 10; fetches++ {
		c.send(t, 0, appendUint32(appendUint32([]byte{gm.COM_STMT_FETCH}, id), 2))
		for {
			p := c.read(t)
			if p[0] == 0xff {
				t.Fatalf("fetch: %v", parseErr(p))
			}
			if isEOF(p, false) {
				if eofStatus(p, false)&statusLastRowSent != 0 {
					if rows != 5 {
						t.Fatalf("fetched %d rows, want 5", rows)
					}
					return
				}
				break
			}
			rows++
		}
	}
	t.Fatalf("cursor never finished (%d rows)", rows)
}

// readResult reads a text result set of one column and returns its rows
// (copied; nil entries are NULL).
func readResult(t *testing.T, c *rawClient) [][]byte {
	t.Helper()
	if p := c.read(t); p[0] == 0xff {
		t.Fatalf("query: %v", parseErr(p))
	} else if p[0] != 1 {
		t.Fatalf("want one column, got %q", p)
	}
	c.read(t) // column definition
	c.read(t) // EOF
	var rows [][]byte
	for {
		p := c.read(t)
		if isEOF(p, false) {
			return rows
		}
		if p[0] == 0xfb {
			rows = append(rows, nil)
			continue
		}
		v, _, ok := readLenEncBytes(p, 0)
		if !ok {
			t.Fatalf("row %q", p)
		}
		rows = append(rows, append([]byte{}, v...))
	}
}

func TestResetAndChangeUserOnARealServer(t *testing.T) {
	addr := realProxy(t)
	c, ok := dialRaw(t, addr, "app", "app")
	expectOK(t, ok, "login")
	q := func(sql string) { c.send(t, 0, append([]byte{gm.COM_QUERY}, sql...)) }

	q("SET @x = 5")
	expectOK(t, c.read(t), "set @x")
	q("SELECT @x")
	if rows := readResult(t, c); len(rows) != 1 || string(rows[0]) != "5" {
		t.Fatalf("@x before reset = %q", rows)
	}
	c.send(t, 0, []byte{gm.COM_RESET_CONNECTION})
	expectOK(t, c.read(t), "reset connection")
	q("SELECT @x")
	if rows := readResult(t, c); len(rows) != 1 || rows[0] != nil {
		t.Fatalf("@x after COM_RESET_CONNECTION = %q, want NULL", rows)
	}

	q("SET @y = 7")
	expectOK(t, c.read(t), "set @y")
	change := append([]byte{gm.COM_CHANGE_USER}, "app\x00"...)
	auth := gm.CalcNativePassword(c.scramble, []byte("app"))
	change = append(change, byte(len(auth)))
	change = append(change, auth...)
	change = append(change, "sbtest\x00"...)
	change = append(change, defaultCollationID, 0)
	change = append(change, pluginNative+"\x00"...)
	c.send(t, 0, change)
	expectOK(t, c.read(t), "change user")
	q("SELECT CONCAT(DATABASE(), ':', IFNULL(@y, 'null'))")
	if rows := readResult(t, c); len(rows) != 1 || string(rows[0]) != "sbtest:null" {
		t.Fatalf("after COM_CHANGE_USER: %q, want the new database and no user variables", rows)
	}

	// COM_STMT_RESET after long data goes to the pinned member connection.
	c.send(t, 0, append([]byte{gm.COM_STMT_PREPARE}, "SELECT ?"...))
	prep := c.read(t)
	expectOK(t, prep, "prepare")
	id := binary.LittleEndian.Uint32(prep[1:])
	for i := 0; i < 4; i++ { // param def, EOF, column def, EOF
		c.read(t)
	}
	long := appendUint32([]byte{gm.COM_STMT_SEND_LONG_DATA}, id)
	long = append(long, 0, 0)
	long = append(long, "payload"...)
	c.send(t, 0, long) // no reply
	c.send(t, 0, appendUint32([]byte{gm.COM_STMT_RESET}, id))
	expectOK(t, c.read(t), "stmt reset")
	q("SELECT 'still fine'")
	if rows := readResult(t, c); len(rows) != 1 || string(rows[0]) != "still fine" {
		t.Fatalf("after reset: %q", rows)
	}
}
