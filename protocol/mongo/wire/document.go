package wire

import (
	"strconv"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
)

// readDocument returns the BSON document that starts at b[off], which must
// end by b[end]. It is the one place a document length read off the wire is
// trusted, and only after it is checked against end: a length that overruns
// its section or message is an error, never a slice out of range.
//
// bsoncore's Validate checks the top-level elements' framing only (it does
// not descend into embedded documents), so it costs one hop per element and
// allocates nothing; a nested document is checked by whoever reads into it,
// and bsoncore's readers are bounds-checked themselves.
func readDocument(b []byte, off, end int, op OpCode, field string) (bsoncore.Document, error) {
	if end-off < 4 {
		return nil, msgErr(op, off, field, ErrTruncated,
			"length needs 4 bytes, "+strconv.Itoa(end-off)+" left")
	}
	n := int(le32(b[off:]))
	if n < 5 {
		return nil, msgErr(op, off, field, ErrInvalidDocument, "length "+strconv.Itoa(n)+", the least is 5")
	}
	if n > end-off {
		return nil, msgErr(op, off, field, ErrTruncated,
			"length "+strconv.Itoa(n)+" but "+strconv.Itoa(end-off)+" bytes left in its container")
	}
	doc := bsoncore.Document(b[off : off+n])
	if err := doc.Validate(); err != nil {
		return nil, msgErr(op, off, field, ErrInvalidDocument, err.Error())
	}
	return doc, nil
}

// checkDocuments checks that b[off:end] is a run of whole, valid documents
// with nothing after the last one, as a document sequence or an OP_REPLY
// holds, and counts them.
func checkDocuments(b []byte, off, end int, op OpCode, field string) (int, error) {
	count := 0
	for off < end {
		doc, err := readDocument(b, off, end, op, field)
		if err != nil {
			return count, err
		}
		off += len(doc)
		count++
	}
	return count, nil
}

// DocumentIter walks a run of concatenated BSON documents (a document
// sequence, an OP_REPLY's documents). It stops, rather than panics, at the
// first length that does not fit, so it is safe on bytes that no decoder
// checked.
type DocumentIter struct {
	rest []byte
}

// Next returns the next document, or false at the end.
func (it *DocumentIter) Next() (bsoncore.Document, bool) {
	if len(it.rest) < 5 {
		return nil, false
	}
	n := int(le32(it.rest))
	if n < 5 || n > len(it.rest) {
		it.rest = nil
		return nil, false
	}
	doc := bsoncore.Document(it.rest[:n])
	it.rest = it.rest[n:]
	return doc, true
}

// countDocuments counts the documents in a checked run.
func countDocuments(docs []byte) int {
	it := DocumentIter{rest: docs}
	n := 0
	for _, ok := it.Next(); ok; _, ok = it.Next() {
		n++
	}
	return n
}

// firstKey is the key of the first element of a document whose framing was
// checked, or nil for an empty document: a command's name.
func firstKey(doc bsoncore.Document) []byte {
	if len(doc) <= 5 {
		return nil
	}
	elem, _, ok := bsoncore.ReadElement(doc[4 : len(doc)-1])
	if !ok {
		return nil
	}
	return elem.KeyBytes()
}

// Lookup finds the top-level element key in doc without allocating (bsoncore's
// Lookup takes its keys variadically, which costs a slice per call once it
// escapes).
func Lookup(doc bsoncore.Document, key string) (bsoncore.Value, bool) {
	if len(doc) < 5 {
		return bsoncore.Value{}, false
	}
	rest := doc[4 : len(doc)-1]
	for len(rest) > 0 {
		elem, r, ok := bsoncore.ReadElement(rest)
		if !ok {
			return bsoncore.Value{}, false
		}
		if string(elem.KeyBytes()) == key {
			v, err := elem.ValueErr()
			return v, err == nil
		}
		rest = r
	}
	return bsoncore.Value{}, false
}

// stringBytes returns the bytes of a BSON string value without the copy
// bsoncore's StringValue makes.
func stringBytes(v bsoncore.Value) ([]byte, bool) {
	if v.Type != bsoncore.TypeString || len(v.Data) < 5 {
		return nil, false
	}
	n := int(le32(v.Data))
	if n < 1 || n > len(v.Data)-4 || v.Data[4+n-1] != 0 {
		return nil, false
	}
	return v.Data[4 : 4+n-1], true
}
