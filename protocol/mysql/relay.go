package mysql

import (
	"errors"
	"fmt"
	"io"
)

// respKind says how a command's response ends.
type respKind uint8

const (
	respSingle    respKind = iota // one packet (OK, ERR, EOF, or a string)
	respResult                    // result sets, multi-results, LOCAL INFILE
	respPrepare                   // COM_STMT_PREPARE
	respFieldList                 // column definitions then EOF
	respFetch                     // rows then EOF
)

// relayOut is what the proxy learned from a response it forwarded.
type relayOut struct {
	status       uint16
	haveStatus   bool
	lastInsertID uint64
	warnings     uint16
	serverErr    bool
	sent         bool  // bytes went to the client writer
	relayed      int   // how many
	seq          uint8 // next sequence id towards the client
	stmtID       uint32
	params       uint16
}

// errClientGone marks a failure writing to (or reading from) the client; the
// session ends, nothing is sent to anyone.
var errClientGone = errors.New("client connection lost")

type relayState uint8

const (
	stFirst relayState = iota
	stColumns
	stColumnsEOF
	stRows
	stParams
	stParamsEOF
	stDone
)

// relay forwards a member's response to the client packet by packet, raw:
// rows are never decoded, and a packet that fits the read buffer is written
// straight from it. Only header bytes are inspected to find where the response
// ends and to learn status flags. With fence, every result's first packet and
// terminator are checked against the epoch bc was chosen at (see fenced).
func (s *session) relay(bc *backendConn, kind respKind, proxyStmtID uint32, fence bool) (relayOut, error) {
	var out relayOut
	state := stFirst
	var cols, params uint64
	for state != stDone {
		hdr, err := bc.r.Peek(4)
		if err != nil {
			return out, fmt.Errorf("%w: %v", errBackendLost, err)
		}
		n := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
		whole := 4+n <= bc.r.Size()
		var pkt []byte
		if whole {
			pkt, err = bc.r.Peek(4 + n)
		} else {
			pkt, err = bc.r.Peek(bc.r.Size())
		}
		if err != nil {
			return out, fmt.Errorf("%w: %v", errBackendLost, err)
		}
		out.seq = pkt[3] + 1
		p := pkt[4:]
		infile := false
		switch state {
		case stFirst:
			if n == 0 {
				return out, fmt.Errorf("%w: empty response packet", errBackendLost)
			}
			// The first packet of each result: an OK (which also ends
			// it) or a result set's column count. An ERR acknowledges
			// nothing; a LOCAL INFILE request is answered by an OK later.
			if fence && p[0] != 0xff && p[0] != 0xfb {
				if err := s.fenced(bc, &out, pkt[3]); err != nil {
					return out, err
				}
			}
			switch {
			case kind == respSingle:
				state = stDone
				if p[0] == 0xff {
					out.serverErr = true
				} else if o, ok := parseOK(p); ok && p[0] == 0 {
					out.status, out.haveStatus, out.lastInsertID = o.status, true, o.lastInsertID
					out.warnings = okWarnings(p)
				}
			case p[0] == 0xff:
				out.serverErr = true
				state = stDone
			case kind == respFieldList:
				state = stRows
				if isEOF(p, false) {
					state = stDone
				}
			case kind == respFetch:
				state = stRows
				if isEOF(p, false) {
					out.status, out.haveStatus = eofStatus(p, false), true
					state = stDone
				}
			case kind == respPrepare:
				if p[0] != 0 || n < 12 {
					return out, fmt.Errorf("%w: malformed prepare response", errBackendLost)
				}
				out.stmtID, _, _ = readUint32(p, 1)
				c16, _, _ := readUint16(p, 5)
				p16, _, _ := readUint16(p, 7)
				out.params = p16
				cols, params = uint64(c16), uint64(p16)
				p[1], p[2], p[3], p[4] = byte(proxyStmtID), byte(proxyStmtID>>8), byte(proxyStmtID>>16), byte(proxyStmtID>>24)
				state = nextPrepareState(params, cols)
			case p[0] == 0x00:
				o, _ := parseOK(p)
				out.status, out.haveStatus, out.lastInsertID = o.status, true, o.lastInsertID
				out.warnings = okWarnings(p)
				if o.status&statusMoreResults == 0 {
					state = stDone
				}
			case p[0] == 0xfb:
				infile = true
			default:
				v, _, _, ok := readLenEncInt(p, 0)
				if !ok {
					return out, fmt.Errorf("%w: malformed column count", errBackendLost)
				}
				cols = v
				state = stColumns
				if cols == 0 {
					state = stColumnsEOF
				}
			}
		case stParams:
			params--
			if params == 0 {
				state = stParamsEOF
			}
		case stParamsEOF:
			state = stColumns
			if cols == 0 {
				state = stDone
			}
			if kind == respPrepare && cols > 0 {
				state = stColumns
			}
		case stColumns:
			cols--
			if cols == 0 {
				state = stColumnsEOF
			}
		case stColumnsEOF:
			if kind == respPrepare {
				state = stDone
				break
			}
			st := eofStatus(p, false)
			state = stRows
			if st&statusCursorExists != 0 {
				// A cursor was opened: rows come with COM_STMT_FETCH.
				if fence {
					if err := s.fenced(bc, &out, pkt[3]); err != nil {
						return out, err
					}
				}
				out.status, out.haveStatus = st, true
				state = stDone
			}
		case stRows:
			switch {
			case p[0] == 0xff && kind != respFieldList:
				out.serverErr = true
				state = stDone
			case p[0] == 0xff:
				out.serverErr = true
				state = stDone
			case isEOF(p, false):
				// The result's terminator: an ERR may take its place.
				if fence {
					if err := s.fenced(bc, &out, pkt[3]); err != nil {
						return out, err
					}
				}
				st := eofStatus(p, false)
				out.status, out.haveStatus = st, true
				if len(p) >= 3 {
					out.warnings = uint16(p[1]) | uint16(p[2])<<8
				}
				state = stDone
				if kind == respResult && st&statusMoreResults != 0 {
					state = stFirst
				}
			}
		}
		w, err := s.forward(bc, pkt, n, whole)
		out.relayed += w
		if err != nil {
			return out, err
		}
		out.sent = true
		if infile {
			if err := s.relayInfile(bc, out.seq); err != nil {
				return out, err
			}
		}
	}
	if out.haveStatus {
		bc.lastStatus = out.status
	}
	if err := s.w.Flush(); err != nil {
		return out, fmt.Errorf("%w: %v", errClientGone, err)
	}
	return out, nil
}

// fenced withholds the packet with sequence id seq — the first packet or
// the terminator of a result of a statement that may have changed data —
// when the epoch bc was chosen at has ended (a failover) or this proxy lost
// its write lease while the statement ran: the statement may have committed
// on a primary that is no longer the primary, and passing on its answer
// could acknowledge a write the new primary does not have. INSERT/DELETE/
// REPLACE ... RETURNING and CALL end in result sets, so OK packets are not
// the only acknowledgement. The client gets 9010 in the packet's place (an
// ERR may end a result set, and may be any result of a multi-result), or
// instead of the whole response when none of it has left the proxy yet.
func (s *session) fenced(bc *backendConn, out *relayOut, seq uint8) error {
	e := bc.epoch.Load()
	if e == 0 || s.p.router.Current(e) {
		return nil
	}
	out.seq = seq
	if out.sent && s.w.Buffered() == out.relayed {
		s.w.Reset(s.nc)
		out.sent, out.relayed = false, 0
	}
	return outcomeUnknown(s.epochEnded(bc, e))
}

func nextPrepareState(params, cols uint64) relayState {
	switch {
	case params > 0:
		return stParams
	case cols > 0:
		return stColumns
	default:
		return stDone
	}
}

func okWarnings(p []byte) uint16 {
	_, pos, _, ok := readLenEncInt(p, 1)
	if !ok {
		return 0
	}
	_, pos, _, ok = readLenEncInt(p, pos)
	if !ok || pos+4 > len(p) {
		return 0
	}
	return uint16(p[pos+2]) | uint16(p[pos+3])<<8
}

// forward writes one logical packet (and any continuation chunks) to the
// client, and reports how many bytes it wrote.
func (s *session) forward(bc *backendConn, pkt []byte, n int, whole bool) (int, error) {
	written := 0
	for {
		if whole {
			if _, err := s.w.Write(pkt); err != nil {
				return written, fmt.Errorf("%w: %v", errClientGone, err)
			}
			_, _ = bc.r.Discard(len(pkt))
			written += len(pkt)
		} else {
			c, err := io.CopyN(s.w, bc.r, int64(4+n))
			written += int(c)
			if err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					return written, fmt.Errorf("%w: %v", errBackendLost, err)
				}
				return written, fmt.Errorf("%w: %v", errClientGone, err)
			}
		}
		if n < maxChunk {
			return written, nil
		}
		hdr, err := bc.r.Peek(4)
		if err != nil {
			return written, fmt.Errorf("%w: %v", errBackendLost, err)
		}
		n = int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
		whole = false
	}
}

// relayInfile streams LOAD DATA LOCAL INFILE content from the client to the
// member until the client's empty packet.
func (s *session) relayInfile(bc *backendConn, seq uint8) error {
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("%w: %v", errClientGone, err)
	}
	if s.caps&capLocalFiles == 0 {
		// The client cannot send files: end the transfer so the member
		// answers with its own error.
		if _, err := writePacket(bc.w, seq, nil); err != nil {
			return fmt.Errorf("%w: %v", errBackendLost, err)
		}
		return bc.w.Flush()
	}
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(s.r, hdr[:]); err != nil {
			return fmt.Errorf("%w: %v", errClientGone, err)
		}
		n := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
		if _, err := bc.w.Write(hdr[:]); err != nil {
			return fmt.Errorf("%w: %v", errBackendLost, err)
		}
		if _, err := io.CopyN(bc.w, s.r, int64(n)); err != nil {
			return fmt.Errorf("%w: %v", errClientGone, err)
		}
		if n == 0 {
			if err := bc.w.Flush(); err != nil {
				return fmt.Errorf("%w: %v", errBackendLost, err)
			}
			return nil
		}
	}
}
