package mongo

import (
	"bytes"
	"cmp"
	"sync"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/topology"
)

// elector picks a replica set's primary from its members' hello replies,
// by the server discovery and monitoring spec's rule for servers from
// MongoDB 6.0 (updateRSFromPrimary): of the members claiming to be
// primary, the one with the greatest electionId (compared as ObjectID
// bytes) is the primary, setVersion breaking a tie; a missing value is less
// than any. Members that report another set name are not counted. Servers
// before 6.0 (maxWireVersion < 17), for which the spec compares setVersion
// first, are not told apart: both orders agree except across a reconfig
// racing an election.
//
// Like a driver, it remembers the greatest (electionId, setVersion) a
// primary has shown: a deposed primary cut off from the set keeps claiming
// until it learns of the new term, and when this monitor reaches only that
// one it must still not take it for the primary. The memory lasts for the
// monitor's life; a set re-created under the same name needs a restart, as
// a driver would.
type elector struct {
	log *zap.Logger // nil: no logging
	mu  sync.Mutex
	// setName is the configured set name or, when none was configured,
	// the first one a member reported (the spec's rule for a topology
	// without one); "" until then, while standalones count.
	setName string
	max     electionKey
	hasMax  bool
	// stale names the members judged stale primaries at the last
	// publication, so each change is logged once, not every interval.
	stale map[string]bool
}

// electionKey is what orders primaries.
type electionKey struct {
	electionID *bson.ObjectID
	setVersion *int64
}

// compareKeys orders a and b by electionId, then setVersion; nil is less
// than any value.
func compareKeys(a, b electionKey) int {
	if c := compareNil(a.electionID, b.electionID, func(x, y *bson.ObjectID) int { return bytes.Compare(x[:], y[:]) }); c != 0 {
		return c
	}
	return compareNil(a.setVersion, b.setVersion, func(x, y *int64) int { return cmp.Compare(*x, *y) })
}

func compareNil[T any](a, b *T, f func(a, b *T) int) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	return f(a, b)
}

// Elect implements topology.Elector. Without a set (no member reports a
// set name and none was configured) the members are standalones: a
// standalone is a writable member without a set, the Monitor's rule for
// writable members applies (one is the primary, two are a conflict, as two
// writable MariaDB servers are), since nothing orders them.
func (e *elector) Elect(ms []topology.Member) (int, []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.setName == "" {
		e.adopt(ms)
		if e.setName != "" && e.log != nil {
			e.log.Info("replica set name adopted", zap.String("set", e.setName))
		}
	}
	var claimants []int
	for i := range ms {
		mm := &ms[i]
		mm.Role, mm.Lag = topology.RoleUnknown, -1
		d, ok := DetailOf(*mm)
		if !mm.Reachable || !ok {
			continue
		}
		if d.SetName != e.setName {
			note := "reports set " + d.SetName + ", not " + e.setName + ": not counted"
			if d.SetName == "" {
				note = "a standalone, not a member of set " + e.setName + ": not counted"
			}
			mm.Detail = d.with(note)
			continue
		}
		switch {
		case d.Writable:
			claimants = append(claimants, i)
		case d.Arbiter:
			mm.Role = topology.RoleArbiter
		case d.Secondary && !d.Hidden:
			mm.Role = topology.RoleReplica
		}
	}
	primary, conflict := e.pick(ms, claimants)
	e.logStale(ms)
	// A member that writes is behind nobody, as a writable MariaDB server
	// is: conflicting claimants too. A stale primary is not: its writes are
	// a branch the set will roll back, so its lag stays unknown.
	for i := range ms {
		if ms[i].Role == topology.RolePrimary {
			ms[i].Lag = 0
		}
	}
	if primary < 0 {
		return primary, conflict
	}
	pd, _ := DetailOf(ms[primary])
	if pd.LastWrite == nil {
		return primary, conflict
	}
	// Lag: how far the member's last write is behind the primary's. The
	// two were probed up to an interval apart; a member seen ahead was
	// probed after the primary wrote more, so it is counted as caught up.
	for i := range ms {
		mm := &ms[i]
		if d, ok := DetailOf(*mm); ok && mm.Role == topology.RoleReplica && d.LastWrite != nil {
			mm.Lag = max(pd.LastWrite.Date.Sub(d.LastWrite.Date), 0)
		}
	}
	return primary, conflict
}

// adopt takes the set name of the first reachable member reporting one,
// a claimant's before any other's, as the spec does for a topology
// without a configured name.
func (e *elector) adopt(ms []topology.Member) {
	for _, claimant := range []bool{true, false} {
		for _, mm := range ms {
			if d, ok := DetailOf(mm); ok && mm.Reachable && d.SetName != "" && (d.Writable || !claimant) {
				e.setName = d.SetName
				return
			}
		}
	}
}

// pick chooses among the counted claimants and sets their roles.
func (e *elector) pick(ms []topology.Member, claimants []int) (int, []string) {
	if len(claimants) == 0 {
		return -1, nil
	}
	if e.setName == "" {
		// Standalones: nothing orders them.
		for _, i := range claimants {
			ms[i].Role = topology.RolePrimary
		}
		if len(claimants) == 1 {
			return claimants[0], nil
		}
		var conflict []string
		for _, i := range claimants {
			conflict = append(conflict, ms[i].Name)
		}
		return -1, conflict
	}
	keyOf := func(i int) electionKey {
		d, _ := DetailOf(ms[i])
		return electionKey{d.ElectionID, d.SetVersion}
	}
	best := claimants[0]
	for _, i := range claimants[1:] {
		if compareKeys(keyOf(i), keyOf(best)) > 0 {
			best = i
		}
	}
	bk := keyOf(best)
	if e.hasMax && compareKeys(bk, e.max) < 0 {
		// Every claimant seen is older than a primary seen before: the
		// newer one is out of reach, not gone.
		for _, i := range claimants {
			e.markStale(ms, i, "older than a primary seen before (electionId, setVersion): stale")
		}
		return -1, nil
	}
	e.max, e.hasMax = bk, true
	var top []int
	for _, i := range claimants {
		if compareKeys(keyOf(i), bk) == 0 {
			top = append(top, i)
		} else {
			e.markStale(ms, i, "superseded by "+ms[best].Name+"'s (electionId, setVersion): stale")
		}
	}
	for _, i := range top {
		ms[i].Role = topology.RolePrimary
	}
	if len(top) == 1 {
		return best, nil
	}
	// Two claimants of one election cannot both be right, and nothing says
	// which is: no writes until one steps down.
	var conflict []string
	for _, i := range top {
		conflict = append(conflict, ms[i].Name)
	}
	return -1, conflict
}

func (e *elector) markStale(ms []topology.Member, i int, note string) {
	ms[i].Role = topology.RoleStalePrimary
	d, _ := DetailOf(ms[i])
	ms[i].Detail = d.with(note)
}

// with returns a copy of d with its note set: a published Detail is never
// modified.
func (d *Detail) with(note string) *Detail {
	c := *d
	c.Note = note
	return &c
}

// logStale logs members becoming or ceasing to be stale primaries: a
// deposed primary that keeps claiming is what an operator must see.
func (e *elector) logStale(ms []topology.Member) {
	now := map[string]bool{}
	for _, mm := range ms {
		if mm.Role == topology.RoleStalePrimary {
			now[mm.Name] = true
			if !e.stale[mm.Name] && e.log != nil {
				d, _ := DetailOf(mm)
				e.log.Warn("stale primary: claims primary under an older election, not written to", zap.String("member", mm.Name), zap.String("why", d.Note))
			}
		}
	}
	for name := range e.stale {
		if !now[name] && e.log != nil {
			e.log.Info("no longer a stale primary", zap.String("member", name))
		}
	}
	e.stale = now
}
