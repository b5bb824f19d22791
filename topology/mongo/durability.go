package mongo

import (
	"fmt"
	"strings"

	"github.com/dbrouter/dbrouter/topology"
)

// CheckPSAWriteConcern names the warning for a replica set with an arbiter
// whose writes are acknowledged at w:1.
const CheckPSAWriteConcern = "psa_write_concern"

// DurabilityWarnings checks what the no-lost-write promise rests on in a
// replica set. With an arbiter (primary, secondary, arbiter: PSA) the
// server's default write concern is w:1 (MongoDB 5.0 and later compute
// w:1 for such a set), so a write is acknowledged once the primary alone
// has it; if the primary fails before the secondary pulled it, the
// secondary is elected without it and the old primary rolls it back when
// it returns. majority says the proxy adds w:"majority" to writes that
// carry no write concern (mongodb.write_concern: majority).
func DurabilityWarnings(s *topology.Snapshot, majority bool) []topology.Warning {
	if majority || s == nil {
		return nil
	}
	var arbiters []string
	seen := map[string]bool{}
	for _, m := range s.Members {
		if m.Role == topology.RoleArbiter && !seen[m.Addr] {
			arbiters, seen[m.Addr] = append(arbiters, m.Name), true
		}
		if d, ok := DetailOf(m); ok && m.Reachable {
			for _, a := range d.Arbiters {
				if !seen[a] {
					arbiters, seen[a] = append(arbiters, a), true
				}
			}
		}
	}
	if len(arbiters) == 0 {
		return nil
	}
	return []topology.Warning{{Member: strings.Join(arbiters, ","), Check: CheckPSAWriteConcern,
		Message: fmt.Sprintf("replica set %s has an arbiter (%s): writes without a write concern are acknowledged at w:1, by the primary alone, and a failover can roll them back; set mongodb.write_concern: majority (or have the application write with w: \"majority\")",
			s.Cluster, strings.Join(arbiters, ", "))}}
}

// Describe gives a member's last write optime ("term:seconds.increment",
// "" when not reported) and the elector's note about it, for the status.
func Describe(m topology.Member) (position, note string) {
	d, ok := DetailOf(m)
	if !ok {
		return "", ""
	}
	if w := d.LastWrite; w != nil {
		position = fmt.Sprintf("%d:%d.%d", w.Term, w.OpTime.T, w.OpTime.I)
	}
	return position, d.Note
}
