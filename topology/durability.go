package topology

import (
	"fmt"
	"time"
)

// Warning is a setting on a member that weakens what a failover can
// promise. Check names the rule (a metric label); Message says what is
// wrong, what it risks and what to set.
type Warning struct {
	Member  string `json:"member"`
	Check   string `json:"check"`
	Message string `json:"message"`
}

// Durability checks.
const (
	CheckWaitPoint      = "semi_sync_wait_point"
	CheckMasterTimeout  = "semi_sync_master_timeout"
	CheckReplicaSemiOff = "replica_semi_sync_off"
)

// DurabilityChecks lists every check, for exporting each as a metric.
var DurabilityChecks = []string{CheckWaitPoint, CheckMasterTimeout, CheckReplicaSemiOff}

// DurabilityWarnings checks the settings the no-lost-write promise rests
// on, on every reachable member (any of them may be promoted). It reads
// the MariaDB-only fields of Member; members of a flavour that leaves
// them empty get no warning:
//
//   - rpl_semi_sync_master_wait_point must be AFTER_SYNC: with AFTER_COMMIT
//     other sessions see a commit before any replica has it, so a failover
//     can lose a write that was read.
//   - rpl_semi_sync_master_timeout must outlast a failover (failover, when
//     known): a primary cut off from its replicas falls back to async after
//     that long and acknowledges writes only it has.
//   - a replica with semi-sync off never acknowledges, so the primary may
//     count on a replica that will not be there, or fall back to async.
func DurabilityWarnings(s *Snapshot, failover time.Duration) []Warning {
	var out []Warning
	for _, m := range s.Members {
		if !m.Reachable || m.SemiSyncWaitPoint == "" {
			continue // not probed yet, or a server without semi-sync
		}
		if m.SemiSyncWaitPoint != "AFTER_SYNC" {
			out = append(out, Warning{Member: m.Name, Check: CheckWaitPoint,
				Message: fmt.Sprintf("%s: rpl_semi_sync_master_wait_point is %s: other sessions can read a commit no replica has yet, and a failover loses it; set AFTER_SYNC", m.Name, m.SemiSyncWaitPoint)})
		}
		if failover > 0 && m.SemiSyncTimeout < failover {
			out = append(out, Warning{Member: m.Name, Check: CheckMasterTimeout,
				Message: fmt.Sprintf("%s: rpl_semi_sync_master_timeout %s is shorter than a failover can take (%s): cut off from its replicas, a primary acknowledges writes only it has after that long; set it above %s",
					m.Name, m.SemiSyncTimeout, failover.Round(time.Millisecond), failover.Round(time.Second))})
		}
		if m.Role == RoleReplica && !m.SemiSyncReplica {
			out = append(out, Warning{Member: m.Name, Check: CheckReplicaSemiOff,
				Message: fmt.Sprintf("%s: semi-sync is off on this replica (rpl_semi_sync_slave_enabled=OFF): it never acknowledges a commit; set it ON", m.Name)})
		}
	}
	return out
}
