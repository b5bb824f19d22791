package mysql

import (
	"bufio"
	"bytes"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	gm "github.com/go-mysql-org/go-mysql/mysql"
	"go.uber.org/zap"
)

// trackingMember is a fake member that, like MariaDB 10.11, sends
// session-state info to a connection that negotiated CLIENT_SESSION_TRACK
// and asked to track last_gtid: each write's OK packet reports the next
// GTID (0-1-N), and so does SELECT @@last_gtid. "RETURNING" answers with a
// result set whose EOF packets carry the state-changed flag and no state,
// as MariaDB does. It records the queries it receives.
type trackingMember struct {
	mu      sync.Mutex
	queries []string
}

func (m *trackingMember) received() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.queries)
}

func (m *trackingMember) serve(ln net.Listener) {
	for {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		go m.conn(nc)
	}
}

func (m *trackingMember) conn(nc net.Conn) {
	defer nc.Close()
	r, w := bufio.NewReader(nc), bufio.NewWriter(nc)
	pr := packetReader{r: r, max: 1 << 20}
	hello := appendHandshakeV10(nil, "5.5.5-10.11.0-MariaDB-fake", 1, []byte("abcdefghijklmnopqrst"),
		backendCaps|gm.CLIENT_SECURE_CONNECTION|gm.CLIENT_SESSION_TRACK, pluginNative)
	if _, err := writePacket(w, 0, hello); err != nil || w.Flush() != nil {
		return
	}
	resp, err := pr.readPacket()
	if err != nil {
		return
	}
	caps, _, _ := readUint32(resp, 0)
	tracked, tracking := caps&gm.CLIENT_SESSION_TRACK != 0, false
	_, _ = writePacket(w, 2, appendOK(nil, 0, 0, statusAutocommit, 0))
	_ = w.Flush()
	seq := uint64(0)
	// ok is an OK packet with info and, when tracked, last_gtid.
	ok := func(affected uint64, info string, gtid bool) []byte {
		status := statusAutocommit
		state := []byte(nil)
		if gtid {
			seq++
		}
		if gtid && tracking {
			status |= statusSessionStateChanged
			v := append(appendLenEncString(nil, []byte("last_gtid")), appendLenEncString(nil, []byte("0-1-"+strconv.FormatUint(seq, 10)))...)
			state = appendLenEncString([]byte{0}, v)
		}
		p := appendOK(nil, affected, 0, status, 0)
		if info != "" || state != nil {
			p = appendLenEncString(p, []byte(info))
		}
		if state != nil {
			p = appendLenEncString(p, state)
		}
		return p
	}
	eof := func(status uint16) []byte { return []byte{0xfe, 0, 0, byte(status), byte(status >> 8)} }
	colDef := []byte("\x03def\x00\x00\x00\x01c\x00\x0c\x08\x00\x78\x00\x00\x00\xfe\x00\x00\x00\x00\x00")
	row := func(v string) {
		_, _ = writePacket(w, 1, []byte{1})
		_, _ = writePacket(w, 2, colDef)
		_, _ = writePacket(w, 3, eof(statusAutocommit))
		_, _ = writePacket(w, 4, appendLenEncString(nil, []byte(v)))
		_, _ = writePacket(w, 5, eof(statusAutocommit))
	}
	for {
		p, err := pr.readPacket()
		if err != nil {
			return
		}
		q := string(p[1:])
		if p[0] == gm.COM_QUERY {
			m.mu.Lock()
			m.queries = append(m.queries, q)
			m.mu.Unlock()
		}
		switch {
		case p[0] == gm.COM_SET_OPTION:
			_, _ = writePacket(w, 1, eof(statusAutocommit))
		case p[0] != gm.COM_QUERY:
			_, _ = writePacket(w, 1, ok(0, "", false))
		case strings.HasPrefix(q, "SET session_track_system_variables"):
			tracking = tracked && strings.Contains(q, "last_gtid")
			_, _ = writePacket(w, 1, ok(0, "", false))
		case q == "SELECT @@last_gtid":
			row("0-1-" + strconv.FormatUint(seq, 10))
		case strings.Contains(q, "RETURNING"):
			seq++ // committed; an EOF cannot say so
			st := statusAutocommit | statusSessionStateChanged
			_, _ = writePacket(w, 1, []byte{1})
			_, _ = writePacket(w, 2, colDef)
			_, _ = writePacket(w, 3, eof(st))
			_, _ = writePacket(w, 4, []byte("\x017"))
			_, _ = writePacket(w, 5, eof(st))
		case strings.HasPrefix(q, "INSERT big"):
			_, _ = writePacket(w, 1, ok(1, strings.Repeat("x", 40<<10), true))
		case strings.HasPrefix(q, "INSERT"):
			_, _ = writePacket(w, 1, ok(2, "Records: 2  Duplicates: 0  Warnings: 0", true))
		case strings.HasPrefix(q, "UPDATE"): // nothing changed: nothing binlogged, no GTID
			_, _ = writePacket(w, 1, ok(0, "Rows matched: 1  Changed: 0  Warnings: 0", false))
		default:
			_, _ = writePacket(w, 1, ok(0, "", false))
		}
		if w.Flush() != nil {
			return
		}
	}
}

// TestWriteGTIDComesFromItsOKPacketAndClientsSeeNoSessionState: with a
// member that tracks last_gtid, a write's GTID is read from its own OK
// packet (no query per write), and the client, which did not negotiate
// session tracking, receives the OK as a member would send it to such a
// client: info kept, session state and its status flag gone. A long OK
// (over the read buffer) is handled the same way. A write whose answer
// is a result set (RETURNING: an EOF carries no session state) is the one
// case where the GTID is asked for; its EOFs reach the client without the
// flag. So is a write after the client replaced the tracked variables.
func TestWriteGTIDComesFromItsOKPacketAndClientsSeeNoSessionState(t *testing.T) {
	noLeaks(t)
	member := &trackingMember{}
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	memberDone := make(chan struct{})
	go func() { defer close(memberDone); member.serve(mln) }()
	t.Cleanup(func() { mln.Close(); <-memberDone }) // after the proxy's
	p, addr := startProxy(t, Config{Cluster: "fake", Members: []Member{{Name: "m", Addr: mln.Addr().String()}}, MaxConnsPerMember: 4,
		Users:       map[string]*User{"app": {Name: "app", Password: "app", BackendUser: "app", BackendPassword: "app"}},
		CausalReads: CausalProxy}, zap.NewNop())
	c, login := dialRaw(t, addr, "app", "app")
	if login[0] != 0 {
		t.Fatalf("login: %q", login)
	}
	latest := func() string {
		if l := p.latest.Load(); l != nil {
			return string(l.pos)
		}
		return ""
	}
	noStateOK := func(affected uint64, info string) []byte {
		b := appendOK(nil, affected, 0, statusAutocommit, 0)
		if info != "" {
			b = appendLenEncString(b, []byte(info))
		}
		return b
	}
	for _, tc := range []struct {
		query string
		want  [][]byte // what the client receives
		pos   string   // the proxy-wide position after it
	}{
		{"INSERT INTO t VALUES (1), (2)", [][]byte{noStateOK(2, "Records: 2  Duplicates: 0  Warnings: 0")}, "0-1-1"},
		{"UPDATE t SET v = v", [][]byte{noStateOK(0, "Rows matched: 1  Changed: 0  Warnings: 0")}, "0-1-1"},
		{"INSERT big", [][]byte{noStateOK(1, strings.Repeat("x", 40<<10))}, "0-1-2"},
		{"INSERT INTO t VALUES (3) RETURNING id", [][]byte{{1}, nil, {0xfe, 0, 0, 2, 0}, []byte("\x017"), {0xfe, 0, 0, 2, 0}}, "0-1-3"},
		{"SET @x = 1", [][]byte{noStateOK(0, "")}, "0-1-3"},
		// The client replaces what the member tracks: the proxy asks.
		{"SET session_track_system_variables = ''", [][]byte{noStateOK(0, "")}, "0-1-3"},
		{"INSERT INTO t VALUES (4)", [][]byte{noStateOK(2, "Records: 2  Duplicates: 0  Warnings: 0")}, "0-1-4"},
	} {
		c.send(t, 0, append([]byte{gm.COM_QUERY}, tc.query...))
		for i, want := range tc.want {
			got := c.read(t)
			if want != nil && !bytes.Equal(got, want) {
				t.Fatalf("%s: packet %d is %q, want %q", tc.query, i, got, want)
			}
		}
		if got := latest(); got != tc.pos {
			t.Fatalf("after %s: proxy-wide position %q, want %q", tc.query, got, tc.pos)
		}
	}
	asked := 0
	for _, q := range member.received() {
		if q == "SELECT @@last_gtid" {
			asked++
		}
	}
	if asked != 2 {
		t.Fatalf("SELECT @@last_gtid sent %d times, want twice (after RETURNING, and once the client changed what is tracked): %q", asked, member.received())
	}
}
