package wire

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"strconv"
	"strings"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
)

// MsgFlags are OP_MSG's flagBits. The low 16 bits are required: a receiver
// that does not know one that is set MUST fail. The high 16 are optional and
// ignored when unknown.
type MsgFlags uint32

// The flag bits the OP_MSG spec defines.
const (
	// ChecksumPresent: a CRC-32C of the message ends it.
	ChecksumPresent MsgFlags = 1 << 0
	// MoreToCome: the sender expects no reply (on a request) or will send
	// another message before giving up its turn (on a reply).
	MoreToCome MsgFlags = 1 << 1
	// ExhaustAllowed: the requester accepts several replies (moreToCome) to
	// this request.
	ExhaustAllowed MsgFlags = 1 << 16

	requiredFlags MsgFlags = 0xffff
	knownRequired          = ChecksumPresent | MoreToCome
)

// SectionKind is the payload type byte that starts an OP_MSG section.
type SectionKind uint8

// The two section kinds.
const (
	// SectionBody holds the command document; exactly one per message.
	SectionBody SectionKind = 0
	// SectionSequence holds a document sequence: a command argument (such as
	// insert's documents) pulled out of the body so that it needs no array
	// keys.
	SectionSequence SectionKind = 1
)

// MaxSequences bounds the document sequences in one OP_MSG. The spec sets no
// number, but identifiers must be unique, and checking that without a map
// (that is, without allocating) is quadratic: unbounded, 48 MB of 6-byte
// sections would cost 10^13 comparisons. No command takes more than two
// sequence arguments (bulkWrite's ops and nsInfo).
const MaxSequences = 64

// opMsgFixed is the header plus flagBits.
const opMsgFixed = HeaderLen + 4

// castagnoli is the CRC-32C table the OP_MSG checksum uses; hash/crc32 uses
// the SSE4.2 instruction for it where there is one.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// OpMsg is a decoded OP_MSG. Its documents alias the decoded bytes.
type OpMsg struct {
	Header Header
	// Flags are the flagBits as received, optional unknown bits included, so
	// that re-encoding gives the same bytes.
	Flags MsgFlags

	body     bsoncore.Document
	sections []byte // every section, checked by DecodeOpMsg
	nseq     int
}

// DecodeOpMsg decodes msg, one whole OP_MSG with its header (Message.Raw).
// It verifies the checksum when the flag says there is one, rejects unknown
// required flag bits, bounds-checks every section and document against the
// section and message holding it and validates each document's framing,
// and insists on exactly one body and unique sequence identifiers. After a
// nil error every accessor is safe.
func DecodeOpMsg(msg []byte) (OpMsg, error) {
	h, err := checkHeader(msg, OpCodeMsg, opMsgFixed)
	if err != nil {
		return OpMsg{}, err
	}
	flags := MsgFlags(binary.LittleEndian.Uint32(msg[HeaderLen:]))
	if unknown := flags & requiredFlags &^ knownRequired; unknown != 0 {
		return OpMsg{}, msgErr(OpCodeMsg, HeaderLen, "flagBits", ErrUnknownFlags, "0x"+strconv.FormatUint(uint64(unknown), 16))
	}
	end := len(msg)
	if flags&ChecksumPresent != 0 {
		// Checked before the sections are parsed: a corrupted message should
		// be reported as corrupted, not as whatever structural error the
		// flipped bits happen to make.
		if end < opMsgFixed+4 {
			return OpMsg{}, msgErr(OpCodeMsg, opMsgFixed, "checksum", ErrTruncated, "flagged but the message ends")
		}
		end -= 4
		want := binary.LittleEndian.Uint32(msg[end:])
		if got := crc32.Checksum(msg[:end], castagnoli); got != want {
			return OpMsg{}, msgErr(OpCodeMsg, end, "checksum", ErrChecksum,
				"message says 0x"+strconv.FormatUint(uint64(want), 16)+", bytes give 0x"+strconv.FormatUint(uint64(got), 16))
		}
	}
	body, nseq, err := walkSections(msg, end, true)
	if err != nil {
		return OpMsg{}, err
	}
	return OpMsg{Header: h, Flags: flags, body: body, sections: msg[opMsgFixed:end], nseq: nseq}, nil
}

// walkSections checks the sections in msg[opMsgFixed:end] and returns the
// body and the number of document sequences. The decoder and the encoder
// share it so that what one writes the other reads; the encoder passes
// validate=false because its appenders already validated each document.
func walkSections(msg []byte, end int, validate bool) (bsoncore.Document, int, error) {
	var (
		body bsoncore.Document
		ids  [MaxSequences][]byte
		nseq int
	)
	for pos := opMsgFixed; pos < end; {
		switch kind := SectionKind(msg[pos]); kind {
		case SectionBody:
			if body != nil {
				return nil, 0, msgErr(OpCodeMsg, pos, "section payload type", ErrExtraBody, "")
			}
			doc, err := sectionDocument(msg, pos+1, end, "body document", validate)
			if err != nil {
				return nil, 0, err
			}
			body = doc
			pos += 1 + len(doc)
		case SectionSequence:
			start := pos + 1
			if end-start < 4 {
				return nil, 0, msgErr(OpCodeMsg, start, "document sequence size", ErrTruncated,
					"needs 4 bytes, "+strconv.Itoa(end-start)+" left")
			}
			size := int(le32(msg[start:]))
			if size < 5 {
				return nil, 0, msgErr(OpCodeMsg, start, "document sequence size", ErrTooShort,
					strconv.Itoa(size)+" bytes, the size and an empty identifier need 5")
			}
			if size > end-start {
				return nil, 0, msgErr(OpCodeMsg, start, "document sequence size", ErrTruncated,
					strconv.Itoa(size)+" bytes but "+strconv.Itoa(end-start)+" left in the message")
			}
			secEnd := start + size
			idStart := start + 4
			nul := bytes.IndexByte(msg[idStart:secEnd], 0)
			if nul < 0 {
				return nil, 0, msgErr(OpCodeMsg, idStart, "document sequence identifier", ErrTruncated,
					"no NUL before the end of the section")
			}
			id := msg[idStart : idStart+nul]
			if nseq == MaxSequences {
				return nil, 0, msgErr(OpCodeMsg, pos, "section payload type", ErrTooManySequences,
					"more than "+strconv.Itoa(MaxSequences))
			}
			for _, prev := range ids[:nseq] {
				if bytes.Equal(prev, id) {
					return nil, 0, msgErr(OpCodeMsg, idStart, "document sequence identifier", ErrDuplicateSequence,
						strconv.Quote(string(id)))
				}
			}
			ids[nseq] = id
			nseq++
			for off := idStart + nul + 1; off < secEnd; {
				doc, err := sectionDocument(msg, off, secEnd, "document sequence document", validate)
				if err != nil {
					return nil, 0, err
				}
				off += len(doc)
			}
			pos = secEnd
		default:
			return nil, 0, msgErr(OpCodeMsg, pos, "section payload type", ErrSectionKind, strconv.Itoa(int(kind)))
		}
	}
	if body == nil {
		return nil, 0, msgErr(OpCodeMsg, end, "sections", ErrMissingBody, "")
	}
	return body, nseq, nil
}

// sectionDocument reads a document inside a section; without validate it
// checks the length and terminator only.
func sectionDocument(msg []byte, off, end int, field string, validate bool) (bsoncore.Document, error) {
	if validate {
		return readDocument(msg, off, end, OpCodeMsg, field)
	}
	if end-off < 4 {
		return nil, msgErr(OpCodeMsg, off, field, ErrTruncated, "")
	}
	n := int(le32(msg[off:]))
	if n < 5 || n > end-off || msg[off+n-1] != 0 {
		return nil, msgErr(OpCodeMsg, off, field, ErrInvalidDocument, "length "+strconv.Itoa(n))
	}
	return bsoncore.Document(msg[off : off+n]), nil
}

// Body is the command document (the kind-0 section).
func (m OpMsg) Body() bsoncore.Document { return m.body }

// CommandName is the first key of the body, which the spec requires to be
// the command's name; "" for an empty body. Common names come back without
// allocating.
func (m OpMsg) CommandName() string {
	return intern(firstKey(m.body))
}

// DB is the body's $db, the database the command runs in; false when it is
// missing or not a string. Names other than admin, config and local are
// copied, so the result outlives the buffer.
func (m OpMsg) DB() (string, bool) {
	v, ok := Lookup(m.body, "$db")
	if !ok {
		return "", false
	}
	b, ok := stringBytes(v)
	if !ok {
		return "", false
	}
	return intern(b), true
}

// NumSequences is the number of document sequences (kind-1 sections).
func (m OpMsg) NumSequences() int { return m.nseq }

// Sequence returns the document sequence with the given identifier.
func (m OpMsg) Sequence(identifier string) (Sequence, bool) {
	it := m.Sections()
	for {
		kind, _, id, docs, ok := it.next()
		if !ok {
			return Sequence{}, false
		}
		if kind == SectionSequence && string(id) == identifier {
			return Sequence{Identifier: intern(id), Documents: docs}, true
		}
	}
}

// Sections iterates over the sections in the order they came, which is the
// order an encoder must write them in to reproduce the message.
func (m OpMsg) Sections() SectionIter { return SectionIter{rest: m.sections} }

// Sequence is a document sequence: a command argument's identifier and its
// documents, concatenated as on the wire. From a decoded message, Documents
// aliases the buffer and Identifier does not (it is a copy, made without
// allocating for the identifiers commands use).
type Sequence struct {
	Identifier string
	Documents  []byte
}

// Docs iterates over the sequence's documents.
func (s Sequence) Docs() DocumentIter { return DocumentIter{rest: s.Documents} }

// Len counts the sequence's documents.
func (s Sequence) Len() int { return countDocuments(s.Documents) }

// Section is one OP_MSG section: Body when Kind is SectionBody, Sequence
// when it is SectionSequence.
type Section struct {
	Kind     SectionKind
	Body     bsoncore.Document
	Sequence Sequence
}

// SectionIter walks the sections of a decoded OpMsg.
type SectionIter struct {
	rest []byte
}

// Next returns the next section, or false at the end.
func (it *SectionIter) Next() (Section, bool) {
	kind, body, id, docs, ok := it.next()
	if !ok {
		return Section{}, false
	}
	if kind == SectionBody {
		return Section{Kind: kind, Body: body}, true
	}
	return Section{Kind: kind, Sequence: Sequence{Identifier: intern(id), Documents: docs}}, true
}

// next walks sections that DecodeOpMsg checked; the bounds tests stay so
// that a zero or hand-made SectionIter ends instead of panicking.
func (it *SectionIter) next() (kind SectionKind, body bsoncore.Document, id, docs []byte, ok bool) {
	r := it.rest
	if len(r) < 5 {
		return 0, nil, nil, nil, false
	}
	n := int(le32(r[1:]))
	switch kind = SectionKind(r[0]); {
	case kind == SectionBody && n >= 5 && n <= len(r)-1:
		it.rest = r[1+n:]
		return kind, bsoncore.Document(r[1 : 1+n]), nil, nil, true
	case kind == SectionSequence && n >= 5 && n <= len(r)-1:
		sec := r[5 : 1+n]
		if nul := bytes.IndexByte(sec, 0); nul >= 0 {
			it.rest = r[1+n:]
			return kind, nil, sec[:nul], sec[nul+1:], true
		}
	}
	it.rest = nil
	return 0, nil, nil, nil, false
}

// AppendOpMsgStart begins an OP_MSG at the end of dst: the header, with its
// length left for AppendOpMsgEnd, and the flag bits. Sections follow with
// AppendBodySection and AppendSequenceSection, in the order they should go
// on the wire; start is what AppendOpMsgEnd needs. Nothing here allocates
// when dst has room.
func AppendOpMsgStart(dst []byte, requestID, responseTo int32, flags MsgFlags) (start int, out []byte) {
	start = len(dst)
	dst = AppendHeader(dst, Header{RequestID: requestID, ResponseTo: responseTo, OpCode: OpCodeMsg})
	return start, binary.LittleEndian.AppendUint32(dst, uint32(flags))
}

// AppendBodySection appends a kind-0 section holding body, after checking
// that body is one valid document with nothing after it. On error dst is
// returned unchanged.
func AppendBodySection(dst []byte, body bsoncore.Document) ([]byte, error) {
	doc, err := readDocument(body, 0, len(body), OpCodeMsg, "body argument")
	if err != nil {
		return dst, err
	}
	if len(doc) != len(body) {
		return dst, msgErr(OpCodeMsg, len(doc), "body argument", ErrTrailingBytes, "")
	}
	dst = append(dst, byte(SectionBody))
	return append(dst, body...), nil
}

// AppendSequenceSection appends a kind-1 section: identifier and documents,
// which are BSON documents back to back (as Sequence.Documents holds them).
// On error dst is returned unchanged.
func AppendSequenceSection(dst []byte, identifier string, documents []byte) ([]byte, error) {
	if strings.IndexByte(identifier, 0) >= 0 {
		return dst, msgErr(OpCodeMsg, strings.IndexByte(identifier, 0), "identifier argument", ErrInvalidCString, strconv.Quote(identifier))
	}
	if _, err := checkDocuments(documents, 0, len(documents), OpCodeMsg, "documents argument"); err != nil {
		return dst, err
	}
	size := 4 + len(identifier) + 1 + len(documents)
	if size > maxInt32 {
		return dst, msgErr(OpCodeMsg, 0, "documents argument", ErrTooLarge, strconv.Itoa(size)+" bytes")
	}
	dst = append(dst, byte(SectionSequence))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(size))
	dst = append(dst, identifier...)
	dst = append(dst, 0)
	return append(dst, documents...), nil
}

// AppendOpMsgEnd finishes the OP_MSG begun at dst[start]: it checks the
// message's structure as DecodeOpMsg does (known required flags, one body,
// unique identifiers, every length in bounds; the documents were validated
// as they were appended), appends the CRC-32C when ChecksumPresent is set,
// and fills in messageLength. What it accepts, DecodeOpMsg accepts. On error
// dst is returned unchanged, the partial message still in it.
func AppendOpMsgEnd(dst []byte, start int) ([]byte, error) {
	if start < 0 || len(dst)-start < opMsgFixed {
		return dst, msgErr(OpCodeMsg, 0, "message", ErrTooShort, "AppendOpMsgStart not called at start")
	}
	msg := dst[start:]
	flags := MsgFlags(binary.LittleEndian.Uint32(msg[HeaderLen:]))
	if unknown := flags & requiredFlags &^ knownRequired; unknown != 0 {
		return dst, msgErr(OpCodeMsg, HeaderLen, "flagBits", ErrUnknownFlags, "0x"+strconv.FormatUint(uint64(unknown), 16))
	}
	if _, _, err := walkSections(msg, len(msg), false); err != nil {
		return dst, err
	}
	n := len(dst)
	if flags&ChecksumPresent != 0 {
		dst = append(dst, 0, 0, 0, 0)
	}
	if err := putLength(dst, start); err != nil {
		return dst[:n], err
	}
	if flags&ChecksumPresent != 0 {
		binary.LittleEndian.PutUint32(dst[n:], crc32.Checksum(dst[start:n], castagnoli))
	}
	return dst, nil
}

// AppendOpMsg appends a whole OP_MSG: body first, then each sequence. On
// error dst is returned as it was.
func AppendOpMsg(dst []byte, requestID, responseTo int32, flags MsgFlags, body bsoncore.Document, seqs ...Sequence) ([]byte, error) {
	orig := len(dst)
	start, dst := AppendOpMsgStart(dst, requestID, responseTo, flags)
	dst, err := AppendBodySection(dst, body)
	if err != nil {
		return dst[:orig], err
	}
	for _, s := range seqs {
		if dst, err = AppendSequenceSection(dst, s.Identifier, s.Documents); err != nil {
			return dst[:orig], err
		}
	}
	if dst, err = AppendOpMsgEnd(dst, start); err != nil {
		return dst[:orig], err
	}
	return dst, nil
}
