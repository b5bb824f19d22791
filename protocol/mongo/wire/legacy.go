package wire

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"strings"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
)

// QueryFlags are OP_QUERY's flags. Only the legacy handshake reaches this
// package as OP_QUERY, so they are exposed, not interpreted.
type QueryFlags int32

// The OP_QUERY flag bits (bit 0 is reserved).
const (
	QueryTailableCursor  QueryFlags = 1 << 1
	QuerySecondaryOK     QueryFlags = 1 << 2
	QueryOplogReplay     QueryFlags = 1 << 3
	QueryNoCursorTimeout QueryFlags = 1 << 4
	QueryAwaitData       QueryFlags = 1 << 5
	QueryExhaust         QueryFlags = 1 << 6
	QueryPartial         QueryFlags = 1 << 7
)

// OpQuery is a decoded OP_QUERY. Drivers that support servers older than 3.6
// send their first hello (isMaster on admin.$cmd) this way, before they know
// the server speaks OP_MSG.
type OpQuery struct {
	Header             Header
	Flags              QueryFlags
	FullCollectionName string // "db.collection"; "admin.$cmd" for a command
	NumberToSkip       int32
	NumberToReturn     int32
	Query              bsoncore.Document
	// ReturnFieldsSelector is nil when the message has none.
	ReturnFieldsSelector bsoncore.Document
}

// DecodeOpQuery decodes msg, one whole OP_QUERY with its header.
func DecodeOpQuery(msg []byte) (OpQuery, error) {
	h, err := checkHeader(msg, OpCodeQuery, HeaderLen+4)
	if err != nil {
		return OpQuery{}, err
	}
	end := len(msg)
	q := OpQuery{Header: h, Flags: QueryFlags(le32(msg[HeaderLen:]))}
	pos := HeaderLen + 4
	nul := bytes.IndexByte(msg[pos:], 0)
	if nul < 0 {
		return OpQuery{}, msgErr(OpCodeQuery, pos, "fullCollectionName", ErrTruncated, "no NUL before the end of the message")
	}
	q.FullCollectionName = intern(msg[pos : pos+nul])
	pos += nul + 1
	if end-pos < 8 {
		return OpQuery{}, msgErr(OpCodeQuery, pos, "numberToSkip", ErrTruncated,
			"needs 8 bytes with numberToReturn, "+strconv.Itoa(end-pos)+" left")
	}
	q.NumberToSkip = le32(msg[pos:])
	q.NumberToReturn = le32(msg[pos+4:])
	pos += 8
	if q.Query, err = readDocument(msg, pos, end, OpCodeQuery, "query"); err != nil {
		return OpQuery{}, err
	}
	pos += len(q.Query)
	if pos < end {
		if q.ReturnFieldsSelector, err = readDocument(msg, pos, end, OpCodeQuery, "returnFieldsSelector"); err != nil {
			return OpQuery{}, err
		}
		pos += len(q.ReturnFieldsSelector)
	}
	if pos < end {
		return OpQuery{}, msgErr(OpCodeQuery, pos, "end of message", ErrTrailingBytes, strconv.Itoa(end-pos)+" bytes")
	}
	return q, nil
}

// Database is the part of FullCollectionName before the first dot.
func (q OpQuery) Database() string {
	db, _, _ := strings.Cut(q.FullCollectionName, ".")
	return db
}

// IsCommand reports whether the query is a command (its collection is $cmd).
func (q OpQuery) IsCommand() bool {
	return strings.HasSuffix(q.FullCollectionName, ".$cmd")
}

// CommandName is the first key of the query document, looking inside the
// $query wrapper that legacy drivers put around a command when they add
// $readPreference; "" when there is none.
func (q OpQuery) CommandName() string {
	key := firstKey(q.Query)
	if string(key) == "$query" || string(key) == "query" {
		if v, ok := Lookup(q.Query, string(key)); ok && v.Type == bsoncore.TypeEmbeddedDocument {
			if inner, _, ok := bsoncore.ReadDocument(v.Data); ok && inner.Validate() == nil {
				return intern(firstKey(inner))
			}
		}
	}
	return intern(key)
}

// AppendOpQuery appends an OP_QUERY; selector may be nil. Tests use it to
// play a legacy driver. On error dst is returned unchanged.
func AppendOpQuery(dst []byte, requestID int32, flags QueryFlags, fullCollectionName string,
	numberToSkip, numberToReturn int32, query, selector bsoncore.Document) ([]byte, error) {
	if i := strings.IndexByte(fullCollectionName, 0); i >= 0 {
		return dst, msgErr(OpCodeQuery, i, "fullCollectionName argument", ErrInvalidCString, strconv.Quote(fullCollectionName))
	}
	if err := checkOneDocument(query, OpCodeQuery, "query argument"); err != nil {
		return dst, err
	}
	if selector != nil {
		if err := checkOneDocument(selector, OpCodeQuery, "returnFieldsSelector argument"); err != nil {
			return dst, err
		}
	}
	start := len(dst)
	dst = AppendHeader(dst, Header{RequestID: requestID, OpCode: OpCodeQuery})
	dst = binary.LittleEndian.AppendUint32(dst, uint32(flags))
	dst = append(dst, fullCollectionName...)
	dst = append(dst, 0)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(numberToSkip))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(numberToReturn))
	dst = append(dst, query...)
	dst = append(dst, selector...)
	if err := putLength(dst, start); err != nil {
		return dst[:start], err
	}
	return dst, nil
}

// checkOneDocument checks that doc is exactly one valid document.
func checkOneDocument(doc bsoncore.Document, op OpCode, field string) error {
	d, err := readDocument(doc, 0, len(doc), op, field)
	if err != nil {
		return err
	}
	if len(d) != len(doc) {
		return msgErr(op, len(d), field, ErrTrailingBytes, "")
	}
	return nil
}

// ReplyFlags are OP_REPLY's responseFlags.
type ReplyFlags int32

// The OP_REPLY flag bits.
const (
	ReplyCursorNotFound   ReplyFlags = 1 << 0
	ReplyQueryFailure     ReplyFlags = 1 << 1
	ReplyShardConfigStale ReplyFlags = 1 << 2
	ReplyAwaitCapable     ReplyFlags = 1 << 3
)

// opReplyFixed is the header plus responseFlags, cursorID, startingFrom and
// numberReturned.
const opReplyFixed = HeaderLen + 4 + 8 + 4 + 4

// OpReply is a decoded OP_REPLY, the answer to an OP_QUERY.
type OpReply struct {
	Header         Header
	Flags          ReplyFlags
	CursorID       int64
	StartingFrom   int32
	NumberReturned int32
	// Documents are the reply's documents back to back.
	Documents []byte
}

// Docs iterates over the reply's documents.
func (r OpReply) Docs() DocumentIter { return DocumentIter{rest: r.Documents} }

// AppendOpReply appends an OP_REPLY answering the request responseTo, with
// numberReturned set to len(docs). A proxy sends one only to answer a legacy
// OP_QUERY handshake. On error dst is returned unchanged.
func AppendOpReply(dst []byte, requestID, responseTo int32, flags ReplyFlags, cursorID int64,
	startingFrom int32, docs ...bsoncore.Document) ([]byte, error) {
	for _, d := range docs {
		if err := checkOneDocument(d, OpCodeReply, "documents argument"); err != nil {
			return dst, err
		}
	}
	start := len(dst)
	dst = AppendHeader(dst, Header{RequestID: requestID, ResponseTo: responseTo, OpCode: OpCodeReply})
	dst = binary.LittleEndian.AppendUint32(dst, uint32(flags))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(cursorID))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(startingFrom))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(docs)))
	for _, d := range docs {
		dst = append(dst, d...)
	}
	if err := putLength(dst, start); err != nil {
		return dst[:start], err
	}
	return dst, nil
}

// DecodeOpReply decodes msg, one whole OP_REPLY with its header; tests use it
// to read what the proxy answered a legacy handshake with.
func DecodeOpReply(msg []byte) (OpReply, error) {
	h, err := checkHeader(msg, OpCodeReply, opReplyFixed)
	if err != nil {
		return OpReply{}, err
	}
	r := OpReply{
		Header:         h,
		Flags:          ReplyFlags(le32(msg[16:])),
		CursorID:       int64(binary.LittleEndian.Uint64(msg[20:])),
		StartingFrom:   le32(msg[28:]),
		NumberReturned: le32(msg[32:]),
		Documents:      msg[opReplyFixed:],
	}
	n, err := checkDocuments(msg, opReplyFixed, len(msg), OpCodeReply, "documents")
	if err != nil {
		return OpReply{}, err
	}
	if n != int(r.NumberReturned) {
		return OpReply{}, msgErr(OpCodeReply, 32, "numberReturned", ErrCountMismatch,
			strconv.Itoa(int(r.NumberReturned))+" claimed, "+strconv.Itoa(n)+" present")
	}
	return r, nil
}
