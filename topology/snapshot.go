// Package topology owns what the databases are doing: it probes every member of
// a cluster (reachability, smoothed RTT, read_only, replication threads, GTID
// positions, heartbeat lag) and publishes an immutable Snapshot through an
// atomic pointer, so routers read it per decision without locking.
package topology

import "time"

// Role is what a member is doing as last observed.
type Role string

// Roles.
const (
	RolePrimary Role = "primary"
	RoleReplica Role = "replica"
	RoleUnknown Role = "unknown"
)

// Member is one member's observed state. A Snapshot's members are never
// modified after publication.
type Member struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	Site string `json:"site,omitempty"`

	Reachable bool   `json:"reachable"`
	Role      Role   `json:"role"`
	ReadOnly  bool   `json:"read_only"`
	ServerID  uint32 `json:"server_id,omitempty"`
	Version   string `json:"version,omitempty"`
	// RTT is the smoothed probe round trip.
	RTT time.Duration `json:"-"`
	// Lag is how long the oldest heartbeat the member has not applied has been
	// outstanding; -1 when unknown.
	Lag time.Duration `json:"-"`

	// FailingFor is how long ago the member last answered a probe, while
	// its probes fail (0 while they succeed).
	FailingFor time.Duration `json:"-"`

	IORunning  bool `json:"io_running"`
	SQLRunning bool `json:"sql_running"`
	// Source is the host:port replication was configured with: for people.
	// SourceServerID is who the IO thread actually connected to last
	// (Master_Server_Id; 0 before it first connected): decisions compare
	// that with the primary's server id, never address strings.
	Source         string `json:"source,omitempty"`
	SourceServerID uint32 `json:"source_server_id,omitempty"`
	// SourceContact is how long ago, by this monitor's clock, the replica
	// last received anything from its source (an event or a heartbeat);
	// -1 when not known yet or not a replica. An IO thread can show
	// "connected" for slave_net_timeout after its source hung; this cannot.
	SourceContact time.Duration `json:"-"`
	// HeartbeatPeriod is the replica's MASTER_HEARTBEAT_PERIOD.
	HeartbeatPeriod time.Duration `json:"-"`
	ReplError       string        `json:"replication_error,omitempty"`
	ProbeError      string        `json:"probe_error,omitempty"`

	GTIDBinlogPos  string `json:"gtid_binlog_pos"`
	GTIDSlavePos   string `json:"gtid_slave_pos"`
	GTIDCurrentPos string `json:"gtid_current_pos"`
	GTIDIOPos      string `json:"gtid_io_pos,omitempty"` // received by a replica
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

	// Eligible: a replica that may serve reads (reachable, both threads
	// running, lag known and under max_replica_lag).
	Eligible bool `json:"eligible"`
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
