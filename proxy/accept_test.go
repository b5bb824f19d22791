package proxy

import (
	"context"
	"errors"
	"net"
	"testing"
)

// scriptedListener answers Accept from a script of errors, then a
// connection.
type scriptedListener struct {
	net.Listener
	errs  []error
	calls int
}

func (l *scriptedListener) Accept() (net.Conn, error) {
	l.calls++
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, err
	}
	c, _ := net.Pipe()
	return c, nil
}

func (l *scriptedListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "too many open files" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestAcceptRetriesTemporaryFailuresOnly(t *testing.T) {
	l := &scriptedListener{errs: []error{timeoutErr{}, timeoutErr{}}}
	nc, err := Accept(context.Background(), l)
	if err != nil || nc == nil || l.calls != 3 {
		t.Fatalf("after two temporary failures: %v, %v, %d calls; want a connection on the third", nc, err, l.calls)
	}
	nc.Close()

	broken := errors.New("use of closed network connection")
	l = &scriptedListener{errs: []error{broken}}
	if _, err := Accept(context.Background(), l); !errors.Is(err, broken) || l.calls != 1 {
		t.Fatalf("a permanent failure: %v after %d calls, want it at once", err, l.calls)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	l = &scriptedListener{errs: []error{broken}}
	if _, err := Accept(ctx, l); !errors.Is(err, context.Canceled) {
		t.Fatalf("after the caller's stop: %v, want its context error", err)
	}
}
