package rundir

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Listen listens on the unix socket path, for root's use only: path's
// directory made or checked as Ensure does, a stale socket at path (one
// nobody listens on) removed, one that something still listens on or
// anything that is not a socket refused, the new socket's mode 0600.
// Errors name the path. (The peers' credentials are for the server to
// check on accept: peercred.)
func Listen(path string) (*net.UnixListener, error) {
	if err := Ensure(filepath.Dir(path)); err != nil {
		return nil, err
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// removeStale removes a socket nobody listens on; a live one is an error.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s: exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("%s: another process (swanpathd?) is listening on it", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("%s: remove stale socket: %w", path, err)
	}
	return nil
}
