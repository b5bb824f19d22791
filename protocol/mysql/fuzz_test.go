package mysql

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzPacketReader: any byte stream yields packets, a clean error, or EOF —
// never a panic, and never a packet over the limit.
func FuzzPacketReader(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 0x0e})
	f.Add([]byte{5, 0, 0, 0, 0x03, 'S', 'E', 'L', 'E'})
	f.Add([]byte{0xff, 0xff, 0xff, 0, 1, 2, 3})
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		pr := packetReader{r: bufio.NewReaderSize(bytes.NewReader(data), 16), max: 1 << 10}
		for i := 0; i < 64; i++ {
			p, err := pr.readPacket()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrPacketTooLarge) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(p) > 1<<10 {
				t.Fatalf("packet of %d bytes over the limit", len(p))
			}
		}
	})
}

// FuzzClassify: the classifier terminates and answers for any input.
func FuzzClassify(f *testing.F) {
	for _, s := range []string{"SELECT 1", "SELECT * FROM t FOR UPDATE", "SET @x := 1; USE `a``b`", "/*!50000 SELECT */ 'x", "SELECT /* dbrouter:replica", "--", "@", "@@", "SET NAMES", "((((", "KILL QUERY 7", "KILL HARD CONNECTION 1073741825;"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, sql []byte) {
		c := Classify(sql)
		if c.Kind > KindUnlockTables {
			t.Fatalf("kind %d", c.Kind)
		}
		_ = SetKey(sql)
		_, _ = UseTarget(sql)
		// A KILL of a session is never anything but a write statement.
		if _, _, ok := KillTarget(sql); ok && c.Kind != KindWrite {
			t.Fatalf("KillTarget matched a statement classified %d", c.Kind)
		}
	})
}

// FuzzHandshakeResponse: client handshake and other decoders never panic.
func FuzzHandshakeResponse(f *testing.F) {
	good := []byte{0x0d, 0xa2, 0x0a, 0x00, 0, 0, 0, 1, 45}
	good = append(good, make([]byte, 23)...)
	good = append(good, "app\x00"...)
	good = append(good, 20)
	good = append(good, bytes.Repeat([]byte{7}, 20)...)
	good = append(good, "app\x00mysql_native_password\x00"...)
	f.Add(good)
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseHandshakeResponse(b)
		_, _ = parseServerHello(b)
		_, _ = parseOK(b)
		_ = parseErr(b)
		_ = okWarnings(b)
		_ = isEOF(b, false)
		_ = eofStatus(b, true)
		_ = isSSLRequest(b)
	})
}
