package mongo

import (
	"strings"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
)

// stateChange is what a member's error says about the member, by the
// server discovery and monitoring spec's error handling: each of these
// makes a driver mark its server Unknown and clear its connection pool.
// The proxy is that server to the driver, and it stays up while its
// members change state, so none of them may reach a client: the proxy
// acts on them instead (forward.go).
type stateChange uint8

const (
	// scNone: an ordinary reply, passed to the client.
	scNone stateChange = iota
	// scRefused: the member refused the command before running it
	// because it is not (or no longer) a writable primary, or not a
	// readable member: the command may go to another member, a write to
	// the next primary.
	scRefused
	// scInterrupted: the member was running the command when its state
	// changed (a step-down, a shutdown): a write's outcome is unknown.
	scInterrupted
)

// The codes (error_codes.yml) the SDAM spec names "not writable primary"
// and "node is recovering" errors.
const (
	codeNotWritablePrimary              = 10107
	codeNotPrimaryNoSecondaryOk         = 13435
	codeLegacyNotPrimary                = 10058
	codeNotPrimaryOrSecondary           = 13436
	codeInterruptedDueToReplStateChange = 11602
	codeInterruptedAtShutdown           = 11600
	codePrimarySteppedDown              = 189
	codeShutdownInProgress              = 91
	codeCursorNotFound                  = 43
)

// stateChangeOf classifies a member's error code; with no code (servers
// before 3.6), the spec's errmsg substrings.
func stateChangeOf(code int32, errmsg []byte) stateChange {
	switch code {
	case codeNotWritablePrimary, codeNotPrimaryNoSecondaryOk, codeLegacyNotPrimary,
		codeNotPrimaryOrSecondary, codeShutdownInProgress:
		// Refused at the door: a member that is not primary, is
		// recovering, or is shutting down takes no new operation.
		return scRefused
	case codeInterruptedDueToReplStateChange, codeInterruptedAtShutdown, codePrimarySteppedDown:
		// Killed while it ran: it may have written.
		return scInterrupted
	case 0:
		switch {
		case strings.Contains(string(errmsg), "node is recovering"), strings.Contains(string(errmsg), "not master or secondary"):
			return scRefused
		case strings.Contains(string(errmsg), "not master"), strings.Contains(string(errmsg), "not primary"):
			return scRefused
		}
	}
	return scNone
}

// replyInfo is what the proxy reads of a member's reply: whether it
// succeeded, the state-change error it may carry, and where its cursor id
// is, so that the id can be rewritten in place.
type replyInfo struct {
	ok bool
	// code is the top-level error code (0: none).
	code int32
	// change is the state change the reply reports, at top level or in
	// writeConcernError; wce says it came from writeConcernError (the
	// write ran; whether it is durable is not known).
	change stateChange
	wce    bool
	// cursorOff is the offset, in the message, of the int64 cursor.id
	// (-1: the reply has no cursor id); cursorID its value.
	cursorOff int
	cursorID  int64
}

// inspectReply reads msg, a member's whole OP_MSG reply (checksum already
// stripped), without allocating. A reply that does not decode is reported
// as not ok, with no code.
func inspectReply(msg []byte) replyInfo {
	ri := replyInfo{cursorOff: -1}
	m, err := wire.DecodeOpMsg(msg)
	if err != nil {
		return ri
	}
	body := m.Body()
	var errmsg []byte
	rest, ok := elements(body)
	if !ok {
		return ri
	}
	for len(rest) > 0 {
		elem, r, ok := bsoncore.ReadElement(rest)
		if !ok {
			return ri
		}
		rest = r
		switch string(elem.KeyBytes()) {
		case "ok":
			ri.ok = okValue(elem.Value())
		case "code":
			ri.code, _ = elem.Value().AsInt32OK()
		case "errmsg":
			errmsg, _ = stringBytesOf(elem.Value())
		case "writeConcernError":
			if wce, ok := elem.Value().DocumentOK(); ok {
				var c int32
				var em []byte
				if v, ok := wire.Lookup(wce, "code"); ok {
					c, _ = v.AsInt32OK()
				}
				if v, ok := wire.Lookup(wce, "errmsg"); ok {
					em, _ = stringBytesOf(v)
				}
				if sc := stateChangeOf(c, em); sc != scNone {
					ri.change, ri.wce = sc, true
				}
			}
		case "cursor":
			cur, ok := elem.Value().DocumentOK()
			if !ok {
				continue
			}
			if v, ok := wire.Lookup(cur, "id"); ok && v.Type == bsoncore.TypeInt64 && len(v.Data) == 8 {
				ri.cursorID = v.Int64()
				// v.Data aliases msg: its distance from msg's end gives
				// its offset, without a search.
				ri.cursorOff = cap(msg) - cap(v.Data)
			}
		}
	}
	if !ri.ok && !ri.wce {
		ri.change = stateChangeOf(ri.code, errmsg)
	}
	return ri
}

// okValue reads an ok field, whatever its numeric type.
func okValue(v bsoncore.Value) bool {
	switch v.Type {
	case bsoncore.TypeDouble:
		return v.Double() == 1
	case bsoncore.TypeInt32:
		return v.Int32() == 1
	case bsoncore.TypeInt64:
		return v.Int64() == 1
	case bsoncore.TypeBoolean:
		return v.Boolean()
	}
	return false
}
