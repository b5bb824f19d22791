package mongo

import (
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
)

var update = flag.Bool("update", false, "rewrite the seed corpus in testdata/fuzz")

// commandSeeds are command bodies drivers send to a proxy before and
// after authenticating, and a few they should not.
func commandSeeds() map[string]bsoncore.Document {
	b := bsoncore.NewDocumentBuilder
	return map[string]bsoncore.Document{
		"hello": b().AppendInt32("hello", 1).AppendBoolean("helloOk", true).
			AppendString("saslSupportedMechs", "admin.alice").
			StartDocument("client").StartDocument("driver").AppendString("name", "mongo-go-driver").FinishDocument().FinishDocument().
			AppendArray("compression", bsoncore.NewArrayBuilder().Build()).
			StartDocument("speculativeAuthenticate").AppendInt32("saslStart", 1).AppendString("mechanism", "SCRAM-SHA-256").
			AppendBinary("payload", 0, []byte("n,,n=alice,r=nonce")).AppendString("db", "admin").FinishDocument().
			AppendString("$db", "admin").Build(),
		"ismaster-legacy": b().AppendInt32("ismaster", 1).AppendInt32("saslSupportedMechs", 1).AppendString("$db", "admin").Build(),
		"saslstart": b().AppendInt32("saslStart", 1).AppendString("mechanism", "SCRAM-SHA-256").
			AppendBinary("payload", 0, []byte("n,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL")).AppendInt32("autoAuthorize", 1).
			StartDocument("options").AppendBoolean("skipEmptyExchange", true).FinishDocument().
			AppendString("$db", "admin").Build(),
		"saslcontinue": b().AppendInt32("saslContinue", 1).AppendInt32("conversationId", 1).
			AppendString("payload", "c=biws,r=x,p=dHpBUyoAF").AppendString("$db", "admin").Build(),
		"find": b().AppendString("find", "users").StartDocument("filter").FinishDocument().
			StartDocument("lsid").AppendBinary("id", 4, []byte("0123456789abcdef")).FinishDocument().
			AppendString("$db", "app").Build(),
		"buildinfo": b().AppendInt32("buildinfo", 1).AppendString("$db", "admin").Build(),
		"empty":     b().Build(),
	}
}

// opMsg frames body as an OP_MSG's only section without checking it, so
// that the fuzzer's bytes reach the decoder as a client would send them.
func opMsg(id int32, flags wire.MsgFlags, body []byte) []byte {
	msg := wire.AppendHeader(nil, wire.Header{RequestID: id, OpCode: wire.OpCodeMsg})
	msg = binary.LittleEndian.AppendUint32(msg, uint32(flags))
	msg = append(msg, byte(wire.SectionBody))
	msg = append(msg, body...)
	binary.LittleEndian.PutUint32(msg, uint32(len(msg)))
	return msg
}

// FuzzCommand feeds arbitrary OP_MSG bodies to a session's dispatch, before
// and after authentication: it must never panic, and every message it
// answers gets one well-formed OP_MSG replying to it with ok, and code and
// errmsg when ok is 0.
func FuzzCommand(f *testing.F) {
	for _, body := range commandSeeds() {
		f.Add([]byte(body), false)
		f.Add([]byte(body), true)
	}
	p, err := New(Config{Cluster: "fuzz", Users: testUsers}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte, authenticated bool) {
		s := p.newSession(nil)
		if authenticated {
			s.user = "alice"
		}
		for i := int32(1); i <= 2; i++ { // twice: a first message may leave state behind (a SASL conversation)
			raw := opMsg(i, 0, body)
			h, _ := wire.ParseHeader(raw)
			reply, err := s.handle(wire.Message{Header: h, Raw: raw})
			if reply == nil {
				t.Fatalf("no reply (err %v)", err)
			}
			m, err := wire.DecodeOpMsg(reply)
			if err != nil {
				t.Fatalf("the reply does not decode: %v", err)
			}
			if m.Header.ResponseTo != i {
				t.Fatalf("reply to %d answers %d", i, m.Header.ResponseTo)
			}
			doc := m.Body()
			if err := doc.Validate(); err != nil {
				t.Fatalf("reply body: %v", err)
			}
			ok, found := wire.Lookup(doc, "ok")
			if !found {
				t.Fatalf("reply without ok: %v", doc)
			}
			if f, _ := ok.AsFloat64OK(); f == 0 {
				if _, found := wire.Lookup(doc, "code"); !found {
					t.Fatalf("error reply without code: %v", doc)
				}
			}
		}
	})
}

// TestSeedCorpus keeps testdata/fuzz in step with commandSeeds (regenerate
// with -update).
func TestSeedCorpus(t *testing.T) {
	for name, body := range commandSeeds() {
		path := filepath.Join("testdata", "fuzz", "FuzzCommand", name)
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nbool(false)\n", []byte(body))
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -run TestSeedCorpus -update)", err)
		}
		if string(got) != want {
			t.Fatalf("%s is stale: run go test -run TestSeedCorpus -update", path)
		}
	}
}
