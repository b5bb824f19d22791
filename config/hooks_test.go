package config

import (
	"strings"
	"testing"
	"time"
)

func TestHooksParseWithDefaults(t *testing.T) {
	t.Setenv("DBROUTER_TEST_PW", "s3cret")
	t.Setenv("DBROUTER_TEST_HOOK_TOKEN", "Bearer t0ken")
	cfg, err := Parse([]byte(valid + `
hooks:
  - command: [/usr/local/bin/page, --team, db]
    on: [failover_begin, failover_done]
  - name: chat
    url: https://hooks.example.com/dbrouter
    headers: {Authorization: {env: DBROUTER_TEST_HOOK_TOKEN}}
    timeout: 3s
`))
	if err != nil {
		t.Fatal(err)
	}
	h := cfg.Hooks
	if len(h) != 2 || h[0].Name != "hooks[0]" || h[0].Timeout.D() != 10*time.Second || len(h[0].Command) != 3 ||
		h[1].Name != "chat" || h[1].Timeout.D() != 3*time.Second || Password(h[1].Headers["Authorization"]) != "Bearer t0ken" {
		t.Fatalf("hooks: %+v", h)
	}
}

func TestHooksInvalidNameTheField(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"  - {on: [failover_done]}\n", "hooks[0]: set command (argv list) or url"},
		{"  - {command: [x], url: \"https://a/\"}\n", "hooks[0]: set command or url, not both"},
		{"  - {command: [\"\"]}\n", "hooks[0].command[0]: empty program"},
		{"  - {url: \"ftp://a/\"}\n", `hooks[0].url: "ftp://a/" is not an http:// or https:// URL`},
		{"  - {url: \"hooks.example.com\"}\n", `hooks[0].url: "hooks.example.com" is not an http:// or https:// URL`},
		{"  - {command: [x], headers: {A: b}}\n", "hooks[0].headers: only for a url hook"},
		{"  - {url: \"https://a/\", headers: {A: {env: DBROUTER_TEST_UNSET_HOOK}}}\n", "hooks[0].headers.A: environment variable DBROUTER_TEST_UNSET_HOOK is not set"},
		{"  - {command: [x], on: [failover_done, switchover_rollback]}\n", `hooks[0].on[1]: "switchover_rollback" is not a decision kind`},
		{"  - {command: [x], timeout: -1s}\n", "hooks[0].timeout: must be positive"},
		{"  - {command: [x], name: a}\n  - {command: [y], name: a}\n", `hooks[1].name: duplicate hook "a"`},
		{"  - {command: [x], when: always}\n", "field when not found"},
	} {
		_, err := Parse([]byte(valid + "hooks:\n" + tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", strings.TrimSpace(tc.yaml), err, tc.want)
		}
	}
}
