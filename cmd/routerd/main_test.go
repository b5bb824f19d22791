package main

import (
	"os"
	"path/filepath"
	"runtime/debug"
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

func TestRuntimeTuned(t *testing.T) {
	made := []debug.BuildSetting{{Key: "-compiler", Value: "gc"}, {Key: "-ldflags", Value: "-X=runtime.godebugDefault=schedtrace=2147483647"}}
	plain := []debug.BuildSetting{{Key: "-compiler", Value: "gc"}, {Key: "-ldflags", Value: "-s -w"}}
	for _, tc := range []struct {
		godebug string
		build   []debug.BuildSetting
		want    bool
	}{
		{"", made, true},
		{"", plain, false},
		{"", nil, false},
		{"schedtrace=100000", plain, true},
		{"madvdontneed=1,schedtrace=2147483647", nil, true},
		{"schedtrace=0", made, false}, // $GODEBUG overrides the build's default
		{"madvdontneed=1", plain, false},
	} {
		if got := runtimeTuned(tc.godebug, tc.build); got != tc.want {
			t.Errorf("runtimeTuned(%q, %v) = %v, want %v", tc.godebug, tc.build, got, tc.want)
		}
	}
}
