// Package mysql owns the MySQL/MariaDB wire between applications and members:
// the client-facing handshake and authentication, statement classification,
// pooled backend connections, and raw forwarding of result packets. It knows
// nothing of Raft; where a statement goes is asked of a Router.
package mysql

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"

	gm "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/dbrouter/dbrouter/proxy"
)

// maxChunk is the largest payload of one wire packet; a logical packet of this
// size or more continues in the next one.
const maxChunk = 1<<24 - 1

// ErrPacketTooLarge is returned for a logical packet over the reader's limit.
var ErrPacketTooLarge = proxy.NewError(proxy.KindPacketTooLarge, "packet exceeds max_allowed_packet")

// ErrSequence is returned when a packet arrives with an unexpected sequence id.
var ErrSequence = proxy.NewError(proxy.KindPacketOutOfOrder, "packet out of order")

// packetReader reads packets from a buffered stream into a reusable buffer, so
// steady-state reads allocate nothing.
type packetReader struct {
	r   *bufio.Reader
	buf []byte
	max int // largest logical payload accepted
	seq uint8
	hdr [4]byte // here, not on the stack: io.ReadFull would make it escape
}

// readPacket returns the next logical payload (chunks over 16 MiB joined). The
// slice is valid until the next call.
func (pr *packetReader) readPacket() ([]byte, error) {
	pr.buf = pr.buf[:0]
	for {
		if _, err := io.ReadFull(pr.r, pr.hdr[:]); err != nil {
			return nil, err
		}
		n := int(uint32(pr.hdr[0]) | uint32(pr.hdr[1])<<8 | uint32(pr.hdr[2])<<16)
		pr.seq = pr.hdr[3] + 1
		if len(pr.buf)+n > pr.max {
			return nil, fmt.Errorf("%w: more than %d bytes", ErrPacketTooLarge, pr.max)
		}
		start := len(pr.buf)
		if cap(pr.buf) < start+n {
			nb := make([]byte, start, growCap(cap(pr.buf), start+n))
			copy(nb, pr.buf)
			pr.buf = nb
		}
		pr.buf = pr.buf[:start+n]
		if _, err := io.ReadFull(pr.r, pr.buf[start:]); err != nil {
			return nil, err
		}
		if n < maxChunk {
			return pr.buf, nil
		}
	}
}

func growCap(have, need int) int {
	c := have * 2
	if c < 4096 {
		c = 4096
	}
	if c < need {
		c = need
	}
	return c
}

// shrink drops a buffer that grew for one huge packet, so an idle session does
// not keep 64 MiB alive.
func (pr *packetReader) shrink() {
	if cap(pr.buf) > 1<<20 {
		pr.buf = nil
	}
}

// writePacket writes payload as one logical packet starting at sequence seq,
// splitting it at 16 MiB, and returns the next sequence id. It does not flush.
func writePacket(w *bufio.Writer, seq uint8, payload []byte) (uint8, error) {
	for {
		n := len(payload)
		if n > maxChunk {
			n = maxChunk
		}
		// Byte by byte: a [4]byte handed to Write escapes to the heap
		// (bufio may pass it on to the underlying io.Writer).
		for _, c := range [4]byte{byte(n), byte(n >> 8), byte(n >> 16), seq} {
			if err := w.WriteByte(c); err != nil {
				return seq + 1, err
			}
		}
		seq++
		if _, err := w.Write(payload[:n]); err != nil {
			return seq, err
		}
		payload = payload[n:]
		if n < maxChunk {
			return seq, nil
		}
	}
}

// Decoders below are bounds-checked: each returns ok=false instead of
// panicking on a short buffer, because every byte they see came off a network.

func readLenEncInt(b []byte, pos int) (v uint64, next int, null, ok bool) {
	if pos >= len(b) {
		return 0, pos, false, false
	}
	switch c := b[pos]; {
	case c < 0xfb:
		return uint64(c), pos + 1, false, true
	case c == 0xfb:
		return 0, pos + 1, true, true
	case c == 0xfc:
		if pos+3 > len(b) {
			return 0, pos, false, false
		}
		return uint64(binary.LittleEndian.Uint16(b[pos+1:])), pos + 3, false, true
	case c == 0xfd:
		if pos+4 > len(b) {
			return 0, pos, false, false
		}
		return uint64(b[pos+1]) | uint64(b[pos+2])<<8 | uint64(b[pos+3])<<16, pos + 4, false, true
	case c == 0xfe:
		if pos+9 > len(b) {
			return 0, pos, false, false
		}
		return binary.LittleEndian.Uint64(b[pos+1:]), pos + 9, false, true
	default: // 0xff is not a valid length prefix
		return 0, pos, false, false
	}
}

func readLenEncBytes(b []byte, pos int) ([]byte, int, bool) {
	n, pos, null, ok := readLenEncInt(b, pos)
	if !ok || null {
		return nil, pos, ok
	}
	if n > uint64(len(b)-pos) {
		return nil, pos, false
	}
	end := pos + int(n)
	return b[pos:end], end, true
}

func readNulString(b []byte, pos int) ([]byte, int, bool) {
	for i := pos; i < len(b); i++ {
		if b[i] == 0 {
			return b[pos:i], i + 1, true
		}
	}
	return nil, pos, false
}

func readUint16(b []byte, pos int) (uint16, int, bool) {
	if pos+2 > len(b) {
		return 0, pos, false
	}
	return binary.LittleEndian.Uint16(b[pos:]), pos + 2, true
}

func readUint32(b []byte, pos int) (uint32, int, bool) {
	if pos+4 > len(b) {
		return 0, pos, false
	}
	return binary.LittleEndian.Uint32(b[pos:]), pos + 4, true
}

func appendLenEncInt(b []byte, n uint64) []byte {
	switch {
	case n < 0xfb:
		return append(b, byte(n))
	case n <= 0xffff:
		return append(b, 0xfc, byte(n), byte(n>>8))
	case n <= 0xffffff:
		return append(b, 0xfd, byte(n), byte(n>>8), byte(n>>16))
	default:
		return append(b, 0xfe, byte(n), byte(n>>8), byte(n>>16), byte(n>>24), byte(n>>32), byte(n>>40), byte(n>>48), byte(n>>56))
	}
}

func appendLenEncString(b []byte, s []byte) []byte {
	b = appendLenEncInt(b, uint64(len(s)))
	return append(b, s...)
}

func appendUint16(b []byte, v uint16) []byte { return append(b, byte(v), byte(v>>8)) }
func appendUint32(b []byte, v uint32) []byte {
	return append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
}

// okInfo is what the proxy needs from an OK or EOF packet.
type okInfo struct {
	affected     uint64
	lastInsertID uint64
	status       uint16
}

// parseOK decodes an OK packet (header 0x00, or 0xfe when it ends a result set
// under CLIENT_DEPRECATE_EOF).
func parseOK(b []byte) (okInfo, bool) {
	var o okInfo
	if len(b) < 1 || (b[0] != 0x00 && b[0] != 0xfe) {
		return o, false
	}
	pos := 1
	var ok bool
	if o.affected, pos, _, ok = readLenEncInt(b, pos); !ok {
		return o, false
	}
	if o.lastInsertID, pos, _, ok = readLenEncInt(b, pos); !ok {
		return o, false
	}
	if o.status, _, ok = readUint16(b, pos); !ok {
		return o, false
	}
	return o, true
}

// isEOF reports whether a packet inside a result set is the EOF/OK that ends a
// section. A row can start with 0xfe only when its first value is over 16 MiB,
// which makes the packet at least 9 bytes (or a full chunk under
// CLIENT_DEPRECATE_EOF); those are rows.
func isEOF(b []byte, deprecateEOF bool) bool {
	if len(b) == 0 || b[0] != 0xfe {
		return false
	}
	if deprecateEOF {
		return len(b) < maxChunk
	}
	return len(b) < 9
}

// eofStatus returns the status flags of an EOF packet (0xfe, warnings, status)
// or of an OK packet ending a result set under CLIENT_DEPRECATE_EOF.
func eofStatus(b []byte, deprecateEOF bool) uint16 {
	if deprecateEOF {
		o, _ := parseOK(b)
		return o.status
	}
	if len(b) >= 5 {
		return binary.LittleEndian.Uint16(b[3:])
	}
	return 0
}

// ServerError is an ERR packet's content: from a backend it is passed to the
// client unchanged; the proxy's own errors use the table in errors.go.
type ServerError struct {
	Code    uint16
	State   string
	Message string
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("ERROR %d (%s): %s", e.Code, e.State, e.Message)
}

func parseErr(b []byte) *ServerError {
	e := &ServerError{Code: 2027, State: "HY000", Message: "malformed error packet"}
	if len(b) < 3 || b[0] != 0xff {
		return e
	}
	e.Code = binary.LittleEndian.Uint16(b[1:])
	rest := b[3:]
	if len(rest) >= 6 && rest[0] == '#' {
		e.State = string(rest[1:6])
		rest = rest[6:]
	}
	e.Message = string(rest)
	return e
}

func appendErr(b []byte, e *ServerError) []byte {
	b = append(b, 0xff)
	b = appendUint16(b, e.Code)
	state := e.State
	if len(state) != 5 {
		state = "HY000"
	}
	b = append(b, '#')
	b = append(b, state...)
	return append(b, e.Message...)
}

func appendOK(b []byte, affected, lastID uint64, status, warnings uint16) []byte {
	b = append(b, 0x00)
	b = appendLenEncInt(b, affected)
	b = appendLenEncInt(b, lastID)
	b = appendUint16(b, status)
	return appendUint16(b, warnings)
}

// statusSessionStateChanged: the OK packet carries session-state info
// (CLIENT_SESSION_TRACK).
const statusSessionStateChanged = gm.SERVER_SESSION_STATE_CHANGED

// trackedOK is the layout of an OK packet from a member connection that
// negotiated CLIENT_SESSION_TRACK: after the status and warnings come the
// info string (length-encoded) and, when the status says the session state
// changed, the session-state info (a length-encoded run of entries).
type trackedOK struct {
	statusAt int    // offset of the status flags
	infoAt   int    // offset of the info string's length (len(p): none)
	infoEnd  int    // end of the info string
	state    []byte // the session-state entries; nil when there are none
}

// parseTrackedOK decodes the layout of an OK packet (header 0x00) sent
// under CLIENT_SESSION_TRACK.
func parseTrackedOK(p []byte) (trackedOK, bool) {
	var o trackedOK
	if len(p) < 1 || p[0] != 0x00 {
		return o, false
	}
	pos := 1
	var ok bool
	if _, pos, _, ok = readLenEncInt(p, pos); !ok { // affected rows
		return o, false
	}
	if _, pos, _, ok = readLenEncInt(p, pos); !ok { // last insert id
		return o, false
	}
	status, pos, ok := readUint16(p, pos)
	if !ok {
		return o, false
	}
	o.statusAt = pos - 2
	if pos+2 > len(p) { // warnings
		return o, false
	}
	pos += 2
	o.infoAt, o.infoEnd = pos, pos
	if pos == len(p) {
		return o, true // neither info nor state: the server wrote none
	}
	if _, o.infoEnd, ok = readLenEncBytes(p, pos); !ok {
		return o, false
	}
	if status&statusSessionStateChanged == 0 || o.infoEnd == len(p) {
		return o, true
	}
	state, end, ok := readLenEncBytes(p, o.infoEnd)
	if !ok || end != len(p) {
		return o, false
	}
	o.state = state
	return o, true
}

// stripSessionState rewrites, in place, an OK packet p laid out as o into
// the form a client without CLIENT_SESSION_TRACK expects, and returns its
// new length: the session-state info goes, and so does the status flag
// that announces it. The info string stays, length-encoded as the server
// writes it for such clients, and only when not empty (as the server
// does).
func stripSessionState(p []byte, o trackedOK) int {
	p[o.statusAt+1] &^= byte(statusSessionStateChanged >> 8)
	if o.infoEnd-o.infoAt > 1 {
		return o.infoEnd
	}
	return o.infoAt
}

// Session-state entry types (the MySQL protocol's SESSION_TRACK_*).
const sessionTrackSystemVariables = gm.SESSION_TRACK_SYSTEM_VARIABLES

// trackedVar finds the value the session-state entries report for system
// variable name (the last one, if it is reported more than once). found is
// false when it is not reported; ok is false when the entries are
// malformed.
func trackedVar(state []byte, name string) (value []byte, found, ok bool) {
	for pos := 0; pos < len(state); {
		typ := state[pos]
		data, next, ok := readLenEncBytes(state, pos+1)
		if !ok {
			return nil, false, false
		}
		pos = next
		if typ != sessionTrackSystemVariables {
			continue // schema, state change, GTIDs (MySQL), transaction state...
		}
		n, at, ok := readLenEncBytes(data, 0)
		if !ok {
			return nil, false, false
		}
		v, end, ok := readLenEncBytes(data, at)
		if !ok || end != len(data) {
			return nil, false, false
		}
		if string(n) == name {
			value, found = v, true
		}
	}
	return value, found, true
}
