package main

import (
	"bytes"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/admin"
	"github.com/dbrouter/dbrouter/topology"
)

// TestStatusWithAToken: against a node with admin.token, status fails with
// a message naming the token, and works with --token-file or
// $DBROUTER_TOKEN_FILE.
func TestStatusWithAToken(t *testing.T) {
	snap := &topology.Snapshot{Cluster: "app", Primary: 0, Members: []topology.Member{{Name: "db1", Reachable: true, Role: topology.RolePrimary, Lag: -1}}}
	as := admin.New([]admin.Cluster{{Name: "app", Kind: "mariadb", Snapshot: func() *topology.Snapshot { return snap }}}, nil, prometheus.NewRegistry(), zap.NewNop()).
		Configure(admin.Options{Token: []byte("tok-0123456789abcdef")})
	srv := httptest.NewServer(as.Handler())
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte("tok-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if got := run([]string{"--admin", addr, "status"}, &out, &errb); got != 1 || !strings.Contains(errb.String(), "requires a token") {
		t.Fatalf("without the token: exit %d, %q", got, errb.String())
	}
	out.Reset()
	if got := run([]string{"--admin", addr, "--token-file", tokFile, "status"}, &out, &errb); got != 0 || !strings.Contains(out.String(), "primary db1") {
		t.Fatalf("with --token-file: exit %d, %q %q", got, out.String(), errb.String())
	}
	t.Setenv("DBROUTER_TOKEN_FILE", tokFile)
	out.Reset()
	if got := run([]string{"--admin", addr, "status"}, &out, &errb); got != 0 {
		t.Fatalf("with $DBROUTER_TOKEN_FILE: exit %d, %q", got, errb.String())
	}
}
