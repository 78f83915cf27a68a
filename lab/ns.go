package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// NS is a namespace of a lab.
type NS struct {
	lab  *Lab
	Name string // full netns name, e.g. "sp1a2b3c-gw"
}

func (n *NS) command(ctx context.Context, args ...string) *exec.Cmd {
	full := append([]string{"netns", "exec", n.Name}, args...)
	var cmd *exec.Cmd
	if ctx != nil {
		cmd = exec.CommandContext(ctx, "ip", full...)
	} else {
		cmd = exec.Command("ip", full...)
	}
	// Own process group, so Stop reaches children too; SIGKILL if the test
	// binary dies without running cleanups (the netns is then removed by the
	// next RemoveStale).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Exec runs args in the namespace and returns its stdout; on failure the
// error carries the command and its stderr.
func (n *NS) Exec(ctx context.Context, args ...string) (string, error) {
	cmd := n.command(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: %s: %w: %s", n.Name, strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Sysctl sets key (dotted form) to value in the namespace.
func (n *NS) Sysctl(ctx context.Context, key, value string) error {
	_, err := n.Exec(ctx, "sysctl", "-q", "-w", key+"="+value)
	return err
}

// Start runs args in the background in the namespace. The process is
// stopped by the lab's cleanup at the latest.
func (n *NS) Start(args ...string) (*Proc, error) {
	return n.StartEnv(nil, args...)
}

// StartEnv is Start with extra environment variables ("K=V").
func (n *NS) StartEnv(env []string, args ...string) (*Proc, error) {
	cmd := n.command(nil, args...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	p := &Proc{name: n.Name + ": " + strings.Join(args, " "), cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", p.name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	n.lab.mu.Lock()
	n.lab.mu.procs = append(n.lab.mu.procs, p)
	n.lab.mu.Unlock()
	return p, nil
}

// Proc is a background process started in a namespace.
type Proc struct {
	name string
	cmd  *exec.Cmd
	out  syncBuffer // stdout and stderr
	done chan struct{}
	err  error // valid after done is closed
	stop sync.Once
}

// Pid is the process id (of `ip netns exec`, which execs the command).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Output is what the process wrote to stdout and stderr so far.
func (p *Proc) Output() string { return p.out.String() }

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
	p.stop.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.Signal(syscall.SIGKILL)
			<-p.done
		}
	})
	<-p.done
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return nil
		}
	}
	return p.err
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// poll calls cond every interval until it returns true or an error, or ctx
// ends; the last error of cond is wrapped into the timeout error.
func poll(ctx context.Context, interval time.Duration, cond func() (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
			}
			return ctx.Err()
		case <-t.C:
		}
	}
}
