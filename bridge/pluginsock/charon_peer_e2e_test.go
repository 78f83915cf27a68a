package pluginsock

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/swanpath/swanpath/lab"
)

// nonRootListenerEnv makes this test binary a listener that drops to
// nobody (uid 65534) before it listens on the path the variable names:
// what another user able to bind the plugin's socket path would do.
const nonRootListenerEnv = "PLUGINSOCK_NONROOT_LISTENER"

// nonRootListener listens as uid 65534 and prints "listening", then
// "conn <bytes received>" for every connection once its peer closes it.
func nonRootListener(path string) {
	fail := func(err error) {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	// setgroups/setgid/setuid apply to every thread of a Go program
	if err := syscall.Setgroups(nil); err != nil {
		fail(err)
	}
	if err := syscall.Setgid(65534); err != nil {
		fail(err)
	}
	if err := syscall.Setuid(65534); err != nil {
		fail(err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		fail(err)
	}
	fmt.Println("listening")
	for {
		c, err := ln.Accept()
		if err != nil {
			fail(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		fmt.Printf("conn %d\n", n)
	}
}

// TestCharonPluginRefusesNonRootDaemon: charon's plugin connects to a
// socket whose listener runs as uid 65534. It must close the connection
// without sending a byte (HELLO would be first, keys follow), log why, and
// retry as for an unreachable daemon; once root serves the path, it
// connects.
func TestCharonPluginRefusesNonRootDaemon(t *testing.T) {
	if path := os.Getenv(nonRootListenerEnv); path != "" {
		nonRootListener(path)
		return
	}
	if testing.Short() {
		t.Skip("end-to-end test with a real charon")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces, charon, setuid)")
	}
	if _, err := os.Stat(lab.PluginPath); err != nil {
		t.Skipf("plugin not installed (make -C charon install): %v", err)
	}
	l := lab.New(t, lab.Options{GatewayAddrs: true})

	// a directory nobody owns, right under /tmp (1777) so nobody reaches it
	dir, err := os.MkdirTemp("/tmp", "plnr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "charon.sock")

	child := exec.Command(os.Args[0], "-test.run=^TestCharonPluginRefusesNonRootDaemon$")
	child.Env = append(os.Environ(), nonRootListenerEnv+"="+sock)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	childDone := make(chan struct{})
	var mu sync.Mutex
	var lines []string
	listening := make(chan struct{})
	go func() {
		defer close(childDone)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, sc.Text())
			mu.Unlock()
			if sc.Text() == "listening" {
				close(listening)
			}
		}
		child.Wait()
	}()
	stopChild := func() {
		child.Process.Kill()
		<-childDone
	}
	t.Cleanup(stopChild)
	select {
	case <-listening:
	case <-childDone:
		t.Fatalf("listener as uid 65534 did not start: %q", lines)
	case <-time.After(10 * time.Second):
		t.Fatal("listener as uid 65534 did not start")
	}

	gw, _ := startPluginCharon(t, l, sock)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	refused := "kernel-swanpath: not connecting to swanpathd at " + sock + ": its listener runs as uid 65534 (pid "
	poll(t, ctx, "refusal in charon's log", func() bool { return strings.Contains(gw.Log(), refused) })
	// the plugin tries again (every second) and never sends anything
	conns := func() (n int, bytes []string) {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range lines {
			if c, ok := strings.CutPrefix(l, "conn "); ok {
				n++
				if c != "0" {
					bytes = append(bytes, c)
				}
			}
		}
		return n, bytes
	}
	poll(t, ctx, "two attempts at the non-root listener", func() bool { n, _ := conns(); return n >= 2 })
	stopChild()
	if n, sent := conns(); len(sent) > 0 {
		t.Errorf("the plugin sent %v bytes on %d connections to a non-root listener, want none", sent, n)
	}
	if strings.Contains(gw.Log(), "kernel-swanpath: connected to swanpathd") {
		t.Error("charon's log says it connected to the non-root listener")
	}
	// quiet retries: one line per reason, not one per attempt
	if n := strings.Count(gw.Log(), refused); n != 1 {
		t.Errorf("%d refusal lines in charon's log, want 1", n)
	}

	// root serves the path now: the retry connects
	if err := os.Chown(dir, 0, 0); err != nil {
		t.Fatal(err)
	}
	os.Remove(sock)
	srv, err := Listen(context.Background(), slog.New(slog.DiscardHandler), sock, newFakeHandler())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	poll(t, ctx, "connection once root listens", func() bool {
		return strings.Contains(gw.Log(), "kernel-swanpath: connected to swanpathd at "+sock)
	})
}
