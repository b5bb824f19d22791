// Package config owns routerd's configuration file: its shape, defaults, and
// validation. Every error names the field it is about
// (clusters[0].members[2].addr: missing port), and unknown fields are
// rejected, because a typo that silently falls back to a default is how
// routers end up sending writes somewhere unexpected.
package config

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration written as "500ms", "2s".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (e.g. 500ms, 2s)", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Secret is a password given inline, through an environment variable, or in a
// file. It is never logged or printed.
type Secret struct {
	Value string `yaml:"value,omitempty"`
	Env   string `yaml:"env,omitempty"`
	File  string `yaml:"file,omitempty"`
}

// UnmarshalYAML accepts a plain string or {value|env|file: ...}.
func (s *Secret) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		return n.Decode(&s.Value)
	}
	type plain Secret
	var p plain
	dec := n
	if err := strictDecode(dec, &p); err != nil {
		return err
	}
	*s = Secret(p)
	return nil
}

// String hides the value.
func (s Secret) String() string { return "<secret>" }

// resolve returns the secret's value.
func (s Secret) resolve() (string, error) {
	set := 0
	for _, v := range []string{s.Value, s.Env, s.File} {
		if v != "" {
			set++
		}
	}
	if set > 1 {
		return "", errors.New("set only one of value, env, file")
	}
	switch {
	case s.Env != "":
		v, ok := os.LookupEnv(s.Env)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set", s.Env)
		}
		return v, nil
	case s.File != "":
		b, err := os.ReadFile(s.File)
		if err != nil {
			return "", err
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return s.Value, nil
}

// Config is routerd's configuration.
type Config struct {
	// Role: proxy (routes clients) or arbiter (a Raft voter that decides
	// promotions and carries no client traffic).
	Role     string    `yaml:"role"`
	Name     string    `yaml:"name"`
	Site     string    `yaml:"site"`
	Admin    Admin     `yaml:"admin"`
	Log      Log       `yaml:"log"`
	Control  *Control  `yaml:"control"`
	Clusters []Cluster `yaml:"clusters"`
	// StopTimeout bounds a graceful stop (SIGTERM): sessions close at
	// their next statement boundary outside a transaction; what still
	// runs this long after the signal is cut.
	StopTimeout Duration `yaml:"stop_timeout"`
	// Hooks run on the leading arbiter after each control-plane decision.
	Hooks []Hook `yaml:"hooks"`
}

// Control is the Raft control plane. Without it a proxy runs standalone:
// the single writable member is the primary, and nothing is ever promoted.
type Control struct {
	// Secret is shared by every arbiter and proxy: Raft connections and
	// admin requests that change state are authenticated with it.
	Secret Secret `yaml:"secret"`
	// RaftListen is this node's Raft address (other nodes dial it).
	RaftListen string `yaml:"raft_listen"`
	// RaftAdvertise is the address a proxy asks the leader to dial, when it
	// differs from raft_listen (NAT, a tunnel). Default raft_listen.
	RaftAdvertise string `yaml:"raft_advertise"`
	// JoinExisting: this arbiter is being added to a group that already
	// runs; it never bootstraps and waits to be added (routerctl members
	// add). Only for an arbiter with no Raft state yet.
	JoinExisting bool `yaml:"join_existing"`
	// Dir keeps the Raft log, stable store and snapshots.
	Dir      string    `yaml:"dir"`
	Arbiters []Arbiter `yaml:"arbiters"`

	Lease            Duration `yaml:"lease"`
	LeaseMargin      Duration `yaml:"lease_margin"`
	WriteHoldTimeout Duration `yaml:"write_hold_timeout"`
	FailureThreshold Duration `yaml:"failure_threshold"`
	Cooldown         Duration `yaml:"cooldown"`
	DrainTimeout     Duration `yaml:"drain_timeout"`
	ProxyTimeout     Duration `yaml:"proxy_timeout"`
}

// Arbiter is one voter of the control plane.
type Arbiter struct {
	Name  string `yaml:"name"`
	Raft  string `yaml:"raft"`
	Admin string `yaml:"admin"`
}

// Admin is the HTTP admin API.
type Admin struct {
	Listen string `yaml:"listen"`
	// Pprof serves Go profiles at /debug/pprof/ (default off).
	Pprof bool `yaml:"pprof"`
	// Token, when set, is required to read /status, /metrics and the
	// control plane's GET routes (Authorization: Bearer TOKEN); requests
	// signed with the cluster secret pass too.
	Token Secret `yaml:"token"`
}

// Log configures logging.
type Log struct {
	Level string `yaml:"level"` // debug, info, warn, error
	// Format is console (default: human-readable lines) or json (one
	// object per line, for log shippers).
	Format string `yaml:"format"`
}

// The kinds of cluster. Kind says which database a cluster fronts: it
// decides which per-kind section of Cluster applies (MariaDB today), how
// members are probed and promoted, and which wire protocol the listener
// speaks.
const (
	// KindMariaDB is MariaDB primary/replica replication over the MySQL
	// protocol: the probes and failover use MariaDB-only SQL (GTID
	// positions, SHOW ALL SLAVES STATUS, MASTER_GTID_WAIT).
	KindMariaDB = "mariadb"
	// KindMongoDB is a MongoDB replica set over the MongoDB wire protocol:
	// the proxy speaks to clients as a mongos and follows the set's own
	// elections (topology/mongo); under a control plane the arbiters
	// commit the primary the set elected as the epoch, and step a
	// secondary up on a failure or a switchover (arbiter.Mongo).
	KindMongoDB = "mongodb"
)

// Cluster is one replicated database cluster and the listener in front of
// it. Its fields mean the same for every kind; what only one kind has lives
// in that kind's section (MariaDB), validated only for that kind.
type Cluster struct {
	Name    string   `yaml:"name"`
	Kind    string   `yaml:"kind"`
	Listen  string   `yaml:"listen"`
	Members []Member `yaml:"members"`
	// Monitor is the account the probes (and, on arbiters, the promotion
	// steps) log in to members with.
	Monitor                 Account  `yaml:"monitor"`
	Users                   []User   `yaml:"users"`
	TLS                     TLS      `yaml:"tls"`
	ProbeInterval           Duration `yaml:"probe_interval"`
	MaxReplicaLag           Duration `yaml:"max_replica_lag"`
	LocalityWindow          Duration `yaml:"locality_window"`
	ReadsWithoutReplica     string   `yaml:"reads_without_replica"`
	MaxConnectionsPerMember int      `yaml:"max_connections_per_member"`
	PoolTimeout             Duration `yaml:"pool_timeout"`
	ConnectTimeout          Duration `yaml:"connect_timeout"`
	QueryTimeout            Duration `yaml:"query_timeout"`
	ClientIdleTimeout       Duration `yaml:"client_idle_timeout"`
	MaxPromoteLag           Duration `yaml:"max_promote_lag"`
	// MariaDB is kind mariadb's section. Its keys stay at the cluster's
	// level in YAML (inline), as they were written before clusters had
	// kinds, so no existing file has to change; Validate rejects them on a
	// cluster of another kind.
	MariaDB MariaDB `yaml:",inline"`
	// MongoDB is kind mongodb's section (a nested mapping, "mongodb:").
	MongoDB MongoDB `yaml:"mongodb"`
}

// MongoDB is what only a MongoDB replica set has. Every field's zero value
// means "not set", as for MariaDB.
type MongoDB struct {
	// ReplicaSet is the set's name: members reporting another are not
	// counted. Empty: the first name a member reports, as a driver does.
	ReplicaSet string `yaml:"replica_set"`
	// MaxWireVersion is the newest wire version the proxy announces (0:
	// 9, MongoDB 4.4; at most 25, MongoDB 8.0); members lower it to the
	// smallest among them.
	MaxWireVersion int `yaml:"max_wire_version"`
	// MemberAccount is the account the proxy's connections to members log
	// in with (SCRAM-SHA-256 on admin); unset: the monitor's. Clients log
	// in to the proxy as the cluster's users, never to members.
	MemberAccount Account `yaml:"member_account"`
	// WriteConcern, when "majority", is the write concern the proxy adds
	// to writes that carry none: with w:1 a write acknowledged by a
	// primary that then fails may be rolled back by the new one (most
	// likely in a set with an arbiter, PSA). Unset: each write keeps its
	// own (the server's default, w:1 before MongoDB 5.0 and with an
	// arbiter), and routerctl status warns about it on a PSA set.
	WriteConcern string `yaml:"write_concern"`
	// MemberTLS, when set, is how every connection to a member is made:
	// the proxy's, the monitor's probes and the arbiters' steps. A member
	// running with net.tls.mode requireTLS accepts nothing else.
	MemberTLS *MemberTLS `yaml:"member_tls"`
}

// MemberTLS is the TLS client side of connections to members.
type MemberTLS struct {
	// CAFile holds the certificates members' certificates are verified
	// against (PEM); required: a member is never trusted unverified.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a client certificate, for members run with
	// net.tls.CAFile and client certificates required (or x509 auth).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name members' certificates must carry (default:
	// the host of each member's addr).
	ServerName string `yaml:"server_name"`
}

// ClientConfig is the tls.Config member connections use: the CA alone as
// roots, the client certificate when set. ServerName is left to the dialer
// (each member's host) unless server_name sets it.
func (m *MemberTLS) ClientConfig() (*tls.Config, error) {
	pool, err := loadCA(m.CAFile)
	if err != nil {
		return nil, fmt.Errorf("ca_file: %w", err)
	}
	cfg := &tls.Config{RootCAs: pool, ServerName: m.ServerName, MinVersion: tls.VersionTLS12}
	if m.CertFile != "" || m.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(m.CertFile, m.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cert_file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// loadCA reads a PEM file of certificates into a pool; a file with none
// is an error (an empty pool would reject every member with an unclear
// "unknown authority").
func loadCA(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// WriteConcernMajority is mongodb.write_concern's one value.
const WriteConcernMajority = "majority"

// MariaDB is what only a MariaDB cluster has: the MySQL protocol's knobs
// (auth plugin, packet size, connection multiplexing) and GTID-based
// read-your-writes and replication. Every field's zero value means "not
// set" (defaults fill it in for kind mariadb), which is how Validate tells
// a key written on a cluster of another kind.
type MariaDB struct {
	AuthPlugin                  string `yaml:"auth_plugin"`
	MaxPacket                   int    `yaml:"max_packet"`
	AutoIncrementDelayMultiplex *int   `yaml:"auto_increment_delay_multiplex"`
	// CausalReads is read-your-writes: off, session (default: a session's
	// reads on replicas wait for the GTID of its last write, up to
	// CausalReadsTimeout, else go to the primary) or proxy (every read
	// waits for the latest GTID any session of this proxy wrote). The old
	// booleans are still accepted (true = session, false = off).
	CausalReads        string   `yaml:"causal_reads"`
	CausalReadsTimeout Duration `yaml:"causal_reads_timeout"`
	// Replication is the account replicas use to connect to a new primary
	// (needed with a control plane).
	Replication Account `yaml:"replication"`
	// MemberTLS, when set, is how every connection to a member is made:
	// the proxy's (SSLRequest after the member's greeting), the monitor's
	// probes and the arbiters' steps, with no fallback to plaintext; the
	// replicas the arbiters repoint replicate over TLS too (MASTER_SSL=1).
	// The same keys as mongodb.member_tls.
	MemberTLS *MemberTLS `yaml:"member_tls"`
}

// Member is one database server.
type Member struct {
	Name string `yaml:"name"`
	Addr string `yaml:"addr"`
	Site string `yaml:"site"`
}

// Account is a database login.
type Account struct {
	User     string `yaml:"user"`
	Password Secret `yaml:"password"`
}

// User is a client login and the database account it runs as.
type User struct {
	Name            string `yaml:"name"`
	Password        Secret `yaml:"password"`
	BackendUser     string `yaml:"backend_user"`
	BackendPassword Secret `yaml:"backend_password"`
}

// TLS terminates client TLS. Without Require, kind mariadb lets a client
// choose (SSLRequest); kind mongodb, where TLS starts at the first byte,
// serves TLS and plaintext clients on the same port (mongod's preferTLS).
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	Require  bool   `yaml:"require"`
}

// ServerConfig is the listener's tls.Config (nil when no certificate is
// set): TLS 1.2 at least, as mongod and MariaDB default to.
func (t TLS) ServerConfig() (*tls.Config, error) {
	if t.CertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// Error names the field a problem is in.
type Error struct {
	Field  string
	Reason string
}

func (e *Error) Error() string { return e.Field + ": " + e.Reason }

// Errors is every problem found, in order.
type Errors []*Error

func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "\n")
}

// Default returns the defaults every field falls back to.
func Default() Config {
	return Config{Role: "proxy", Admin: Admin{Listen: "127.0.0.1:7080"}, Log: Log{Level: "info"}, StopTimeout: Duration(10 * time.Second)}
}

func clusterDefaults(c *Cluster) {
	if c.Kind == "" {
		c.Kind = KindMariaDB
	}
	def := func(d *Duration, v time.Duration) {
		if *d == 0 {
			*d = Duration(v)
		}
	}
	def(&c.ProbeInterval, 500*time.Millisecond)
	def(&c.MaxReplicaLag, time.Second)
	if c.Kind == KindMongoDB {
		// MongoDB's localThresholdMS: what its drivers use.
		def(&c.LocalityWindow, 15*time.Millisecond)
	}
	def(&c.LocalityWindow, 5*time.Millisecond)
	def(&c.PoolTimeout, 5*time.Second)
	def(&c.ConnectTimeout, 2*time.Second)
	def(&c.QueryTimeout, time.Hour)
	def(&c.ClientIdleTimeout, 8*time.Hour)
	def(&c.MaxPromoteLag, 5*time.Second)
	if c.ReadsWithoutReplica == "" {
		c.ReadsWithoutReplica = "primary"
	}
	// MaxConnectionsPerMember 0: the proxy derives each member's limit
	// from its max_connections (docs/config.md).
	for i := range c.Users {
		// A Mongo client never logs in to a member (the proxy's member
		// connections use mongodb.member_account), so its users keep no
		// backend account: one written there is an error, not ignored.
		if c.Users[i].BackendUser == "" && c.Kind != KindMongoDB {
			c.Users[i].BackendUser = c.Users[i].Name
			if c.Users[i].BackendPassword == (Secret{}) {
				c.Users[i].BackendPassword = c.Users[i].Password
			}
		}
	}
	// Only a MariaDB cluster gets MariaDB's defaults: on another kind its
	// keys stay unset, so Validate can tell one the file wrote.
	if c.Kind == KindMariaDB {
		mariadbDefaults(&c.MariaDB)
	}
}

func mariadbDefaults(m *MariaDB) {
	if m.AuthPlugin == "" {
		m.AuthPlugin = "mysql_native_password"
	}
	if m.CausalReadsTimeout == 0 {
		m.CausalReadsTimeout = Duration(time.Second)
	}
	// Read-your-writes by default: an application that reads back what it
	// just wrote must not see an older row because the read went to a
	// replica. Deprecated booleans map to the modes they meant.
	switch mode := strings.ToLower(m.CausalReads); mode {
	case "":
		m.CausalReads = "session"
	case "true":
		m.CausalReads = "session"
	case "false":
		m.CausalReads = "off"
	case "off", "session", "proxy":
		m.CausalReads = mode
	}
	if m.MaxPacket == 0 {
		m.MaxPacket = 64 << 20
	}
	if m.AutoIncrementDelayMultiplex == nil {
		v := 5
		m.AutoIncrementDelayMultiplex = &v
	}
}

func controlDefaults(c *Control) {
	def := func(d *Duration, v time.Duration) {
		if *d == 0 {
			*d = Duration(v)
		}
	}
	def(&c.Lease, 2*time.Second)
	def(&c.LeaseMargin, 300*time.Millisecond)
	def(&c.WriteHoldTimeout, 10*time.Second)
	def(&c.FailureThreshold, 2*time.Second)
	def(&c.Cooldown, 30*time.Second)
	def(&c.DrainTimeout, 5*time.Second)
	def(&c.ProxyTimeout, time.Minute)
}

func strictDecode(n *yaml.Node, v any) error {
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(v)
}

// Load reads, defaults and validates a config file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(b)
}

// Parse decodes YAML (unknown fields rejected), applies defaults and
// validates.
func Parse(b []byte) (*Config, error) {
	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	for i := range cfg.Clusters {
		clusterDefaults(&cfg.Clusters[i])
	}
	if cfg.Control != nil {
		controlDefaults(cfg.Control)
	}
	hookDefaults(cfg.Hooks)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// Validate checks every field and returns all problems found.
func (c *Config) Validate() error {
	var errs Errors
	add := func(field, format string, args ...any) {
		errs = append(errs, &Error{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	if c.Role != "proxy" && c.Role != "arbiter" {
		add("role", "%q is not a role (want proxy or arbiter)", c.Role)
	}
	arbiter := c.Role == "arbiter"
	if arbiter && c.Control == nil {
		add("control", "required for role arbiter")
	}
	if c.Control != nil {
		c.validateControl(add)
	}
	if err := checkAddr(c.Admin.Listen); err != nil {
		add("admin.listen", "%v", err)
	}
	if c.StopTimeout < 0 {
		add("stop_timeout", "must not be negative")
	}
	validateHooks(add, c.Hooks)
	if v, err := c.Admin.Token.resolve(); err != nil {
		add("admin.token", "%v", err)
	} else if v != "" && len(v) < 16 {
		add("admin.token", "too short (%d bytes): use at least 16", len(v))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "%q is not a level (want debug, info, warn or error)", c.Log.Level)
	}
	switch c.Log.Format {
	case "", "console", "json":
	default:
		add("log.format", "%q is not a format (want console or json)", c.Log.Format)
	}
	if len(c.Clusters) == 0 {
		add("clusters", "at least one cluster is required")
	}
	names := map[string]bool{}
	listens := map[string]string{}
	for i := range c.Clusters {
		cl := &c.Clusters[i]
		f := fmt.Sprintf("clusters[%d]", i)
		if cl.Name == "" {
			add(f+".name", "required")
		} else if names[cl.Name] {
			add(f+".name", "duplicate cluster %q", cl.Name)
		}
		names[cl.Name] = true
		if err := checkKind(cl.Kind); err != nil {
			add(f+".kind", "%v", err)
		}
		if arbiter {
			// Arbiters carry no client traffic: no listener, no users.
		} else if err := checkAddr(cl.Listen); err != nil {
			add(f+".listen", "%v", err)
		} else if other, dup := listens[cl.Listen]; dup {
			add(f+".listen", "%s is already used by %s", cl.Listen, other)
		}
		listens[cl.Listen] = f
		if len(cl.Members) == 0 {
			add(f+".members", "at least one member is required")
		}
		mnames := map[string]bool{}
		for j, m := range cl.Members {
			mf := fmt.Sprintf("%s.members[%d]", f, j)
			uniqueName(add, mf, "member", m.Name, mnames)
			if err := checkAddr(m.Addr); err != nil {
				add(mf+".addr", "%v", err)
			}
		}
		if cl.Monitor.User == "" && cl.Kind != KindMongoDB {
			add(f+".monitor.user", "required (an account that can read replication status and write the heartbeat)")
		}
		if _, err := cl.Monitor.Password.resolve(); err != nil {
			add(f+".monitor.password", "%v", err)
		}
		// A Mongo proxy without users asks for no authentication, as a
		// mongod without --auth does (docs/mongo.md).
		if len(cl.Users) == 0 && !arbiter && cl.Kind != KindMongoDB {
			add(f+".users", "at least one user is required")
		}
		unames := map[string]bool{}
		for j, u := range cl.Users {
			uf := fmt.Sprintf("%s.users[%d]", f, j)
			uniqueName(add, uf, "user", u.Name, unames)
			if _, err := u.Password.resolve(); err != nil {
				add(uf+".password", "%v", err)
			}
			if _, err := u.BackendPassword.resolve(); err != nil {
				add(uf+".backend_password", "%v", err)
			}
		}
		if (cl.TLS.CertFile == "") != (cl.TLS.KeyFile == "") {
			add(f+".tls", "cert_file and key_file go together")
		}
		if cl.TLS.Require && cl.TLS.CertFile == "" {
			add(f+".tls.require", "needs cert_file and key_file")
		}
		if cl.TLS.CertFile != "" && cl.TLS.KeyFile != "" && !arbiter {
			// Arbiters serve no clients: their files may live on the
			// proxies' hosts only.
			if _, err := cl.TLS.ServerConfig(); err != nil {
				add(f+".tls.cert_file", "%v", err)
			}
		}
		switch cl.ReadsWithoutReplica {
		case "primary", "fail":
		default:
			add(f+".reads_without_replica", "%q is not an option (want primary or fail)", cl.ReadsWithoutReplica)
		}
		for _, d := range []struct {
			name string
			v    Duration
		}{{"probe_interval", cl.ProbeInterval}, {"max_replica_lag", cl.MaxReplicaLag}, {"pool_timeout", cl.PoolTimeout},
			{"connect_timeout", cl.ConnectTimeout}, {"query_timeout", cl.QueryTimeout}, {"client_idle_timeout", cl.ClientIdleTimeout}} {
			if d.v < 0 {
				add(f+"."+d.name, "must not be negative")
			}
		}
		if cl.LocalityWindow < 0 {
			add(f+".locality_window", "must not be negative")
		}
		if cl.MaxConnectionsPerMember < 0 {
			add(f+".max_connections_per_member", "must not be negative (0 or unset: derived from the member's max_connections)")
		}
		// A kind's keys are judged only against a kind that exists: with
		// kind: mysql or a typo, the kind's own error says what to fix, and
		// an error on every MariaDB key as well would bury it.
		switch cl.Kind {
		case KindMariaDB:
			validateMariaDB(add, f, &cl.MariaDB, c.Control != nil)
			for _, k := range setKeys(cl.MongoDB) {
				add(f+".mongodb."+k, "only for kind %s (this cluster is kind %s)", KindMongoDB, cl.Kind)
			}
		case KindMongoDB:
			for _, k := range setKeys(cl.MariaDB) {
				add(f+"."+k, "only for kind %s (this cluster is kind %s)", KindMariaDB, cl.Kind)
			}
			validateMongoDB(add, f, cl, arbiter)
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// checkKind accepts the kinds that are implemented and tested. kind: mysql
// is refused rather than run: the MariaDB probes would fail on every MySQL
// server and show each member unreachable, which looks like an outage
// instead of a configuration mistake.
func checkKind(kind string) error {
	switch kind {
	case KindMariaDB, KindMongoDB:
		return nil
	case "mysql":
		return fmt.Errorf("%q is not supported yet: the probes and failover use MariaDB-only SQL (GTIDs, SHOW ALL SLAVES STATUS); use kind: %s for MariaDB servers", kind, KindMariaDB)
	}
	return fmt.Errorf("%q is not a kind (supported: %s, %s)", kind, KindMariaDB, KindMongoDB)
}

// validateMongoDB checks a kind mongodb cluster: its section, and the
// cluster-wide settings that do not apply to it, refused rather than
// silently ignored.
func validateMongoDB(add func(field, format string, args ...any), f string, cl *Cluster, arbiter bool) {
	// Under a control section the arbiters follow the set's elections
	// (the primary it elected is committed as the epoch), ask a secondary
	// to step up after failure_threshold, and run switchovers; without
	// one, a proxy follows the set's own elections alone.
	for j, u := range cl.Users {
		if u.BackendUser != "" || u.BackendPassword != (Secret{}) {
			add(fmt.Sprintf("%s.users[%d].backend_user", f, j), "not used by kind %s: clients log in to the proxy only, and the proxy reaches members as mongodb.member_account (or monitor)", KindMongoDB)
		}
	}
	m := cl.MongoDB
	if v := m.MaxWireVersion; v != 0 && (v < 9 || v > 25) {
		add(f+".mongodb.max_wire_version", "%d is out of range (9, MongoDB 4.4, to 25, MongoDB 8.0)", v)
	}
	if _, err := m.MemberAccount.Password.resolve(); err != nil {
		add(f+".mongodb.member_account.password", "%v", err)
	}
	switch m.WriteConcern {
	case "", WriteConcernMajority:
	default:
		add(f+".mongodb.write_concern", "%q is not supported (want majority, or leave it unset to keep each write's own)", m.WriteConcern)
	}
	if t := m.MemberTLS; t != nil {
		validateMemberTLS(add, f+".mongodb.member_tls", t)
	}
}

// validateMemberTLS checks every file of a member_tls section, each error
// naming its key: the arbiters and the monitor use it as much as the
// proxy, so a mistake must stop start-up rather than show every member
// unreachable.
func validateMemberTLS(add func(field, format string, args ...any), f string, t *MemberTLS) {
	if t.CAFile == "" {
		add(f+".ca_file", "required (the CA members' certificates are verified against)")
	} else if _, err := loadCA(t.CAFile); err != nil {
		add(f+".ca_file", "%v", err)
	}
	switch {
	case (t.CertFile == "") != (t.KeyFile == ""):
		add(f, "cert_file and key_file go together")
	case t.CertFile != "":
		if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
			add(f+".cert_file", "%v", err)
		}
	}
}

// validateMariaDB checks kind mariadb's section; f is the cluster's path
// (its keys are written at the cluster's level).
func validateMariaDB(add func(field, format string, args ...any), f string, m *MariaDB, control bool) {
	if control {
		if m.Replication.User == "" {
			add(f+".replication.user", "required with a control plane (the account replicas use to follow a new primary)")
		}
		if _, err := m.Replication.Password.resolve(); err != nil {
			add(f+".replication.password", "%v", err)
		}
	}
	switch m.AuthPlugin {
	case "mysql_native_password", "caching_sha2_password":
	default:
		add(f+".auth_plugin", "%q is not supported (want mysql_native_password or caching_sha2_password)", m.AuthPlugin)
	}
	if m.CausalReadsTimeout < 0 {
		add(f+".causal_reads_timeout", "must not be negative")
	}
	switch m.CausalReads {
	case "off", "session", "proxy":
	default:
		add(f+".causal_reads", "%q is not a mode (want off, session or proxy)", m.CausalReads)
	}
	if m.MaxPacket < 1024 || m.MaxPacket > 1<<30 {
		add(f+".max_packet", "%d is out of range (1024 to 1073741824 bytes)", m.MaxPacket)
	}
	if m.AutoIncrementDelayMultiplex != nil && *m.AutoIncrementDelayMultiplex < 0 {
		add(f+".auto_increment_delay_multiplex", "must not be negative")
	}
	if t := m.MemberTLS; t != nil {
		validateMemberTLS(add, f+".member_tls", t)
	}
}

// setKeys lists the YAML keys of a kind's section that hold a value, in
// field order. It reads the struct's tags rather than a hand-kept list so a
// field added to a section can never be silently accepted on another kind.
func setKeys(section any) []string {
	v := reflect.ValueOf(section)
	var keys []string
	for i := 0; i < v.NumField(); i++ {
		if v.Field(i).IsZero() {
			continue
		}
		key, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ",")
		keys = append(keys, key)
	}
	return keys
}

func (c *Config) validateControl(add func(field, format string, args ...any)) {
	ct := c.Control
	if c.Name == "" {
		add("name", "required with a control plane (this node's id in the Raft group)")
	}
	if v, err := ct.Secret.resolve(); err != nil {
		add("control.secret", "%v", err)
	} else if len(v) < 16 {
		add("control.secret", "too short (%d bytes): use at least 16 random bytes", len(v))
	}
	if err := checkAddr(ct.RaftListen); err != nil {
		add("control.raft_listen", "%v", err)
	}
	if ct.RaftAdvertise != "" {
		if err := checkAddr(ct.RaftAdvertise); err != nil {
			add("control.raft_advertise", "%v", err)
		}
		if c.Role == "arbiter" {
			add("control.raft_advertise", "arbiters are dialled at their control.arbiters[].raft address; raft_advertise is for proxies")
		}
	}
	if ct.Dir == "" {
		add("control.dir", "required (where the Raft log is kept)")
	}
	if ct.JoinExisting && c.Role != "arbiter" {
		add("control.join_existing", "only for arbiters; proxies always join an existing group")
	}
	switch n := len(ct.Arbiters); {
	case n == 0:
		add("control.arbiters", "at least one arbiter is required (3 or 5 in production)")
	case n%2 == 0:
		add("control.arbiters", "%d arbiters: use an odd number (3 or 5); an even one tolerates no more failures than one fewer", n)
	}
	seen := map[string]bool{}
	self := false
	for i, a := range ct.Arbiters {
		f := fmt.Sprintf("control.arbiters[%d]", i)
		uniqueName(add, f, "arbiter", a.Name, seen)
		if err := checkAddr(a.Raft); err != nil {
			add(f+".raft", "%v", err)
		}
		if err := checkAddr(a.Admin); err != nil {
			add(f+".admin", "%v", err)
		}
		if a.Name == c.Name {
			self = true
			if c.Role == "arbiter" && a.Raft != ct.RaftListen {
				add(f+".raft", "%s differs from control.raft_listen %s for this arbiter", a.Raft, ct.RaftListen)
			}
		}
	}
	switch {
	case c.Role == "arbiter" && !self && c.Name != "":
		add("name", "arbiter %q is not listed in control.arbiters", c.Name)
	case c.Role == "proxy" && self:
		add("name", "proxy %q has the name of an arbiter", c.Name)
	}
	for _, d := range []struct {
		name string
		v    Duration
	}{{"lease", ct.Lease}, {"lease_margin", ct.LeaseMargin}, {"write_hold_timeout", ct.WriteHoldTimeout}, {"failure_threshold", ct.FailureThreshold},
		{"cooldown", ct.Cooldown}, {"drain_timeout", ct.DrainTimeout}, {"proxy_timeout", ct.ProxyTimeout}} {
		if d.v < 0 {
			add("control."+d.name, "must not be negative")
		}
	}
}

// uniqueName checks that a list entry's name is set and not repeated.
func uniqueName(add func(field, format string, args ...any), field, kind, name string, seen map[string]bool) {
	switch {
	case name == "":
		add(field+".name", "required")
	case seen[name]:
		add(field+".name", "duplicate %s %q", kind, name)
	}
	seen[name] = true
}

func checkAddr(a string) error {
	if a == "" {
		return errors.New("required (host:port)")
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		if strings.Contains(err.Error(), "missing port") {
			return errors.New("missing port")
		}
		return fmt.Errorf("%q is not host:port", a)
	}
	if host == "" {
		return errors.New("missing host")
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p > 65535 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return nil
}

// Password resolves a secret; Validate has already checked it resolves.
func Password(s Secret) string {
	v, _ := s.resolve()
	return v
}

// Hook is a command or a webhook the leading arbiter runs after each
// control-plane decision (docs/operations.md, "Hooks"). It only notifies:
// no decision ever waits for it.
type Hook struct {
	// Name labels the hook in logs and metrics. Default hooks[i].
	Name string `yaml:"name"`
	// Command is run without a shell (argv), the decision as JSON on its
	// standard input and in DBROUTER_* environment variables.
	Command []string `yaml:"command"`
	// URL is POSTed the decision as JSON (http or https).
	URL string `yaml:"url"`
	// Headers are added to the webhook's request (e.g. Authorization).
	Headers map[string]Secret `yaml:"headers"`
	// On lists the decision kinds that run the hook (HookKinds); empty:
	// every kind.
	On []string `yaml:"on"`
	// Timeout: a command still running is killed (its whole process
	// group), a request still waiting is abandoned. Default 10s.
	Timeout Duration `yaml:"timeout"`
}

// HookKinds are the decision kinds a hook's on: may name (hooks.Kinds,
// which a test keeps equal to this list).
var HookKinds = []string{"bootstrap", "failover_begin", "failover_done", "switchover_begin", "switchover_done", "switchover_aborted",
	"member_fenced", "member_errant", "member_rejoined", "member_maintenance", "member", "note"}

func hookDefaults(hs []Hook) {
	for i := range hs {
		if hs[i].Name == "" {
			hs[i].Name = fmt.Sprintf("hooks[%d]", i)
		}
		if hs[i].Timeout == 0 {
			hs[i].Timeout = Duration(10 * time.Second)
		}
	}
}

func validateHooks(add func(field, format string, args ...any), hs []Hook) {
	names := map[string]bool{}
	for i, h := range hs {
		f := fmt.Sprintf("hooks[%d]", i)
		uniqueName(add, f, "hook", h.Name, names)
		switch {
		case len(h.Command) == 0 && h.URL == "":
			add(f, "set command (argv list) or url")
		case len(h.Command) > 0 && h.URL != "":
			add(f, "set command or url, not both")
		case len(h.Command) > 0 && h.Command[0] == "":
			add(f+".command[0]", "empty program")
		case h.URL != "":
			if u, err := url.Parse(h.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				add(f+".url", "%q is not an http:// or https:// URL", h.URL)
			}
		}
		if len(h.Headers) > 0 && h.URL == "" {
			add(f+".headers", "only for a url hook")
		}
		for _, k := range slices.Sorted(maps.Keys(h.Headers)) {
			if _, err := h.Headers[k].resolve(); err != nil {
				add(f+".headers."+k, "%v", err)
			}
		}
		for j, k := range h.On {
			if !slices.Contains(HookKinds, k) {
				add(fmt.Sprintf("%s.on[%d]", f, j), "%q is not a decision kind (want one of %s)", k, strings.Join(HookKinds, ", "))
			}
		}
		if h.Timeout <= 0 {
			add(f+".timeout", "must be positive")
		}
	}
}
