package rssim

import (
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// The server error codes the simulator returns, with mongod's names.
const (
	codeInternalError           = 1
	codeBadValue                = 2
	codeFailedToParse           = 9
	codeIllegalOperation        = 20
	codeCommandNotFound         = 59
	codeWriteConcernFailed      = 64
	codeNotSecondary            = 95
	codeUnsatisfiableWC         = 100
	codeCommandFailed           = 125
	codeExceededTimeLimit       = 262
	codeUnsupportedOpQuery      = 352
	codeNotWritablePrimary      = 10107
	codeInterruptedReplChange   = 11602
	codeNotPrimaryNoSecondaryOk = 13435
	codeNotPrimaryOrSecondary   = 13436
)

var codeNames = map[int32]string{
	codeInternalError:           "InternalError",
	codeBadValue:                "BadValue",
	codeFailedToParse:           "FailedToParse",
	codeIllegalOperation:        "IllegalOperation",
	codeCommandNotFound:         "CommandNotFound",
	codeWriteConcernFailed:      "WriteConcernFailed",
	codeNotSecondary:            "NotSecondary",
	codeUnsatisfiableWC:         "UnsatisfiableWriteConcern",
	codeCommandFailed:           "CommandFailed",
	codeExceededTimeLimit:       "ExceededTimeLimit",
	codeUnsupportedOpQuery:      "UnsupportedOpQueryCommand",
	codeNotWritablePrimary:      "NotWritablePrimary",
	codeInterruptedReplChange:   "InterruptedDueToReplStateChange",
	codeNotPrimaryNoSecondaryOk: "NotPrimaryNoSecondaryOk",
	codeNotPrimaryOrSecondary:   "NotPrimaryOrSecondary",
}

// cmdError is a command that failed: it becomes {ok: 0, errmsg, code,
// codeName} in the reply.
type cmdError struct {
	Code int32
	Msg  string
}

func (e *cmdError) Error() string {
	return fmt.Sprintf("%s (%d): %s", codeNames[e.Code], e.Code, e.Msg)
}

func errf(code int32, format string, args ...any) *cmdError {
	return &cmdError{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// reply is the error document a client receives.
func (e *cmdError) reply() bson.Raw {
	name := codeNames[e.Code]
	if name == "" {
		name = "UnknownError"
	}
	d := bson.D{{Key: "ok", Value: 0.0}, {Key: "errmsg", Value: e.Msg}, {Key: "code", Value: e.Code}, {Key: "codeName", Value: name}}
	if e.Code == codeNotWritablePrimary || e.Code == codeInterruptedReplChange || e.Code == codeNotPrimaryNoSecondaryOk || e.Code == codeNotPrimaryOrSecondary {
		// Drivers retry on these labels as on the codes.
		d = append(d, bson.E{Key: "errorLabels", Value: bson.A{"RetryableWriteError"}})
	}
	return mustMarshal(d)
}

func mustMarshal(d any) bson.Raw {
	b, err := bson.Marshal(d)
	if err != nil {
		panic(fmt.Sprintf("rssim: marshal %T: %v", d, err)) // only fixed shapes come here
	}
	return b
}
