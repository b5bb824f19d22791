package mongo

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/xdg-go/scram"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
)

// testUsers are the accounts the tests with authentication configure.
var testUsers = []User{{Name: "alice", Password: "s3cret pass"}, {Name: "bob", Password: "hunter2"}}

// startProxy serves a proxy on 127.0.0.1:0 for the test's lifetime; the
// cleanup ends Serve's ctx and checks that Serve returned nil, after every
// session ended.
func startProxy(t testing.TB, cfg Config) (string, *Proxy) {
	t.Helper()
	return startProxyLogReg(t, cfg, zaptest.NewLogger(t), nil)
}

// startProxyReg is startProxy with the proxy's metrics on reg.
func startProxyReg(t testing.TB, cfg Config, reg prometheus.Registerer) (string, *Proxy) {
	t.Helper()
	return startProxyLogReg(t, cfg, zaptest.NewLogger(t), reg)
}

// startProxyLog is startProxy with the proxy's logger given (a test that
// checks what the proxy logs).
func startProxyLog(t testing.TB, cfg Config, log *zap.Logger) (string, *Proxy) {
	t.Helper()
	return startProxyLogReg(t, cfg, log, nil)
}

func startProxyLogReg(t testing.TB, cfg Config, log *zap.Logger, reg prometheus.Registerer) (string, *Proxy) {
	t.Helper()
	p, err := NewWithMetrics(cfg, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return 10s after its ctx ended")
		}
	})
	return ln.Addr().String(), p
}

// connect is the Go driver v2, unmodified, on uri; it disconnects at
// cleanup (before the proxy stops: cleanups run last-registered first).
func connect(t testing.TB, uri string) *mongo.Client {
	t.Helper()
	c, err := mongo.Connect(options.Client().ApplyURI(uri).SetServerSelectionTimeout(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Disconnect(ctx); err != nil {
			t.Errorf("disconnect: %v", err)
		}
	})
	return c
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// rawConn plays a driver byte by byte, to send what drivers do not (a
// legacy OP_QUERY, OP_COMPRESSED, broken frames) and to see each reply
// exactly as the proxy wrote it.
type rawConn struct {
	t   testing.TB
	nc  net.Conn
	buf []byte
	id  int32
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc}
}

func (c *rawConn) send(b []byte) {
	c.t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read returns the next message, or the read error.
func (c *rawConn) read() (wire.Message, error) {
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, buf, err := wire.ReadMessage(c.nc, 0, c.buf)
	c.buf = buf
	return m, err
}

// command sends body as an OP_MSG and returns the reply's body, checking
// that it answers this request.
func (c *rawConn) command(body bsoncore.Document) bsoncore.Document {
	c.t.Helper()
	c.id++
	msg, err := wire.AppendOpMsg(nil, c.id, 0, 0, body)
	if err != nil {
		c.t.Fatal(err)
	}
	c.send(msg)
	return c.replyBody(wire.OpCodeMsg)
}

// replyBody reads a reply of opcode op to request c.id and returns its
// (first) document, copied out of the read buffer.
func (c *rawConn) replyBody(op wire.OpCode) bsoncore.Document {
	c.t.Helper()
	m, err := c.read()
	if err != nil {
		c.t.Fatalf("read reply: %v", err)
	}
	if m.Header.ResponseTo != c.id {
		c.t.Fatalf("reply responseTo %d, want the request's id %d", m.Header.ResponseTo, c.id)
	}
	if m.Header.OpCode != op {
		c.t.Fatalf("reply is %v, want %v", m.Header.OpCode, op)
	}
	switch op {
	case wire.OpCodeMsg:
		r, err := wire.DecodeOpMsg(m.Raw)
		if err != nil {
			c.t.Fatalf("decode reply: %v", err)
		}
		return append(bsoncore.Document(nil), r.Body()...)
	default:
		r, err := wire.DecodeOpReply(m.Raw)
		if err != nil {
			c.t.Fatalf("decode reply: %v", err)
		}
		if r.NumberReturned != 1 {
			c.t.Fatalf("OP_REPLY with %d documents, want 1", r.NumberReturned)
		}
		it := r.Docs()
		d, _ := it.Next()
		return append(bsoncore.Document(nil), d...)
	}
}

// wantClosed checks that the proxy closed the connection (without writing
// anything more).
func (c *rawConn) wantClosed() {
	c.t.Helper()
	m, err := c.read()
	if err == nil {
		c.t.Fatalf("got a %v, want the connection closed", m.Header.OpCode)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.t.Fatalf("connection still open after 5s: %v", err)
		}
	}
}

// authenticate runs SCRAM-SHA-256 as a driver does, with or without
// skipEmptyExchange, and returns the final reply.
func (c *rawConn) authenticate(user, password string, skipEmpty bool) bsoncore.Document {
	c.t.Helper()
	client, err := scram.SHA256.NewClient(user, password, "")
	if err != nil {
		c.t.Fatal(err)
	}
	conv := client.NewConversation()
	first, err := conv.Step("")
	if err != nil {
		c.t.Fatal(err)
	}
	b := bsoncore.NewDocumentBuilder().
		AppendInt32("saslStart", 1).
		AppendString("mechanism", "SCRAM-SHA-256").
		AppendBinary("payload", 0, []byte(first)).
		AppendInt32("autoAuthorize", 1)
	if skipEmpty {
		b = b.StartDocument("options").AppendBoolean("skipEmptyExchange", true).FinishDocument()
	}
	reply := c.command(b.AppendString("$db", "admin").Build())
	for !replyBool(reply, "done") {
		if !isOK(reply) {
			return reply
		}
		_, payload, _ := reply.Lookup("payload").BinaryOK()
		next := ""
		if !conv.Done() {
			if next, err = conv.Step(string(payload)); err != nil {
				c.t.Fatalf("client step: %v", err)
			}
		}
		reply = c.command(bsoncore.NewDocumentBuilder().
			AppendInt32("saslContinue", 1).
			AppendInt32("conversationId", reply.Lookup("conversationId").Int32()).
			AppendBinary("payload", 0, []byte(next)).
			AppendString("$db", "admin").Build())
	}
	return reply
}

func isOK(doc bsoncore.Document) bool {
	f, ok := doc.Lookup("ok").AsFloat64OK()
	return ok && f == 1
}

func replyBool(doc bsoncore.Document, key string) bool {
	b, _ := doc.Lookup(key).BooleanOK()
	return b
}

func replyCode(doc bsoncore.Document) int32 {
	c, _ := doc.Lookup("code").AsInt32OK()
	return c
}

func cmd(name string) bsoncore.Document {
	return bsoncore.NewDocumentBuilder().AppendInt32(name, 1).AppendString("$db", "admin").Build()
}
