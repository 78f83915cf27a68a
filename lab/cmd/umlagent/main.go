// Command umlagent is the lab's control channel into a user-mode-Linux
// host (lab.UML). Inside the instance, `umlagent serve -addr A` (started
// by the instance's init script) runs commands and dials addresses for
// clients that connect over TCP on the instance's control interface.
// Outside, `umlagent run -addr A [-e K=V]... [-o FILE] -- ARGS` runs ARGS
// inside: stdout and stderr come back as they are written (stdout into
// FILE with -o), SIGTERM/SIGINT/SIGHUP are passed on, and it exits as the
// command did. When a client goes away, its command's process group is
// killed: a killed client leaves nothing running in the instance.
//
// Protocol, one TCP connection per command: the client sends one JSON
// line (request); then frames of kind byte, uint32 length, payload. From
// the agent: 'o' stdout, 'e' stderr, 'x' the exit status (decimal text,
// negative for a signal), 'E' an error (the command did not start). From
// the client: 'k' with one byte, a signal for the process group. A dial
// request gets one line back ("ok" or the error), then the connection is
// the dialled stream.
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type request struct {
	Args  []string `json:"args,omitempty"`
	Env   []string `json:"env,omitempty"`
	Stdin []byte   `json:"stdin,omitempty"`
	Dial  string   `json:"dial,omitempty"` // "unix:/path" or "tcp:host:port"
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: umlagent serve -addr A | run -addr A [-e K=V] [-o FILE] -- ARGS")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		fs := flag.NewFlagSet("serve", flag.ExitOnError)
		addr := fs.String("addr", "", "TCP address to listen on")
		fs.Parse(os.Args[2:])
		if err := serve(*addr); err != nil {
			fmt.Fprintln(os.Stderr, "umlagent:", err)
			os.Exit(1)
		}
	case "run":
		os.Exit(run(os.Args[2:]))
	default:
		fmt.Fprintln(os.Stderr, "umlagent: unknown mode", os.Args[1])
		os.Exit(2)
	}
}

func serve(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("umlagent: listening on %s\n", addr)
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go handle(c)
	}
}

type frameWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (f *frameWriter) frame(kind byte, p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var h [5]byte
	h[0] = kind
	binary.BigEndian.PutUint32(h[1:], uint32(len(p)))
	if _, err := f.w.Write(h[:]); err != nil {
		return err
	}
	_, err := f.w.Write(p)
	return err
}

type kindWriter struct {
	f    *frameWriter
	kind byte
}

func (k kindWriter) Write(p []byte) (int, error) {
	if err := k.f.frame(k.kind, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func readFrame(r io.Reader) (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > 1<<24 {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	p := make([]byte, n)
	_, err := io.ReadFull(r, p)
	return h[0], p, err
}

func handle(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	line, err := br.ReadBytes('\n')
	if err != nil {
		return
	}
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		fmt.Fprintf(c, "bad request: %v\n", err)
		return
	}
	if req.Dial != "" {
		dial(c, br, req.Dial)
		return
	}
	fw := &frameWriter{w: c}
	if len(req.Args) == 0 {
		fw.frame('E', []byte("no command"))
		return
	}
	cmd := exec.Command(req.Args[0], req.Args[1:]...)
	cmd.Env = append(os.Environ(), req.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if req.Stdin != nil {
		cmd.Stdin = strings.NewReader(string(req.Stdin))
	}
	cmd.Stdout, cmd.Stderr = kindWriter{fw, 'o'}, kindWriter{fw, 'e'}
	if err := cmd.Start(); err != nil {
		fw.frame('E', []byte(err.Error()))
		return
	}
	pgid := cmd.Process.Pid
	done := make(chan struct{})
	go func() {
		// signals from the client; its end of the connection is the
		// end of the command
		for {
			kind, p, err := readFrame(br)
			if err != nil {
				select {
				case <-done:
				default:
					syscall.Kill(-pgid, syscall.SIGKILL)
				}
				return
			}
			if kind == 'k' && len(p) == 1 {
				syscall.Kill(-pgid, syscall.Signal(p[0]))
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	status := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		ws := ee.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			status = -int(ws.Signal())
		} else {
			status = ws.ExitStatus()
		}
	} else if err != nil {
		fw.frame('E', []byte(err.Error()))
		return
	}
	fw.frame('x', []byte(strconv.Itoa(status)))
}

func dial(c net.Conn, br *bufio.Reader, target string) {
	network, addr, ok := strings.Cut(target, ":")
	if !ok {
		fmt.Fprintf(c, "bad dial target %q\n", target)
		return
	}
	d, err := net.Dial(network, addr)
	if err != nil {
		fmt.Fprintf(c, "%v\n", err)
		return
	}
	defer d.Close()
	fmt.Fprintf(c, "ok\n")
	go func() {
		io.Copy(d, br)
		if cw, ok := d.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}()
	io.Copy(c, d)
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func run(argv []string) int {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	addr := fs.String("addr", "", "the agent's TCP address")
	out := fs.String("o", "", "write the command's stdout to this file")
	var env multiFlag
	fs.Var(&env, "e", "K=V for the command's environment (repeated)")
	fs.Parse(argv)
	if fs.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "umlagent run: no command")
		return 2
	}
	c, err := net.Dial("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "umlagent run:", err)
		return 125
	}
	stdout := io.Writer(os.Stdout)
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			fmt.Fprintln(os.Stderr, "umlagent run:", err)
			return 125
		}
		defer f.Close()
		stdout = f
	}
	b, _ := json.Marshal(request{Args: fs.Args(), Env: env})
	if _, err := c.Write(append(b, '\n')); err != nil {
		fmt.Fprintln(os.Stderr, "umlagent run:", err)
		return 125
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	fw := &frameWriter{w: c}
	go func() {
		for s := range sigs {
			fw.frame('k', []byte{byte(s.(syscall.Signal))})
		}
	}()
	br := bufio.NewReader(c)
	for {
		kind, p, err := readFrame(br)
		if err != nil {
			fmt.Fprintln(os.Stderr, "umlagent run: connection to the instance lost:", err)
			return 125
		}
		switch kind {
		case 'o':
			stdout.Write(p)
		case 'e':
			os.Stderr.Write(p)
		case 'E':
			fmt.Fprintln(os.Stderr, "umlagent run:", string(p))
			return 126
		case 'x':
			st, _ := strconv.Atoi(string(p))
			if st < 0 {
				// die of the same signal, as the command did
				sig := syscall.Signal(-st)
				signal.Reset(sig)
				if f, ok := stdout.(*os.File); ok {
					f.Sync()
				}
				syscall.Kill(os.Getpid(), sig)
				time.Sleep(time.Second) // the signal ends us meanwhile
				return 128 - st
			}
			return st
		}
	}
}
