package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// proc is one server process the harness owns, whatever the server: a
// mariadbd or a ferretmember. Faults are real signals to a real process, so
// a test sees what a client sees when a server dies or hangs. Members embed
// it, so every kind of server is broken the same way.
type proc struct {
	name      string
	logPath   string                          // the server's log, for failure messages
	stopGrace time.Duration                   // how long Stop waits before SIGKILL
	start     func(ctx context.Context) error // launches and waits until the server answers

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

// Running reports whether the process is alive.
func (p *proc) Running() bool {
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

// Pid is the process id of the current or last run, 0 before the first.
func (p *proc) Pid() int {
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

// Kill sends SIGKILL and waits for the process to be gone.
func (p *proc) Kill() error { return p.signalAndWait(syscall.SIGKILL, 10*time.Second) }

// Stop sends SIGTERM (mariadbd ignores SIGINT) and waits; it escalates to
// SIGKILL after the member's grace (30 s for mariadbd, 15 s for a
// ferretmember).
func (p *proc) Stop() error {
	if err := p.signalAndWait(syscall.SIGTERM, p.stopGrace); err != nil {
		return p.Kill()
	}
	return nil
}

// Pause freezes the server (SIGSTOP) without closing its sockets: its port
// still accepts connections (the kernel queues them) but nothing answers.
//
// It returns once every thread of the process is stopped: kill(2) only
// queues SIGSTOP, and a thread running on another core goes on for a
// moment, long enough on a loaded machine to answer a request a test sent
// "after the pause" (TestForwardPausedMember saw its find answered).
func (p *proc) Pause() error {
	if err := p.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	p.mu.Lock()
	pid := p.cmd.Process.Pid
	p.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for !stopped(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: SIGSTOP sent, but the process was not stopped within 5s", p.name)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// stopped reports whether every thread of process pid is stopped (state T
// in /proc/PID/task/TID/stat), or the process is gone.
func stopped(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return true // gone: nothing runs
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, t.Name()))
		if err != nil {
			continue // the thread exited
		}
		// The state follows the command name, which is in parentheses
		// and may itself contain spaces or parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) {
			return false
		}
		if st := b[i+2]; st != 'T' && st != 't' {
			return false
		}
	}
	return true
}

// Resume continues a paused server.
func (p *proc) Resume() error { return p.signal(syscall.SIGCONT) }

// Restart starts a stopped or killed member on the same port with its data
// and config; a running one is stopped first.
func (p *proc) Restart(ctx context.Context) error {
	if p.Running() {
		if err := p.Stop(); err != nil {
			return err
		}
	}
	return p.start(ctx)
}

// LogTail returns the last n bytes of the server's log, for failure
// messages.
func (p *proc) LogTail(n int) string {
	b, _ := os.ReadFile(p.logPath)
	return string(tail(b, n))
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

// self lets code that holds members of any kind reach their processes.
func (p *proc) self() *proc { return p }

// procs is the processes of a group of members.
func procs[M interface{ self() *proc }](members []M) []*proc {
	ps := make([]*proc, len(members))
	for i, m := range members {
		ps[i] = m.self()
	}
	return ps
}

// startAll starts the servers in parallel, so a group comes up in the time
// of its slowest member, and returns every failure.
func startAll(ctx context.Context, ps []*proc, log func(format string, args ...any)) error {
	var wg sync.WaitGroup
	errs := make([]error, len(ps))
	for i, p := range ps {
		wg.Go(func() {
			t0 := time.Now()
			if errs[i] = p.start(ctx); errs[i] == nil {
				log("%s up in %s", p.name, time.Since(t0).Round(time.Millisecond))
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// stopAll stops the servers in parallel (each escalating to SIGKILL).
func stopAll(ps []*proc) {
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() { _ = p.Stop() })
	}
	wg.Wait()
}
