package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
)

// A session's read loop: one buffer for the life of the connection, a switch
// on the opcode, and Unsupported for everything the proxy does not speak.
func ExampleReadMessage() {
	hello := bsoncore.NewDocumentBuilder().AppendInt32("hello", 1).AppendString("$db", "admin").Build()
	isMaster := bsoncore.NewDocumentBuilder().AppendInt32("isMaster", 1).Build()
	var stream []byte
	stream, _ = wire.AppendOpQuery(stream, 1, 0, "admin.$cmd", 0, -1, isMaster, nil)
	stream, _ = wire.AppendOpMsg(stream, 2, 0, 0, hello)
	// An OP_COMPRESSED from a driver that compresses without having
	// negotiated it: originalOpcode OP_MSG, uncompressedSize 100, zlib.
	stream = wire.AppendHeader(stream, wire.Header{MessageLength: 28, RequestID: 9, OpCode: wire.OpCodeCompressed})
	stream = binary.LittleEndian.AppendUint32(stream, uint32(wire.OpCodeMsg))
	stream = binary.LittleEndian.AppendUint32(stream, 100)
	stream = append(stream, byte(wire.CompressorZlib), 0x78, 0x9c, 0)

	r := bytes.NewReader(stream)
	var buf []byte
	for {
		var (
			m   wire.Message
			err error
		)
		m, buf, err = wire.ReadMessage(r, wire.DefaultMaxMessageSize, buf)
		if err == io.EOF {
			return
		}
		if err != nil {
			fmt.Println("close:", err)
			return
		}
		switch m.Header.OpCode {
		case wire.OpCodeMsg:
			msg, err := wire.DecodeOpMsg(m.Raw)
			if err != nil {
				fmt.Println("close:", err)
				return
			}
			db, _ := msg.DB()
			fmt.Printf("request %d: OP_MSG %s on %s\n", m.Header.RequestID, msg.CommandName(), db)
		case wire.OpCodeQuery:
			q, err := wire.DecodeOpQuery(m.Raw)
			if err != nil {
				fmt.Println("close:", err)
				return
			}
			fmt.Printf("request %d: OP_QUERY %s on %s\n", m.Header.RequestID, q.CommandName(), q.FullCollectionName)
		default:
			err := wire.Unsupported(m)
			fmt.Printf("request %d: refused (compressed: %v)\n", m.Header.RequestID, errors.Is(err, wire.ErrCompressed))
			fmt.Println(err)
		}
	}
	// Output:
	// request 1: OP_QUERY isMaster on admin.$cmd
	// request 2: OP_MSG hello on admin
	// request 9: refused (compressed: true)
	// mongo wire: OP_COMPRESSED: opCode at offset 12: OP_COMPRESSED received but compression was not negotiated (compressor zlib wrapping OP_MSG; remove compressors= from the connection string)
}
