package rssim

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.uber.org/goleak"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
)

func TestParsePeerReadsNameAddressDialAndArbiter(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Member
		wantErr string
	}{
		{in: "db1=127.0.0.1:1", want: Member{Name: "db1", Host: "127.0.0.1:1", Dial: "127.0.0.1:1"}},
		{in: "db2=127.0.0.1:2,dial=127.0.0.1:9", want: Member{Name: "db2", Host: "127.0.0.1:2", Dial: "127.0.0.1:9"}},
		{in: "arb=127.0.0.1:3,arbiter", want: Member{Name: "arb", Host: "127.0.0.1:3", Dial: "127.0.0.1:3", Arbiter: true}},
		{in: "127.0.0.1:1", wantErr: "want NAME=HOST:PORT"},
		{in: "db1=nowhere", wantErr: "missing port"},
		{in: "db1=127.0.0.1:1,fast", wantErr: `unknown option "fast"`},
	} {
		got, err := ParsePeer(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParsePeer(%q) = %v, want an error with %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParsePeer(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
		if back, err := ParsePeer(got.String()); err != nil || back != got {
			t.Errorf("ParsePeer(%q.String()) = %+v, %v", tc.in, back, err)
		}
	}
}

func TestValidateNamesTheWrongField(t *testing.T) {
	good := func() Config {
		c := DefaultConfig()
		c.SetName, c.Self, c.Backend = "rs0", "a", "127.0.0.1:1"
		c.Members = []Member{{Name: "a", Host: "127.0.0.1:2", Dial: "127.0.0.1:2"}, {Name: "b", Host: "127.0.0.1:3", Dial: "127.0.0.1:3"}}
		return c
	}
	if c := good(); c.Validate() != nil {
		t.Fatalf("good config: %v", c.Validate())
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no set name", func(c *Config) { c.SetName = "" }, "rs:"},
		{"self not a peer", func(c *Config) { c.Self = "z" }, "member:"},
		{"heartbeat too long", func(c *Config) { c.Heartbeat = c.ElectionTimeout }, "heartbeat:"},
		{"no election timeout", func(c *Config) { c.ElectionTimeout = 0 }, "election-timeout:"},
		{"duplicate name", func(c *Config) { c.Members[1].Name = "a" }, "named twice"},
		{"only arbiters", func(c *Config) { c.Members[0].Arbiter, c.Members[1].Arbiter = true, true }, "every member is an arbiter"},
		{"bad backend", func(c *Config) { c.Backend = "x" }, "backend:"},
	} {
		c := good()
		tc.change(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}

func doc(t *testing.T, d bson.D) bson.Raw {
	t.Helper()
	b, err := bson.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestUnknownCommandsAreWrites(t *testing.T) {
	for _, tc := range []struct {
		cmd  bson.D
		want cmdKind
	}{
		{bson.D{{Key: "find", Value: "c"}}, kindRead},
		{bson.D{{Key: "aggregate", Value: "c"}, {Key: "pipeline", Value: bson.A{bson.D{{Key: "$match", Value: bson.D{}}}}}}, kindRead},
		{bson.D{{Key: "aggregate", Value: "c"}, {Key: "pipeline", Value: bson.A{bson.D{{Key: "$out", Value: "d"}}}}}, kindWrite},
		{bson.D{{Key: "aggregate", Value: "c"}, {Key: "pipeline", Value: bson.A{bson.D{{Key: "$merge", Value: "d"}}}}}, kindWrite},
		{bson.D{{Key: "getMore", Value: int64(1)}}, kindCursor},
		{bson.D{{Key: "ping", Value: 1}}, kindNeutral},
		{bson.D{{Key: "insert", Value: "c"}}, kindWrite},
		{bson.D{{Key: "somethingNew", Value: 1}}, kindWrite},
	} {
		if got := classify(tc.cmd[0].Key, doc(t, tc.cmd)); got != tc.want {
			t.Errorf("classify(%v) = %d, want %d", tc.cmd, got, tc.want)
		}
	}
	for _, tc := range []struct {
		rp   any
		want bool
	}{{nil, false}, {"primary", false}, {"secondary", true}, {"secondaryPreferred", true}, {"primaryPreferred", true}, {"nearest", true}} {
		d := bson.D{{Key: "find", Value: "c"}}
		if tc.rp != nil {
			d = append(d, bson.E{Key: "$readPreference", Value: bson.D{{Key: "mode", Value: tc.rp}}})
		}
		if got := secondaryOk(doc(t, d)); got != tc.want {
			t.Errorf("secondaryOk(%v) = %v, want %v", tc.rp, got, tc.want)
		}
	}
}

func TestFlattenPutsSequencesUnderTheirIdentifier(t *testing.T) {
	body := doc(t, bson.D{{Key: "insert", Value: "c"}, {Key: "$db", Value: "app"}})
	docs := append(doc(t, bson.D{{Key: "_id", Value: 1}}), doc(t, bson.D{{Key: "_id", Value: 2}})...)
	raw, err := wire.AppendOpMsg(nil, 1, 0, 0, bsoncore.Document(body), wire.Sequence{Identifier: "documents", Documents: docs})
	if err != nil {
		t.Fatal(err)
	}
	m, err := wire.DecodeOpMsg(raw)
	if err != nil {
		t.Fatal(err)
	}
	flat, err := flatten(m)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"insert": "c","$db": "app","documents": [{"_id": {"$numberInt":"1"}},{"_id": {"$numberInt":"2"}}]}`
	if flat.String() != want {
		t.Errorf("flatten = %s, want %s", flat, want)
	}
	// A sequence that repeats a body field is an error, as on mongod.
	body = doc(t, bson.D{{Key: "insert", Value: "c"}, {Key: "documents", Value: bson.A{}}, {Key: "$db", Value: "app"}})
	raw, _ = wire.AppendOpMsg(nil, 1, 0, 0, bsoncore.Document(body), wire.Sequence{Identifier: "documents", Documents: docs})
	m, _ = wire.DecodeOpMsg(raw)
	if _, err := flatten(m); err == nil {
		t.Error("flatten accepted a sequence that repeats a body field")
	}
}

func TestRetryKeyNeedsLsidAndTxnNumber(t *testing.T) {
	lsid := bson.D{{Key: "id", Value: bson.Binary{Subtype: 4, Data: []byte("0123456789abcdef")}}}
	a := retryKey(doc(t, bson.D{{Key: "insert", Value: "c"}, {Key: "lsid", Value: lsid}, {Key: "txnNumber", Value: int64(3)}}))
	b := retryKey(doc(t, bson.D{{Key: "update", Value: "c"}, {Key: "lsid", Value: lsid}, {Key: "txnNumber", Value: int64(4)}}))
	if a == "" || b == "" || a == b {
		t.Errorf("keys %q %q: want two different non-empty keys", a, b)
	}
	if k := retryKey(doc(t, bson.D{{Key: "insert", Value: "c"}, {Key: "lsid", Value: lsid}})); k != "" {
		t.Errorf("no txnNumber: key %q, want none", k)
	}
}

func TestElectionIDGrowsWithTheTerm(t *testing.T) {
	prev := electionID(0)
	for _, term := range []int64{1, 2, 255, 256, 1 << 40} {
		id := electionID(term)
		if strings.Compare(id.Hex(), prev.Hex()) <= 0 {
			t.Errorf("electionID(%d) = %s is not above %s", term, id.Hex(), prev.Hex())
		}
		if !strings.HasPrefix(id.Hex(), "7fffffff") {
			t.Errorf("electionID(%d) = %s, want mongod's 7fffffff prefix", term, id.Hex())
		}
		prev = id
	}
}

// startFerret runs an embedded FerretDB on a loopback port until the test
// ends.
func startFerret(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Handler:   "sqlite",
		SQLiteURL: (&url.URL{Scheme: "file", Path: filepath.ToSlash(dir) + "/"}).String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(f.MongoDBURI())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return u.Host
}

type rawConn struct {
	t  *testing.T
	nc net.Conn
	id int32
}

func (c *rawConn) send(flags wire.MsgFlags, d bson.D) int32 {
	c.t.Helper()
	c.id++
	raw, err := wire.AppendOpMsg(nil, c.id, 0, flags, bsoncore.Document(doc(c.t, d)))
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.nc.Write(raw); err != nil {
		c.t.Fatal(err)
	}
	return c.id
}

func (c *rawConn) recv() (wire.Header, bson.Raw) {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	m, _, err := wire.ReadMessage(c.nc, 0, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	r, err := wire.DecodeOpMsg(m.Raw)
	if err != nil {
		c.t.Fatal(err)
	}
	return m.Header, bson.Raw(r.Body())
}

func (c *rawConn) run(d bson.D) bson.Raw {
	c.t.Helper()
	id := c.send(0, d)
	h, r := c.recv()
	if h.ResponseTo != id {
		c.t.Fatalf("reply answers %d, want %d", h.ResponseTo, id)
	}
	return r
}

// TestSingleMemberSetServesInProcess runs a one-member set in the test
// process: it elects itself, records writes in its oplog, keeps the
// framing of what passes through, answers no moreToCome request, closes a
// connection on a bad frame, and leaves no goroutine behind.
func TestSingleMemberSetServesInProcess(t *testing.T) {
	// Checked once FerretDB has stopped too (cleanups run last first): it
	// opens a database pool per database the shim touches.
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	backend := startFerret(t)
	cfg := DefaultConfig()
	cfg.SetName, cfg.Self, cfg.Backend = "rs0", "solo", backend
	cfg.ElectionTimeout, cfg.Heartbeat = 300*time.Millisecond, 50*time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Members = []Member{{Name: "solo", Host: ln.Addr().String(), Dial: ln.Addr().String()}}
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln, nil) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := &rawConn{t: t, nc: nc}
	deadline := time.Now().Add(10 * time.Second)
	for {
		h := c.run(bson.D{{Key: "hello", Value: 1}, {Key: "$db", Value: "admin"}})
		if w, _ := h.Lookup("isWritablePrimary").BooleanOK(); w {
			if me, _ := h.Lookup("me").StringValueOK(); me != ln.Addr().String() {
				t.Errorf("me %q", me)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no primary: %s", h)
		}
		time.Sleep(50 * time.Millisecond) // polling the election, bounded by deadline
	}
	r := c.run(bson.D{{Key: "insert", Value: "c"}, {Key: "documents", Value: bson.A{bson.D{{Key: "x", Value: 1}}}},
		{Key: "writeConcern", Value: bson.D{{Key: "w", Value: "majority"}}}, {Key: "$db", Value: "app"}})
	if n, _ := r.Lookup("n").AsInt64OK(); n != 1 || !okValue(r) {
		t.Fatalf("insert: %s", r)
	}
	// A write without a reply: nothing comes back for it, and the next
	// reply answers the next request.
	c.send(wire.MoreToCome, bson.D{{Key: "insert", Value: "c"}, {Key: "documents", Value: bson.A{bson.D{{Key: "x", Value: 2}}}},
		{Key: "writeConcern", Value: bson.D{{Key: "w", Value: 0}}}, {Key: "$db", Value: "app"}})
	c.send(wire.MoreToCome, bson.D{{Key: "ping", Value: 1}, {Key: "$db", Value: "admin"}}) // passes through
	r = c.run(bson.D{{Key: "count", Value: "c"}, {Key: "$db", Value: "app"}})
	if n, _ := r.Lookup("n").AsInt64OK(); n != 2 {
		t.Fatalf("count after a moreToCome insert: %s", r)
	}
	// The oplog has both writes and the term's first entry.
	st := c.run(bson.D{{Key: "replSetGetStatus", Value: 1}, {Key: "$db", Value: "admin"}})
	if s, _ := st.Lookup("members", "0", "stateStr").StringValueOK(); s != "PRIMARY" {
		t.Errorf("status: %s", st)
	}
	ctl := c.run(bson.D{{Key: "rssimControl", Value: 1}, {Key: "$db", Value: "admin"}})
	if i, _ := ctl.Lookup("lastIndex").AsInt64OK(); i != 3 {
		t.Errorf("last oplog index %d, want 3 (no-op, insert, insert): %s", i, ctl)
	}
	// A checksummed request is answered (the checksum is not passed on).
	raw, _ := wire.AppendOpMsg(nil, 99, 0, wire.ChecksumPresent, bsoncore.Document(doc(t, bson.D{{Key: "find", Value: "c"}, {Key: "$db", Value: "app"}})))
	if _, err := nc.Write(raw); err != nil {
		t.Fatal(err)
	}
	if h, r := c.recv(); h.ResponseTo != 99 || !okValue(r) {
		t.Fatalf("checksummed find: answers %d: %s", h.ResponseTo, r)
	}
	// Legacy drivers open with isMaster on OP_QUERY: answered in an
	// OP_REPLY; any other OP_QUERY command is refused as mongod 5.1+ does.
	for _, tc := range []struct {
		query bson.D
		check func(bson.Raw) bool
	}{
		{bson.D{{Key: "isMaster", Value: 1}}, func(r bson.Raw) bool {
			m, _ := r.Lookup("ismaster").BooleanOK()
			set, _ := r.Lookup("setName").StringValueOK()
			return m && set == "rs0"
		}},
		{bson.D{{Key: "$query", Value: bson.D{{Key: "ismaster", Value: 1}}}, {Key: "$readPreference", Value: bson.D{{Key: "mode", Value: "secondaryPreferred"}}}}, func(r bson.Raw) bool {
			m, _ := r.Lookup("ismaster").BooleanOK()
			return m
		}},
		{bson.D{{Key: "find", Value: "c"}}, func(r bson.Raw) bool {
			code, _ := r.Lookup("code").AsInt64OK()
			return code == codeUnsupportedOpQuery
		}},
	} {
		q, err := wire.AppendOpQuery(nil, 50, 0, "admin.$cmd", 0, -1, bsoncore.Document(doc(t, tc.query)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nc.Write(q); err != nil {
			t.Fatal(err)
		}
		_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		m, _, err := wire.ReadMessage(nc, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		r, err := wire.DecodeOpReply(m.Raw)
		if err != nil || r.Header.ResponseTo != 50 {
			t.Fatalf("OP_QUERY %v: reply %v answering %d", tc.query, err, r.Header.ResponseTo)
		}
		it := r.Docs()
		d, _ := it.Next()
		if !tc.check(bson.Raw(d)) {
			t.Errorf("OP_QUERY %v: %s", tc.query, bson.Raw(d))
		}
	}
	// A bad frame: an error reply, then the connection closes.
	bad := make([]byte, 21)
	binary.LittleEndian.PutUint32(bad, 21)
	binary.LittleEndian.PutUint32(bad[4:], 5)
	binary.LittleEndian.PutUint32(bad[12:], uint32(wire.OpCodeMsg))
	if _, err := nc.Write(bad); err != nil {
		t.Fatal(err)
	}
	if _, r := c.recv(); okValue(r) || !strings.Contains(r.Lookup("errmsg").StringValue(), "bad OP_MSG") {
		t.Errorf("bad frame reply: %s", r)
	}
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("after a bad frame the connection reads %v, want EOF", err)
	}
}
