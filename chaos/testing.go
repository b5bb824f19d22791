package chaos

import (
	"context"
	"testing"
	"time"
)

// StartT starts a cluster for a test and stops it when the test ends, failed
// or not. A missing mariadbd fails the test with the install command: CI must
// never pass by skipping.
func StartT(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Log == nil {
		opts.Log = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("start mariadb cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, m := range c.Members {
				t.Logf("%s error log tail:\n%s", m.Name, m.LogTail(1500))
			}
		}
		_ = c.Close()
	})
	return c
}

// StartMongoT starts n Mongo-wire members (ferretmember processes) for a test
// and stops them when the test ends, failed or not. A member that cannot be
// built or started fails the test with the reason: CI must never pass by
// skipping.
func StartMongoT(t testing.TB, n int) *MongoCluster {
	t.Helper()
	// The first build of cmd/ferretmember on a machine compiles FerretDB and
	// SQLite (minutes); it has its own bound, and the one below is for the
	// members alone.
	began := time.Now()
	if _, err := ferretMemberBinary(); err != nil {
		t.Fatalf("start mongo members: %v", err)
	}
	if d := time.Since(began); d > time.Second {
		t.Logf("mongo: ferretmember built in %s", d.Round(time.Millisecond))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := StartMongo(ctx, MongoOptions{Members: n, Log: t.Logf})
	if err != nil {
		t.Fatalf("start mongo members: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, m := range c.Members {
				t.Logf("%s log tail:\n%s", m.Name, m.LogTail(1500))
			}
		}
		_ = c.Close()
	})
	return c
}
