// Package wire owns the bytes of the MongoDB wire protocol: the message
// header, OP_MSG (body and document-sequence sections, flag bits, CRC-32C
// checksum), the legacy OP_QUERY/OP_REPLY pair that old drivers still use for
// their first hello, and enough of OP_COMPRESSED to refuse it by name. It
// knows nothing of routing, sessions or members: it turns a byte stream into
// bounds-checked messages and back.
//
// Decoded values alias the caller's buffer so that a session can read
// message after message into one buffer without allocating; they are valid
// until that buffer is reused. Every length read off the wire is checked
// against the bytes that are actually there before it is used, and a
// malformed message is reported as a *MessageError naming the field and its
// offset, never as a panic.
package wire

import (
	"encoding/binary"
	"strconv"
)

// OpCode is the kind of a wire message, from the last field of its header.
type OpCode int32

// The opcodes this package knows. Drivers since MongoDB 3.6 speak OP_MSG;
// OP_QUERY and OP_REPLY survive only in the legacy handshake, and
// OP_COMPRESSED appears only when compression was negotiated (this package
// never offers it, so a peer that sends it is broken or hostile).
const (
	OpCodeReply      OpCode = 1
	OpCodeQuery      OpCode = 2004
	OpCodeCompressed OpCode = 2012
	OpCodeMsg        OpCode = 2013
)

// String names the opcode as the wire protocol documentation does, so that
// error messages can be searched for.
func (op OpCode) String() string {
	switch op {
	case OpCodeReply:
		return "OP_REPLY"
	case OpCodeQuery:
		return "OP_QUERY"
	case OpCodeCompressed:
		return "OP_COMPRESSED"
	case OpCodeMsg:
		return "OP_MSG"
	}
	return "opcode " + strconv.Itoa(int(op))
}

// HeaderLen is the size of the standard message header, and so the smallest
// possible message.
const HeaderLen = 16

// DefaultMaxMessageSize is the maxMessageSizeBytes a mongod or mongos
// announces in its hello reply; a reader given no limit uses it.
const DefaultMaxMessageSize = 48_000_000

// Header is the standard message header that starts every wire message.
type Header struct {
	// MessageLength is the length of the whole message, this header included.
	MessageLength int32
	// RequestID identifies the message to its sender's peer.
	RequestID int32
	// ResponseTo is the RequestID of the request this message answers, or 0.
	ResponseTo int32
	OpCode     OpCode
}

// ParseHeader reads the header at the start of b. It checks only that the 16
// bytes are there: whether MessageLength fits the data is for the reader or
// the decoder to judge, since only they know where the message ends.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, &MessageError{Offset: len(b), Field: "header", Err: ErrTruncated,
			Detail: strconv.Itoa(len(b)) + " of 16 bytes"}
	}
	return Header{
		MessageLength: int32(binary.LittleEndian.Uint32(b[0:])),
		RequestID:     int32(binary.LittleEndian.Uint32(b[4:])),
		ResponseTo:    int32(binary.LittleEndian.Uint32(b[8:])),
		OpCode:        OpCode(binary.LittleEndian.Uint32(b[12:])),
	}, nil
}

// AppendHeader appends h to dst as it goes on the wire.
func AppendHeader(dst []byte, h Header) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(h.MessageLength))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(h.RequestID))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(h.ResponseTo))
	return binary.LittleEndian.AppendUint32(dst, uint32(h.OpCode))
}

// putLength back-fills the messageLength of the message that starts at
// dst[start], once its end is known. Encoders use it rather than computing the
// length up front so that sections can be appended one at a time.
func putLength(dst []byte, start int) error {
	n := len(dst) - start
	if n > maxInt32 {
		return &MessageError{Op: OpCode(binary.LittleEndian.Uint32(dst[start+12:])), Offset: 0,
			Field: "messageLength", Err: ErrTooLarge, Detail: strconv.Itoa(n) + " bytes do not fit an int32"}
	}
	binary.LittleEndian.PutUint32(dst[start:], uint32(n))
	return nil
}

const maxInt32 = 1<<31 - 1

func le32(b []byte) int32 { return int32(binary.LittleEndian.Uint32(b)) }
