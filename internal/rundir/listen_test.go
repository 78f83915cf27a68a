package rundir

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestListen(t *testing.T) {
	b := base(t)
	path := filepath.Join(b, "run", "x.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode: %v %v, want 0600", fi.Mode(), err)
	}
	if err := Check(filepath.Dir(path)); err != nil {
		t.Errorf("directory made: %v", err)
	}
	// a live socket is not taken over
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "is listening") {
		t.Errorf("second Listen on a live socket: %v", err)
	}
	// a stale one (nobody listening) is replaced
	ln.SetUnlinkOnClose(false)
	ln.Close()
	ln, err = Listen(path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial the replacement: %v", err)
	}
	c.Close()
	ln.Close()
	// anything else at path is left alone
	f := filepath.Join(b, "file")
	must(t, os.WriteFile(f, []byte("x"), 0o600))
	if _, err := Listen(f); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen on a regular file: %v", err)
	}
	// and the directory is judged as Ensure does
	must(t, os.Chmod(b, 0o755))
	if _, err := Listen(filepath.Join(b, "y.sock")); err == nil {
		t.Error("Listen in a 0755 directory")
	}
}
