package mongo

import (
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
)

// The limits the proxy announces, which are mongod's and mongos's: a
// driver splits its batches by them, so announcing smaller ones than a
// member's only costs round trips, while larger ones would be refused.
const (
	maxBsonObjectSize            = 16 * 1024 * 1024
	maxWriteBatchSize            = 100_000
	logicalSessionTimeoutMinutes = 30
)

// buildVersion is the server version buildInfo reports, consistent with
// the announced maxWireVersion: drivers and tools (mongosh, Compass)
// branch on either, and must not see a 4.4 wire with a 7.0 version.
type buildVersion struct {
	version string
	array   [4]int32
}

// releases maps each stable release's maxWireVersion to its version; a
// wire version between two of them (a rapid release's) reports the older.
var releases = [...]struct {
	wire  int32
	major int32
	minor int32
}{
	{9, 4, 4},
	{13, 5, 0},
	{17, 6, 0},
	{21, 7, 0},
	{25, 8, 0},
}

func buildVersionFor(wire int32) buildVersion {
	r := releases[0]
	for _, rel := range releases {
		if rel.wire <= wire {
			r = rel
		}
	}
	return buildVersion{
		version: strconv.Itoa(int(r.major)) + "." + strconv.Itoa(int(r.minor)) + ".0",
		array:   [4]int32{r.major, r.minor, 0, 0},
	}
}

// helloRequest is what a hello's answer depends on.
type helloRequest struct {
	legacy     bool // isMaster/ismaster: answer ismaster, not isWritablePrimary
	helloOk    bool
	saslMechs  string // saslSupportedMechs: "db.user"
	hasSASLReq bool
	// speculative is the saslStart of speculativeAuthenticate, nil when
	// the request has none.
	speculative bsoncore.Document
	db          string
}

func parseHello(cmd bsoncore.Document, name, db string) helloRequest {
	r := helloRequest{legacy: name != "hello", db: db}
	if v, ok := wire.Lookup(cmd, "helloOk"); ok {
		r.helloOk, _ = v.BooleanOK()
	}
	if v, ok := wire.Lookup(cmd, "saslSupportedMechs"); ok {
		if s, ok := stringValue(v); ok {
			r.saslMechs, r.hasSASLReq = s, true
		}
	}
	if v, ok := wire.Lookup(cmd, "speculativeAuthenticate"); ok {
		r.speculative, _ = v.DocumentOK()
	}
	return r
}

// appendHello appends the hello reply: a mongos (msg "isdbgrid", no setName
// or hosts, so drivers treat the proxy as a sharded cluster's router and
// never try to find "the other members"), always writable.
//
// topologyVersion is left out on purpose: without it drivers poll hello
// every heartbeatFrequencyMS instead of holding a streaming (exhaust)
// hello open, which the proxy would have to answer when its members change.
// compression is left out: none is negotiated (OP_COMPRESSED is refused).
// speculativeAuthenticate is answered for SCRAM-SHA-256 (speculativeAuth).
func (s *session) appendHello(dst []byte, req helloRequest) []byte {
	idx, dst := bsoncore.AppendDocumentStart(dst)
	if req.helloOk {
		dst = bsoncore.AppendBooleanElement(dst, "helloOk", true)
	}
	if req.legacy {
		dst = bsoncore.AppendBooleanElement(dst, "ismaster", true)
	} else {
		dst = bsoncore.AppendBooleanElement(dst, "isWritablePrimary", true)
	}
	dst = bsoncore.AppendStringElement(dst, "msg", "isdbgrid")
	dst = bsoncore.AppendInt32Element(dst, "maxBsonObjectSize", maxBsonObjectSize)
	dst = bsoncore.AppendInt32Element(dst, "maxMessageSizeBytes", maxMessageSize)
	dst = bsoncore.AppendInt32Element(dst, "maxWriteBatchSize", maxWriteBatchSize)
	dst = bsoncore.AppendDateTimeElement(dst, "localTime", time.Now().UnixMilli())
	dst = bsoncore.AppendInt32Element(dst, "logicalSessionTimeoutMinutes", logicalSessionTimeoutMinutes)
	dst = bsoncore.AppendInt32Element(dst, "connectionId", s.id)
	dst = bsoncore.AppendInt32Element(dst, "maxWireVersion", s.p.wireVersion())
	dst = bsoncore.AppendInt32Element(dst, "minWireVersion", 0)
	dst = bsoncore.AppendBooleanElement(dst, "readOnly", false)
	if req.hasSASLReq && s.p.auth.mechsFor(req.saslMechs) {
		aidx, d := bsoncore.AppendArrayElementStart(dst, "saslSupportedMechs")
		d = bsoncore.AppendStringElement(d, "0", mechSCRAMSHA256)
		dst, _ = bsoncore.AppendArrayEnd(d, aidx)
	}
	if req.speculative != nil {
		dst = s.speculativeAuth(dst, req.db, req.speculative)
	}
	dst = bsoncore.AppendDoubleElement(dst, "ok", 1)
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}

// appendBuildInfo answers buildInfo with the version that goes with the
// announced wire version; gitVersion says who answered.
func (s *session) appendBuildInfo(dst []byte) []byte {
	v := s.p.builds[s.p.wireVersion()]
	idx, dst := bsoncore.AppendDocumentStart(dst)
	dst = bsoncore.AppendStringElement(dst, "version", v.version)
	dst = bsoncore.AppendStringElement(dst, "gitVersion", "dbrouter")
	aidx, dst := bsoncore.AppendArrayElementStart(dst, "versionArray")
	for i, n := range v.array {
		dst = bsoncore.AppendInt32Element(dst, arrayKeys[i], n)
	}
	dst, _ = bsoncore.AppendArrayEnd(dst, aidx)
	aidx, dst = bsoncore.AppendArrayElementStart(dst, "modules")
	dst, _ = bsoncore.AppendArrayEnd(dst, aidx)
	dst = bsoncore.AppendInt32Element(dst, "bits", 64)
	dst = bsoncore.AppendBooleanElement(dst, "debug", false)
	dst = bsoncore.AppendInt32Element(dst, "maxBsonObjectSize", maxBsonObjectSize)
	dst = bsoncore.AppendDoubleElement(dst, "ok", 1)
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}

var arrayKeys = [...]string{"0", "1", "2", "3"}

// appendOK appends {ok: 1}.
func appendOK(dst []byte) []byte {
	idx, dst := bsoncore.AppendDocumentStart(dst)
	dst = bsoncore.AppendDoubleElement(dst, "ok", 1)
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}

// appendError appends a command error reply as mongod shapes it.
func appendError(dst []byte, c Code, errmsg string) []byte {
	idx, dst := bsoncore.AppendDocumentStart(dst)
	dst = bsoncore.AppendDoubleElement(dst, "ok", 0)
	dst = bsoncore.AppendStringElement(dst, "errmsg", errmsg)
	dst = bsoncore.AppendInt32Element(dst, "code", c.Code)
	dst = bsoncore.AppendStringElement(dst, "codeName", c.Name)
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}

// stringValue reads a string value of a client's document, checking its
// length prefix and terminator here rather than trusting them: the bytes
// are the client's.
func stringValue(v bsoncore.Value) (string, bool) {
	b, ok := stringBytesOf(v)
	return string(b), ok
}
