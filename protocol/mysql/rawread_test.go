package mysql

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/chaos"
)

// sendThenWaitPair connects a sendThenWait-backed reader to a member played
// by serve.
func sendThenWaitPair(t *testing.T, serve func(net.Conn)) (net.Conn, *sendThenWait, *bufio.Reader, *bufio.Writer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	done := make(chan struct{})
	t.Cleanup(func() { <-done })
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		serve(c)
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	w := bufio.NewWriter(nc)
	stw := newSendThenWait(nc, w)
	if stw == nil {
		t.Fatal("a TCP connection has a raw socket")
	}
	return nc, stw, bufio.NewReader(stw), w
}

func TestSendThenWait(t *testing.T) {
	t.Run("CommandGoesOutWithTheWaitAndTheAnswerComesBack", func(t *testing.T) {
		nc, stw, r, w := sendThenWaitPair(t, func(c net.Conn) {
			b := make([]byte, 5)
			for {
				if _, err := io.ReadFull(c, b); err != nil {
					return
				}
				c.Write(append([]byte("re:"), b...))
			}
		})
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second)) // a command never sent fails, not hangs
		for i := range 3 {                                      // the same connection, statement after statement
			w.WriteString("hello")
			stw.pending = true
			got := make([]byte, 8)
			if _, err := io.ReadFull(r, got); err != nil {
				t.Fatal(err)
			}
			if string(got) != "re:hello" {
				t.Fatalf("answer %q", got)
			}
			if stw.pending || w.Buffered() != 0 {
				t.Fatalf("statement %d: the command was not sent by the read", i)
			}
		}
	})

	t.Run("MemberThatClosedIsAnErrorNotAHang", func(t *testing.T) {
		closed := make(chan struct{})
		nc, stw, r, w := sendThenWaitPair(t, func(c net.Conn) {
			c.Close()
			close(closed)
		})
		<-closed
		// Wait until the member's FIN is in this socket, unread: the case
		// where its readiness may already have been consumed.
		raw, _ := nc.(*net.TCPConn).SyscallConn()
		err := chaos.Poll(t.Context(), 5*time.Second, func() (bool, error) {
			var n int
			raw.Control(func(fd uintptr) {
				b := make([]byte, 1)
				n, _, _ = syscall.Recvfrom(int(fd), b, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			})
			return n == 0, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		w.WriteString("hello")
		stw.pending = true
		_, err = r.Peek(1)
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read after the member closed: %v, want EOF or a reset", err)
		}
	})

	t.Run("DeadlineStillApplies", func(t *testing.T) {
		hold := make(chan struct{})
		nc, stw, r, w := sendThenWaitPair(t, func(c net.Conn) { <-hold })
		t.Cleanup(func() { close(hold) }) // before the pair's cleanups wait for the member
		_ = nc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		w.WriteString("hello")
		stw.pending = true
		if _, err := r.Peek(1); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read of an answer that never comes: %v, want a timeout", err)
		}
	})
}

// TestClosedTellsAQuietConnectionFromOneTheMemberClosed: a write is not sent
// on a pooled connection the member closed while it sat idle (its outcome
// would be unknown, though it never arrived); the probe costs one
// non-blocking read and allocates nothing.
func TestClosedTellsAQuietConnectionFromOneTheMemberClosed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		member func(c net.Conn, hold <-chan struct{})
		want   bool
	}{
		{"quiet", func(c net.Conn, hold <-chan struct{}) { <-hold }, false},
		{"closed by the member", func(c net.Conn, hold <-chan struct{}) { c.Close() }, true},
		{"unprompted packet", func(c net.Conn, hold <-chan struct{}) { c.Write([]byte{1, 0, 0, 0, 0xff}); <-hold }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hold := make(chan struct{})
			_, stw, _, _ := sendThenWaitPair(t, func(c net.Conn) { tc.member(c, hold) })
			t.Cleanup(func() { close(hold) })
			if tc.want {
				// Until the member's FIN or bytes arrive the connection
				// looks quiet, as it would to the proxy.
				if err := chaos.Poll(t.Context(), 5*time.Second, func() (bool, error) { return stw.closed(), nil }); err != nil {
					t.Fatal("closed never noticed")
				}
				return
			}
			if stw.closed() {
				t.Fatal("a quiet connection reported closed")
			}
			if n := testing.AllocsPerRun(100, func() { stw.closed() }); n != 0 {
				t.Fatalf("probe allocates %v per call", n)
			}
		})
	}
}
