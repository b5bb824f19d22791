package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/dbrouter/dbrouter/admin"
)

func TestUsageErrorsExitTwo(t *testing.T) {
	for _, args := range [][]string{{}, {"bogus"}, {"--nope", "status"}, {"status", "-o", "xml"}, {"status", "extra"}} {
		var out, errb bytes.Buffer
		if got := run(args, &out, &errb); got != 2 || errb.Len() == 0 {
			t.Errorf("routerctl %v: exit %d, stderr %q", args, got, errb.String())
		}
	}
}

func TestStatus(t *testing.T) {
	st := admin.Status{Clusters: []admin.ClusterStatus{{Name: "app", Kind: "mysql", Primary: "db1", Phase: "serving",
		Members: []admin.MemberStatus{{Name: "db1", Role: "primary", Healthy: true}, {Name: "db2", Role: "replica", LagMs: 12}}}}}
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
	for _, want := range []string{"cluster app", "primary db1", "db2", "replica", "12"} {
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
