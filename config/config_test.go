package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/chaos"
)

const valid = `
role: proxy
site: dc1
clusters:
  - name: app
    listen: 127.0.0.1:6033
    members:
      - {name: db1, addr: "127.0.0.1:3306"}
      - {name: db2, addr: "127.0.0.1:3307", site: dc2}
    monitor: {user: admin, password: admin}
    users:
      - {name: app, password: {env: DBROUTER_TEST_PW}}
`

func TestParseValidAppliesDefaults(t *testing.T) {
	t.Setenv("DBROUTER_TEST_PW", "s3cret")
	c, err := Parse([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Clusters[0]
	if cl.ProbeInterval.D() != 500*time.Millisecond || cl.MaxReplicaLag.D() != time.Second || c.Admin.Listen != "127.0.0.1:7080" {
		t.Fatalf("defaults not applied: %+v", cl)
	}
	if got := Password(cl.Users[0].Password); got != "s3cret" {
		t.Fatalf("password from env = %q", got)
	}
	if cl.Users[0].BackendUser != "app" || Password(cl.Users[0].BackendPassword) != "s3cret" {
		t.Fatalf("backend account defaults to the client account: %+v", cl.Users[0])
	}
	if cl.Kind != KindMariaDB {
		t.Fatalf("kind defaults to %q, got %q", KindMariaDB, cl.Kind)
	}
	md := cl.MariaDB
	if md.AuthPlugin != "mysql_native_password" || md.MaxPacket != 64<<20 || *md.AutoIncrementDelayMultiplex != 5 ||
		md.CausalReads != "session" || md.CausalReadsTimeout.D() != time.Second {
		t.Fatalf("mariadb defaults not applied: %+v", md)
	}
}

func TestPasswordFromFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(p, []byte("fromfile\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Parse([]byte(strings.Replace(valid, "{env: DBROUTER_TEST_PW}", "{file: "+p+"}", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if got := Password(c.Clusters[0].Users[0].Password); got != "fromfile" {
		t.Fatalf("password = %q", got)
	}
}

func TestErrorsNameTheField(t *testing.T) {
	t.Setenv("DBROUTER_TEST_PW", "x")
	tests := []struct {
		name, from, to, want string
	}{
		{"missing port", `"127.0.0.1:3307"`, `"127.0.0.1"`, "clusters[0].members[1].addr: missing port"},
		{"unknown field", "site: dc1\n", "site: dc1\nsitee: x\n", "field sitee not found"},
		{"bad duration", "listen: 127.0.0.1:6033", "listen: 127.0.0.1:6033\n    probe_interval: fast", `"fast" is not a duration`},
		{"bad fallback", "listen: 127.0.0.1:6033", "listen: 127.0.0.1:6033\n    reads_without_replica: maybe", "clusters[0].reads_without_replica"},
		{"duplicate member", "name: db2", "name: db1", `clusters[0].members[1].name: duplicate member "db1"`},
		{"unset env", "DBROUTER_TEST_PW", "DBROUTER_UNSET_VAR", "clusters[0].users[0].password: environment variable DBROUTER_UNSET_VAR is not set"},
		{"bad kind", "listen: 127.0.0.1:6033", "listen: 127.0.0.1:6033\n    kind: postgres", `clusters[0].kind: "postgres" is not a kind (supported: mariadb, mongodb)`},
		{"bad port", "127.0.0.1:6033", "127.0.0.1:99999", "clusters[0].listen: port"},
		{"bad role", "role: proxy", "role: boss", "role: \"boss\" is not a role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := strings.Replace(valid, tt.from, tt.to, 1)
			if in == valid {
				t.Fatalf("replacement %q did not apply", tt.from)
			}
			_, err := Parse([]byte(in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestSecretIsNeverPrinted(t *testing.T) {
	s := Secret{Value: "hunter2"}
	if strings.Contains(s.String(), "hunter2") {
		t.Fatal("secret printed")
	}
}

const arbiterCfg = `
role: arbiter
name: a1
admin: {listen: "127.0.0.1:7081"}
control:
  secret: 0123456789abcdef0123
  raft_listen: "127.0.0.1:7301"
  dir: /tmp/a1
  arbiters:
    - {name: a1, raft: "127.0.0.1:7301", admin: "127.0.0.1:7081"}
    - {name: a2, raft: "127.0.0.1:7302", admin: "127.0.0.1:7082"}
    - {name: a3, raft: "127.0.0.1:7303", admin: "127.0.0.1:7083"}
clusters:
  - name: app
    members:
      - {name: db1, addr: "127.0.0.1:3306"}
    monitor: {user: admin, password: admin}
    replication: {user: repl, password: repl}
`

func TestControlPlaneConfig(t *testing.T) {
	c, err := Parse([]byte(arbiterCfg))
	if err != nil {
		t.Fatal(err)
	}
	if c.Control.Lease.D() != 2*time.Second || c.Control.WriteHoldTimeout.D() != 10*time.Second || c.Control.FailureThreshold.D() != 2*time.Second ||
		c.Control.Cooldown.D() != 30*time.Second || c.Control.DrainTimeout.D() != 5*time.Second {
		t.Fatalf("control defaults: %+v", c.Control)
	}
	cases := []struct{ name, from, to, want string }{
		{"unknown role", "role: arbiter", "role: voter", `role: "voter" is not a role`},
		{"short secret", "secret: 0123456789abcdef0123", "secret: short", "control.secret: too short"},
		{"even arbiters", `    - {name: a3, raft: "127.0.0.1:7303", admin: "127.0.0.1:7083"}`, "", "control.arbiters: 2 arbiters"},
		{"arbiter not listed", "name: a1", "name: a9", `name: arbiter "a9" is not listed`},
		{"raft address mismatch", `raft_listen: "127.0.0.1:7301"`, `raft_listen: "127.0.0.1:7309"`, "control.arbiters[0].raft: 127.0.0.1:7301 differs"},
		{"arbiter admin port", `admin: "127.0.0.1:7082"}`, `admin: "127.0.0.1"}`, "control.arbiters[1].admin: missing port"},
		{"replication account", "    replication: {user: repl, password: repl}\n", "", "clusters[0].replication.user: required"},
		{"negative lease", "  dir: /tmp/a1\n", "  dir: /tmp/a1\n  lease: -1s\n", "control.lease: must not be negative"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := strings.Replace(arbiterCfg, tc.from, tc.to, 1)
			if in == arbiterCfg {
				t.Fatalf("case does not change the config")
			}
			_, err := Parse([]byte(in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestCausalReadsModes: read-your-writes is on per session unless the file
// says otherwise; the old booleans still parse (true = session, false =
// off), and anything else is an error naming the field.
func TestCausalReadsModes(t *testing.T) {
	t.Setenv("DBROUTER_TEST_PW", "x")
	for _, tc := range []struct {
		line, want, err string
	}{
		{"", "session", ""},
		{"causal_reads: off", "off", ""},
		{"causal_reads: session", "session", ""},
		{"causal_reads: proxy", "proxy", ""},
		{"causal_reads: true", "session", ""},
		{"causal_reads: false", "off", ""},
		{"causal_reads: False", "off", ""},
		{`causal_reads: "Proxy"`, "proxy", ""},
		{"causal_reads: always", "", `clusters[0].causal_reads: "always" is not a mode (want off, session or proxy)`},
		{"causal_reads: 1", "", `clusters[0].causal_reads: "1" is not a mode`},
	} {
		t.Run(tc.line, func(t *testing.T) {
			in := withClusterLines(tc.line)
			c, err := Parse([]byte(in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Clusters[0].MariaDB.CausalReads; got != tc.want {
				t.Fatalf("causal_reads = %q, want %q", got, tc.want)
			}
		})
	}
}

// wantErrors checks a Parse error against "field: reason" lines: the exact
// path and message of every problem, in order, and no others.
func wantErrors(t *testing.T, err error, want []string) {
	t.Helper()
	var got []string
	if err != nil {
		var es Errors
		if !errors.As(err, &es) {
			t.Fatalf("error %v (%T) is not config.Errors", err, err)
		}
		for _, e := range es {
			got = append(got, e.Error())
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// wantParse parses in and checks the errors as wantErrors does; a single
// want without ": " is a YAML error's text (no field path), looked for in
// the error.
func wantParse(t *testing.T, in string, want []string) {
	t.Helper()
	_, err := Parse([]byte(in))
	if len(want) == 1 && !strings.Contains(want[0], ": ") {
		if err == nil || !strings.Contains(err.Error(), want[0]) {
			t.Fatalf("error %v, want one containing %q", err, want[0])
		}
		return
	}
	wantErrors(t, err, want)
}

// withClusterLines adds lines (each indented as a cluster key) to the valid
// config's only cluster.
func withClusterLines(lines ...string) string {
	add := ""
	for _, l := range lines {
		add += "\n    " + l
	}
	return strings.Replace(valid, "listen: 127.0.0.1:6033", "listen: 127.0.0.1:6033"+add, 1)
}

// TestKindsAccepted: mariadb is the default. kind: mysql is refused with
// the reason (the probes use MariaDB-only SQL, so a MySQL server would just
// look unreachable), and any other unknown kind names the supported ones
// (mongodb has its own test, TestMongoDBCluster). A kind that is refused is the only
// error: MariaDB's keys are judged only against a kind that exists.
func TestKindsAccepted(t *testing.T) {
	t.Setenv("DBROUTER_TEST_PW", "x")
	const mysqlErr = `clusters[0].kind: "mysql" is not supported yet: the probes and failover use MariaDB-only SQL (GTIDs, SHOW ALL SLAVES STATUS); use kind: mariadb for MariaDB servers`
	for _, tc := range []struct {
		name  string
		lines []string
		want  []string
	}{
		{"default", nil, nil},
		{"mariadb", []string{"kind: mariadb"}, nil},
		{"mariadb with its keys", []string{"kind: mariadb", "causal_reads: proxy", "max_packet: 1048576"}, nil},
		{"mysql", []string{"kind: mysql"}, []string{mysqlErr}},
		{"mysql with mariadb keys", []string{"kind: mysql", "causal_reads: proxy", "auth_plugin: caching_sha2_password"}, []string{mysqlErr}},
		{"unknown", []string{"kind: postgres"}, []string{`clusters[0].kind: "postgres" is not a kind (supported: mariadb, mongodb)`}},
		{"unknown with mariadb keys", []string{"kind: postgres", "causal_reads: off"}, []string{`clusters[0].kind: "postgres" is not a kind (supported: mariadb, mongodb)`}},
		{"case matters", []string{"kind: MariaDB"}, []string{`clusters[0].kind: "MariaDB" is not a kind (supported: mariadb, mongodb)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(withClusterLines(tc.lines...)))
			wantErrors(t, err, tc.want)
			if tc.want == nil && c.Clusters[0].Kind != KindMariaDB {
				t.Fatalf("kind = %q", c.Clusters[0].Kind)
			}
		})
	}
}

// TestMariaDBKeysRejectedOnOtherKinds: a MariaDB key written on a cluster of
// another known kind is an error naming it, one per key, in field order. The
// case sets every field of MariaDB, so a field added to the section without
// being covered here fails the count check.
func TestMariaDBKeysRejectedOnOtherKinds(t *testing.T) {
	t.Setenv("DBROUTER_TEST_PW", "x")
	in := withClusterLines("kind: mongodb", "auth_plugin: mysql_native_password", "max_packet: 4096",
		"auto_increment_delay_multiplex: 0", "causal_reads: session", "causal_reads_timeout: 2s",
		"replication: {user: repl, password: repl}", "member_tls: {ca_file: ca.pem}")
	var want []string
	for _, k := range []string{"auth_plugin", "max_packet", "auto_increment_delay_multiplex", "causal_reads", "causal_reads_timeout", "replication", "member_tls"} {
		want = append(want, "clusters[0]."+k+": only for kind mariadb (this cluster is kind mongodb)")
	}
	if n := reflect.TypeOf(MariaDB{}).NumField(); n != len(want) {
		t.Fatalf("MariaDB has %d fields, the case sets %d: set the new one too", n, len(want))
	}
	_, err := Parse([]byte(in))
	wantErrors(t, err, want)
}

// TestMariaDBKeysValidated: kind mariadb's keys keep their checks, each
// error naming the key where it is written (at the cluster's level).
func TestMariaDBKeysValidated(t *testing.T) {
	t.Setenv("DBROUTER_TEST_PW", "x")
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"auth_plugin: caching_sha2_password", nil},
		{"auth_plugin: client_ed25519", []string{`clusters[0].auth_plugin: "client_ed25519" is not supported (want mysql_native_password or caching_sha2_password)`}},
		{"max_packet: 1024", nil},
		{"max_packet: 100", []string{"clusters[0].max_packet: 100 is out of range (1024 to 1073741824 bytes)"}},
		{"max_packet: 2147483648", []string{"clusters[0].max_packet: 2147483648 is out of range (1024 to 1073741824 bytes)"}},
		{"auto_increment_delay_multiplex: 0", nil},
		{"auto_increment_delay_multiplex: -1", []string{"clusters[0].auto_increment_delay_multiplex: must not be negative"}},
		{"causal_reads_timeout: -1s", []string{"clusters[0].causal_reads_timeout: must not be negative"}},
		{"causal_reads: always", []string{`clusters[0].causal_reads: "always" is not a mode (want off, session or proxy)`}},
		{"replication: {user: repl, password: {env: DBROUTER_UNSET_VAR}}", nil}, // checked only with a control plane
	} {
		t.Run(tc.line, func(t *testing.T) {
			c, err := Parse([]byte(withClusterLines(tc.line)))
			wantErrors(t, err, tc.want)
			if tc.line == "auto_increment_delay_multiplex: 0" && *c.Clusters[0].MariaDB.AutoIncrementDelayMultiplex != 0 {
				t.Fatal("an explicit 0 must not be replaced by the default")
			}
		})
	}
}

// TestMongoDBCluster: kind mongodb runs on proxies, with or without a
// control plane, and on arbiters (which follow the set's elections); its
// section is nested under mongodb:,
// its defaults are MongoDB's (localThresholdMS 15 ms), it needs neither
// users nor a monitor account (a set without authentication), and what
// the Mongo proxy does not have yet is refused, never silently ignored.
func TestMongoDBCluster(t *testing.T) {
	t.Setenv("DBROUTER_TEST_PW", "x")
	const mongo = `
role: proxy
clusters:
  - name: docs
    kind: mongodb
    listen: 127.0.0.1:27017
    members:
      - {name: m1, addr: "127.0.0.1:27101"}
      - {name: m2, addr: "127.0.0.1:27102"}
`
	c, err := Parse([]byte(mongo))
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Clusters[0]
	if cl.Kind != KindMongoDB || cl.LocalityWindow.D() != 15*time.Millisecond || cl.MariaDB != (MariaDB{}) {
		t.Fatalf("kind %q, locality_window %s, mariadb section %+v: want mongodb, 15ms, unset", cl.Kind, cl.LocalityWindow.D(), cl.MariaDB)
	}
	with := func(lines ...string) string {
		return strings.Replace(mongo, "    listen: 127.0.0.1:27017", "    listen: 127.0.0.1:27017\n    "+strings.Join(lines, "\n    "), 1)
	}
	for _, tc := range []struct {
		name string
		in   string
		want []string
	}{
		{"section", with("mongodb: {replica_set: rs0, max_wire_version: 21, member_account: {user: proxy, password: {env: DBROUTER_TEST_PW}}}",
			"users: [{name: app, password: pw}]", "monitor: {user: mon, password: mon}", "locality_window: 1ms"), nil},
		{"wire version too old", with("mongodb: {max_wire_version: 8}"), []string{"clusters[0].mongodb.max_wire_version: 8 is out of range (9, MongoDB 4.4, to 25, MongoDB 8.0)"}},
		{"wire version too new", with("mongodb: {max_wire_version: 26}"), []string{"clusters[0].mongodb.max_wire_version: 26 is out of range (9, MongoDB 4.4, to 25, MongoDB 8.0)"}},
		{"member password unresolved", with("mongodb: {member_account: {user: p, password: {env: DBROUTER_UNSET_VAR}}}"), []string{"clusters[0].mongodb.member_account.password: environment variable DBROUTER_UNSET_VAR is not set"}},
		{"unknown key", with("mongodb: {replicaset: rs0}"), []string{"field replicaset not found"}},
		{"backend user", with("users: [{name: app, password: pw, backend_user: root}]"), []string{"clusters[0].users[0].backend_user: not used by kind mongodb: clients log in to the proxy only, and the proxy reaches members as mongodb.member_account (or monitor)"}},
		{"proxy with a control plane", strings.Replace(with(), "role: proxy", "role: proxy\nname: p1\ncontrol: {secret: 0123456789abcdef0123, raft_listen: 127.0.0.1:7101, dir: /tmp/p1, arbiters: [{name: a1, raft: 127.0.0.1:7301, admin: 127.0.0.1:7081}, {name: a2, raft: 127.0.0.1:7302, admin: 127.0.0.1:7082}, {name: a3, raft: 127.0.0.1:7303, admin: 127.0.0.1:7083}]}", 1), nil},
		{"arbiter", strings.Replace(with(), "role: proxy", "role: arbiter\nname: a1\ncontrol: {secret: 0123456789abcdef0123, raft_listen: 127.0.0.1:7301, dir: /tmp/a1, arbiters: [{name: a1, raft: 127.0.0.1:7301, admin: 127.0.0.1:7081}, {name: a2, raft: 127.0.0.1:7302, admin: 127.0.0.1:7082}, {name: a3, raft: 127.0.0.1:7303, admin: 127.0.0.1:7083}]}", 1),
			nil},
		{"write concern majority", with("mongodb: {write_concern: majority}"), nil},
		{"write concern 1", with("mongodb: {write_concern: \"1\"}"), []string{`clusters[0].mongodb.write_concern: "1" is not supported (want majority, or leave it unset to keep each write's own)`}},
	} {
		t.Run(tc.name, func(t *testing.T) { wantParse(t, tc.in, tc.want) })
	}
	// kind mongodb's section on a MariaDB cluster names the kind it is for.
	_, err = Parse([]byte(withClusterLines("mongodb: {replica_set: rs0, max_wire_version: 9}")))
	wantErrors(t, err, []string{
		"clusters[0].mongodb.replica_set: only for kind mongodb (this cluster is kind mariadb)",
		"clusters[0].mongodb.max_wire_version: only for kind mongodb (this cluster is kind mariadb)",
	})
}

// TestMongoDBTLS: client TLS and member TLS on a kind mongodb cluster; every
// file is read at validation, and a problem names its key and the reason
// (unreadable, not PEM, a certificate without its key), so a mistake
// stops start-up instead of showing every member unreachable.
func TestMongoDBTLS(t *testing.T) {
	certs := chaos.NewCertsT(t, "config")
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	const mongo = `
role: ROLE
clusters:
  - name: docs
    kind: mongodb
    listen: 127.0.0.1:27017
    members:
      - {name: m1, addr: "127.0.0.1:27101"}
`
	control := "name: a1\ncontrol: {secret: 0123456789abcdef0123, raft_listen: 127.0.0.1:7301, dir: /tmp/a1, arbiters: [{name: a1, raft: 127.0.0.1:7301, admin: 127.0.0.1:7081}]}"
	with := func(role string, lines ...string) string {
		in := strings.Replace(mongo, "ROLE", role, 1)
		if role == "arbiter" {
			in = strings.Replace(in, "role: arbiter", "role: arbiter\n"+control, 1)
		}
		return strings.Replace(in, "    listen: 127.0.0.1:27017", "    listen: 127.0.0.1:27017\n    "+strings.Join(lines, "\n    "), 1)
	}
	q := func(s string) string { return `"` + s + `"` }
	serverTLS := "tls: {cert_file: " + q(certs.CertFile) + ", key_file: " + q(certs.KeyFile) + "}"
	memberTLS := func(kv string) string { return "mongodb: {member_tls: {" + kv + "}}" }
	const mt = "clusters[0].mongodb.member_tls"
	for _, tc := range []struct {
		name string
		in   string
		want []string
	}{
		{"client tls", with("proxy", serverTLS), nil},
		{"client tls required", with("proxy", "tls: {cert_file: "+q(certs.CertFile)+", key_file: "+q(certs.KeyFile)+", require: true}"), nil},
		{"client tls require without a certificate", with("proxy", "tls: {require: true}"), []string{"clusters[0].tls.require: needs cert_file and key_file"}},
		{"client tls cert without key", with("proxy", "tls: {cert_file: "+q(certs.CertFile)+"}"), []string{"clusters[0].tls: cert_file and key_file go together"}},
		{"client tls unreadable", with("proxy", "tls: {cert_file: "+q(missing)+", key_file: "+q(certs.KeyFile)+"}"),
			[]string{"clusters[0].tls.cert_file: open " + missing + ": no such file or directory"}},
		{"client tls not PEM", with("proxy", "tls: {cert_file: "+q(junk)+", key_file: "+q(certs.KeyFile)+"}"),
			[]string{"clusters[0].tls.cert_file: tls: failed to find any PEM data in certificate input"}},
		{"client tls files not read on an arbiter", with("arbiter", "tls: {cert_file: "+q(missing)+", key_file: "+q(missing)+"}"), nil},
		{"member tls, CA only", with("proxy", memberTLS("ca_file: "+q(certs.CAFile))), nil},
		{"member tls, client certificate and name", with("proxy", memberTLS("ca_file: "+q(certs.CAFile)+", cert_file: "+q(certs.ClientCertFile)+", key_file: "+q(certs.ClientKeyFile)+", server_name: localhost")), nil},
		{"member tls on an arbiter", with("arbiter", memberTLS("ca_file: "+q(certs.CAFile))), nil},
		{"member tls without a CA", with("proxy", memberTLS("server_name: x")), []string{mt + ".ca_file: required (the CA members' certificates are verified against)"}},
		{"member tls empty", with("proxy", "mongodb: {member_tls: {}}"), []string{mt + ".ca_file: required (the CA members' certificates are verified against)"}},
		{"member tls CA unreadable", with("arbiter", memberTLS("ca_file: "+q(missing))), []string{mt + ".ca_file: open " + missing + ": no such file or directory"}},
		{"member tls CA not PEM", with("proxy", memberTLS("ca_file: "+q(junk))), []string{mt + ".ca_file: " + junk + " holds no PEM certificate"}},
		{"member tls cert without key", with("proxy", memberTLS("ca_file: "+q(certs.CAFile)+", cert_file: "+q(certs.ClientCertFile))), []string{mt + ": cert_file and key_file go together"}},
		{"member tls key of another cert", with("proxy", memberTLS("ca_file: "+q(certs.CAFile)+", cert_file: "+q(certs.ClientCertFile)+", key_file: "+q(certs.KeyFile))),
			[]string{mt + ".cert_file: tls: private key does not match public key"}},
		{"member tls unknown key", with("proxy", memberTLS("ca: x")), []string{"field ca not found"}},
	} {
		t.Run(tc.name, func(t *testing.T) { wantParse(t, tc.in, tc.want) })
	}
	// member_tls is kind mongodb's: on a MariaDB cluster it names the kind.
	t.Setenv("DBROUTER_TEST_PW", "x")
	_, err := Parse([]byte(withClusterLines("mongodb: {member_tls: {ca_file: " + q(certs.CAFile) + "}}")))
	wantErrors(t, err, []string{"clusters[0].mongodb.member_tls: only for kind mongodb (this cluster is kind mariadb)"})
	// The configurations built from the files work as a pair.
	c, err := Parse([]byte(with("proxy", serverTLS, memberTLS("ca_file: "+q(certs.CAFile)+", server_name: localhost"))))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := c.Clusters[0].TLS.ServerConfig()
	if err != nil || srv == nil || len(srv.Certificates) != 1 {
		t.Fatalf("server config %v, %v", srv, err)
	}
	cli, err := c.Clusters[0].MongoDB.MemberTLS.ClientConfig()
	if err != nil || cli.ServerName != "localhost" || cli.RootCAs == nil {
		t.Fatalf("client config %+v, %v", cli, err)
	}
}
