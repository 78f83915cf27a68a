package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckRuntimePaths(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, b string) // b: a 0700 directory of ours
		want  []string                     // parts of the error; none: accepted
	}{
		{"made when missing", func(t *testing.T, b string) {}, nil},
		{"state directory is a symlink", func(t *testing.T, b string) {
			must(t, os.Mkdir(filepath.Join(b, "real"), 0o700))
			must(t, os.Symlink(filepath.Join(b, "real"), filepath.Join(b, "state")))
		}, []string{"fastpath.state_file " + "B/state/seq.json: B/state: unsafe path: is a symlink"}},
		{"state file is a symlink", func(t *testing.T, b string) {
			must(t, os.Mkdir(filepath.Join(b, "state"), 0o700))
			must(t, os.Symlink("/etc/passwd", filepath.Join(b, "state", "seq.json")))
		}, []string{"fastpath.state_file: B/state/seq.json: unsafe path: is a symlink"}},
		{"temporary state file is a symlink", func(t *testing.T, b string) {
			must(t, os.Mkdir(filepath.Join(b, "state"), 0o700))
			must(t, os.Symlink("/etc/passwd", filepath.Join(b, "state", "seq.json.tmp")))
		}, []string{"B/state/seq.json.tmp: unsafe path: is a symlink"}},
		{"every problem at once", func(t *testing.T, b string) {
			must(t, os.Mkdir(filepath.Join(b, "plugin"), 0o755))
			must(t, os.Mkdir(filepath.Join(b, "ctl"), 0o750))
			must(t, os.Mkdir(filepath.Join(b, "state"), 0o700))
			must(t, os.Mkdir(filepath.Join(b, "state", "seq.json"), 0o700))
		}, []string{
			"plugin.socket B/plugin/charon.sock: B/plugin: unsafe path: mode 0755 (want 0700)",
			"control.socket B/ctl/ctl.sock: B/ctl: unsafe path: mode 0750 (want 0700)",
			"B/state/seq.json: unsafe path: is not a regular file",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := filepath.Join(t.TempDir(), "b")
			must(t, os.Mkdir(b, 0o700))
			tt.setup(t, b)
			var cfg Config
			cfg.Plugin.Socket = filepath.Join(b, "plugin", "charon.sock")
			cfg.Control.Socket = filepath.Join(b, "ctl", "ctl.sock")
			cfg.Fastpath.StateFile = filepath.Join(b, "state", "seq.json")
			err := checkRuntimePaths(cfg)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				for _, d := range []string{"plugin", "ctl", "state"} {
					if fi, err := os.Lstat(filepath.Join(b, d)); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
						t.Errorf("%s: %v, %v; want a 0700 directory", d, fi.Mode(), err)
					}
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want %q", tt.want)
			}
			for _, w := range tt.want {
				if w = strings.ReplaceAll(w, "B/", b+"/"); !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
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
