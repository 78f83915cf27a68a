// Package rundir makes and checks where swanpathd keeps its sockets and
// state: directories owned by swanpathd's user (root) with mode 0700, never
// a symlink, and files written without following one. Whoever else could
// write there could put their own socket in charon's way, or a symlink
// where the state file goes (which decides the sequence numbers that are
// safe after a restart).
package rundir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrUnsafe is wrapped by every refusal.
var ErrUnsafe = errors.New("unsafe path")

// Mode is the only mode a directory may have.
const Mode fs.FileMode = 0o700

// Ensure makes dir and any missing parent with mode 0700, then checks dir
// and every directory it made: owned by this process's user (root for
// swanpathd), mode 0700, not a symlink. Parents that existed already are
// not ours to judge (/run, or /var/run as a symlink to it).
func Ensure(dir string) error {
	dir = filepath.Clean(dir)
	var missing []string
	for p := dir; ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: %w", p, err)
		}
		missing = append(missing, p)
		if filepath.Dir(p) == p {
			break
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		p := missing[i]
		if err := os.Mkdir(p, Mode); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %w", p, err)
		}
		if err := Check(p); err != nil {
			return err
		}
	}
	return Check(dir)
}

// Check refuses dir unless it is a directory (not a symlink to one) owned
// by this process's user with mode 0700. The error names the path and
// every problem.
func Check(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%s: %w: is a symlink (want a directory)", dir, ErrUnsafe)
	case !fi.IsDir():
		return fmt.Errorf("%s: %w: is not a directory", dir, ErrUnsafe)
	}
	var problems []string
	if uid, want := owner(fi), uint32(os.Geteuid()); uid != want {
		problems = append(problems, fmt.Sprintf("owned by uid %d (want %d)", uid, want))
	}
	if m := fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky); m != Mode {
		problems = append(problems, fmt.Sprintf("mode %04o (want %04o)", uint32(m.Perm())|specialBits(m), uint32(Mode)))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s: %w: %s", dir, ErrUnsafe, strings.Join(problems, ", "))
	}
	return nil
}

// CheckFile refuses path if it exists as anything but a regular file owned
// by this process's user (a symlink, a directory, a socket...).
func CheckFile(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%s: %w: is a symlink (want a regular file)", path, ErrUnsafe)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s: %w: is not a regular file", path, ErrUnsafe)
	}
	if uid, want := owner(fi), uint32(os.Geteuid()); uid != want {
		return fmt.Errorf("%s: %w: owned by uid %d (want %d)", path, ErrUnsafe, uid, want)
	}
	return nil
}

// WriteFile replaces path atomically without following a symlink at path
// or at its temporary file (path+".tmp", removed first, then created with
// O_EXCL|O_NOFOLLOW); rename replaces a symlink at path, not its target.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	tmp := path + ".tmp"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func owner(fi fs.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid
	}
	return ^uint32(0)
}

func specialBits(m fs.FileMode) uint32 {
	var b uint32
	if m&fs.ModeSetuid != 0 {
		b |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		b |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		b |= 0o1000
	}
	return b
}
