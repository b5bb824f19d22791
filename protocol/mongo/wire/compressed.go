package wire

import "strconv"

// CompressorID names the algorithm of an OP_COMPRESSED message.
type CompressorID uint8

// The compressors the wire protocol defines.
const (
	CompressorNoop   CompressorID = 0
	CompressorSnappy CompressorID = 1
	CompressorZlib   CompressorID = 2
	CompressorZstd   CompressorID = 3
)

func (c CompressorID) String() string {
	switch c {
	case CompressorNoop:
		return "noop"
	case CompressorSnappy:
		return "snappy"
	case CompressorZlib:
		return "zlib"
	case CompressorZstd:
		return "zstd"
	}
	return "compressor " + strconv.Itoa(int(c))
}

// OpCompressed is the fixed part of an OP_COMPRESSED message. The payload is
// deliberately not decompressed: this package's users never negotiate
// compression, and decompressing a peer's data only to refuse it would hand
// that peer a decompression bomb.
type OpCompressed struct {
	Header           Header
	OriginalOpCode   OpCode
	UncompressedSize int32
	Compressor       CompressorID
	// Payload is the compressed message, aliasing the input.
	Payload []byte
}

// opCompressedFixed is the header plus originalOpcode, uncompressedSize and
// compressorId.
const opCompressedFixed = HeaderLen + 4 + 4 + 1

// DecodeOpCompressed reads the fixed fields of an OP_COMPRESSED message
// (msg is the whole message, header included), so that it can be refused by
// name.
func DecodeOpCompressed(msg []byte) (OpCompressed, error) {
	h, err := checkHeader(msg, OpCodeCompressed, opCompressedFixed)
	if err != nil {
		return OpCompressed{}, err
	}
	return OpCompressed{
		Header:           h,
		OriginalOpCode:   OpCode(le32(msg[16:])),
		UncompressedSize: le32(msg[20:]),
		Compressor:       CompressorID(msg[24]),
		Payload:          msg[opCompressedFixed:],
	}, nil
}

// checkHeader parses the header of a whole message handed to a decoder and
// checks that it is of opcode op, that messageLength is exactly len(msg), so
// that nothing after it reads past the message or ignores a tail, and that
// the message holds the opcode's fixed fields, so that the decoder can read
// them without further checks.
func checkHeader(msg []byte, op OpCode, fixed int) (Header, error) {
	h, err := ParseHeader(msg)
	if err != nil {
		err.(*MessageError).Op = op
		return h, err
	}
	if h.OpCode != op {
		return h, msgErr(h.OpCode, 12, "opCode", ErrWrongOpCode, "want "+op.String())
	}
	n := int(h.MessageLength)
	switch {
	case n > len(msg):
		return h, msgErr(op, 0, "messageLength", ErrTruncated,
			strconv.Itoa(n)+" bytes claimed, "+strconv.Itoa(len(msg))+" present")
	case n < len(msg):
		if n < HeaderLen {
			return h, msgErr(op, 0, "messageLength", ErrTooShort, strconv.Itoa(n)+" bytes, the header alone is 16")
		}
		return h, msgErr(op, n, "end of message", ErrTrailingBytes,
			strconv.Itoa(len(msg)-n)+" bytes after messageLength "+strconv.Itoa(n))
	}
	if n < fixed {
		return h, msgErr(op, 0, "messageLength", ErrTooShort,
			strconv.Itoa(n)+" bytes, the fixed fields of "+op.String()+" need "+strconv.Itoa(fixed))
	}
	return h, nil
}
