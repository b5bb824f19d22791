package mongo

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
	"github.com/dbrouter/dbrouter/topology"
	tmongo "github.com/dbrouter/dbrouter/topology/mongo"
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

// BenchmarkForwardFind is a find by _id through the proxy and, for the
// ratio, the same find sent by the same driver straight to the member
// (FerretDB on one process). The allocations are mostly the driver's.
func BenchmarkForwardFind(b *testing.B) {
	mc := chaos.StartMongoT(b, 1)
	m := mc.Members[0]
	p, err := New(Config{Cluster: "bench", Members: []Member{{Name: m.Name, Addr: m.Addr()}}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	b.Cleanup(func() { cancel(); <-done })

	seed := connect(b, m.URI())
	if _, err := seed.Database("app").Collection("bench").InsertOne(context.Background(),
		bson.D{{Key: "_id", Value: 1}, {Key: "name", Value: "ada"}}); err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct{ name, uri string }{
		{"proxy", "mongodb://" + ln.Addr().String() + "/"},
		{"direct", m.URI()},
	} {
		b.Run(tc.name, func(b *testing.B) {
			coll := connect(b, tc.uri).Database("app").Collection("bench")
			filter := bson.D{{Key: "_id", Value: 1}}
			ctx := context.Background()
			if err := coll.FindOne(ctx, filter).Err(); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := coll.FindOne(ctx, filter).Err(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHotPath drives one client connection through a real proxy
// session on loopback, with a topology: read a find by _id, classify it,
// route it (the primary, from the snapshot), take a pooled member
// connection, forward, read the member's reply, inspect it (no cursor, no
// state change), relay it, hand the connection back. The member is a
// FerretDB process and the client a raw loop with preallocated buffers,
// so the allocations counted are the proxy's: steady state must allocate
// nothing.
func BenchmarkHotPath(b *testing.B) {
	mc := chaos.StartMongoT(b, 1)
	m := mc.Members[0]
	ft := &fakeTopo{}
	ft.ms = []topology.Member{{Name: m.Name, Addr: m.Addr(), Reachable: true,
		Detail: &tmongo.Detail{SetName: "rs0", MaxWireVersion: 21, Writable: true}}}
	ft.set(0, nil)
	p, err := New(Config{Cluster: "bench", Topology: ft, Members: []Member{{Name: m.Name, Addr: m.Addr()}}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	b.Cleanup(func() { cancel(); <-done })

	seed := connect(b, m.URI())
	if _, err := seed.Database("app").Collection("bench").InsertOne(context.Background(),
		bson.D{{Key: "_id", Value: 1}, {Key: "name", Value: "ada"}}); err != nil {
		b.Fatal(err)
	}
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	// The Go driver's FindOne by _id, with its implicit session.
	body := bsoncore.NewDocumentBuilder().AppendString("find", "bench").
		AppendDocument("filter", bsoncore.NewDocumentBuilder().AppendInt32("_id", 1).Build()).
		AppendInt32("limit", 1).AppendBoolean("singleBatch", true).
		AppendDocument("lsid", bsoncore.NewDocumentBuilder().AppendBinary("id", 4, make([]byte, 16)).Build()).
		AppendString("$db", "app").Build()
	msg, err := wire.AppendOpMsg(nil, 1, 0, 0, body)
	if err != nil {
		b.Fatal(err)
	}
	r := bufio.NewReaderSize(nc, 4096)
	buf := make([]byte, 0, 4096)
	roundTrip := func() {
		if _, err := nc.Write(msg); err != nil {
			b.Fatal(err)
		}
		var rm wire.Message
		rm, buf, err = wire.ReadMessage(r, 0, buf)
		if err != nil {
			b.Fatal(err)
		}
		if ri := inspectReply(rm.Raw); !ri.ok {
			b.Fatalf("find failed: %x", rm.Raw)
		}
	}
	for range 100 { // warm: pool, buffers
		roundTrip()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		roundTrip()
	}
}
