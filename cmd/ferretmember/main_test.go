package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/dbrouter/dbrouter/chaos"
)

func TestBadFlagsExitWithUsage(t *testing.T) {
	dir := t.TempDir()
	certs := chaos.NewCertsT(t, "ferretmember")
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"no flags", nil},
		{"no dir", []string{"-port", "27017"}},
		{"no port", []string{"-dir", dir}},
		{"port out of range", []string{"-port", "70000", "-dir", dir}},
		{"unknown log level", []string{"-port", "27017", "-dir", dir, "-log-level", "loud"}},
		{"stray argument", []string{"-port", "27017", "-dir", dir, "extra"}},
		{"unknown flag", []string{"-bind", "0.0.0.0"}},
		{"rs without peers", []string{"-port", "27017", "-dir", dir, "-rs", "rs0", "-member", "a"}},
		{"rs member not a peer", []string{"-port", "27017", "-dir", dir, "-rs", "rs0", "-member", "z", "-peer", "a=127.0.0.1:1"}},
		{"peer without address", []string{"-port", "27017", "-dir", dir, "-rs", "rs0", "-member", "a", "-peer", "a"}},
		{"peer flags without rs", []string{"-port", "27017", "-dir", dir, "-member", "a", "-peer", "a=127.0.0.1:1"}},
		{"bad tag", []string{"-port", "27017", "-dir", dir, "-rs", "rs0", "-member", "a", "-peer", "a=127.0.0.1:1", "-tag", "dc"}},
		{"heartbeat not under the election timeout", []string{"-port", "27017", "-dir", dir, "-rs", "rs0", "-member", "a", "-peer", "a=127.0.0.1:1", "-heartbeat", "10s", "-election-timeout", "5s"}},
		{"only an arbiter", []string{"-port", "27017", "-dir", dir, "-rs", "rs0", "-member", "a", "-peer", "a=127.0.0.1:1", "-arbiter"}},
		{"tls without rs", []string{"-port", "27017", "-dir", dir, "-tls-cert", certs.CertFile, "-tls-key", certs.KeyFile, "-tls-ca", certs.CAFile}},
		{"tls without a CA", []string{"-port", "27017", "-dir", dir, "-rs", "rs0", "-member", "a", "-peer", "a=127.0.0.1:1", "-tls-cert", certs.CertFile, "-tls-key", certs.KeyFile}},
		{"tls key of another certificate", []string{"-port", "27017", "-dir", dir, "-rs", "rs0", "-member", "a", "-peer", "a=127.0.0.1:1", "-tls-cert", certs.CertFile, "-tls-key", certs.ClientKeyFile, "-tls-ca", certs.CAFile}},
		{"tls CA not PEM", []string{"-port", "27017", "-dir", dir, "-rs", "rs0", "-member", "a", "-peer", "a=127.0.0.1:1", "-tls-cert", certs.CertFile, "-tls-key", certs.KeyFile, "-tls-ca", certs.KeyFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			if code := run(tc.args, &stdout, &stderr); code != 2 {
				t.Fatalf("exit %d, want 2; stderr: %s", code, stderr.String())
			}
			if stdout.Len() != 0 {
				t.Fatalf("printed %q on stdout, want nothing (no ready line)", stdout.String())
			}
		})
	}
}

func TestServeIsReadyOnLoopbackAndReturnsWhenStopped(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "not yet there")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, 0, dir, slog.New(slog.NewTextHandler(io.Discard, nil)), pw)
		pw.Close()
	}()

	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("no ready line: %v (serve: %v)", err, <-done)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }() // serve must never block on stdout
	uri, ok := strings.CutPrefix(strings.TrimSpace(line), readyPrefix)
	if !ok {
		t.Fatalf("ready line %q does not start with %q", line, readyPrefix)
	}
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "mongodb" || u.Hostname() != "127.0.0.1" {
		t.Fatalf("ready line URI %q (%v), want mongodb://127.0.0.1:PORT/", uri, err)
	}
	// A write lands in SQLite files in the data dir, whose name needs
	// escaping in the file: URI.
	cl, err := mongo.Connect(options.Client().ApplyURI(uri).SetDirect(true).SetServerSelectionTimeout(2 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cl.Disconnect(context.Background()) }()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if _, err := cl.Database("app").Collection("c").InsertOne(wctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatalf("insert: %v", err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "app.sqlite*"))
	if err != nil || len(files) == 0 {
		entries, _ := os.ReadDir(dir)
		t.Fatalf("no app.sqlite in the data dir after a write (%v): %v", err, entries)
	}

	// Stopped with the client's connection still open, as SIGTERM finds a
	// member in a test.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve after stop: %v", err)
		}
	case <-time.After(shutdownGrace + 5*time.Second):
		t.Fatal("serve did not return after stop")
	}
}

func TestSQLiteURLIsAFileURIEndingInSlash(t *testing.T) {
	for abs, want := range map[string]string{
		"/tmp/x":         "file:///tmp/x/",
		"/tmp/a b/data":  "file:///tmp/a%20b/data/",
		"/tmp/q?x#y/dat": "file:///tmp/q%3Fx%23y/dat/",
	} {
		if got := sqliteURL(abs); got != want {
			t.Errorf("sqliteURL(%q) = %q, want %q", abs, got, want)
		}
	}
}
