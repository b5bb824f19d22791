package mongo

import (
	"slices"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dbrouter/dbrouter/topology"
)

var (
	oid1 = bson.ObjectID{0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1}
	oid2 = bson.ObjectID{0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 2}
	t0   = time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC)
)

// hello builds a hello reply the way a server sends it.
type hello struct {
	writable, secondary, arbiter, hidden bool
	set                                  string
	setVersion                           int32 // 0: absent
	electionID                           *bson.ObjectID
	lastWrite                            time.Time // zero: absent
	tags                                 map[string]string
}

func (h hello) raw() bson.Raw {
	idx, b := bsoncore.AppendDocumentStart(nil)
	b = bsoncore.AppendBooleanElement(b, "isWritablePrimary", h.writable)
	b = bsoncore.AppendBooleanElement(b, "secondary", h.secondary)
	if h.arbiter {
		b = bsoncore.AppendBooleanElement(b, "arbiterOnly", true)
	}
	if h.hidden {
		b = bsoncore.AppendBooleanElement(b, "hidden", true)
	}
	if h.set != "" {
		b = bsoncore.AppendStringElement(b, "setName", h.set)
		b = bsoncore.AppendArrayElement(b, "hosts", bsoncore.NewArrayBuilder().AppendString("a:27017").AppendString("b:27017").Build())
		b = bsoncore.AppendStringElement(b, "primary", "a:27017")
		b = bsoncore.AppendStringElement(b, "me", "b:27017")
	}
	if h.setVersion != 0 {
		b = bsoncore.AppendInt32Element(b, "setVersion", h.setVersion)
	}
	if h.electionID != nil {
		b = bsoncore.AppendObjectIDElement(b, "electionId", *h.electionID)
	}
	if len(h.tags) > 0 {
		ti, tb := bsoncore.AppendDocumentElementStart(b, "tags")
		for k, v := range h.tags {
			tb = bsoncore.AppendStringElement(tb, k, v)
		}
		b, _ = bsoncore.AppendDocumentEnd(tb, ti)
	}
	if !h.lastWrite.IsZero() {
		op := bsoncore.NewDocumentBuilder().AppendTimestamp("ts", uint32(h.lastWrite.Unix()), 1).AppendInt64("t", 3).Build()
		lw := bsoncore.NewDocumentBuilder().AppendDocument("opTime", op).AppendDateTime("lastWriteDate", h.lastWrite.UnixMilli()).Build()
		b = bsoncore.AppendDocumentElement(b, "lastWrite", lw)
	}
	b = bsoncore.AppendInt32Element(b, "maxWireVersion", 21)
	b = bsoncore.AppendDoubleElement(b, "ok", 1)
	b, _ = bsoncore.AppendDocumentEnd(b, idx)
	return bson.Raw(b)
}

func (h hello) member(t *testing.T, name string) topology.Member {
	t.Helper()
	m, err := parseHello(h.raw())
	if err != nil {
		t.Fatal(err)
	}
	m.Name, m.Reachable = name, true
	return m
}

func TestParseHelloFillsNeutralFieldsAndDetail(t *testing.T) {
	for _, tc := range []struct {
		name               string
		h                  hello
		readOnly, replicat bool
		check              func(t *testing.T, d *Detail)
	}{
		{name: "primary reports its election and last write",
			h: hello{writable: true, set: "rs", setVersion: 4, electionID: &oid2, lastWrite: t0, tags: map[string]string{"dc": "east"}},
			check: func(t *testing.T, d *Detail) {
				if d.SetName != "rs" || d.SetVersion == nil || *d.SetVersion != 4 || d.ElectionID == nil || *d.ElectionID != oid2 || !d.Writable {
					t.Errorf("set facts: %+v", d)
				}
				if d.LastWrite == nil || !d.LastWrite.Date.Equal(t0) || d.LastWrite.Term != 3 || d.LastWrite.OpTime.T != uint32(t0.Unix()) {
					t.Errorf("last write: %+v", d.LastWrite)
				}
				if d.Tags["dc"] != "east" || !slices.Equal(d.Hosts, []string{"a:27017", "b:27017"}) || d.MaxWireVersion != 21 {
					t.Errorf("tags %v hosts %v wire %d", d.Tags, d.Hosts, d.MaxWireVersion)
				}
			}},
		{name: "secondary is a read-only replica",
			h: hello{secondary: true, set: "rs", setVersion: 4, lastWrite: t0}, readOnly: true, replicat: true,
			check: func(t *testing.T, d *Detail) {
				if d.ElectionID != nil || d.Primary != "a:27017" || d.Me != "b:27017" {
					t.Errorf("%+v", d)
				}
			}},
		{name: "hidden secondary is kept out of reads",
			h: hello{secondary: true, hidden: true, set: "rs", lastWrite: t0}, readOnly: true},
		{name: "arbiter holds no data",
			h: hello{arbiter: true, set: "rs"}, readOnly: true,
			check: func(t *testing.T, d *Detail) {
				if !d.Arbiter || d.LastWrite != nil {
					t.Errorf("%+v", d)
				}
			}},
		{name: "standalone is writable without a set",
			h: hello{writable: true},
			check: func(t *testing.T, d *Detail) {
				if d.SetName != "" || d.SetVersion != nil || d.ElectionID != nil {
					t.Errorf("%+v", d)
				}
			}},
		{name: "recovering member is neither", h: hello{set: "rs"}, readOnly: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.h.member(t, "b")
			if m.ReadOnly != tc.readOnly || m.IORunning != tc.replicat || m.SQLRunning != tc.replicat || m.Lag != -1 {
				t.Errorf("read-only %v replicating %v/%v lag %v; want %v %v, lag unknown", m.ReadOnly, m.IORunning, m.SQLRunning, m.Lag, tc.readOnly, tc.replicat)
			}
			d, ok := DetailOf(m)
			if !ok {
				t.Fatal("no detail")
			}
			if tc.check != nil {
				tc.check(t, d)
			}
		})
	}
	if _, err := parseHello(bson.Raw(bsoncore.NewDocumentBuilder().AppendDouble("ok", 0).Build())); err == nil {
		t.Error("a reply with ok 0 parsed")
	}
	if _, err := parseHello(bson.Raw{1, 2}); err == nil {
		t.Error("a truncated reply parsed")
	}
}

func TestElectPicksGreatestElectionThenSetVersion(t *testing.T) {
	unreachable := func(m topology.Member) topology.Member { m.Reachable = false; return m }
	for _, tc := range []struct {
		name     string
		set      string // configured
		members  []hello
		mod      func([]topology.Member)
		primary  int
		conflict int
		roles    []topology.Role
	}{
		{name: "newer election wins over an older one",
			members: []hello{{writable: true, set: "rs", setVersion: 9, electionID: &oid1}, {writable: true, set: "rs", setVersion: 1, electionID: &oid2}, {secondary: true, set: "rs"}},
			primary: 1, roles: []topology.Role{topology.RoleStalePrimary, topology.RolePrimary, topology.RoleReplica}},
		{name: "same election: greater setVersion wins",
			members: []hello{{writable: true, set: "rs", setVersion: 2, electionID: &oid2}, {writable: true, set: "rs", setVersion: 3, electionID: &oid2}},
			primary: 1, roles: []topology.Role{topology.RoleStalePrimary, topology.RolePrimary}},
		{name: "missing electionId is less than any",
			members: []hello{{writable: true, set: "rs", setVersion: 9}, {writable: true, set: "rs", setVersion: 1, electionID: &oid1}},
			primary: 1, roles: []topology.Role{topology.RoleStalePrimary, topology.RolePrimary}},
		{name: "missing setVersion is less than any",
			members: []hello{{writable: true, set: "rs", electionID: &oid1}, {writable: true, set: "rs", setVersion: 1, electionID: &oid1}},
			primary: 1, roles: []topology.Role{topology.RoleStalePrimary, topology.RolePrimary}},
		{name: "claimant of another set is not counted",
			set:     "rs",
			members: []hello{{writable: true, set: "other", setVersion: 9, electionID: &oid2}, {writable: true, set: "rs", setVersion: 1, electionID: &oid1}, {secondary: true, set: "other"}},
			primary: 1, roles: []topology.Role{topology.RoleUnknown, topology.RolePrimary, topology.RoleUnknown}},
		{name: "unconfigured set name is adopted from a claimant",
			members: []hello{{secondary: true, set: "other"}, {writable: true, set: "rs", electionID: &oid1}, {writable: true}},
			primary: 1, roles: []topology.Role{topology.RoleUnknown, topology.RolePrimary, topology.RoleUnknown}},
		{name: "identical claims conflict",
			members: []hello{{writable: true, set: "rs", setVersion: 1, electionID: &oid1}, {writable: true, set: "rs", setVersion: 1, electionID: &oid1}},
			primary: -1, conflict: 2, roles: []topology.Role{topology.RolePrimary, topology.RolePrimary}},
		{name: "one standalone is the primary",
			members: []hello{{writable: true}},
			primary: 0, roles: []topology.Role{topology.RolePrimary}},
		{name: "two standalones conflict",
			members: []hello{{writable: true}, {writable: true}},
			primary: -1, conflict: 2, roles: []topology.Role{topology.RolePrimary, topology.RolePrimary}},
		{name: "unreachable claimant is nothing; arbiter and hidden are no replicas",
			members: []hello{{writable: true, set: "rs", electionID: &oid2}, {writable: true, set: "rs", electionID: &oid1}, {arbiter: true, set: "rs"}, {secondary: true, hidden: true, set: "rs"}},
			mod:     func(ms []topology.Member) { ms[0] = unreachable(ms[0]) },
			primary: 1, roles: []topology.Role{topology.RoleUnknown, topology.RolePrimary, topology.RoleArbiter, topology.RoleUnknown}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &elector{setName: tc.set}
			var ms []topology.Member
			for i, h := range tc.members {
				ms = append(ms, h.member(t, string(rune('a'+i))))
			}
			if tc.mod != nil {
				tc.mod(ms)
			}
			primary, conflict := e.Elect(ms)
			if primary != tc.primary || len(conflict) != tc.conflict {
				t.Fatalf("primary %d conflict %v; want %d and %d conflicting", primary, conflict, tc.primary, tc.conflict)
			}
			for i, m := range ms {
				if m.Role != tc.roles[i] {
					t.Errorf("%s: role %s, want %s", m.Name, m.Role, tc.roles[i])
				}
				if d, _ := DetailOf(m); (m.Role == topology.RoleStalePrimary) != (d.Note != "" && m.Reachable && d.Writable && d.SetName == e.setName) {
					t.Errorf("%s: role %s with note %q", m.Name, m.Role, d.Note)
				}
			}
		})
	}
}

// A deposed primary cut off from the set keeps claiming; once a newer
// election was seen, it is never taken for the primary, even alone.
func TestElectRemembersNewestElection(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	e := &elector{log: zap.New(core)}
	oldP, newP := hello{writable: true, set: "rs", setVersion: 1, electionID: &oid1}, hello{writable: true, set: "rs", setVersion: 1, electionID: &oid2}
	if p, _ := e.Elect([]topology.Member{oldP.member(t, "a"), newP.member(t, "b")}); p != 1 {
		t.Fatalf("primary %d, want b", p)
	}
	ms := []topology.Member{oldP.member(t, "a"), newP.member(t, "b")}
	ms[1].Reachable = false
	if p, c := e.Elect(ms); p != -1 || c != nil || ms[0].Role != topology.RoleStalePrimary {
		t.Fatalf("old primary alone: primary %d conflict %v role %s; want none, stale", p, c, ms[0].Role)
	}
	if _, _ = e.Elect(ms); logs.FilterMessageSnippet("stale primary").Len() != 1 {
		t.Errorf("stale primary logged %d times over two publications, want once", logs.FilterMessageSnippet("stale primary").Len())
	}
	again := hello{writable: true, set: "rs", setVersion: 2, electionID: &oid2}
	if p, _ := e.Elect([]topology.Member{oldP.member(t, "a"), again.member(t, "b")}); p != 1 {
		t.Fatalf("after a reconfig: primary %d, want b", p)
	}
}

func TestElectLagFromLastWriteDates(t *testing.T) {
	prim := hello{writable: true, set: "rs", electionID: &oid1, lastWrite: t0}
	for _, tc := range []struct {
		name    string
		members []hello
		lags    []time.Duration
	}{
		{name: "behind the primary by the difference",
			members: []hello{prim, {secondary: true, set: "rs", lastWrite: t0.Add(-1500 * time.Millisecond)}, {secondary: true, set: "rs", lastWrite: t0}},
			lags:    []time.Duration{0, 1500 * time.Millisecond, 0}},
		{name: "seen ahead of the primary counts as caught up",
			members: []hello{prim, {secondary: true, set: "rs", lastWrite: t0.Add(time.Second)}},
			lags:    []time.Duration{0, 0}},
		{name: "no primary: unknown",
			members: []hello{{secondary: true, set: "rs", lastWrite: t0}, {secondary: true, set: "rs", lastWrite: t0}},
			lags:    []time.Duration{-1, -1}},
		{name: "primary without lastWrite: unknown",
			members: []hello{{writable: true, set: "rs", electionID: &oid1}, {secondary: true, set: "rs", lastWrite: t0}},
			lags:    []time.Duration{0, -1}},
		{name: "secondary without lastWrite, arbiter, stale primary: unknown",
			members: []hello{prim, {secondary: true, set: "rs"}, {arbiter: true, set: "rs"}, {writable: true, set: "rs", lastWrite: t0}},
			lags:    []time.Duration{0, -1, -1, -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ms []topology.Member
			for i, h := range tc.members {
				ms = append(ms, h.member(t, string(rune('a'+i))))
			}
			(&elector{}).Elect(ms)
			for i, m := range ms {
				if m.Lag != tc.lags[i] {
					t.Errorf("%s (%s): lag %v, want %v", m.Name, m.Role, m.Lag, tc.lags[i])
				}
			}
		})
	}
}
