package mongo

import (
	"encoding/binary"
	"math"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
)

// ReadMode is a read preference's mode (server selection spec).
type ReadMode uint8

// The five modes. ModePrimary is the zero value: a command without
// $readPreference reads from the primary, as drivers send nothing to a
// mongos for mode primary.
const (
	ModePrimary ReadMode = iota
	ModePrimaryPreferred
	ModeSecondary
	ModeSecondaryPreferred
	ModeNearest
)

var modeNames = [...]string{"primary", "primaryPreferred", "secondary", "secondaryPreferred", "nearest"}

func (m ReadMode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return "mode(" + strconv.Itoa(int(m)) + ")"
}

// ReadPref is a command's parsed $readPreference. Tags aliases the
// command's bytes (it is walked at selection, never copied), so a ReadPref
// is valid only while the message it came from is.
type ReadPref struct {
	Mode ReadMode
	// Tags is the tag set list as sent (nil: none): an ordered array of
	// documents, each a set of string key/value pairs; the first set that
	// matches an eligible member wins, {} matches every member.
	Tags bsoncore.Array
	// MaxStaleness is maxStalenessSeconds (0: no limit).
	MaxStaleness time.Duration
}

// idleWritePeriod is how often a primary writes a no-op to its oplog when
// idle (mongod's periodicNoopIntervalSecs, 10 s): a secondary's
// lastWriteDate can lag by that much on an idle set, so the spec requires
// maxStalenessSeconds of at least heartbeat + idleWritePeriod.
const idleWritePeriod = 10 * time.Second

// minMaxStaleness is the spec's absolute floor for maxStalenessSeconds.
const minMaxStaleness = 90 * time.Second

// ReadPrefError is a $readPreference the proxy refuses, answered to the
// client as BadValue (2), as mongos answers it, and never forwarded.
type ReadPrefError struct {
	Reason string
}

func (e *ReadPrefError) Error() string { return "invalid $readPreference: " + e.Reason }

// CodeBadValue is what mongos answers an invalid read preference with.
var CodeBadValue = Code{2, "BadValue"}

// parseReadPref reads the $readPreference of a command: a top-level field
// of an OP_MSG body, or, in the legacy form, a sibling of the $query (or
// query) wrapper that holds the command. No $readPreference: mode primary.
// heartbeat is the monitor's probe interval, which sets the least
// maxStalenessSeconds accepted. It allocates nothing for a valid read
// preference (the error path does).
func parseReadPref(cmd bsoncore.Document, heartbeat time.Duration) (ReadPref, error) {
	v, ok := wire.Lookup(cmd, "$readPreference")
	if !ok {
		return ReadPref{}, nil
	}
	doc, ok := v.DocumentOK()
	if !ok {
		return ReadPref{}, &ReadPrefError{"must be a document, got " + v.Type.String()}
	}
	var rp ReadPref
	modeSeen := false
	rest, ok := elements(doc)
	if !ok {
		return ReadPref{}, &ReadPrefError{"malformed document"}
	}
	for len(rest) > 0 {
		elem, r, ok := bsoncore.ReadElement(rest)
		if !ok {
			return ReadPref{}, &ReadPrefError{"malformed document"}
		}
		rest = r
		val, err := elem.ValueErr()
		if err != nil {
			return ReadPref{}, &ReadPrefError{"malformed field " + strconv.Quote(string(elem.KeyBytes()))}
		}
		switch string(elem.KeyBytes()) {
		case "mode":
			b, ok := stringBytesOf(val)
			if !ok {
				return ReadPref{}, &ReadPrefError{"mode must be a string"}
			}
			m, ok := modeOf(b)
			if !ok {
				return ReadPref{}, &ReadPrefError{"unknown mode " + strconv.Quote(string(b)) +
					" (primary, primaryPreferred, secondary, secondaryPreferred or nearest)"}
			}
			rp.Mode, modeSeen = m, true
		case "tags":
			arr, ok := val.ArrayOK()
			if !ok {
				return ReadPref{}, &ReadPrefError{"tags must be an array of documents"}
			}
			if err := checkTagSets(arr); err != nil {
				return ReadPref{}, err
			}
			rp.Tags = arr
		case "maxStalenessSeconds":
			f, ok := val.AsFloat64OK()
			if !ok || math.IsNaN(f) {
				return ReadPref{}, &ReadPrefError{"maxStalenessSeconds must be a number"}
			}
			if f < 0 {
				return ReadPref{}, &ReadPrefError{"maxStalenessSeconds must be non-negative"}
			}
			if f > float64(math.MaxInt64/int64(time.Second)) {
				f = float64(math.MaxInt64 / int64(time.Second))
			}
			rp.MaxStaleness = time.Duration(f * float64(time.Second))
		case "hedge":
			// Hedged reads are a sharded-cluster option mongos may ignore;
			// so does the proxy (one member answers each read).
		default:
			return ReadPref{}, &ReadPrefError{"unknown field " + strconv.Quote(string(elem.KeyBytes()))}
		}
	}
	if !modeSeen {
		return ReadPref{}, &ReadPrefError{"mode is required"}
	}
	if rp.Mode == ModePrimary {
		if rp.MaxStaleness > 0 {
			return ReadPref{}, &ReadPrefError{"maxStalenessSeconds is not allowed with mode primary"}
		}
		if !emptyTagSets(rp.Tags) {
			return ReadPref{}, &ReadPrefError{"tags are not allowed with mode primary"}
		}
	}
	if rp.MaxStaleness > 0 {
		least := max(minMaxStaleness, heartbeat+idleWritePeriod)
		if rp.MaxStaleness < least {
			return ReadPref{}, &ReadPrefError{"maxStalenessSeconds must be at least " +
				strconv.FormatInt(int64((least+time.Second-1)/time.Second), 10) +
				" (90, or the heartbeat frequency plus the 10 s idle write period)"}
		}
	}
	return rp, nil
}

func modeOf(b []byte) (ReadMode, bool) {
	for i, n := range modeNames {
		if string(b) == n {
			return ReadMode(i), true
		}
	}
	return 0, false
}

// checkTagSets checks that tags is an array of documents whose values are
// strings: selection then walks it without checking again.
func checkTagSets(tags bsoncore.Array) error {
	rest, ok := elements(tags)
	if !ok {
		return &ReadPrefError{"malformed tags array"}
	}
	for len(rest) > 0 {
		elem, r, ok := bsoncore.ReadElement(rest)
		if !ok {
			return &ReadPrefError{"malformed tags array"}
		}
		rest = r
		val, err := elem.ValueErr()
		if err != nil {
			return &ReadPrefError{"malformed tags array"}
		}
		set, ok := val.DocumentOK()
		if !ok || set.Validate() != nil {
			return &ReadPrefError{"tags must be an array of documents"}
		}
		srest, ok := elements(set)
		if !ok {
			return &ReadPrefError{"malformed tag set"}
		}
		for len(srest) > 0 {
			e, r, ok := bsoncore.ReadElement(srest)
			if !ok {
				return &ReadPrefError{"malformed tag set"}
			}
			srest = r
			tv, err := e.ValueErr()
			if err != nil {
				return &ReadPrefError{"malformed tag set"}
			}
			if _, ok := stringBytesOf(tv); !ok {
				return &ReadPrefError{"tag " + strconv.Quote(string(e.KeyBytes())) + " must be a string"}
			}
		}
	}
	return nil
}

// emptyTagSets: no tag sets, or only {} ones, which match every member.
func emptyTagSets(tags bsoncore.Array) bool {
	if tags == nil {
		return true
	}
	rest, ok := elements(tags)
	if !ok {
		return false
	}
	for len(rest) > 0 {
		elem, r, ok := bsoncore.ReadElement(rest)
		if !ok {
			return false
		}
		rest = r
		set, ok := elem.Value().DocumentOK()
		if !ok || len(set) > 5 {
			return false
		}
	}
	return true
}

// stringBytesOf returns a BSON string's bytes (without the copy bsoncore
// makes), checking its length prefix and terminator.
func stringBytesOf(v bsoncore.Value) ([]byte, bool) {
	if v.Type != bsoncore.TypeString || len(v.Data) < 5 {
		return nil, false
	}
	n := int(int32(uint32(v.Data[0]) | uint32(v.Data[1])<<8 | uint32(v.Data[2])<<16 | uint32(v.Data[3])<<24))
	if n < 1 || n > len(v.Data)-4 || v.Data[4+n-1] != 0 {
		return nil, false
	}
	return v.Data[4 : 4+n-1], true
}

// route is where a command goes.
type route uint8

const (
	// routePrimary: writes, and everything not known to be a read
	// (unknown means primary: misrouting a write is a correctness bug,
	// misrouting a read only a cost).
	routePrimary route = iota
	// routeRead: a read that follows the command's read preference.
	routeRead
	routeGetMore     // to the member and connection holding the cursor
	routeKillCursors // split by member
)

// classify says where a command goes by its name and body.
func classify(name string, body bsoncore.Document) route {
	switch name {
	case "getMore":
		return routeGetMore
	case "killCursors":
		return routeKillCursors
	case "find", "count", "distinct", "listCollections", "listIndexes", "dbStats", "collStats",
		"dataSize", "geoSearch", "listDatabases":
		return routeRead
	case "aggregate":
		if pipelineWrites(body) {
			return routePrimary
		}
		return routeRead
	case "mapReduce", "mapreduce":
		if mapReduceInline(body) {
			return routeRead
		}
		return routePrimary
	}
	return routePrimary
}

// pipelineWrites: an aggregate whose pipeline has a $out or $merge stage
// (or one the proxy cannot read) writes.
func pipelineWrites(body bsoncore.Document) bool {
	v, ok := wire.Lookup(body, "pipeline")
	if !ok {
		return true
	}
	arr, ok := v.ArrayOK()
	if !ok {
		return true
	}
	rest, ok := elements(arr)
	if !ok {
		return true
	}
	for len(rest) > 0 {
		elem, r, ok := bsoncore.ReadElement(rest)
		if !ok {
			return true
		}
		rest = r
		stage, ok := elem.Value().DocumentOK()
		if !ok {
			return true
		}
		if _, ok := wire.Lookup(stage, "$out"); ok {
			return true
		}
		if _, ok := wire.Lookup(stage, "$merge"); ok {
			return true
		}
	}
	return false
}

// mapReduceInline: a mapReduce with out: {inline: 1} only reads.
func mapReduceInline(body bsoncore.Document) bool {
	v, ok := wire.Lookup(body, "out")
	if !ok {
		return false
	}
	out, ok := v.DocumentOK()
	if !ok {
		return false
	}
	in, ok := wire.Lookup(out, "inline")
	if !ok {
		return false
	}
	f, ok := in.AsFloat64OK()
	return ok && f == 1
}

// elements returns the elements of a BSON document or array after
// checking its framing (length prefix, terminator): nested documents of a
// client's message are not checked by the decoder, which checks the top
// level only.
func elements(d []byte) ([]byte, bool) {
	if len(d) < 5 || int(binary.LittleEndian.Uint32(d)) != len(d) || d[len(d)-1] != 0 {
		return nil, false
	}
	return d[4 : len(d)-1], true
}
