package mongo

import (
	"testing"

	"github.com/xdg-go/scram"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
)

// TestAuthGate: before authenticating, a session may run only the
// handshake, the SASL exchange, ping, buildInfo and endSessions; anything
// else is Unauthorized (13), as from mongod. After authenticating, or on a
// proxy without users, the rest gets the not-routed-yet answer.
func TestAuthGate(t *testing.T) {
	withUsers, _ := startProxy(t, Config{Cluster: "c1", Users: testUsers})
	noUsers, _ := startProxy(t, Config{Cluster: "c1"})
	// One connection of each kind serves every row: an unanswered
	// command leaves the session as it was.
	anon := dialRaw(t, withUsers)
	authed := dialRaw(t, withUsers)
	if r := authed.authenticate("alice", "s3cret pass", true); !isOK(r) {
		t.Fatalf("authenticate: %v", r)
	}
	open := dialRaw(t, noUsers)
	const ok = 1
	for _, tc := range []struct {
		command string
		// the code (ok for success) on a proxy with users, unauthenticated
		// and authenticated, and on a proxy without users.
		anon, authed, open int32
	}{
		{"hello", ok, ok, ok},
		{"isMaster", ok, ok, ok},
		{"ismaster", ok, ok, ok},
		{"ping", ok, ok, ok},
		{"buildInfo", ok, ok, ok},
		{"buildinfo", ok, ok, ok},
		{"endSessions", ok, ok, ok},
		{"find", 13, 9500, 9500},
		{"insert", 13, 9500, 9500},
		{"listDatabases", 13, 9500, 9500},
		{"getMore", 13, 9500, 9500},
		{"logout", 13, 9500, 9500},
		{"authenticate", 13, 9500, 9500},
		{"serverStatus", 13, 9500, 9500},
		{"Ping", 13, 9500, 9500}, // command names are case-sensitive
		{"", 13, 9500, 9500},
	} {
		t.Run(tc.command, func(t *testing.T) {
			var body bsoncore.Document
			if tc.command == "" {
				body = bsoncore.NewDocumentBuilder().Build()
			} else {
				body = cmd(tc.command)
			}
			for _, s := range []struct {
				who  string
				c    *rawConn
				want int32
			}{{"unauthenticated", anon, tc.anon}, {"authenticated", authed, tc.authed}, {"without users", open, tc.open}} {
				s.c.t = t
				r := s.c.command(body)
				got := replyCode(r)
				if isOK(r) {
					got = ok
				}
				if got != s.want {
					t.Errorf("%s: %q answered %v, want code %d", s.who, tc.command, r, s.want)
				}
			}
		})
	}
}

func TestSCRAMConversation(t *testing.T) {
	addr, _ := startProxy(t, Config{Cluster: "c1", Users: testUsers})
	for _, tc := range []struct {
		name      string
		user, pw  string
		skipEmpty bool
		wantCode  int32 // 0: success
	}{
		{"with skipEmptyExchange", "alice", "s3cret pass", true, 0},
		{"with the empty last step", "bob", "hunter2", false, 0},
		{"wrong password", "alice", "s3cret", true, 18},
		{"unknown user", "mallory", "hunter2", true, 18},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			r := c.authenticate(tc.user, tc.pw, tc.skipEmpty)
			if tc.wantCode == 0 {
				if !isOK(r) || !replyBool(r, "done") {
					t.Fatalf("authenticate: %v", r)
				}
				if r := c.command(cmd("find")); replyCode(r) != CodeNotRoutedYet.Code {
					t.Fatalf("find after authenticating: %v, want not routed yet", r)
				}
				return
			}
			if replyCode(r) != tc.wantCode || r.Lookup("codeName").StringValue() != "AuthenticationFailed" {
				t.Fatalf("authenticate: %v, want code %d AuthenticationFailed", r, tc.wantCode)
			}
			if msg := r.Lookup("errmsg").StringValue(); msg != "Authentication failed." {
				t.Fatalf("errmsg %q tells more than mongod would", msg)
			}
			if r := c.command(cmd("find")); replyCode(r) != 13 {
				t.Fatalf("find after a failed authentication: %v, want Unauthorized", r)
			}
		})
	}
}

func TestSASLProtocolSlipsFailClearly(t *testing.T) {
	addr, _ := startProxy(t, Config{Cluster: "c1", Users: testUsers})
	for _, tc := range []struct {
		name string
		body bsoncore.Document
	}{
		{"SCRAM-SHA-1", bsoncore.NewDocumentBuilder().AppendInt32("saslStart", 1).AppendString("mechanism", "SCRAM-SHA-1").
			AppendBinary("payload", 0, []byte("n,,n=alice,r=abc")).AppendString("$db", "admin").Build()},
		{"another auth database", bsoncore.NewDocumentBuilder().AppendInt32("saslStart", 1).AppendString("mechanism", "SCRAM-SHA-256").
			AppendBinary("payload", 0, []byte("n,,n=alice,r=abc")).AppendString("$db", "app").Build()},
		{"no payload", bsoncore.NewDocumentBuilder().AppendInt32("saslStart", 1).AppendString("mechanism", "SCRAM-SHA-256").
			AppendString("$db", "admin").Build()},
		{"continue without start", bsoncore.NewDocumentBuilder().AppendInt32("saslContinue", 1).AppendInt32("conversationId", 1).
			AppendBinary("payload", 0, nil).AppendString("$db", "admin").Build()},
		{"garbage first message", bsoncore.NewDocumentBuilder().AppendInt32("saslStart", 1).AppendString("mechanism", "SCRAM-SHA-256").
			AppendBinary("payload", 0, []byte{0xff, ',', 0}).AppendString("$db", "admin").Build()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			r := c.command(tc.body)
			if replyCode(r) != 18 {
				t.Fatalf("%v, want AuthenticationFailed", r)
			}
			t.Logf("errmsg: %s", r.Lookup("errmsg").StringValue())
		})
	}
	// A conversationId that is not the one in progress ends it.
	c := dialRaw(t, addr)
	start := bsoncore.NewDocumentBuilder().AppendInt32("saslStart", 1).AppendString("mechanism", "SCRAM-SHA-256").
		AppendBinary("payload", 0, []byte("n,,n=alice,r=abcdefgh")).AppendString("$db", "admin").Build()
	if r := c.command(start); !isOK(r) || replyBool(r, "done") {
		t.Fatalf("saslStart: %v", r)
	}
	r := c.command(bsoncore.NewDocumentBuilder().AppendInt32("saslContinue", 1).AppendInt32("conversationId", 99).
		AppendBinary("payload", 0, []byte("c=biws,r=x,p=eA==")).AppendString("$db", "admin").Build())
	if replyCode(r) != 18 {
		t.Fatalf("saslContinue with a wrong conversationId: %v", r)
	}
}

// TestNoUsersRefusesCredentials: a client that sends credentials to a
// proxy without users is told so, not let in as that user.
func TestNoUsersRefusesCredentials(t *testing.T) {
	addr, _ := startProxy(t, Config{Cluster: "c1"})
	c := dialRaw(t, addr)
	r := c.authenticate("alice", "s3cret pass", true)
	if replyCode(r) != 18 {
		t.Fatalf("authenticate: %v, want AuthenticationFailed", r)
	}
}

// TestSpeculativeAuthentication: a saslStart folded into hello is
// answered in hello's speculativeAuthenticate, and the conversation goes
// on with saslContinue, as the Go driver and PyMongo do it; an attempt
// that cannot start leaves the field out, so the driver authenticates the
// usual way (a wrong password fails only at the proof, with 18).
func TestSpeculativeAuthentication(t *testing.T) {
	addr, _ := startProxy(t, Config{Cluster: "c1", Users: testUsers})
	for _, tc := range []struct {
		name, user, pw, mech, db string
		answered                 bool
		wantCode                 int32 // of the saslContinue; 0: success
	}{
		{"right password", "alice", "s3cret pass", "SCRAM-SHA-256", "admin", true, 0},
		{"wrong password", "alice", "wrong", "SCRAM-SHA-256", "admin", true, 18},
		{"unknown user", "mallory", "x", "SCRAM-SHA-256", "admin", false, 0},
		{"SCRAM-SHA-1", "alice", "s3cret pass", "SCRAM-SHA-1", "admin", false, 0},
		{"another database", "alice", "s3cret pass", "SCRAM-SHA-256", "app", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, err := scram.SHA256.NewClient(tc.user, tc.pw, "")
			if err != nil {
				t.Fatal(err)
			}
			conv := client.NewConversation()
			first, err := conv.Step("")
			if err != nil {
				t.Fatal(err)
			}
			c := dialRaw(t, addr)
			hello := c.command(bsoncore.NewDocumentBuilder().AppendInt32("hello", 1).
				StartDocument("speculativeAuthenticate").AppendInt32("saslStart", 1).AppendString("mechanism", tc.mech).
				AppendBinary("payload", 0, []byte(first)).AppendString("db", tc.db).
				StartDocument("options").AppendBoolean("skipEmptyExchange", true).FinishDocument().FinishDocument().
				AppendString("$db", "admin").Build())
			if !isOK(hello) {
				t.Fatalf("hello: %v", hello)
			}
			spec, err := hello.LookupErr("speculativeAuthenticate")
			if !tc.answered {
				if err == nil {
					t.Fatalf("speculativeAuthenticate answered: %v", spec)
				}
				if r := c.command(cmd("find")); replyCode(r) != 13 {
					t.Fatalf("find: %v, want Unauthorized", r)
				}
				return
			}
			if err != nil {
				t.Fatalf("no speculativeAuthenticate in %v", hello)
			}
			sd := spec.Document()
			_, payload, _ := sd.Lookup("payload").BinaryOK()
			if replyBool(sd, "done") || len(payload) == 0 {
				t.Fatalf("speculativeAuthenticate %v", sd)
			}
			final, err := conv.Step(string(payload))
			if err != nil {
				t.Fatal(err)
			}
			r := c.command(bsoncore.NewDocumentBuilder().AppendInt32("saslContinue", 1).
				AppendInt32("conversationId", sd.Lookup("conversationId").Int32()).
				AppendBinary("payload", 0, []byte(final)).AppendString("$db", "admin").Build())
			if tc.wantCode != 0 {
				if replyCode(r) != tc.wantCode {
					t.Fatalf("saslContinue: %v, want code %d", r, tc.wantCode)
				}
				return
			}
			if !isOK(r) || !replyBool(r, "done") {
				t.Fatalf("saslContinue: %v", r)
			}
			if r := c.command(cmd("find")); replyCode(r) != CodeNotRoutedYet.Code {
				t.Fatalf("find after speculative authentication: %v", r)
			}
		})
	}
}
