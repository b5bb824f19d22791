package mongo

import (
	"fmt"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/router"
	"github.com/dbrouter/dbrouter/topology"
	tmongo "github.com/dbrouter/dbrouter/topology/mongo"
)

// maxMembers bounds a cluster's members: selection keeps its candidate
// sets in a uint64, so choosing a member allocates nothing. A replica set
// has at most 50.
const maxMembers = 64

// memberSet is a set of member indexes.
type memberSet uint64

func (s memberSet) has(i int) bool { return i >= 0 && i < maxMembers && s&(1<<uint(i)) != 0 }
func one(i int) memberSet {
	if i < 0 || i >= maxMembers {
		return 0
	}
	return 1 << uint(i)
}

// toPrimary is selectRead's answer for "the primary, as the router names
// it": the caller asks the router, which holds the read while no primary
// is named (an election, a switchover) rather than failing it.
const toPrimary = -2

// selector chooses the member a read goes to, by the server selection
// spec's rules for a replica set, from one snapshot.
type selector struct {
	// site: the proxy's; its members are preferred.
	site string
	// localThreshold: members whose smoothed RTT is within this of the
	// nearest suitable one share the reads (localThresholdMS).
	localThreshold time.Duration
}

// selectRead picks the member for a read with read preference rp from
// snap, whose primary is primary (-1: none named; under the control plane
// the one it names, not the snapshot's). avoid names members the read
// must not go to (one that just answered a state-change error). seed
// spreads reads over the members within the latency window. It returns a
// member index, toPrimary, or an error wrapping router.ErrNoReplica.
//
// A secondary is selectable when the monitor judges it a replica
// (RoleReplica: reachable, not an arbiter, a stale primary, hidden or
// another set's) and eligible (replicating with a known lag under
// max_replica_lag): members judged unreachable, stale primaries,
// arbiters and members of unknown lag never serve as secondaries.
func (sel selector) selectRead(snap *topology.Snapshot, primary int, rp ReadPref, avoid memberSet, seed uint32) (int, error) {
	if primary >= len(snap.Members) {
		primary = -1
	}
	primaryOK := primary >= 0 && !avoid.has(primary) && snap.Members[primary].Reachable
	switch rp.Mode {
	case ModePrimary:
		return toPrimary, nil
	case ModePrimaryPreferred:
		if primaryOK {
			return primary, nil
		}
		if i, ok := sel.pick(snap, primary, sel.secondaries(snap, primary, avoid), rp, seed); ok {
			return i, nil
		}
		// Neither: wait, as a write does, for a primary to be named.
		return toPrimary, nil
	case ModeSecondary:
		if i, ok := sel.pick(snap, primary, sel.secondaries(snap, primary, avoid), rp, seed); ok {
			return i, nil
		}
		return -1, sel.noMember(snap, primary, rp)
	case ModeSecondaryPreferred:
		if i, ok := sel.pick(snap, primary, sel.secondaries(snap, primary, avoid), rp, seed); ok {
			return i, nil
		}
		if primaryOK {
			return primary, nil
		}
		return toPrimary, nil
	case ModeNearest:
		cand := sel.secondaries(snap, primary, avoid)
		if primaryOK {
			cand |= one(primary)
		}
		if i, ok := sel.pick(snap, primary, cand, rp, seed); ok {
			return i, nil
		}
		return -1, sel.noMember(snap, primary, rp)
	}
	return toPrimary, nil
}

// secondaries are the members that may serve reads as secondaries.
func (sel selector) secondaries(snap *topology.Snapshot, primary int, avoid memberSet) memberSet {
	var s memberSet
	for i := range snap.Members {
		if i >= maxMembers {
			break
		}
		m := &snap.Members[i]
		if i != primary && !avoid.has(i) && m.Reachable && m.Role == topology.RoleReplica && m.Eligible && m.Lag >= 0 {
			s |= one(i)
		}
	}
	return s
}

// pick applies maxStalenessSeconds, then the tag sets, then the site
// preference and the latency window to cand, and chooses one of what is
// left by seed.
func (sel selector) pick(snap *topology.Snapshot, primary int, cand memberSet, rp ReadPref, seed uint32) (int, bool) {
	if cand == 0 {
		return -1, false
	}
	if rp.MaxStaleness > 0 {
		cand = filterStale(snap, primary, cand, rp.MaxStaleness)
	}
	cand = filterTags(snap, cand, rp.Tags)
	if cand == 0 {
		return -1, false
	}
	if sel.site != "" {
		var local memberSet
		for i := range snap.Members {
			if cand.has(i) && snap.Members[i].Site == sel.site {
				local |= one(i)
			}
		}
		if local != 0 {
			cand = local
		}
	}
	best := time.Duration(-1)
	for i := range snap.Members {
		if cand.has(i) && (best < 0 || snap.Members[i].RTT < best) {
			best = snap.Members[i].RTT
		}
	}
	var window memberSet
	n := 0
	for i := range snap.Members {
		if cand.has(i) && snap.Members[i].RTT <= best+sel.localThreshold {
			window |= one(i)
			n++
		}
	}
	k := int(seed % uint32(n))
	for i := range snap.Members {
		if window.has(i) {
			if k == 0 {
				return i, true
			}
			k--
		}
	}
	return -1, false
}

// filterStale drops the members whose estimated staleness exceeds
// maxStaleness, by the server selection spec's formula. With a primary P:
// (S.lastUpdateTime - S.lastWriteDate) - (P.lastUpdateTime -
// P.lastWriteDate) + heartbeat; without: SMax.lastWriteDate -
// S.lastWriteDate + heartbeat, SMax being the secondary with the greatest
// lastWriteDate. lastUpdateTime is when the monitor's probe was answered
// (Detail.Observed), heartbeat its probe interval. A member whose last
// write is not known has an unknown staleness and is dropped. The primary
// itself is never stale (its own formula gives heartbeat, below any
// accepted maxStaleness).
func filterStale(snap *topology.Snapshot, primary int, cand memberSet, maxStaleness time.Duration) memberSet {
	var pd *tmongo.Detail
	if primary >= 0 {
		if d, ok := tmongo.DetailOf(snap.Members[primary]); ok && d.LastWrite != nil && !d.Observed.IsZero() {
			pd = d
		}
	}
	var smax time.Time
	if pd == nil {
		for i := range snap.Members {
			if d, ok := tmongo.DetailOf(snap.Members[i]); ok && cand.has(i) && d.LastWrite != nil && d.LastWrite.Date.After(smax) {
				smax = d.LastWrite.Date
			}
		}
	}
	var out memberSet
	for i := range snap.Members {
		if !cand.has(i) {
			continue
		}
		if i == primary {
			out |= one(i)
			continue
		}
		d, ok := tmongo.DetailOf(snap.Members[i])
		if !ok || d.LastWrite == nil || d.Observed.IsZero() {
			continue
		}
		var staleness time.Duration
		if pd != nil {
			staleness = d.Observed.Sub(d.LastWrite.Date) - pd.Observed.Sub(pd.LastWrite.Date) + d.Heartbeat
		} else {
			staleness = smax.Sub(d.LastWrite.Date) + d.Heartbeat
		}
		if staleness <= maxStaleness {
			out |= one(i)
		}
	}
	return out
}

// filterTags keeps the members matching the first tag set that matches
// any of cand; none when no set matches. No tag sets: cand unchanged.
func filterTags(snap *topology.Snapshot, cand memberSet, tags bsoncore.Array) memberSet {
	if tags == nil {
		return cand
	}
	rest, ok := elements(tags)
	if !ok {
		return 0
	}
	sets := 0
	for len(rest) > 0 {
		elem, r, ok := bsoncore.ReadElement(rest)
		if !ok {
			return 0
		}
		rest = r
		set, ok := elem.Value().DocumentOK()
		if !ok {
			return 0
		}
		sets++
		var match memberSet
		for i := range snap.Members {
			if cand.has(i) && tagsMatch(snap.Members[i], set) {
				match |= one(i)
			}
		}
		if match != 0 {
			return match
		}
	}
	if sets == 0 {
		return cand // tags: [] sets no condition
	}
	return 0
}

// tagsMatch: the member carries every tag of set.
func tagsMatch(m topology.Member, set bsoncore.Document) bool {
	if len(set) <= 5 {
		return true
	}
	d, ok := tmongo.DetailOf(m)
	if !ok {
		return false
	}
	rest, ok := elements(set)
	if !ok {
		return false
	}
	for len(rest) > 0 {
		elem, r, ok := bsoncore.ReadElement(rest)
		if !ok {
			return false
		}
		rest = r
		want, ok := stringBytesOf(elem.Value())
		if !ok {
			return false
		}
		got, ok := d.Tags[string(elem.KeyBytes())]
		if !ok || got != string(want) {
			return false
		}
	}
	return true
}

// noMember says why no member could serve a read: the read preference and
// what each member is.
func (sel selector) noMember(snap *topology.Snapshot, primary int, rp ReadPref) error {
	var b strings.Builder
	for i, m := range snap.Members {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(m.Name)
		b.WriteByte(' ')
		switch {
		case i == primary:
			b.WriteString("primary")
		case !m.Reachable:
			b.WriteString("unreachable")
		case m.Role != topology.RoleReplica:
			b.WriteString(string(m.Role))
		case m.Lag < 0:
			b.WriteString("replica of unknown lag")
		case !m.Eligible:
			fmt.Fprintf(&b, "replica lagging %s (over max_replica_lag)", m.Lag.Round(time.Millisecond))
		default:
			b.WriteString("replica not matching")
		}
	}
	if len(snap.Members) == 0 {
		b.WriteString("no members")
	}
	cond := ""
	if rp.Tags != nil && !emptyTagSets(rp.Tags) {
		cond += " tags " + rp.Tags.String()
	}
	if rp.MaxStaleness > 0 {
		cond += fmt.Sprintf(" maxStalenessSeconds %d", int64(rp.MaxStaleness/time.Second))
	}
	return fmt.Errorf("%w for read preference %s%s: %s", router.ErrNoReplica, rp.Mode, cond, b.String())
}
