package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/admin"
	"github.com/dbrouter/dbrouter/topology"
)

func TestUsageErrorsExitTwo(t *testing.T) {
	for _, args := range [][]string{{}, {"bogus"}, {"--nope", "status"}, {"status", "-o", "xml"}, {"status", "extra"},
		{"promote", "app"}, {"promote", "app", "db2", "--timeout", "-1s"}, {"maintenance", "maybe", "app", "db2"}, {"history"}, {"members", "x"},
		{"members", "add", "a4"}, {"members", "add", "a4", "127.0.0.1:7304"}, {"members", "remove"}, {"members", "remove", "a3", "a4"}} {
		var out, errb bytes.Buffer
		if got := run(args, &out, &errb); got != 2 || errb.Len() == 0 {
			t.Errorf("routerctl %v: exit %d, stderr %q", args, got, errb.String())
		}
	}
}

func TestStatus(t *testing.T) {
	st := admin.Status{Clusters: []admin.ClusterStatus{{Name: "app", Kind: "mariadb", Primary: "db1", Phase: "serving",
		Members:  []admin.MemberStatus{{Name: "db1", Role: "primary", Healthy: true}, {Name: "db2", Role: "replica", LagMs: 12}},
		Warnings: []topology.Warning{{Member: "db2", Check: topology.CheckReplicaSemiOff, Message: "db2: semi-sync is off on this replica"}}}}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status" {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(st)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	var out, errb bytes.Buffer
	if got := run([]string{"--admin", addr, "status"}, &out, &errb); got != 0 {
		t.Fatalf("exit %d: %s", got, errb.String())
	}
	for _, want := range []string{"cluster app", "primary db1", "db2", "replica", "12", "WARNING: db2: semi-sync is off on this replica"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if got := run([]string{"--admin", addr, "status", "-o", "json"}, &out, &errb); got != 0 {
		t.Fatal(got)
	}
	var back admin.Status
	if err := json.Unmarshal(out.Bytes(), &back); err != nil || back.Clusters[0].Members[1].LagMs != 12 {
		t.Fatalf("json: %v %+v", err, back)
	}
	srv.Close()
	errb.Reset()
	if got := run([]string{"--admin", addr, "status"}, &out, &errb); got != 1 || !strings.Contains(errb.String(), addr) {
		t.Fatalf("unreachable admin: exit %d, %q", got, errb.String())
	}
}

// TestStatusReplicaSet: a replica set's table shows each member's role
// (the arbiter too), lag and last write optime, and the PSA warning.
func TestStatusReplicaSet(t *testing.T) {
	st := admin.Status{Clusters: []admin.ClusterStatus{{Name: "docs", Kind: "mongodb", Primary: "db1", Phase: "serving", Epoch: 3,
		Members: []admin.MemberStatus{{Name: "db1", Role: "primary", Healthy: true, Position: "3:1796209252.1"},
			{Name: "db2", Role: "replica", LagMs: 40, Position: "3:1796209251.7"}, {Name: "arb", Role: "arbiter", LagMs: -1}},
		Warnings: []topology.Warning{{Member: "arb", Check: "psa_write_concern", Message: "replica set docs has an arbiter (arb): w:1 writes can be rolled back"}}}}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _ = json.NewEncoder(w).Encode(st) }))
	defer srv.Close()
	var out, errb bytes.Buffer
	if got := run([]string{"--admin", strings.TrimPrefix(srv.URL, "http://"), "status"}, &out, &errb); got != 0 {
		t.Fatalf("exit %d: %s", got, errb.String())
	}
	for _, want := range []string{"cluster docs (mongodb)", "epoch 3", "OPTIME", "3:1796209251.7", "arbiter", "40", "WARNING: replica set docs has an arbiter"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestPromoteSignsWithTheSecret(t *testing.T) {
	secret := "0123456789abcdef-secret"
	var got admin.PromoteRequest
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/v1/node" {
			_ = json.NewEncoder(w).Encode(admin.NodeAnswer{Node: "a1"})
			return
		}
		if sig, err := admin.Verify(r, body, []byte(secret), time.Now()); err != nil || sig.Target != "a1" {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": fmt.Sprintf("%v (target %q)", err, sig.Target)})
			return
		}
		if r.URL.Path != "/v1/clusters/app/promote" {
			http.NotFound(w, r)
			return
		}
		_ = json.Unmarshal(body, &got)
		if got.Member == "db9" {
			w.WriteHeader(http.StatusConflict)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "switchover refused: db9 is not a member of cluster app"})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"primary": got.Member})
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	// Without the secret: a one-line reason, exit 1, nothing sent.
	t.Setenv("DBROUTER_SECRET_FILE", "")
	if code := run([]string{"--admin", addr, "promote", "app", "db2"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "--secret-file") || got.Member != "" {
		t.Fatalf("no secret: exit %d, %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"--admin", addr, "--secret-file", file, "promote", "app", "db2", "--timeout", "5s"}, &out, &errb); code != 0 {
		t.Fatalf("promote: exit %d, %s", code, errb.String())
	}
	if got.Member != "db2" || got.Timeout != "5s" || !strings.Contains(out.String(), "db2 is the primary") {
		t.Fatalf("request %+v, output %q", got, out.String())
	}
	errb.Reset()
	if code := run([]string{"--admin", addr, "--secret-file", file, "promote", "app", "db9"}, &out, &errb); code != 1 ||
		strings.Count(strings.TrimSpace(errb.String()), "\n") != 0 || !strings.Contains(errb.String(), "not a member") {
		t.Fatalf("refusal: exit %d, %q", code, errb.String())
	}
}

func TestMembersAddAndRemoveAreSigned(t *testing.T) {
	secret := "0123456789abcdef-secret"
	var paths []string
	var bodies []map[string]string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method == "GET" && r.URL.Path == "/v1/raft/members" {
			_ = json.NewEncoder(w).Encode(map[string]any{"servers": []map[string]any{{"id": "a4", "addr": "127.0.0.1:7304", "voter": true}}})
			return
		}
		if r.URL.Path == "/v1/node" {
			_ = json.NewEncoder(w).Encode(admin.NodeAnswer{Node: "a1"})
			return
		}
		if sig, err := admin.Verify(r, body, []byte(secret), time.Now()); err != nil || sig.Target != "a1" {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": fmt.Sprintf("%v (target %q)", err, sig.Target)})
			return
		}
		var m map[string]string
		_ = json.Unmarshal(body, &m)
		paths, bodies = append(paths, r.URL.Path), append(bodies, m)
		_ = json.NewEncoder(w).Encode(map[string]string{"done": m["id"]})
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"--admin", addr, "--secret-file", file, "members", "add", "a4", "127.0.0.1:7304", "127.0.0.1:7084"}, &out, &errb); code != 0 {
		t.Fatalf("add: exit %d, %s", code, errb.String())
	}
	if code := run([]string{"--admin", addr, "--secret-file", file, "members", "remove", "a3"}, &out, &errb); code != 0 {
		t.Fatalf("remove: exit %d, %s", code, errb.String())
	}
	want := []string{"/v1/raft/arbiters", "/v1/raft/remove"}
	if len(paths) != 2 || paths[0] != want[0] || paths[1] != want[1] ||
		bodies[0]["id"] != "a4" || bodies[0]["raft"] != "127.0.0.1:7304" || bodies[0]["admin"] != "127.0.0.1:7084" || bodies[1]["id"] != "a3" {
		t.Fatalf("requests %v %v", paths, bodies)
	}
	if !strings.Contains(out.String(), "a4") || !strings.Contains(out.String(), "voter (arbiter)") {
		t.Fatalf("output %q", out.String())
	}
}
