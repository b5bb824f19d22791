package mysql

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"
	"go.uber.org/goleak"

	"github.com/dbrouter/dbrouter/proxy"
)

func errOf(t *testing.T, p []byte) *ServerError {
	t.Helper()
	if len(p) == 0 || p[0] != 0xff {
		t.Fatalf("want an ERR packet, got %x", p)
	}
	return parseErr(p)
}

// noLeaks checks, after every other cleanup of the test (clients closed,
// proxy shut down), that no goroutine the test started is left.
func noLeaks(t *testing.T) {
	before := goleak.IgnoreCurrent() // snapshot now, not at cleanup time
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
}

func TestLocalCommands(t *testing.T) {
	noLeaks(t)
	addr := fakeProxy(t, nil)
	c, ok := dialRaw(t, addr, "app", "app")
	if ok[0] != 0 {
		t.Fatalf("login: %x", ok)
	}
	t.Run("Ping", func(t *testing.T) {
		c.send(t, 0, []byte{gm.COM_PING})
		if p := c.read(t); p[0] != 0 {
			t.Fatalf("ping: %x", p)
		}
	})
	t.Run("UnknownCommand", func(t *testing.T) {
		c.send(t, 0, []byte{gm.COM_BINLOG_DUMP, 0, 0})
		if e := errOf(t, c.read(t)); e.Code != CodeUnknownCommand || !strings.Contains(e.Message, "not supported") {
			t.Fatalf("%v", e)
		}
	})
	t.Run("UnknownStatementID", func(t *testing.T) {
		c.send(t, 0, []byte{gm.COM_STMT_EXECUTE, 99, 0, 0, 0, 0, 1, 0, 0, 0})
		if e := errOf(t, c.read(t)); e.Code != CodeUnknownStmt {
			t.Fatalf("%v", e)
		}
	})
	t.Run("SetOptionAnsweredWithEOF", func(t *testing.T) {
		c.send(t, 0, []byte{gm.COM_SET_OPTION, 0, 0})
		if p := c.read(t); !isEOF(p, false) {
			t.Fatalf("set option: %x", p)
		}
	})
	t.Run("ResetConnection", func(t *testing.T) {
		c.send(t, 0, []byte{gm.COM_RESET_CONNECTION})
		if p := c.read(t); p[0] != 0 {
			t.Fatalf("reset: %x", p)
		}
	})
	t.Run("ChangeUser", func(t *testing.T) {
		change := func(user, pw string) []byte {
			b := append([]byte{gm.COM_CHANGE_USER}, user+"\x00"...)
			auth := gm.CalcNativePassword(c.scramble, []byte(pw))
			b = append(b, byte(len(auth)))
			b = append(b, auth...)
			b = append(b, "app\x00"...)
			b = append(b, defaultCollationID, 0)
			return append(b, pluginNative+"\x00"...)
		}
		c.send(t, 0, change("app2", "two"))
		if p := c.read(t); p[0] != 0 {
			t.Fatalf("change user: %x", p)
		}
		c.send(t, 0, append([]byte{gm.COM_QUERY}, "SELECT 1"...))
		if p := c.read(t); p[0] != 1 {
			t.Fatalf("query after change user: %x", p)
		}
		for i := 0; i < 4; i++ { // rest of the canned result set
			c.read(t)
		}
		c.send(t, 0, change("app2", "wrong"))
		if e := errOf(t, c.read(t)); e.Code != CodeAccessDenied || e.State != "28000" {
			t.Fatalf("%v", e)
		}
	})
}

func TestOversizedPacketClosesOnlyThatClient(t *testing.T) {
	noLeaks(t)
	addr := fakeProxy(t, func(c *Config) { c.MaxPacket = 1 << 16 })
	victim, _ := dialRaw(t, addr, "app", "app")
	other, _ := dialRaw(t, addr, "app", "app")
	big := append([]byte{gm.COM_QUERY}, bytes.Repeat([]byte("x"), 1<<17)...)
	victim.send(t, 0, big)
	e := errOf(t, victim.read(t))
	if e.Code != CodePacketTooLarge || !strings.Contains(e.Message, "dbrouter: cluster fake:") {
		t.Fatalf("%v", e)
	}
	if _, err := victim.pr.readPacket(); err == nil {
		t.Fatal("oversized client still connected")
	}
	other.send(t, 0, []byte{gm.COM_PING})
	if p := other.read(t); p[0] != 0 {
		t.Fatalf("other client disturbed: %x", p)
	}
}

func TestErrorTable(t *testing.T) {
	for _, k := range proxy.Kinds() {
		err := fmt.Errorf("member db1: %w", proxy.NewError(k, "something of kind "+k.String()))
		se := toServerError("c", err)
		if se.Code != kindCodes[k].code || se.State != kindCodes[k].state || !strings.HasPrefix(se.Message, "dbrouter: cluster c: ") {
			t.Errorf("%v -> %+v", err, se)
		}
	}
	backend := &ServerError{Code: 1146, State: "42S02", Message: "Table 'x' doesn't exist"}
	if got := toServerError("c", backend); got != backend {
		t.Errorf("backend errors must pass unchanged, got %+v", got)
	}
}

func query(t *testing.T, c *rawClient, sql string) []byte {
	t.Helper()
	c.send(t, 0, append([]byte{gm.COM_QUERY}, sql...))
	first := bytes.Clone(c.read(t)) // the reader reuses its buffer
	if first[0] == 1 {              // the fake's one-row result set
		for i := 0; i < 4; i++ {
			c.read(t)
		}
	}
	return first
}

func TestPoolTimeoutWhenMemberConnectionsAreAllPinned(t *testing.T) {
	noLeaks(t)
	addr := fakeProxy(t, func(c *Config) {
		c.MaxConnsPerMember = 1
		c.PoolTimeout = 200 * time.Millisecond
	})
	holder, _ := dialRaw(t, addr, "app", "app")
	waiter, _ := dialRaw(t, addr, "app", "app")
	if p := query(t, holder, "SELECT GET_LOCK('x', 1)"); p[0] != 1 {
		t.Fatalf("GET_LOCK: %x", p)
	}
	start := time.Now()
	e := errOf(t, query(t, waiter, "SELECT 1"))
	if e.Code != CodePoolTimeout || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("%v after %v", e, time.Since(start))
	}
	// The holder leaves: its connection is reset and handed over.
	holder.send(t, 0, []byte{gm.COM_QUIT})
	holder.nc.Close()
	if p := query(t, waiter, "SELECT 1"); p[0] != 1 {
		t.Fatalf("after the holder quit: %x", p)
	}
}

// TestKillChecks: KILL names proxy sessions; ids the proxy does not know, and
// other users' sessions, are refused before any member is asked.
func TestKillChecks(t *testing.T) {
	noLeaks(t)
	addr := fakeProxy(t, nil)
	a, ok := dialRaw(t, addr, "app", "app")
	if ok[0] != 0 {
		t.Fatalf("login: %x", ok)
	}
	other, ok := dialRaw(t, addr, "app2", "two")
	if ok[0] != 0 {
		t.Fatalf("login: %x", ok)
	}
	if a.id < firstSessionID || other.id != a.id+1 {
		t.Fatalf("session ids %d, %d: want consecutive ids from %d", a.id, other.id, firstSessionID)
	}
	query := func(c *rawClient, sql string) []byte {
		c.send(t, 0, append([]byte{gm.COM_QUERY}, sql...))
		return c.read(t)
	}
	t.Run("UnknownID", func(t *testing.T) {
		// 5 is a typical member thread id: it must not reach a member.
		if e := errOf(t, query(a, "KILL QUERY 5")); e.Code != CodeNoSuchThread || !strings.Contains(e.Message, "Unknown thread id: 5") {
			t.Fatalf("%v", e)
		}
		kill := appendUint32([]byte{gm.COM_PROCESS_KILL}, 5)
		a.send(t, 0, kill)
		if e := errOf(t, a.read(t)); e.Code != CodeNoSuchThread {
			t.Fatalf("COM_PROCESS_KILL: %v", e)
		}
	})
	t.Run("MalformedProcessKill", func(t *testing.T) {
		a.send(t, 0, []byte{gm.COM_PROCESS_KILL, 1})
		if e := errOf(t, a.read(t)); e.Code != CodeMalformedPacket {
			t.Fatalf("%v", e)
		}
	})
	t.Run("OtherUsersSession", func(t *testing.T) {
		for _, sql := range []string{fmt.Sprintf("KILL %d", a.id), fmt.Sprintf("KILL QUERY %d", a.id)} {
			if e := errOf(t, query(other, sql)); e.Code != CodeKillDenied {
				t.Fatalf("%s: %v", sql, e)
			}
		}
		if p := query(a, "SELECT 1"); p[0] != 1 { // a survived
			t.Fatalf("victim after a refused KILL: %x", p)
		}
		for i := 0; i < 4; i++ {
			a.read(t)
		}
	})
	t.Run("OwnQuery", func(t *testing.T) {
		if p := query(a, fmt.Sprintf("KILL QUERY %d", a.id)); p[0] != 0 {
			t.Fatalf("KILL QUERY of the own session: %x", p)
		}
	})
	t.Run("OwnConnection", func(t *testing.T) {
		if e := errOf(t, query(a, fmt.Sprintf("KILL %d", a.id))); e.Code != CodeConnectionKilled {
			t.Fatalf("%v", e)
		}
		_ = a.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := a.pr.readPacket(); err == nil {
			t.Fatal("connection still open after killing itself")
		}
	})
}

// TestErrorAfterAMultiPacketCommand: a command of 16 MiB or more comes in
// several packets (sequence 0, 1, ...), and the answer's first packet
// continues their sequence. An error the proxy answers itself (here: the
// member is down) must too: a driver that sent a 20 MiB row and got the
// error with sequence 1 reported "invalid sequence 1 != 2" and dropped the
// connection instead of showing the error.
func TestErrorAfterAMultiPacketCommand(t *testing.T) {
	noLeaks(t)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	addr := fakeProxy(t, func(c *Config) { c.Members = []Member{{Name: "m", Addr: deadAddr}} })
	c, ok := dialRaw(t, addr, "app", "app")
	if ok[0] != 0 {
		t.Fatalf("login: %x", ok)
	}
	big := append([]byte{gm.COM_QUERY}, "INSERT INTO t VALUES ('"...)
	big = append(big, bytes.Repeat([]byte{'x'}, maxChunk+100)...)
	big = append(big, "')"...)
	c.send(t, 0, big) // writePacket splits it: sequence 0, then 1
	p := c.read(t)
	if p[0] != 0xff {
		t.Fatalf("answer %x, want an error (the member is down)", p[:min(len(p), 16)])
	}
	if seq := c.pr.seq - 1; seq != 2 {
		t.Fatalf("error packet's sequence %d, want 2 (after the command's 0 and 1)", seq)
	}
}
