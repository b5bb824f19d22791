package config

import (
	"strings"
	"testing"
)

func TestAdminAccessSettings(t *testing.T) {
	t.Setenv("DBROUTER_TEST_PW", "x")
	for _, tc := range []struct {
		admin string
		want  string // "" = valid
	}{
		{"admin: {listen: 127.0.0.1:7080}\n", ""},
		{"admin: {listen: 127.0.0.1:7080, pprof: true, token: {value: 0123456789abcdef}}\n", ""},
		{"admin: {listen: 127.0.0.1:7080, token: short}\n", "admin.token: too short (5 bytes)"},
		{"admin: {listen: 127.0.0.1:7080, token: {env: DBROUTER_UNSET_TOKEN}}\n", "admin.token: environment variable DBROUTER_UNSET_TOKEN is not set"},
		{"admin: {listen: 127.0.0.1:7080, pprof: maybe}\n", "line 1: cannot unmarshal !!str `maybe` into bool"},
	} {
		c, err := Parse([]byte(tc.admin + valid))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.admin, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want %q", tc.admin, err, tc.want)
		case tc.want == "" && strings.Contains(tc.admin, "pprof: true") && (!c.Admin.Pprof || Password(c.Admin.Token) != "0123456789abcdef"):
			t.Errorf("%s: parsed %+v", tc.admin, c.Admin)
		}
	}
}
