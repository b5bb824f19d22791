package chaos

import (
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// proc is one server process the harness owns, whatever the server: a
// mariadbd or a ferretmember. Faults are real signals to a real process, so
// a test sees what a client sees when a server dies or hangs.
type proc struct {
	name string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd exits
}

// launch starts cmd and returns a channel closed when it exits.
func (p *proc) launch(cmd *exec.Cmd) (<-chan struct{}, error) {
	// Own process group: a test's Ctrl-C does not reach it, and kill(-pgid)
	// takes the whole server down. Pdeathsig reaps it if the harness dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	return done, nil
}

// running reports whether the process is alive.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// pid is the process id of the current or last run, 0 before the first.
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

func (p *proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return fmt.Errorf("%s: not started", p.name)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("%s: %v: %w", p.name, sig, err)
	}
	return nil
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() error { return p.signalAndWait(syscall.SIGKILL, 10*time.Second) }

// stop sends SIGTERM and waits up to grace, then escalates to SIGKILL.
func (p *proc) stop(grace time.Duration) error {
	if err := p.signalAndWait(syscall.SIGTERM, grace); err != nil {
		return p.kill()
	}
	return nil
}

func (p *proc) signalAndWait(sig syscall.Signal, d time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil || done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	_ = cmd.Process.Signal(sig)
	if sig != syscall.SIGKILL {
		_ = cmd.Process.Signal(syscall.SIGCONT) // a paused server cannot act on SIGTERM
	}
	select {
	case <-done:
		return nil
	case <-time.After(d):
		return fmt.Errorf("%s: still running %s after %v", p.name, d, sig)
	}
}
