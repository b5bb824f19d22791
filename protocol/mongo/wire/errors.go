package wire

import (
	"errors"
	"strconv"
	"strings"
)

// Sentinel errors, one per way a message can be wrong. Decoders return them
// wrapped in a *MessageError that says where; callers branch with errors.Is
// (a proxy answers ErrCompressed with an error reply but closes the
// connection on ErrChecksum or ErrTruncated, since the stream can no longer
// be trusted to be in step).
var (
	// ErrTooShort: a messageLength below the 16-byte header, or below the
	// smallest message of its opcode.
	ErrTooShort = errors.New("message shorter than its fixed fields")
	// ErrTooLarge: a messageLength over the reader's maxMessageSizeBytes, or a
	// message being encoded that does not fit an int32 length.
	ErrTooLarge = errors.New("message larger than the size limit")
	// ErrTruncated: a field or a document runs past the end of the section or
	// message that holds it.
	ErrTruncated = errors.New("field runs past the end of its container")
	// ErrTrailingBytes: bytes left over after the last field a message or
	// section can hold.
	ErrTrailingBytes = errors.New("unexpected bytes after the last field")
	// ErrWrongOpCode: a decoder given a message of another opcode.
	ErrWrongOpCode = errors.New("message has another opcode")
	// ErrUnknownOpCode: an opcode this package does not decode.
	ErrUnknownOpCode = errors.New("unsupported opcode")
	// ErrCompressed: OP_COMPRESSED, which is never negotiated by this package's
	// users, so a peer sending it did not follow the handshake.
	ErrCompressed = errors.New("OP_COMPRESSED received but compression was not negotiated")
	// ErrUnknownFlags: OP_MSG flagBits with a required bit (0–15) this
	// package does not know; the spec says the receiver MUST error.
	ErrUnknownFlags = errors.New("unknown required OP_MSG flag bits")
	// ErrChecksum: an OP_MSG whose CRC-32C does not match its bytes.
	ErrChecksum = errors.New("OP_MSG checksum mismatch")
	// ErrSectionKind: an OP_MSG section whose payload type is neither 0 nor 1;
	// the spec says the socket MUST then be closed.
	ErrSectionKind = errors.New("unknown OP_MSG section payload type")
	// ErrMissingBody: an OP_MSG without its one kind-0 section.
	ErrMissingBody = errors.New("OP_MSG has no body section")
	// ErrExtraBody: an OP_MSG with a second kind-0 section.
	ErrExtraBody = errors.New("OP_MSG has more than one body section")
	// ErrDuplicateSequence: two kind-1 sections with one identifier, which
	// the spec forbids (the receiver could not tell which argument wins).
	ErrDuplicateSequence = errors.New("OP_MSG document sequence identifier repeated")
	// ErrTooManySequences: more kind-1 sections than MaxSequences.
	ErrTooManySequences = errors.New("OP_MSG has too many document sequences")
	// ErrInvalidDocument: a BSON document whose framing is wrong (length
	// below 5, missing terminator, elements that do not fit).
	ErrInvalidDocument = errors.New("invalid BSON document")
	// ErrInvalidCString: a name that cannot be written as a cstring because
	// it contains a NUL byte.
	ErrInvalidCString = errors.New("string contains a NUL byte")
	// ErrCountMismatch: an OP_REPLY whose numberReturned is not the number of
	// documents it holds.
	ErrCountMismatch = errors.New("OP_REPLY numberReturned does not match its documents")
)

// MessageError says what was wrong with a message and where: Offset counts
// bytes from the first byte of the message (its messageLength field), so a
// hex dump of the message shows the culprit. An encoder refusing one of its
// arguments names it in Field ("body argument") and counts from the start
// of that argument. Err is one of the sentinels above.
type MessageError struct {
	Op     OpCode // the message's opcode, 0 if the header was not read
	Offset int    // where the bad field starts, from the start of the message
	Field  string // what was being read, in the spec's words
	Err    error  // the sentinel
	Detail string // the values involved, for the log
}

func (e *MessageError) Error() string {
	var b strings.Builder
	b.WriteString("mongo wire: ")
	if e.Op != 0 {
		b.WriteString(e.Op.String())
		b.WriteString(": ")
	}
	b.WriteString(e.Field)
	b.WriteString(" at offset ")
	b.WriteString(strconv.Itoa(e.Offset))
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	if e.Detail != "" {
		b.WriteString(" (")
		b.WriteString(e.Detail)
		b.WriteString(")")
	}
	return b.String()
}

func (e *MessageError) Unwrap() error { return e.Err }

func msgErr(op OpCode, off int, field string, err error, detail string) *MessageError {
	return &MessageError{Op: op, Offset: off, Field: field, Err: err, Detail: detail}
}
