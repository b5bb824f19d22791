package mysql

import (
	"bufio"
	"io"
	"net"
	"syscall"
)

// sendThenWait sits under a member connection's bufio.Reader. A command
// written with backendConn.send stays in the connection's writer until the
// read for its answer: that read sends it and then waits for the socket to
// become readable, instead of first trying a read that cannot succeed yet
// (the answer needs the member to wake up and run the command). That saves
// a system call per statement on the hot path.
//
// Skipping the first read is safe only because the send happens after the
// read readiness was reset: an answer arriving later always signals anew. A
// member never sends unprompted while its connection lives; when it closes
// one, the command draws a reset, which signals too.
type sendThenWait struct {
	raw syscall.RawConn
	w   *bufio.Writer

	p       []byte
	n       int
	err     error
	pending bool // the writer holds a command whose answer is awaited
	fn      func(fd uintptr) bool

	// probe state (see closed); the method value is made once, so a
	// probe allocates nothing.
	probeFn func(fd uintptr) bool
	dead    bool
	one     [1]byte
}

func newSendThenWait(nc net.Conn, w *bufio.Writer) *sendThenWait {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &sendThenWait{raw: raw, w: w}
	r.fn = r.read
	r.probeFn = r.probe
	return r
}

// closed reports, without waiting, whether the member has closed the idle
// connection or sent something unprompted (a member sends nothing while a
// connection is idle, so either way it is unusable). One non-blocking read.
func (r *sendThenWait) closed() bool {
	if err := r.raw.Read(r.probeFn); err != nil {
		return true
	}
	return r.dead
}

func (r *sendThenWait) probe(fd uintptr) bool {
	for {
		_, err := syscall.Read(int(fd), r.one[:])
		if err == syscall.EINTR {
			continue
		}
		r.dead = err != syscall.EAGAIN
		return true // never wait
	}
}

func (r *sendThenWait) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.p, r.n, r.err = p, 0, nil
	if err := r.raw.Read(r.fn); err != nil {
		r.p = nil
		return 0, err
	}
	r.p = nil
	return r.n, r.err
}

func (r *sendThenWait) read(fd uintptr) bool {
	if r.pending {
		r.pending = false
		if err := r.w.Flush(); err != nil {
			r.err = err
			return true
		}
		return false // wait for the answer
	}
	for {
		n, err := syscall.Read(int(fd), r.p)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false
		case err != nil:
			r.err = err
		case n == 0:
			r.err = io.EOF
		default:
			r.n = n
		}
		return true
	}
}
