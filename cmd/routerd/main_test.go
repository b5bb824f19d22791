package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestBadInvocationsExitTwo(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("role: proxy\nclusters:\n  - name: a\n    listen: 127.0.0.1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unknown := filepath.Join(dir, "unknown.yaml")
	if err := os.WriteFile(unknown, []byte("rolle: proxy\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{},
		{"--bogus"},
		{"--config", bad},
		{"--config", unknown},
		{"--config", filepath.Join(dir, "missing.yaml")},
		{"--config", bad, "extra"},
	} {
		if got := run(args); got != 2 {
			t.Errorf("routerd %v exited %d, want 2", args, got)
		}
	}
}
