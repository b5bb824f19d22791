// Package topology owns the neutral model of what a cluster's members are
// doing and the Monitor that keeps it current: each member is probed on a
// loop of its own through a Prober (a database flavour such as
// topology/mariadb), judged unreachable after repeated failures, its RTT
// smoothed, and every probe interval an immutable Snapshot is published
// through an atomic pointer, so routers read it per decision without
// locking.
//
// topology knows no database: what is probed and how is the flavour's
// (topology/mariadb imports topology, never the reverse).
package topology

import "time"

// Role is what a member is doing as last observed.
type Role string

// Roles.
const (
	RolePrimary Role = "primary"
	RoleReplica Role = "replica"
	RoleUnknown Role = "unknown"
	// RoleArbiter votes in its set's elections and holds no data (a
	// MongoDB arbiter): never read from, never a primary.
	RoleArbiter Role = "arbiter"
	// RoleStalePrimary still claims to be primary, but its set has since
	// elected another (a newer election): writes sent to it would be rolled
	// back, so it is neither the primary nor a conflict, and it serves no
	// reads.
	RoleStalePrimary Role = "stale_primary"
)

// Member is one member's observed state. A Snapshot's members are never
// modified after publication.
//
// The first groups are every flavour's: the Monitor and the router read
// them. The last group is filled by the MariaDB flavour only (the arbiter's
// rules and the status page read it); a flavour that does not fill it
// leaves it zero. Names and JSON tags are kept as they were when topology
// was MariaDB-only, so the status JSON and routerctl's output do not change.
type Member struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	Site string `json:"site,omitempty"`

	// Set by the Monitor from the probes' outcome.
	Reachable bool `json:"reachable"`
	Role      Role `json:"role"`
	// ReadOnly: the member refuses client writes. The Monitor takes the
	// single reachable member that is not read-only as the primary, unless
	// the flavour elects its own (Elector).
	ReadOnly bool   `json:"read_only"`
	Version  string `json:"version,omitempty"`
	// RTT is the smoothed probe round trip.
	RTT time.Duration `json:"-"`
	// Lag is how long the oldest write the member has not applied has been
	// outstanding; -1 when unknown.
	Lag time.Duration `json:"-"`

	// FailingFor is how long ago the member last answered a probe, while
	// its probes fail (0 while they succeed).
	FailingFor time.Duration `json:"-"`

	// Replication, as every flavour has it. IORunning: the member receives
	// from its source; SQLRunning: it applies what it received (named
	// after MariaDB's IO and SQL threads; a flavour without such threads
	// sets both while the member replicates).
	IORunning  bool `json:"io_running"`
	SQLRunning bool `json:"sql_running"`
	// Source is the address replication was configured with: for people;
	// decisions identify the source by server id (below), never by
	// address strings.
	Source string `json:"source,omitempty"`
	// SourceContact is how long ago, by this monitor's clock, the replica
	// last received anything from its source (an event or a heartbeat);
	// -1 when not known yet or not a replica. A replication thread can show
	// "connected" long after its source hung; this cannot.
	SourceContact time.Duration `json:"-"`
	ReplError     string        `json:"replication_error,omitempty"`
	ProbeError    string        `json:"probe_error,omitempty"`

	// Eligible: a replica that may serve reads (reachable, read-only,
	// receiving and applying, lag known and under max_replica_lag).
	Eligible bool `json:"eligible"`

	// MariaDB only (topology/mariadb fills these; the Mongo flavour keeps
	// its own in Detail).
	//
	// ServerID survives failed probes: deciding whether a replica still
	// streams from a primary that stopped answering needs the primary's
	// id. SourceServerID is who the IO thread actually connected to last
	// (Master_Server_Id; 0 before it first connected): decisions compare
	// that with the primary's server id.
	ServerID       uint32 `json:"server_id,omitempty"`
	SourceServerID uint32 `json:"source_server_id,omitempty"`
	// HeartbeatPeriod is the replica's MASTER_HEARTBEAT_PERIOD.
	HeartbeatPeriod time.Duration `json:"-"`
	GTIDBinlogPos   string        `json:"gtid_binlog_pos"`
	GTIDSlavePos    string        `json:"gtid_slave_pos"`
	GTIDCurrentPos  string        `json:"gtid_current_pos"`
	GTIDIOPos       string        `json:"gtid_io_pos,omitempty"` // received by a replica
	// Replicas are the server ids of the replicas connected to this member
	// (SHOW SLAVE HOSTS; read on writable members, kept from the last
	// successful probe when it stops answering): who may have received its
	// last transactions.
	Replicas       []uint32 `json:"connected_replicas,omitempty"`
	SemiSyncOn     bool     `json:"semi_sync_master,omitempty"`
	SemiSyncActive bool     `json:"semi_sync_active,omitempty"`
	// The durability settings (see DurabilityWarnings).
	SemiSyncWaitPoint string        `json:"semi_sync_wait_point,omitempty"`
	SemiSyncTimeout   time.Duration `json:"-"`
	SemiSyncReplica   bool          `json:"semi_sync_replica,omitempty"`

	// Detail is what a flavour other than MariaDB observes beyond the
	// fields above (topology/mongo: *mongo.Detail, read with
	// mongo.DetailOf). The flavour owns its type, so its facts never
	// become fields every other package must read past; topology never
	// looks inside. Like the rest of a published Member it is never
	// modified: a flavour stores a fresh value per observation. nil for
	// MariaDB, so its status JSON does not change.
	Detail any `json:"detail,omitempty"`
}

// Snapshot is one consistent view of a cluster.
type Snapshot struct {
	Cluster string    `json:"cluster"`
	Taken   time.Time `json:"taken"`
	Members []Member  `json:"members"`
	// Primary indexes Members; -1 when there is none or when writable members
	// conflict.
	Primary int `json:"-"`
	// Conflict names the writable members when more than one is writable; no
	// write is routed then.
	Conflict []string `json:"conflict,omitempty"`
}

// PrimaryName is the primary's name or "".
func (s *Snapshot) PrimaryName() string {
	if s == nil || s.Primary < 0 || s.Primary >= len(s.Members) {
		return ""
	}
	return s.Members[s.Primary].Name
}
