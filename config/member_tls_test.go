package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dbrouter/dbrouter/chaos"
)

// TestMariaDBMemberTLS: kind mariadb's member_tls, a cluster-level key (as
// every MariaDB key) with mongodb.member_tls's fields. Every file is read at
// validation and a problem names its key and the reason, on arbiters too
// (their steps connect to members as much as the proxy does); on a kind
// mongodb cluster the key names the kind it belongs to.
func TestMariaDBMemberTLS(t *testing.T) {
	t.Setenv("DBROUTER_TEST_PW", "x")
	certs := chaos.NewCertsT(t, "config")
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	q := func(s string) string { return `"` + s + `"` }
	memberTLS := func(kv string) string { return "member_tls: {" + kv + "}" }
	const arbiter = `
role: arbiter
name: a1
control: {secret: 0123456789abcdef0123, raft_listen: 127.0.0.1:7301, dir: /tmp/a1, arbiters: [{name: a1, raft: 127.0.0.1:7301, admin: 127.0.0.1:7081}]}
clusters:
  - name: app
    members:
      - {name: db1, addr: "127.0.0.1:3306"}
    monitor: {user: admin, password: admin}
    replication: {user: repl, password: repl}
`
	onArbiter := func(line string) string {
		return strings.Replace(arbiter, "    members:", "    "+line+"\n    members:", 1)
	}
	const mt = "clusters[0].member_tls"
	for _, tc := range []struct {
		name string
		in   string
		want []string
	}{
		{"CA only", withClusterLines(memberTLS("ca_file: " + q(certs.CAFile))), nil},
		{"client certificate and name", withClusterLines(memberTLS("ca_file: " + q(certs.CAFile) + ", cert_file: " + q(certs.ClientCertFile) + ", key_file: " + q(certs.ClientKeyFile) + ", server_name: localhost")), nil},
		{"explicit kind", withClusterLines("kind: mariadb", memberTLS("ca_file: "+q(certs.CAFile))), nil},
		{"on an arbiter", onArbiter(memberTLS("ca_file: " + q(certs.CAFile))), nil},
		{"without a CA", withClusterLines(memberTLS("server_name: x")), []string{mt + ".ca_file: required (the CA members' certificates are verified against)"}},
		{"empty", withClusterLines("member_tls: {}"), []string{mt + ".ca_file: required (the CA members' certificates are verified against)"}},
		{"CA unreadable", withClusterLines(memberTLS("ca_file: " + q(missing))), []string{mt + ".ca_file: open " + missing + ": no such file or directory"}},
		{"CA unreadable on an arbiter", onArbiter(memberTLS("ca_file: " + q(missing))), []string{mt + ".ca_file: open " + missing + ": no such file or directory"}},
		{"CA not PEM", withClusterLines(memberTLS("ca_file: " + q(junk))), []string{mt + ".ca_file: " + junk + " holds no PEM certificate"}},
		{"cert without key", withClusterLines(memberTLS("ca_file: " + q(certs.CAFile) + ", cert_file: " + q(certs.ClientCertFile))), []string{mt + ": cert_file and key_file go together"}},
		{"key without cert", withClusterLines(memberTLS("ca_file: " + q(certs.CAFile) + ", key_file: " + q(certs.ClientKeyFile))), []string{mt + ": cert_file and key_file go together"}},
		{"key of another cert", withClusterLines(memberTLS("ca_file: " + q(certs.CAFile) + ", cert_file: " + q(certs.ClientCertFile) + ", key_file: " + q(certs.KeyFile))),
			[]string{mt + ".cert_file: tls: private key does not match public key"}},
		{"cert unreadable", withClusterLines(memberTLS("ca_file: " + q(certs.CAFile) + ", cert_file: " + q(missing) + ", key_file: " + q(certs.ClientKeyFile))),
			[]string{mt + ".cert_file: open " + missing + ": no such file or directory"}},
		{"unknown key", withClusterLines(memberTLS("ca: x")), []string{"field ca not found"}},
		// required is implicit: member_tls never falls back to plaintext,
		// so there is no key to say so.
		{"no required key", withClusterLines(memberTLS("ca_file: " + q(certs.CAFile) + ", required: true")), []string{"field required not found"}},
	} {
		t.Run(tc.name, func(t *testing.T) { wantParse(t, tc.in, tc.want) })
	}

	t.Run("only for kind mariadb", func(t *testing.T) {
		in := `
role: proxy
clusters:
  - name: docs
    kind: mongodb
    listen: 127.0.0.1:27017
    member_tls: {ca_file: ` + q(certs.CAFile) + `}
    members:
      - {name: m1, addr: "127.0.0.1:27101"}
`
		wantParse(t, in, []string{"clusters[0].member_tls: only for kind mariadb (this cluster is kind mongodb)"})
	})

	t.Run("client config", func(t *testing.T) {
		c, err := Parse([]byte(withClusterLines(memberTLS("ca_file: " + q(certs.CAFile) + ", cert_file: " + q(certs.ClientCertFile) + ", key_file: " + q(certs.ClientKeyFile) + ", server_name: localhost"))))
		if err != nil {
			t.Fatal(err)
		}
		cli, err := c.Clusters[0].MariaDB.MemberTLS.ClientConfig()
		if err != nil || cli.ServerName != "localhost" || cli.RootCAs == nil || len(cli.Certificates) != 1 {
			t.Fatalf("client config %+v, %v", cli, err)
		}
		// Without member_tls nothing changes: plaintext, as before.
		c, err = Parse([]byte(valid))
		if err != nil || c.Clusters[0].MariaDB.MemberTLS != nil {
			t.Fatalf("member_tls without the key: %+v, %v", c.Clusters[0].MariaDB.MemberTLS, err)
		}
	})
}
