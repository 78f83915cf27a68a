package ctl

import (
	"github.com/swanpath/swanpath/internal/syncbuf"

	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

type fakeSource struct{}

func (fakeSource) SAs() []SA          { return []SA{{SPI: "0xc0000001", Dir: "in"}} }
func (fakeSource) Policies() []Policy { return nil }
func (fakeSource) Stats() Stats       { return Stats{} }

// clientEnv makes this test binary a swanpathctl that drops to nobody
// (uid 65534) before it connects to the socket the variable names.
const clientEnv = "CTL_TEST_NONROOT_CLIENT"

// TestControlSocketRootOnly: root gets its answer; a client running as
// uid 65534 is closed without one and leaves one log line, even with the
// socket and its directory opened up for it (the credential check does not
// depend on the file modes).
func TestControlSocketRootOnly(t *testing.T) {
	if path := os.Getenv(clientEnv); path != "" {
		for _, err := range []error{syscall.Setgroups(nil), syscall.Setgid(65534), syscall.Setuid(65534)} {
			if err != nil {
				fmt.Println("setup:", err)
				os.Exit(1)
			}
		}
		rep, err := Call(path, "sa")
		fmt.Printf("reply %+v, %v\n", rep, err)
		os.Exit(0)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (a client of another uid)")
	}
	base, err := os.MkdirTemp("/tmp", "ctlt") // nobody must reach it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	path := filepath.Join(base, "run", "ctl.sock")
	logs := &syncbuf.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := Listen(ctx, slog.New(slog.NewTextHandler(logs, nil)), path, fakeSource{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	rep, err := Call(path, "sa")
	if err != nil || len(rep.SAs) != 1 {
		t.Fatalf("root: %+v, %v", rep, err)
	}

	for _, p := range []struct {
		path string
		mode os.FileMode
	}{{base, 0o711}, {filepath.Dir(path), 0o711}, {path, 0o666}} {
		if err := os.Chmod(p.path, p.mode); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestControlSocketRootOnly$")
	cmd.Env = append(os.Environ(), clientEnv+"="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("client as uid 65534: %v\n%s", err, out)
	}
	// EOF, a reset (request not read) or a broken pipe (closed before it was sent)
	if !strings.HasPrefix(string(out), "reply <nil>, ") || strings.Contains(string(out), "0xc0000001") {
		t.Errorf("client as uid 65534 got %q; want the connection closed without a reply", out)
	}
	if n := strings.Count(logs.String(), "refusing peer"); n != 1 || !strings.Contains(logs.String(), "uid 65534 (pid ") {
		t.Errorf("%d refusal lines (want 1, naming uid 65534):\n%s", n, logs)
	}
}
