package mongo

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
)

// withMajority adds writeConcern {w: "majority"} to a request's body and
// keeps its document sequences and framing intact.
func TestWithMajorityRewritesTheBody(t *testing.T) {
	body := bsoncore.NewDocumentBuilder().AppendString("insert", "c").AppendString("$db", "app").Build()
	docs := bsoncore.NewDocumentBuilder().AppendInt32("_id", 1).Build()
	raw, err := wire.AppendOpMsg(nil, 7, 0, 0, body, wire.Sequence{Identifier: "documents", Documents: docs})
	if err != nil {
		t.Fatal(err)
	}
	out := withMajority([]byte("keep"), raw)
	if string(out[:4]) != "keep" {
		t.Fatal("dst's prefix was overwritten")
	}
	m, err := wire.DecodeOpMsg(out[4:])
	if err != nil {
		t.Fatalf("rewritten request does not decode: %v", err)
	}
	wc, ok := wire.Lookup(m.Body(), "writeConcern")
	if !ok {
		t.Fatalf("no writeConcern in %v", m.Body())
	}
	if w, _ := wc.Document().Lookup("w").StringValueOK(); w != "majority" {
		t.Fatalf("writeConcern %v", wc)
	}
	if m.CommandName() != "insert" {
		t.Fatalf("command %q", m.CommandName())
	}
	seq, ok := m.Sequence("documents")
	if !ok || seq.Len() != 1 || string(seq.Documents) != string(docs) {
		t.Fatalf("sequence %v %v", seq, ok)
	}
	// A request that does not parse goes unchanged.
	if got := withMajority(nil, raw[:19]); string(got) != string(raw[:19]) {
		t.Fatal("a truncated request was rewritten")
	}
}

// mongodb.write_concern: majority: a write without its own write concern
// waits for a majority. With replication paused on both secondaries of a
// three-member set, such a write is not acknowledged (without the option
// it would be: w:1), while one that says w:1 itself is: the proxy adds a
// write concern, never replaces one.
func TestMajorityWritesWaitForAMajority(t *testing.T) {
	e := startRSEnv(t, Config{MajorityWrites: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, m := range e.rs.Members {
		if i != e.first {
			if err := e.rs.PauseReplication(ctx, m, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	c, err := mongo.Connect(options.Client().ApplyURI("mongodb://" + e.addr + "/").SetRetryWrites(false))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(context.Background())
	coll := c.Database("app").Collection("wc")
	short, cancelShort := context.WithTimeout(ctx, 1500*time.Millisecond)
	_, err = coll.InsertOne(short, bson.D{{Key: "_id", Value: "majority"}})
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("insert without a write concern, replication paused: %v, want it still waiting for a majority", err)
	}
	w1 := c.Database("app").Collection("wc", options.Collection().SetWriteConcern(writeconcern.W1()))
	if _, err := w1.InsertOne(ctx, bson.D{{Key: "_id", Value: "own-w1"}}); err != nil {
		t.Fatalf("insert with its own w:1: %v", err)
	}
	for i, m := range e.rs.Members {
		if i != e.first {
			if err := e.rs.PauseReplication(ctx, m, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "after"}}); err != nil {
		t.Fatalf("insert once replication resumed: %v", err)
	}
}
