package mysql

import (
	"errors"
	"fmt"
	"io"

	gm "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/dbrouter/dbrouter/proxy"
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
	// gtid: a commit's GTID came in the session-state info of an OK
	// packet (and went to read-your-writes). gtidMissed: a result ended in
	// an EOF, or an OK's session state was malformed, so a commit's GTID
	// may have gone unreported.
	gtid       bool
	gtidMissed bool
	// dropAfter: the connection failed after the response was complete
	// (asking for the write's GTID): the statement succeeded, the
	// connection must go.
	dropAfter bool
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
// With write (a write statement's result), read-your-writes learns the
// GTID of what it committed before the client has the whole answer: were
// it learned after, with causal_reads: proxy another session's read could
// come first and miss it.
func (s *session) relay(bc *backendConn, kind respKind, proxyStmtID uint32, fence, write bool) (relayOut, error) {
	var out relayOut
	state := stFirst
	var cols, params uint64
	for state != stDone {
		hdr, err := bc.r.Peek(4)
		if err != nil {
			return out, fmt.Errorf("%w: %v", proxy.ErrBackendLost, err)
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
			return out, fmt.Errorf("%w: %v", proxy.ErrBackendLost, err)
		}
		seq := pkt[3]
		out.seq = seq + 1
		p := pkt[4:]
		infile := false
		// send: the payload's length as it goes to the client (session
		// state stripped); own: p is a whole packet read off bc.r, not a
		// view of its buffer.
		send, own := n, false
		switch state {
		case stFirst:
			if n == 0 {
				return out, fmt.Errorf("%w: empty response packet", proxy.ErrBackendLost)
			}
			// The first packet of each result: an OK (which also ends
			// it) or a result set's column count. An ERR acknowledges
			// nothing; a LOCAL INFILE request is answered by an OK later.
			if fence && p[0] != 0xff && p[0] != 0xfb {
				if err := s.fenced(bc, &out, seq); err != nil {
					return out, err
				}
			}
			if p[0] == 0x00 && bc.tracked && (kind == respSingle || kind == respResult) {
				if !whole {
					// An OK larger than the read buffer (a long info
					// string): its session state is at the end.
					if p, err = bc.pr.readPacket(); err != nil {
						return out, fmt.Errorf("%w: %v", proxy.ErrBackendLost, err)
					}
					own = true
				}
				send = s.sessionState(p, &out)
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
					return out, fmt.Errorf("%w: malformed prepare response", proxy.ErrBackendLost)
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
					return out, fmt.Errorf("%w: malformed column count", proxy.ErrBackendLost)
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
			s.clearStateFlag(bc, p)
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
					if err := s.fenced(bc, &out, seq); err != nil {
						return out, err
					}
				}
				s.clearStateFlag(bc, p)
				st := eofStatus(p, false)
				out.status, out.haveStatus = st, true
				if len(p) >= 3 {
					out.warnings = uint16(p[1]) | uint16(p[2])<<8
				}
				state = stDone
				if kind == respResult && st&statusMoreResults != 0 {
					state = stFirst
				}
				// An EOF carries no session state: a commit that ended
				// in a result set (INSERT ... RETURNING) reported no
				// GTID.
				out.gtidMissed = true
			}
		}
		var w int
		switch {
		case own:
			w, err = s.forwardOwn(seq, p[:send])
		case send != n:
			w, err = s.forwardTrimmed(bc, pkt, n, send)
		default:
			w, err = s.forward(bc, pkt, n, whole)
		}
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
	// The GTID usually came in an OK packet (sessionState). When it could
	// not (see noteWrite), it is asked for; the answer's last packet is
	// still in s.w, so the client cannot have acted on it yet.
	if write && s.p.causal != causalOff && !out.serverErr && !out.gtid && (!bc.trackGTID || out.gtidMissed) &&
		!(out.haveStatus && out.status&statusInTrans != 0) {
		out.dropAfter = !s.noteWrite(bc)
	}
	if err := s.w.Flush(); err != nil {
		return out, fmt.Errorf("%w: %v", errClientGone, err)
	}
	return out, nil
}

// sessionState reads the session-state info of an OK packet p from a
// connection that negotiated session tracking: a commit's GTID goes to
// read-your-writes. It returns the length p has once fit for the client:
// a client that did not negotiate CLIENT_SESSION_TRACK itself cannot
// parse session state, so it is stripped (in place, see
// stripSessionState). Today that is every client: the proxy does not
// offer session tracking (handshake.go), since pooled connections are
// shared by sessions and track what the proxy needs, not what a client
// asked for. Stripping costs a few byte writes per OK that carries state;
// the alternative, tracking only for clients that negotiated it, would
// leave every other client with a query per write to learn its GTID.
func (s *session) sessionState(p []byte, out *relayOut) int {
	o, ok := parseTrackedOK(p)
	if !ok {
		out.gtidMissed = true
		return len(p) // not an OK the proxy can read: passed on as it came
	}
	if p[o.statusAt+1]&byte(statusSessionStateChanged>>8) == 0 {
		return len(p)
	}
	if s.p.causal != causalOff {
		v, found, ok := trackedVar(o.state, "last_gtid")
		g, valid := parseGTID(v)
		switch {
		case !ok || found && !valid:
			out.gtidMissed = true
		case found:
			s.learnedGTID(g)
			out.gtid = true
		}
	}
	if s.caps&gm.CLIENT_SESSION_TRACK != 0 {
		return len(p)
	}
	return stripSessionState(p, o)
}

// clearStateFlag clears, in an EOF packet p from a connection that
// tracks session state, the status flag saying the state changed, for a
// client that did not negotiate session tracking: it was never told of
// any state to change (see sessionState).
func (s *session) clearStateFlag(bc *backendConn, p []byte) {
	if bc.tracked && s.caps&gm.CLIENT_SESSION_TRACK == 0 && len(p) >= 5 {
		p[4] &^= byte(statusSessionStateChanged >> 8)
	}
}

// forwardTrimmed writes packet pkt (whole in bc.r's buffer, payload n
// bytes) to the client with only its first send bytes of payload, and
// consumes it from bc.
func (s *session) forwardTrimmed(bc *backendConn, pkt []byte, n, send int) (int, error) {
	pkt[0], pkt[1], pkt[2] = byte(send), byte(send>>8), byte(send>>16)
	w, err := s.w.Write(pkt[:4+send])
	if err != nil {
		return w, fmt.Errorf("%w: %v", errClientGone, err)
	}
	_, _ = bc.r.Discard(4 + n)
	return w, nil
}

// forwardOwn writes payload p, already read off the member connection, to
// the client as packet seq.
func (s *session) forwardOwn(seq uint8, p []byte) (int, error) {
	if _, err := writePacket(s.w, seq, p); err != nil {
		return 0, fmt.Errorf("%w: %v", errClientGone, err)
	}
	return 4 + len(p), nil
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
	e := bc.Epoch.Load()
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
					return written, fmt.Errorf("%w: %v", proxy.ErrBackendLost, err)
				}
				return written, fmt.Errorf("%w: %v", errClientGone, err)
			}
		}
		if n < maxChunk {
			return written, nil
		}
		hdr, err := bc.r.Peek(4)
		if err != nil {
			return written, fmt.Errorf("%w: %v", proxy.ErrBackendLost, err)
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
			return fmt.Errorf("%w: %v", proxy.ErrBackendLost, err)
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
			return fmt.Errorf("%w: %v", proxy.ErrBackendLost, err)
		}
		if _, err := io.CopyN(bc.w, s.r, int64(n)); err != nil {
			return fmt.Errorf("%w: %v", errClientGone, err)
		}
		if n == 0 {
			if err := bc.w.Flush(); err != nil {
				return fmt.Errorf("%w: %v", proxy.ErrBackendLost, err)
			}
			return nil
		}
	}
}
