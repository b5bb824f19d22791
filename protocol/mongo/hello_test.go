package mongo

import (
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
)

// helloWant is what one hello reply must and must not hold.
type helloWant struct {
	has    map[string]any // key: value (a bool, int32, string, or []string)
	hasNot []string
}

func TestHelloFields(t *testing.T) {
	addr, _ := startProxy(t, Config{Cluster: "c1", Users: testUsers, MaxWireVersion: 21})
	common := map[string]any{
		"msg": "isdbgrid", "maxWireVersion": int32(21), "minWireVersion": int32(0),
		"logicalSessionTimeoutMinutes": int32(30), "maxBsonObjectSize": int32(16777216),
		"maxMessageSizeBytes": int32(48000000), "maxWriteBatchSize": int32(100000),
	}
	never := []string{"setName", "hosts", "topologyVersion", "compression", "speculativeAuthenticate"}
	for _, tc := range []struct {
		name string
		body bsoncore.Document
		want helloWant
	}{
		{"hello answers isWritablePrimary and no helloOk unasked",
			bsoncore.NewDocumentBuilder().AppendInt32("hello", 1).AppendString("$db", "admin").Build(),
			helloWant{has: map[string]any{"isWritablePrimary": true}, hasNot: []string{"helloOk", "ismaster", "saslSupportedMechs"}}},
		{"helloOk only when asked",
			bsoncore.NewDocumentBuilder().AppendInt32("hello", 1).AppendBoolean("helloOk", true).AppendString("$db", "admin").Build(),
			helloWant{has: map[string]any{"helloOk": true, "isWritablePrimary": true}}},
		{"helloOk false is not asking",
			bsoncore.NewDocumentBuilder().AppendInt32("hello", 1).AppendBoolean("helloOk", false).AppendString("$db", "admin").Build(),
			helloWant{hasNot: []string{"helloOk"}}},
		{"isMaster answers ismaster",
			bsoncore.NewDocumentBuilder().AppendInt32("isMaster", 1).AppendString("$db", "admin").Build(),
			helloWant{has: map[string]any{"ismaster": true}, hasNot: []string{"isWritablePrimary"}}},
		{"lower-case ismaster too",
			bsoncore.NewDocumentBuilder().AppendInt32("ismaster", 1).AppendString("$db", "admin").Build(),
			helloWant{has: map[string]any{"ismaster": true}}},
		{"saslSupportedMechs for a configured user",
			bsoncore.NewDocumentBuilder().AppendInt32("hello", 1).AppendString("saslSupportedMechs", "admin.alice").AppendString("$db", "admin").Build(),
			helloWant{has: map[string]any{"saslSupportedMechs": []string{"SCRAM-SHA-256"}}}},
		{"no saslSupportedMechs for an unknown user",
			bsoncore.NewDocumentBuilder().AppendInt32("hello", 1).AppendString("saslSupportedMechs", "admin.mallory").AppendString("$db", "admin").Build(),
			helloWant{hasNot: []string{"saslSupportedMechs"}}},
		{"no saslSupportedMechs for a user of another database",
			bsoncore.NewDocumentBuilder().AppendInt32("hello", 1).AppendString("saslSupportedMechs", "app.alice").AppendString("$db", "admin").Build(),
			helloWant{hasNot: []string{"saslSupportedMechs"}}},
		{"a speculativeAuthenticate that cannot start is left out",
			bsoncore.NewDocumentBuilder().AppendInt32("hello", 1).
				StartDocument("speculativeAuthenticate").AppendInt32("saslStart", 1).AppendString("mechanism", "SCRAM-SHA-256").FinishDocument().
				AppendString("$db", "admin").Build(),
			helloWant{has: map[string]any{"isWritablePrimary": true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			reply := c.command(tc.body)
			checkHello(t, reply, common, never, tc.want)
		})
	}
}

func checkHello(t *testing.T, reply bsoncore.Document, common map[string]any, never []string, want helloWant) {
	t.Helper()
	if !isOK(reply) {
		t.Fatalf("hello failed: %v", reply)
	}
	check := func(k string, v any) {
		got, err := reply.LookupErr(k)
		if err != nil {
			t.Errorf("%s missing from %v", k, reply)
			return
		}
		switch v := v.(type) {
		case bool:
			if b, ok := got.BooleanOK(); !ok || b != v {
				t.Errorf("%s = %v, want %v", k, got, v)
			}
		case int32:
			if n, ok := got.Int32OK(); !ok || n != v {
				t.Errorf("%s = %v, want int32 %v", k, got, v)
			}
		case string:
			if s, ok := got.StringValueOK(); !ok || s != v {
				t.Errorf("%s = %v, want %q", k, got, v)
			}
		case []string:
			arr, ok := got.ArrayOK()
			vals, _ := arr.Values()
			var ss []string
			for _, e := range vals {
				ss = append(ss, e.StringValue())
			}
			if !ok || strings.Join(ss, ",") != strings.Join(v, ",") {
				t.Errorf("%s = %v, want %v", k, got, v)
			}
		}
	}
	for k, v := range common {
		check(k, v)
	}
	for k, v := range want.has {
		check(k, v)
	}
	for _, k := range append(append([]string(nil), never...), want.hasNot...) {
		if v, err := reply.LookupErr(k); err == nil {
			t.Errorf("reply has %s = %v; it should not", k, v)
		}
	}
	if _, ok := reply.Lookup("localTime").DateTimeOK(); !ok {
		t.Errorf("localTime missing or not a date: %v", reply)
	}
	if id, ok := reply.Lookup("connectionId").Int32OK(); !ok || id <= 0 {
		t.Errorf("connectionId = %v, want a positive int32", reply.Lookup("connectionId"))
	}
}

// TestLegacyOpQueryIsMasterGetsOpReply: drivers that may meet a pre-3.6
// server send their first isMaster as an OP_QUERY on admin.$cmd and read
// an OP_REPLY, whatever the server speaks afterwards.
func TestLegacyOpQueryIsMasterGetsOpReply(t *testing.T) {
	addr, _ := startProxy(t, Config{Cluster: "c1", Users: testUsers})
	for _, tc := range []struct {
		name  string
		query bsoncore.Document
		want  helloWant
	}{
		{"isMaster", bsoncore.NewDocumentBuilder().AppendInt32("isMaster", 1).AppendBoolean("helloOk", true).
			AppendString("saslSupportedMechs", "admin.bob").Build(),
			helloWant{has: map[string]any{"ismaster": true, "helloOk": true, "saslSupportedMechs": []string{"SCRAM-SHA-256"}}}},
		{"wrapped in $query with a read preference", bsoncore.NewDocumentBuilder().
			StartDocument("$query").AppendInt32("isMaster", 1).FinishDocument().
			StartDocument("$readPreference").AppendString("mode", "primaryPreferred").FinishDocument().Build(),
			helloWant{has: map[string]any{"ismaster": true}, hasNot: []string{"helloOk"}}},
		{"hello", bsoncore.NewDocumentBuilder().AppendInt32("hello", 1).Build(),
			helloWant{has: map[string]any{"isWritablePrimary": true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			c.id = 41
			msg, err := wire.AppendOpQuery(nil, c.id, 0, "admin.$cmd", 0, -1, tc.query, nil)
			if err != nil {
				t.Fatal(err)
			}
			c.send(msg)
			reply := c.replyBody(wire.OpCodeReply)
			checkHello(t, reply, map[string]any{"msg": "isdbgrid", "maxWireVersion": int32(MinMaxWireVersion)}, []string{"setName", "hosts"}, tc.want)
			// The session goes on in OP_MSG, as a driver's does.
			if r := c.command(cmd("ping")); !isOK(r) {
				t.Fatalf("ping after the legacy handshake: %v", r)
			}
		})
	}
}

// TestOpQueryIsOnlyForTheHandshake: a find in OP_QUERY (removed from
// MongoDB 5.1+) is answered with an error in OP_REPLY, and the session
// stays usable.
func TestOpQueryIsOnlyForTheHandshake(t *testing.T) {
	addr, _ := startProxy(t, Config{Cluster: "c1"})
	c := dialRaw(t, addr)
	c.id = 5
	msg, err := wire.AppendOpQuery(nil, c.id, 0, "app.users", 0, -1, bsoncore.NewDocumentBuilder().AppendString("name", "x").Build(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.send(msg)
	reply := c.replyBody(wire.OpCodeReply)
	if isOK(reply) || replyCode(reply) != CodeProtocolError.Code {
		t.Fatalf("OP_QUERY find: %v, want ProtocolError", reply)
	}
	if r := c.command(cmd("ping")); !isOK(r) {
		t.Fatalf("ping after: %v", r)
	}
}

func TestBuildInfoMatchesTheWireVersion(t *testing.T) {
	for _, tc := range []struct {
		wire    int32
		version string
	}{
		{0, "4.4.0"}, {9, "4.4.0"}, {12, "4.4.0"}, {13, "5.0.0"}, {17, "6.0.0"}, {21, "7.0.0"}, {24, "7.0.0"}, {25, "8.0.0"},
	} {
		addr, _ := startProxy(t, Config{MaxWireVersion: tc.wire})
		c := dialRaw(t, addr)
		reply := c.command(cmd("buildInfo"))
		if v := reply.Lookup("version").StringValue(); v != tc.version {
			t.Errorf("wire %d: buildInfo version %s, want %s", tc.wire, v, tc.version)
		}
		if arr, ok := reply.Lookup("versionArray").ArrayOK(); !ok || len(arr) < 5 {
			t.Errorf("wire %d: versionArray %v", tc.wire, reply.Lookup("versionArray"))
		}
	}
}

func TestNewEnforcesTheWireVersionFloor(t *testing.T) {
	for _, tc := range []struct {
		wire    int32
		wantErr string
		want    int32
	}{
		{0, "", MinMaxWireVersion},
		{8, "below 9", 0},
		{-1, "below 9", 0},
		{9, "", 9},
		{25, "", 25},
		{26, "above 25", 0},
	} {
		p, err := New(Config{MaxWireVersion: tc.wire}, nil)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("New(maxWireVersion %d): %v, want an error saying %q", tc.wire, err, tc.wantErr)
		case tc.wantErr == "" && err != nil:
			t.Errorf("New(maxWireVersion %d): %v", tc.wire, err)
		case tc.wantErr == "" && p.cfg.MaxWireVersion != tc.want:
			t.Errorf("New(maxWireVersion %d) announces %d, want %d", tc.wire, p.cfg.MaxWireVersion, tc.want)
		}
	}
}

func TestNewRejectsBadUsers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		users []User
		want  string
	}{
		{"no name", []User{{Password: "x"}}, "users[0].name: missing"},
		{"no password", []User{{Name: "a"}}, "users[0] (a).password: missing"},
		{"twice", []User{{Name: "a", Password: "x"}, {Name: "a", Password: "y"}}, `users[1].name: "a" appears twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Config{Cluster: "c1", Users: tc.users}, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want %q", err, tc.want)
			}
		})
	}
}

// TestNewKeepsNoPassword: the proxy holds the users' salted keys, never
// their passwords.
func TestNewKeepsNoPassword(t *testing.T) {
	p, err := New(Config{Users: testUsers}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.cfg.Users != nil {
		t.Fatalf("the proxy keeps its Config's users: %v", p.cfg.Users)
	}
	c := p.auth.creds["alice"]
	if c.Iters != scramIterations || len(c.Salt) != 28 || len(c.StoredKey) != 32 || len(c.ServerKey) != 32 {
		t.Fatalf("alice's credentials: %d iterations, %d-byte salt, keys %d and %d bytes", c.Iters, len(c.Salt), len(c.StoredKey), len(c.ServerKey))
	}
}
