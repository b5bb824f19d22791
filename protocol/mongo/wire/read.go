package wire

import (
	"fmt"
	"io"
	"strconv"
)

// Message is one whole wire message as read off a stream: its parsed header
// and its bytes, header included. Raw aliases the buffer ReadMessage
// returned and is valid until that buffer is read into again.
type Message struct {
	Header Header
	Raw    []byte
}

// growFloor is the least a read buffer starts or grows to: most commands and
// replies fit, so a session's buffer settles at once, and an idle session
// holds no more than this.
const growFloor = 4 << 10

// ReadMessage reads the next message from r into buf (grown when it is too
// small) and returns it with the buffer to pass to the next call. A session
// that keeps passing the buffer back reads without allocating once the
// buffer has reached its working size.
//
// maxSize is the largest messageLength accepted (DefaultMaxMessageSize when
// it is 0 or less). A messageLength below 16 or above maxSize is a
// *MessageError (ErrTooShort, ErrTooLarge) at offset 0, returned before any
// of the body is read: the stream is then out of step and the caller should
// close it. Every opcode is returned, known or not, so that the caller can
// answer one it does not speak (see Unsupported) with the request's id.
//
// A clean end of stream before the first header byte is io.EOF, unwrapped; a
// stream that ends inside a message is io.ErrUnexpectedEOF, wrapped with how
// far the read got.
func ReadMessage(r io.Reader, maxSize int, buf []byte) (Message, []byte, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxMessageSize
	}
	if cap(buf) < HeaderLen {
		buf = make([]byte, HeaderLen, growFloor)
	}
	buf = buf[:HeaderLen]
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			return Message{}, buf, io.EOF
		}
		return Message{}, buf, fmt.Errorf("mongo wire: read header: %w", err)
	}
	h, _ := ParseHeader(buf)
	n := int(h.MessageLength)
	if n < HeaderLen {
		return Message{}, buf, msgErr(h.OpCode, 0, "messageLength", ErrTooShort,
			strconv.Itoa(n)+" bytes, the header alone is 16")
	}
	if n > maxSize {
		return Message{}, buf, msgErr(h.OpCode, 0, "messageLength", ErrTooLarge,
			strconv.Itoa(n)+" bytes, limit "+strconv.Itoa(maxSize))
	}
	// The buffer grows with the bytes that have arrived, at most doubling
	// them, rather than to the length the peer claims: a peer that announces
	// 48 MB and sends nothing costs 4 KiB, not 48 MB.
	for have := HeaderLen; have < n; {
		if cap(buf) == have {
			c := max(2*have, growFloor)
			if c > n {
				c = n
			}
			nb := make([]byte, have, c)
			copy(nb, buf)
			buf = nb
		}
		next := min(n, cap(buf))
		buf = buf[:next]
		got, err := io.ReadFull(r, buf[have:next])
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return Message{}, buf, fmt.Errorf("mongo wire: read %v of %d bytes: stream ended after %d: %w",
				h.OpCode, n, have+got, err)
		}
		have = next
	}
	return Message{Header: h, Raw: buf[:n]}, buf, nil
}

// Unsupported returns the error to give a message whose opcode the caller
// does not decode: ErrCompressed for OP_COMPRESSED, naming the compressor and
// the wrapped opcode so the log says which driver option to turn off, and
// ErrUnknownOpCode for anything else. It is meant for the default branch of
// a switch on m.Header.OpCode.
func Unsupported(m Message) error {
	if m.Header.OpCode == OpCodeCompressed {
		detail := "its header is malformed"
		if c, err := DecodeOpCompressed(m.Raw); err == nil {
			detail = "compressor " + c.Compressor.String() + " wrapping " + c.OriginalOpCode.String() +
				"; remove compressors= from the connection string"
		}
		return msgErr(OpCodeCompressed, 12, "opCode", ErrCompressed, detail)
	}
	return msgErr(m.Header.OpCode, 12, "opCode", ErrUnknownOpCode, "")
}
