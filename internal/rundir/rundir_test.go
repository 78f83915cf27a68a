package rundir

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// base is a fresh 0700 directory of ours (t.TempDir's own is 0755).
func base(t *testing.T) string {
	d := filepath.Join(t.TempDir(), "b")
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestEnsure(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, b string) string // returns the directory to ensure
		root  bool                                // needs root (chown)
		want  string                              // "" ok, else a part of the error
	}{
		{"exists", func(t *testing.T, b string) string { return b }, false, ""},
		{"missing, parents too", func(t *testing.T, b string) string { return filepath.Join(b, "x", "y", "z") }, false, ""},
		{"symlink to a good directory", func(t *testing.T, b string) string {
			l := filepath.Join(b, "link")
			must(t, os.Symlink(b, l))
			return l
		}, false, "is a symlink"},
		{"dangling symlink", func(t *testing.T, b string) string {
			l := filepath.Join(b, "link")
			must(t, os.Symlink(filepath.Join(b, "nowhere"), l))
			return l
		}, false, "is a symlink"},
		{"mode 0755", func(t *testing.T, b string) string {
			must(t, os.Chmod(b, 0o755))
			return b
		}, false, "mode 0755 (want 0700)"},
		{"mode 0710", func(t *testing.T, b string) string {
			must(t, os.Chmod(b, 0o710))
			return b
		}, false, "mode 0710 (want 0700)"},
		{"sticky", func(t *testing.T, b string) string {
			must(t, os.Chmod(b, 0o700|os.ModeSticky))
			return b
		}, false, "mode 1700 (want 0700)"},
		{"owned by nobody", func(t *testing.T, b string) string {
			must(t, os.Chown(b, 65534, 65534))
			return b
		}, true, "owned by uid 65534 (want 0)"},
		{"owned by nobody and mode 0777", func(t *testing.T, b string) string {
			must(t, os.Chown(b, 65534, 65534))
			must(t, os.Chmod(b, 0o777))
			return b
		}, true, "owned by uid 65534 (want 0), mode 0777 (want 0700)"},
		{"a regular file", func(t *testing.T, b string) string {
			f := filepath.Join(b, "file")
			must(t, os.WriteFile(f, nil, 0o600))
			return f
		}, false, "is not a directory"},
		{"a parent is a file", func(t *testing.T, b string) string {
			f := filepath.Join(b, "file")
			must(t, os.WriteFile(f, nil, 0o600))
			return filepath.Join(f, "sub")
		}, false, "not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.root && os.Geteuid() != 0 {
				t.Skip("needs root (chown)")
			}
			dir := tt.setup(t, base(t))
			err := Ensure(dir)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Ensure(%s) = %v", dir, err)
			case tt.want == "":
				// dir and every parent it made: ours, 0700
				for p := dir; filepath.Base(p) != "b"; p = filepath.Dir(p) {
					if err := Check(p); err != nil {
						t.Errorf("made %s: %v", p, err)
					}
				}
			case err == nil:
				t.Fatalf("Ensure(%s) accepted it, want %q", dir, tt.want)
			case !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), dir):
				t.Errorf("Ensure(%s) = %v; want it to name the path and %q", dir, err, tt.want)
			}
		})
	}
}

// TestEnsureJudgesOnlyItsOwn: a parent that existed before Ensure (like
// /run) is not judged, the directory itself always is.
func TestEnsureJudgesOnlyItsOwn(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown)")
	}
	b := base(t)
	mid := filepath.Join(b, "mid")
	must(t, os.Mkdir(mid, 0o700))
	must(t, os.Chown(mid, 65534, 65534))
	if err := Ensure(filepath.Join(mid, "run")); err != nil {
		t.Fatalf("a parent that existed before is not judged: %v", err)
	}
	if err := Ensure(mid); !errors.Is(err, ErrUnsafe) {
		t.Errorf("Ensure(%s) of nobody's directory = %v, want ErrUnsafe", mid, err)
	}
}

func TestCheckFile(t *testing.T) {
	b := base(t)
	reg := filepath.Join(b, "reg")
	must(t, os.WriteFile(reg, nil, 0o600))
	link := filepath.Join(b, "link")
	must(t, os.Symlink(reg, link))
	tests := []struct {
		path, want string
	}{
		{filepath.Join(b, "missing"), ""},
		{reg, ""},
		{link, "is a symlink"},
		{b, "is not a regular file"},
	}
	for _, tt := range tests {
		err := CheckFile(tt.path)
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("CheckFile(%s) = %v, want %q", tt.path, err, tt.want)
		}
	}
}

func TestWriteFileFollowsNoSymlink(t *testing.T) {
	b := base(t)
	victim := filepath.Join(b, "victim")
	for _, tt := range []struct {
		name string
		link string // where the symlink to victim sits
	}{
		{"at the file", "state.json"},
		{"at the temporary file", "state.json.tmp"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			must(t, os.WriteFile(victim, []byte("untouched"), 0o600))
			path := filepath.Join(b, "state.json")
			os.Remove(path)
			must(t, os.Symlink(victim, filepath.Join(b, tt.link)))
			if err := WriteFile(path, []byte("new"), 0o600); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(victim); string(got) != "untouched" {
				t.Errorf("the symlink's target was written: %q", got)
			}
			fi, err := os.Lstat(path)
			if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
				t.Fatalf("%s: %v, %v; want a regular 0600 file", path, fi.Mode(), err)
			}
			if got, _ := os.ReadFile(path); string(got) != "new" {
				t.Errorf("%s = %q, want new", path, got)
			}
			if _, err := os.Lstat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("temporary file left: %v", err)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
