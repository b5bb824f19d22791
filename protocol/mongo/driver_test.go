package mongo

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// The Go driver v2, unmodified, is the client these tests hold the proxy
// to: it connects, hands shakes, authenticates and pings as it would
// against a mongos.

func TestGoDriverConnectsAndPingsWithoutCredentials(t *testing.T) {
	addr, p := startProxy(t, Config{Cluster: "c1"})
	c := connect(t, "mongodb://"+addr+"/")
	if err := c.Ping(testCtx(t), nil); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if n := p.Sessions(); n == 0 {
		t.Fatalf("Sessions() = 0 with a connected driver")
	}
	if m := p.MemberConns(); m == nil || len(m) != 0 {
		t.Fatalf("MemberConns() = %v, want an empty map", m)
	}
}

func TestGoDriverAuthenticatesWithSCRAMSHA256(t *testing.T) {
	addr, _ := startProxy(t, Config{Cluster: "c1", Users: testUsers})
	c := connect(t, "mongodb://alice:s3cret%20pass@"+addr+"/?authSource=admin")
	ctx := testCtx(t)
	if err := c.Ping(ctx, nil); err != nil {
		t.Fatalf("ping: %v", err)
	}
	var hello bson.M
	if err := c.Database("admin").RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Decode(&hello); err != nil {
		t.Fatalf("hello: %v", err)
	}
	for k, want := range map[string]any{
		"isWritablePrimary": true, "msg": "isdbgrid", "maxWireVersion": int32(MinMaxWireVersion),
		"minWireVersion": int32(0), "logicalSessionTimeoutMinutes": int32(30),
		"maxBsonObjectSize": int32(16777216), "maxMessageSizeBytes": int32(48000000),
		"maxWriteBatchSize": int32(100000), "ok": 1.0,
	} {
		if hello[k] != want {
			t.Errorf("hello %s = %#v, want %#v", k, hello[k], want)
		}
	}
	for _, k := range []string{"setName", "hosts", "helloOk", "ismaster", "topologyVersion", "compression"} {
		if v, ok := hello[k]; ok {
			t.Errorf("hello has %s = %v; it should not", k, v)
		}
	}
	if _, ok := hello["localTime"].(bson.DateTime); !ok {
		t.Errorf("hello localTime = %#v, want a date", hello["localTime"])
	}
	if id, ok := hello["connectionId"].(int32); !ok || id <= 0 {
		t.Errorf("hello connectionId = %#v, want a positive int32", hello["connectionId"])
	}
	var bi bson.M
	if err := c.Database("admin").RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&bi); err != nil {
		t.Fatalf("buildInfo: %v", err)
	}
	if bi["version"] != "4.4.0" {
		t.Errorf("buildInfo version %v, want 4.4.0 for wire version 9", bi["version"])
	}
}

func TestGoDriverWrongPasswordIsAuthenticationFailed(t *testing.T) {
	addr, _ := startProxy(t, Config{Cluster: "c1", Users: testUsers})
	for _, tc := range []struct{ name, userinfo string }{
		{"wrong password", "alice:nope"},
		// An unknown user gets no saslSupportedMechs, so the driver tries
		// SCRAM-SHA-1: still 18, as from mongod.
		{"unknown user", "mallory:s3cret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := connect(t, "mongodb://"+tc.userinfo+"@"+addr+"/?authSource=admin")
			err := c.Ping(testCtx(t), nil)
			if err == nil {
				t.Fatal("ping succeeded with bad credentials")
			}
			var se mongo.ServerError
			if !errors.As(err, &se) || !se.HasErrorCode(18) {
				t.Fatalf("ping: %v, want a server error with code 18 (AuthenticationFailed)", err)
			}
		})
	}
}

func TestGoDriverUnroutedCommandGetsNotRoutedYet(t *testing.T) {
	addr, _ := startProxy(t, Config{Cluster: "c1", Users: testUsers})
	c := connect(t, "mongodb://bob:hunter2@"+addr+"/?authSource=admin")
	err := c.Database("app").RunCommand(testCtx(t), bson.D{{Key: "find", Value: "users"}}).Err()
	var ce mongo.CommandError
	if !errors.As(err, &ce) {
		t.Fatalf("find: %v, want a command error", err)
	}
	if ce.Code != CodeNotRoutedYet.Code || ce.Name != CodeNotRoutedYet.Name || !strings.Contains(ce.Message, "not routed yet") {
		t.Fatalf("find: code %d %s %q, want %d %s and \"not routed yet\"", ce.Code, ce.Name, ce.Message,
			CodeNotRoutedYet.Code, CodeNotRoutedYet.Name)
	}
}

// TestGoDriverReplicaSetURIFails: docs/mongo.md promises this failure (the
// proxy is a mongos to drivers, and a mongos is no replica set member), and
// quotes the driver's words; this keeps the quote honest.
func TestGoDriverReplicaSetURIFails(t *testing.T) {
	addr, _ := startProxy(t, Config{Cluster: "c1"})
	c := connect(t, "mongodb://"+addr+"/?replicaSet=rs0")
	ctx, cancel := context.WithTimeout(testCtx(t), time.Second)
	defer cancel()
	err := c.Ping(ctx, nil)
	if err == nil {
		t.Fatal("ping succeeded with replicaSet= in the URI")
	}
	t.Logf("the driver says: %v", err)
	if !strings.Contains(err.Error(), "server selection error") || !strings.Contains(err.Error(), "ReplicaSetNoPrimary") {
		t.Fatalf("ping: %v; docs/mongo.md quotes \"server selection error\" and ReplicaSetNoPrimary", err)
	}
}
