package mysql

import (
	"bufio"
	"context"
	"net"
	"testing"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"
	"go.uber.org/zap"
)

// fixedRouter routes every read to member 0 and writes nowhere.
type fixedRouter struct{}

func (fixedRouter) Primary(context.Context) (int, uint64, error)         { return 0, 0, nil }
func (fixedRouter) Current(uint64) bool                                  { return true }
func (fixedRouter) Moved(uint64) (bool, bool)                            { return false, false }
func (fixedRouter) Changed() <-chan struct{}                             { return nil }
func (fixedRouter) RetryWrite(context.Context, int, time.Time) bool      { return false }
func (fixedRouter) Replica(context.Context, int, int) (int, bool, error) { return 0, true, nil }

// fakeMember answers the handshake, COM_SET_OPTION and COM_QUERY (with one
// canned row) from preallocated buffers, so the benchmark's allocation count
// is the proxy's alone.
func fakeMember(tb testing.TB, ln net.Listener) {
	nc, err := ln.Accept()
	if err != nil {
		return
	}
	defer nc.Close()
	r, w := bufio.NewReader(nc), bufio.NewWriter(nc)
	pr := packetReader{r: r, max: 1 << 20}
	scramble := []byte("abcdefghijklmnopqrst")
	hello := appendHandshakeV10(nil, "5.5.5-10.11.0-MariaDB-fake", 1, scramble, backendCaps|gm.CLIENT_SECURE_CONNECTION, pluginNative)
	if _, err := writePacket(w, 0, hello); err != nil || w.Flush() != nil {
		return
	}
	if _, err := pr.readPacket(); err != nil {
		return
	}
	_, _ = writePacket(w, 2, appendOK(nil, 0, 0, statusAutocommit, 0))
	_ = w.Flush()
	colDef := []byte("\x03def\x00\x00\x00\x01c\x00\x0c\x08\x00\x78\x00\x00\x00\xfe\x00\x00\x00\x00\x00")
	eof := []byte{0xfe, 0, 0, byte(statusAutocommit), 0}
	row := []byte("\x0bhello world")
	colCount := []byte{1}
	for {
		p, err := pr.readPacket()
		if err != nil {
			return
		}
		switch p[0] {
		case gm.COM_SET_OPTION:
			_, _ = writePacket(w, 1, eof)
		case gm.COM_QUERY:
			_, _ = writePacket(w, 1, colCount)
			_, _ = writePacket(w, 2, colDef)
			_, _ = writePacket(w, 3, eof)
			_, _ = writePacket(w, 4, row)
			_, _ = writePacket(w, 5, eof)
		default:
			_, _ = writePacket(w, 1, appendOK(nil, 0, 0, statusAutocommit, 0))
		}
		if w.Flush() != nil {
			return
		}
	}
}

// rawClient is a minimal MySQL client for tests that need exact packets.
type rawClient struct {
	nc       net.Conn
	w        *bufio.Writer
	pr       packetReader
	scramble []byte
	id       uint32 // the connection id the proxy's handshake gave
}

// fakeProxy starts a fake member and a proxy in front of it.
func fakeProxy(tb testing.TB, mutate func(*Config)) string {
	tb.Helper()
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go fakeMember(tb, mln)
	cfg := Config{Cluster: "fake", Members: []Member{{Name: "m", Addr: mln.Addr().String()}},
		Users: map[string]*User{
			"app":  {Name: "app", Password: "app", BackendUser: "app", BackendPassword: "app"},
			"app2": {Name: "app2", Password: "two", BackendUser: "app", BackendPassword: "app"},
		}}
	if mutate != nil {
		mutate(&cfg)
	}
	tb.Cleanup(func() { mln.Close() })
	return serveProxy(tb, cfg, zap.NewNop())
}

// serveProxy runs a proxy with a fixed route on a loopback listener until the
// test ends, and returns its address.
func serveProxy(tb testing.TB, cfg Config, log *zap.Logger) string {
	tb.Helper()
	_, addr := startProxy(tb, cfg, log)
	return addr
}

// startProxy is serveProxy for tests that look inside the proxy too.
func startProxy(tb testing.TB, cfg Config, log *zap.Logger) (*Proxy, string) {
	tb.Helper()
	p, err := New(cfg, fixedRouter{}, log, nil)
	if err != nil {
		tb.Fatal(err)
	}
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Serve(ctx, pln) }()
	tb.Cleanup(func() { cancel(); <-done })
	return p, pln.Addr().String()
}

func dialRaw(tb testing.TB, addr, user, password string) (*rawClient, []byte) {
	tb.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { nc.Close() })
	c := &rawClient{nc: nc, w: bufio.NewWriter(nc), pr: packetReader{r: bufio.NewReader(nc), max: 1 << 20}}
	greet, err := c.pr.readPacket()
	if err != nil {
		tb.Fatal(err)
	}
	h, err := parseServerHello(greet)
	if err != nil {
		tb.Fatal(err)
	}
	c.scramble = h.scramble
	c.id = h.connID
	resp := appendUint32(nil, gm.CLIENT_PROTOCOL_41|gm.CLIENT_SECURE_CONNECTION|gm.CLIENT_PLUGIN_AUTH)
	resp = appendUint32(resp, 1<<24)
	resp = append(resp, defaultCollationID)
	resp = append(resp, make([]byte, 23)...)
	resp = append(resp, user+"\x00"...)
	auth := gm.CalcNativePassword(h.scramble, []byte(password))
	resp = append(resp, byte(len(auth)))
	resp = append(resp, auth...)
	resp = append(resp, pluginNative+"\x00"...)
	c.send(tb, 1, resp)
	return c, c.read(tb)
}

func (c *rawClient) send(tb testing.TB, seq uint8, payload []byte) {
	tb.Helper()
	if _, err := writePacket(c.w, seq, payload); err != nil || c.w.Flush() != nil {
		tb.Fatal(err)
	}
}

func (c *rawClient) read(tb testing.TB) []byte {
	tb.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	p, err := c.pr.readPacket()
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// BenchmarkHotPath drives one client session through a real proxy session on
// loopback: read command, classify, route, take a pooled connection, forward,
// relay the result set raw, release. Steady state must allocate nothing.
func BenchmarkHotPath(b *testing.B) {
	addr := fakeProxy(b, nil)
	c, ok := dialRaw(b, addr, "app", "app")
	if ok[0] != 0 {
		b.Fatalf("login: %x", ok)
	}
	query := append([]byte{gm.COM_QUERY}, "SELECT c FROM sbtest1 WHERE id=4242"...)
	roundTrip := func() {
		c.send(b, 0, query)
		eofs := 0
		for eofs < 2 {
			p, err := c.pr.readPacket()
			if err != nil {
				b.Fatal(err)
			}
			if p[0] == 0xff {
				b.Fatalf("error: %s", p)
			}
			if isEOF(p, false) {
				eofs++
			}
		}
	}
	for i := 0; i < 100; i++ { // warm: pool, buffers, backend connection state
		roundTrip()
	}
	_ = c.nc.SetReadDeadline(time.Time{})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		roundTrip()
	}
}
