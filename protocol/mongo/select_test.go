package mongo

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/router"
	"github.com/dbrouter/dbrouter/topology"
	tmongo "github.com/dbrouter/dbrouter/topology/mongo"
)

// rs is a three-member set for the selection tables: a (primary, site
// lon, 1 ms), b (secondary, site lon, 3 ms, tag dc:lon), c (secondary,
// site fra, 12 ms, tag dc:fra); every write at t0 seen at t0.
var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

type mem struct {
	name, site string
	role       topology.Role
	rtt        time.Duration
	lag        time.Duration
	reachable  bool
	eligible   bool
	tags       map[string]string
	lastWrite  time.Time // zero: not reported
	observed   time.Time
}

func snapOf(ms ...mem) *topology.Snapshot {
	s := &topology.Snapshot{Cluster: "c1", Taken: t0, Primary: -1}
	for i, m := range ms {
		d := &tmongo.Detail{SetName: "rs0", MaxWireVersion: 21, Tags: m.tags, Observed: m.observed, Heartbeat: 500 * time.Millisecond}
		if !m.lastWrite.IsZero() {
			d.LastWrite = &tmongo.LastWrite{Date: m.lastWrite}
		}
		s.Members = append(s.Members, topology.Member{
			Name: m.name, Site: m.site, Role: m.role, RTT: m.rtt, Lag: m.lag,
			Reachable: m.reachable, Eligible: m.eligible, ReadOnly: m.role != topology.RolePrimary, Detail: d,
		})
		if m.role == topology.RolePrimary {
			s.Primary = i
		}
	}
	return s
}

func healthy() []mem {
	return []mem{
		{name: "a", site: "lon", role: topology.RolePrimary, rtt: time.Millisecond, reachable: true, lastWrite: t0, observed: t0},
		{name: "b", site: "lon", role: topology.RoleReplica, rtt: 3 * time.Millisecond, reachable: true, eligible: true,
			tags: map[string]string{"dc": "lon", "disk": "ssd"}, lastWrite: t0, observed: t0},
		{name: "c", site: "fra", role: topology.RoleReplica, rtt: 12 * time.Millisecond, reachable: true, eligible: true,
			tags: map[string]string{"dc": "fra"}, lastWrite: t0, observed: t0},
	}
}

func tagSets(sets ...map[string]string) bsoncore.Array {
	ab := bsoncore.NewArrayBuilder()
	for _, set := range sets {
		db := bsoncore.NewDocumentBuilder()
		for k, v := range set {
			db.AppendString(k, v)
		}
		ab.AppendDocument(db.Build())
	}
	return ab.Build()
}

func TestSelectReadFollowsTheReadPreference(t *testing.T) {
	with := func(f func(ms []mem)) []mem { ms := healthy(); f(ms); return ms }
	const none = -1
	for _, tc := range []struct {
		name    string
		members []mem
		primary int // -3: the snapshot's
		rp      ReadPref
		site    string
		window  time.Duration
		avoid   memberSet
		want    []int // any of these (the latency window shares)
		wantErr bool
	}{
		{name: "no read preference goes to the primary", members: healthy(), want: []int{toPrimary}},
		{name: "primaryPreferred takes the primary", members: healthy(), rp: ReadPref{Mode: ModePrimaryPreferred}, want: []int{0}},
		{name: "primaryPreferred without a primary takes a secondary", members: healthy(), primary: none,
			rp: ReadPref{Mode: ModePrimaryPreferred}, window: time.Hour, want: []int{1, 2}},
		{name: "primaryPreferred with nothing waits for a primary", primary: none,
			members: with(func(ms []mem) { ms[1].reachable, ms[2].eligible = false, false }),
			rp:      ReadPref{Mode: ModePrimaryPreferred}, want: []int{toPrimary}},
		{name: "secondary takes the nearest secondary", members: healthy(), rp: ReadPref{Mode: ModeSecondary}, want: []int{1}},
		{name: "secondary shares the latency window", members: healthy(), rp: ReadPref{Mode: ModeSecondary}, window: 10 * time.Millisecond, want: []int{1, 2}},
		{name: "secondary never takes the primary", members: with(func(ms []mem) { ms[1].eligible, ms[2].eligible = false, false }),
			rp: ReadPref{Mode: ModeSecondary}, wantErr: true},
		{name: "secondaryPreferred falls back to the primary", members: with(func(ms []mem) { ms[1].eligible, ms[2].eligible = false, false }),
			rp: ReadPref{Mode: ModeSecondaryPreferred}, want: []int{0}},
		{name: "secondaryPreferred with nothing waits for a primary", primary: none,
			members: with(func(ms []mem) { ms[1].eligible, ms[2].eligible = false, false }),
			rp:      ReadPref{Mode: ModeSecondaryPreferred}, want: []int{toPrimary}},
		{name: "nearest takes the primary when it is nearest", members: healthy(), rp: ReadPref{Mode: ModeNearest}, want: []int{0}},
		{name: "nearest prefers the proxy's site over RTT", members: healthy(), rp: ReadPref{Mode: ModeNearest}, site: "fra", want: []int{2}},
		{name: "secondary prefers the site", members: healthy(), rp: ReadPref{Mode: ModeSecondary}, site: "fra", want: []int{2}},
		{name: "a site without candidates changes nothing", members: healthy(), rp: ReadPref{Mode: ModeSecondary}, site: "hkg", want: []int{1}},
		{name: "the first matching tag set wins", members: healthy(),
			rp: ReadPref{Mode: ModeSecondary, Tags: tagSets(map[string]string{"dc": "nyc"}, map[string]string{"dc": "fra"}, map[string]string{})}, want: []int{2}},
		{name: "a tag set needs every tag", members: healthy(),
			rp: ReadPref{Mode: ModeSecondary, Tags: tagSets(map[string]string{"dc": "lon", "disk": "hdd"}, map[string]string{"disk": "ssd"})}, want: []int{1}},
		{name: "{} matches every member", members: healthy(), rp: ReadPref{Mode: ModeSecondary, Tags: tagSets(map[string]string{"dc": "nyc"}, map[string]string{})}, want: []int{1}},
		{name: "no tag set matching is no member", members: healthy(), rp: ReadPref{Mode: ModeSecondary, Tags: tagSets(map[string]string{"dc": "nyc"})}, wantErr: true},
		{name: "tags in nearest apply to the primary", members: healthy(), rp: ReadPref{Mode: ModeNearest, Tags: tagSets(map[string]string{"dc": "fra"})}, want: []int{2}},
		{name: "primaryPreferred tags apply to secondaries only", members: healthy(),
			rp: ReadPref{Mode: ModePrimaryPreferred, Tags: tagSets(map[string]string{"dc": "fra"})}, want: []int{0}},
		{name: "secondaryPreferred with unmatched tags falls back to the primary", members: healthy(),
			rp: ReadPref{Mode: ModeSecondaryPreferred, Tags: tagSets(map[string]string{"dc": "nyc"})}, want: []int{0}},
		{name: "unreachable is not a secondary", members: with(func(ms []mem) { ms[1].reachable = false }), rp: ReadPref{Mode: ModeSecondary}, want: []int{2}},
		{name: "a stale primary is not a secondary", members: with(func(ms []mem) { ms[1].role = topology.RoleStalePrimary }), rp: ReadPref{Mode: ModeSecondary}, want: []int{2}},
		{name: "an arbiter is not a secondary", members: with(func(ms []mem) { ms[1].role = topology.RoleArbiter }), rp: ReadPref{Mode: ModeSecondary}, want: []int{2}},
		{name: "unknown lag is not a secondary", members: with(func(ms []mem) { ms[1].lag = -1 }), rp: ReadPref{Mode: ModeSecondary}, want: []int{2}},
		{name: "avoided members are skipped", members: healthy(), rp: ReadPref{Mode: ModeSecondary}, avoid: one(1), want: []int{2}},
		{name: "an avoided primary sends primaryPreferred to a secondary", members: healthy(), rp: ReadPref{Mode: ModePrimaryPreferred}, avoid: one(0), want: []int{1}},
		{name: "maxStaleness drops a stale secondary (with a primary)",
			members: with(func(ms []mem) { ms[1].lastWrite = t0.Add(-100 * time.Second) }),
			rp:      ReadPref{Mode: ModeSecondary, MaxStaleness: 90 * time.Second}, want: []int{2}},
		{name: "maxStaleness keeps a secondary just inside",
			members: with(func(ms []mem) { ms[1].lastWrite = t0.Add(-89 * time.Second) }),
			rp:      ReadPref{Mode: ModeSecondary, MaxStaleness: 90 * time.Second}, want: []int{1}},
		{name: "maxStaleness counts the primary's own delay",
			// P observed 50 s after its last write (idle): S's 100 s is only 50 s behind.
			members: with(func(ms []mem) {
				ms[0].lastWrite = t0.Add(-50 * time.Second)
				ms[1].lastWrite = t0.Add(-100 * time.Second)
			}),
			rp: ReadPref{Mode: ModeSecondary, MaxStaleness: 90 * time.Second}, want: []int{1}},
		{name: "maxStaleness without a primary compares with the freshest secondary", primary: none,
			members: with(func(ms []mem) {
				ms[1].lastWrite = t0.Add(-200 * time.Second)
				ms[2].lastWrite = t0.Add(-100 * time.Second)
			}),
			rp: ReadPref{Mode: ModeSecondary, MaxStaleness: 90 * time.Second}, want: []int{2}},
		{name: "maxStaleness drops a secondary without lastWrite",
			members: with(func(ms []mem) { ms[1].lastWrite = time.Time{} }),
			rp:      ReadPref{Mode: ModeSecondary, MaxStaleness: 90 * time.Second}, want: []int{2}},
		{name: "the authority's primary, not the snapshot's", members: healthy(), primary: 2,
			rp: ReadPref{Mode: ModePrimaryPreferred}, want: []int{2}},
		{name: "the authority's primary is never read as a secondary", members: healthy(), primary: 1,
			rp: ReadPref{Mode: ModeSecondary}, want: []int{2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := snapOf(tc.members...)
			primary := snap.Primary
			switch {
			case tc.primary == none:
				primary = -1
			case tc.primary > 0:
				primary = tc.primary
			}
			sel := selector{site: tc.site, localThreshold: tc.window}
			for seed := uint32(0); seed < 6; seed++ {
				got, err := sel.selectRead(snap, primary, tc.rp, tc.avoid, seed)
				if tc.wantErr {
					if !errors.Is(err, router.ErrNoReplica) {
						t.Fatalf("got %d, %v; want ErrNoReplica", got, err)
					}
					return
				}
				if err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
				ok := false
				for _, w := range tc.want {
					ok = ok || got == w
				}
				if !ok {
					t.Fatalf("seed %d: got member %d, want one of %v", seed, got, tc.want)
				}
			}
			if len(tc.want) > 1 {
				seen := map[int]bool{}
				for seed := uint32(0); seed < 6; seed++ {
					got, _ := sel.selectRead(snap, primary, tc.rp, tc.avoid, seed)
					seen[got] = true
				}
				if len(seen) != len(tc.want) {
					t.Errorf("the window's members did not share the reads: %v", seen)
				}
			}
		})
	}
}

func TestSelectReadNamesWhyNoMember(t *testing.T) {
	ms := healthy()
	ms[1].reachable = false
	ms[2].lag = -1
	_, err := selector{}.selectRead(snapOf(ms...), 0, ReadPref{Mode: ModeSecondary}, 0, 0)
	if err == nil || !strings.Contains(err.Error(), "b unreachable") || !strings.Contains(err.Error(), "c replica of unknown lag") ||
		!strings.Contains(err.Error(), "read preference secondary") {
		t.Fatalf("error %v, want each member's state", err)
	}
	if got := codeOf(err); got != CodeNoReplica {
		t.Errorf("code %v, want %v", got, CodeNoReplica)
	}
}

func rpDoc(fields func(b *bsoncore.DocumentBuilder)) bsoncore.Document {
	rb := bsoncore.NewDocumentBuilder()
	fields(rb)
	return bsoncore.NewDocumentBuilder().AppendString("find", "x").AppendDocument("$readPreference", rb.Build()).
		AppendString("$db", "app").Build()
}

func TestParseReadPref(t *testing.T) {
	hb := 500 * time.Millisecond
	for _, tc := range []struct {
		name    string
		cmd     bsoncore.Document
		want    ReadPref
		wantErr string
	}{
		{name: "absent is primary", cmd: bsoncore.NewDocumentBuilder().AppendString("find", "x").Build(), want: ReadPref{}},
		{name: "secondary", cmd: rpDoc(func(b *bsoncore.DocumentBuilder) { b.AppendString("mode", "secondary") }), want: ReadPref{Mode: ModeSecondary}},
		{name: "nearest with staleness", cmd: rpDoc(func(b *bsoncore.DocumentBuilder) {
			b.AppendString("mode", "nearest").AppendInt32("maxStalenessSeconds", 120)
		}), want: ReadPref{Mode: ModeNearest, MaxStaleness: 120 * time.Second}},
		{name: "staleness 0 is none", cmd: rpDoc(func(b *bsoncore.DocumentBuilder) {
			b.AppendString("mode", "secondary").AppendInt64("maxStalenessSeconds", 0)
		}), want: ReadPref{Mode: ModeSecondary}},
		{name: "hedge is ignored", cmd: rpDoc(func(b *bsoncore.DocumentBuilder) {
			b.AppendString("mode", "nearest").AppendDocument("hedge", bsoncore.NewDocumentBuilder().AppendBoolean("enabled", true).Build())
		}), want: ReadPref{Mode: ModeNearest}},
		{name: "primary with {} tags", cmd: rpDoc(func(b *bsoncore.DocumentBuilder) {
			b.AppendString("mode", "primary").AppendArray("tags", tagSets(map[string]string{}))
		}), want: ReadPref{}},
		{name: "legacy $query wrapper", cmd: bsoncore.NewDocumentBuilder().
			AppendDocument("$query", bsoncore.NewDocumentBuilder().AppendString("find", "x").Build()).
			AppendDocument("$readPreference", bsoncore.NewDocumentBuilder().AppendString("mode", "secondaryPreferred").Build()).Build(),
			want: ReadPref{Mode: ModeSecondaryPreferred}},
		{name: "staleness with primary", cmd: rpDoc(func(b *bsoncore.DocumentBuilder) {
			b.AppendString("mode", "primary").AppendInt32("maxStalenessSeconds", 120)
		}), wantErr: "not allowed with mode primary"},
		{name: "staleness below 90", cmd: rpDoc(func(b *bsoncore.DocumentBuilder) {
			b.AppendString("mode", "secondary").AppendInt32("maxStalenessSeconds", 89)
		}), wantErr: "at least 90"},
		{name: "negative staleness", cmd: rpDoc(func(b *bsoncore.DocumentBuilder) {
			b.AppendString("mode", "secondary").AppendInt32("maxStalenessSeconds", -1)
		}), wantErr: "non-negative"},
		{name: "tags with primary", cmd: rpDoc(func(b *bsoncore.DocumentBuilder) {
			b.AppendString("mode", "primary").AppendArray("tags", tagSets(map[string]string{"dc": "lon"}))
		}), wantErr: "tags are not allowed"},
		{name: "unknown mode", cmd: rpDoc(func(b *bsoncore.DocumentBuilder) { b.AppendString("mode", "closest") }), wantErr: "unknown mode"},
		{name: "no mode", cmd: rpDoc(func(b *bsoncore.DocumentBuilder) { b.AppendInt32("maxStalenessSeconds", 100) }), wantErr: "mode is required"},
		{name: "not a document", cmd: bsoncore.NewDocumentBuilder().AppendString("$readPreference", "secondary").Build(), wantErr: "must be a document"},
		{name: "tag value not a string", cmd: rpDoc(func(b *bsoncore.DocumentBuilder) {
			b.AppendString("mode", "secondary").AppendArray("tags", bsoncore.NewArrayBuilder().
				AppendDocument(bsoncore.NewDocumentBuilder().AppendInt32("dc", 1).Build()).Build())
		}), wantErr: "must be a string"},
		{name: "unknown field", cmd: rpDoc(func(b *bsoncore.DocumentBuilder) { b.AppendString("mode", "secondary").AppendInt32("x", 1) }), wantErr: "unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseReadPref(tc.cmd, hb)
			if tc.wantErr != "" {
				var rpe *ReadPrefError
				if !errors.As(err, &rpe) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want a ReadPrefError with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Mode != tc.want.Mode || got.MaxStaleness != tc.want.MaxStaleness {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	// The floor follows the heartbeat: 85 s + 10 s > 90 s.
	cmd := rpDoc(func(b *bsoncore.DocumentBuilder) {
		b.AppendString("mode", "secondary").AppendInt32("maxStalenessSeconds", 90)
	})
	if _, err := parseReadPref(cmd, 85*time.Second); err == nil || !strings.Contains(err.Error(), "at least 95") {
		t.Fatalf("with an 85 s heartbeat: %v, want at least 95", err)
	}
}

func TestClassifyCommands(t *testing.T) {
	b := bsoncore.NewDocumentBuilder
	pipeline := func(stages ...bsoncore.Document) bsoncore.Document {
		ab := bsoncore.NewArrayBuilder()
		for _, s := range stages {
			ab.AppendDocument(s)
		}
		return b().AppendString("aggregate", "x").AppendArray("pipeline", ab.Build()).Build()
	}
	match := b().AppendDocument("$match", b().Build()).Build()
	for _, tc := range []struct {
		name string
		body bsoncore.Document
		want route
	}{
		{"find", b().AppendString("find", "x").Build(), routeRead},
		{"count", b().AppendString("count", "x").Build(), routeRead},
		{"insert", b().AppendString("insert", "x").Build(), routePrimary},
		{"findAndModify", b().AppendString("findAndModify", "x").Build(), routePrimary},
		{"aggregate", pipeline(match), routeRead},
		{"aggregate", pipeline(match, b().AppendString("$out", "y").Build()), routePrimary},
		{"aggregate", pipeline(b().AppendDocument("$merge", b().AppendString("into", "y").Build()).Build()), routePrimary},
		{"aggregate", b().AppendString("aggregate", "x").Build(), routePrimary},
		{"mapReduce", b().AppendString("mapReduce", "x").AppendDocument("out", b().AppendInt32("inline", 1).Build()).Build(), routeRead},
		{"mapReduce", b().AppendString("mapReduce", "x").AppendString("out", "y").Build(), routePrimary},
		{"getMore", b().AppendInt64("getMore", 1).Build(), routeGetMore},
		{"killCursors", b().AppendString("killCursors", "x").Build(), routeKillCursors},
		{"someNewCommand", b().AppendInt32("someNewCommand", 1).Build(), routePrimary},
	} {
		if got := classify(tc.name, tc.body); got != tc.want {
			t.Errorf("%s %v: route %d, want %d", tc.name, tc.body, got, tc.want)
		}
	}
}

// FuzzReadPref: any $readPreference value parses to a valid read
// preference or a ReadPrefError, never a panic, and a parsed one can be
// selected with.
func FuzzReadPref(f *testing.F) {
	for _, seed := range readPrefSeeds() {
		f.Add([]byte(seed))
	}
	snap := snapOf(healthy()...)
	f.Fuzz(func(t *testing.T, rp []byte) {
		// The fuzzer's bytes are the $readPreference value's document,
		// framed into a command as a client would send it.
		cmd := bsoncore.NewDocumentBuilder().AppendString("find", "x").Build()
		cmd = cmd[:len(cmd)-1]
		cmd = append(cmd, byte(bsoncore.TypeEmbeddedDocument))
		cmd = append(cmd, "$readPreference\x00"...)
		cmd = append(cmd, rp...)
		cmd = append(cmd, 0)
		n := len(cmd)
		cmd[0], cmd[1], cmd[2], cmd[3] = byte(n), byte(n>>8), byte(n>>16), byte(n>>24)
		if bsoncore.Document(cmd).Validate() != nil {
			return // the wire decoder refuses what does not frame
		}
		p, err := parseReadPref(cmd, 500*time.Millisecond)
		if err != nil {
			var rpe *ReadPrefError
			if !errors.As(err, &rpe) {
				t.Fatalf("error %v is not a ReadPrefError", err)
			}
			return
		}
		for seed := uint32(0); seed < 3; seed++ {
			if _, err := (selector{}).selectRead(snap, snap.Primary, p, 0, seed); err != nil && !errors.Is(err, router.ErrNoReplica) {
				t.Fatalf("select: %v", err)
			}
		}
	})
}

func readPrefSeeds() map[string]bsoncore.Document {
	b := bsoncore.NewDocumentBuilder
	return map[string]bsoncore.Document{
		"secondary": b().AppendString("mode", "secondary").Build(),
		"tags": b().AppendString("mode", "nearest").AppendArray("tags", tagSets(map[string]string{"dc": "fra"}, map[string]string{})).
			AppendInt32("maxStalenessSeconds", 120).Build(),
		"primary-tags": b().AppendString("mode", "primary").AppendArray("tags", tagSets(map[string]string{})).Build(),
		"staleness":    b().AppendString("mode", "secondaryPreferred").AppendDouble("maxStalenessSeconds", 90.5).Build(),
		"hedge":        b().AppendString("mode", "nearest").AppendDocument("hedge", b().AppendBoolean("enabled", true).Build()).Build(),
		"empty":        b().Build(),
	}
}
