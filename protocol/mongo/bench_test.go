package mongo

import (
	"bytes"
	"testing"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
)

// BenchmarkHello is a session answering a driver's heartbeat hello (every
// connection's monitor sends one every heartbeatFrequencyMS): read the
// message into the session's buffer, decode it, build the reply document
// and message in the session's buffers. The socket is left out.
func BenchmarkHello(b *testing.B) {
	p, err := New(Config{Cluster: "bench", Users: testUsers}, nil)
	if err != nil {
		b.Fatal(err)
	}
	body := bsoncore.NewDocumentBuilder().AppendInt32("hello", 1).AppendBoolean("helloOk", true).
		AppendInt32("maxAwaitTimeMS", 10000).AppendString("$db", "admin").Build()
	msg, err := wire.AppendOpMsg(nil, 7, 0, 0, body)
	if err != nil {
		b.Fatal(err)
	}
	s := p.newSession(nil)
	r := bytes.NewReader(msg)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(msg)
		m, buf, err := wire.ReadMessage(r, maxMessageSize, s.buf)
		if err != nil {
			b.Fatal(err)
		}
		s.buf = buf
		reply, err := s.handle(m)
		if err != nil || len(reply) == 0 {
			b.Fatalf("reply %d bytes, %v", len(reply), err)
		}
	}
}
