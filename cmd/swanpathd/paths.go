package main

import (
	"fmt"
	"path/filepath"

	"github.com/swanpath/swanpath/internal/rundir"
)

// checkRuntimePaths makes and checks, before anything starts, the
// directories of both sockets and of the state file (ours, mode 0700, not
// a symlink: made so if missing, refused otherwise), and that the state
// file and its temporary file are not symlinks or anything but regular
// files. Every problem is reported at once, each with its setting.
func checkRuntimePaths(cfg Config) error {
	var errs []error
	seen := map[string]bool{}
	for _, p := range []struct{ setting, path string }{
		{"plugin.socket", cfg.Plugin.Socket},
		{"control.socket", cfg.Control.Socket},
		{"fastpath.state_file", cfg.Fastpath.StateFile},
	} {
		if p.path == "" && p.setting == "plugin.socket" && cfg.Source.Kind != sourcePlugin {
			continue
		}
		dir := filepath.Dir(p.path)
		if seen[dir] {
			continue
		}
		seen[dir] = true
		if err := rundir.Ensure(dir); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", p.setting, p.path, err))
		}
	}
	for _, f := range []string{cfg.Fastpath.StateFile, cfg.Fastpath.StateFile + ".tmp"} {
		if err := rundir.CheckFile(f); err != nil {
			errs = append(errs, fmt.Errorf("fastpath.state_file: %w", err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("runtime paths:\n  %w", joinIndented(errs))
	}
	return nil
}
