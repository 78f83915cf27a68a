package lab

import (
	"github.com/swanpath/swanpath/internal/syncbuf"

	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Proc is a background process started on a host.
type Proc struct {
	name   string
	cmd    *exec.Cmd
	out    syncbuf.Buffer // stdout and stderr
	done   chan struct{}
	err    error // valid after done is closed
	stop   sync.Once
	killed bool // Stop had to SIGKILL; valid after stop ran
}

// startProc starts cmd (in a process group of its own) in the background,
// keeping its output, and adds it to procs.
func startProc(name string, cmd *exec.Cmd, procs *procSet) (*Proc, error) {
	p := &Proc{name: name, cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", p.name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	procs.add(p)
	return p, nil
}

// Pid is the process id (on a namespace host that of `ip netns exec`,
// which execs the command).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Output is what the process wrote to stdout and stderr so far.
func (p *Proc) Output() string { return p.out.String() }

// Tail is the last n lines of Output.
func (p *Proc) Tail(n int) string { return tail(p.Output(), n) }

// Signal sends sig to the process group.
func (p *Proc) Signal(sig syscall.Signal) error {
	return syscall.Kill(-p.cmd.Process.Pid, sig)
}

// Wait waits for the process to exit and returns its exit error.
func (p *Proc) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop sends SIGTERM to the process group, waits up to 5 s, then SIGKILLs.
// It returns the exit error, nil for a clean exit or death by our signal.
func (p *Proc) Stop() error {
	p.terminate(syscall.SIGTERM, 5*time.Second)
	return p.exitErr()
}

// StopGrace is Stop with sig instead of SIGTERM and grace instead of 5 s;
// unlike Stop it also fails when the process had to be killed.
func (p *Proc) StopGrace(sig syscall.Signal, grace time.Duration) error {
	p.terminate(sig, grace)
	if p.killed {
		return fmt.Errorf("%s did not stop within %s after %s: killed", p.name, grace, sig)
	}
	return p.exitErr()
}

// terminate sends sig once, waits up to grace, then SIGKILLs, and waits
// for the exit (also when another call already stopped the process).
func (p *Proc) terminate(sig syscall.Signal, grace time.Duration) {
	p.stop.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.Signal(sig)
		select {
		case <-p.done:
		case <-time.After(grace):
			p.killed = true
			_ = p.Signal(syscall.SIGKILL)
			<-p.done
		}
	})
	<-p.done
}

// exitErr is the exit error once done, nil for death by a signal.
func (p *Proc) exitErr() error {
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return nil
		}
	}
	return p.err
}

// procSet is the processes started on one or more hosts, stopped together
// in reverse order of their start.
type procSet struct {
	parent *procSet // also gets every process added here (may be nil)
	mu     sync.Mutex
	procs  []*Proc
}

func (s *procSet) add(p *Proc) {
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	if s.parent != nil {
		s.parent.add(p)
	}
}

func (s *procSet) stopAll() {
	s.mu.Lock()
	procs := append([]*Proc(nil), s.procs...)
	s.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Stop()
	}
}
