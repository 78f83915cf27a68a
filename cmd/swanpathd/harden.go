package main

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// noCoreDumps keeps SA keys out of core files: swanpathd holds them (in
// the Go heap until they reach the fast path, in DPDK's crypto sessions
// for the SA's life), so it never dumps core. RLIMIT_CORE 0 stops core
// files; PR_SET_DUMPABLE 0 stops every dump, also to a core_pattern pipe
// such as systemd-coredump (which ignores RLIMIT_CORE), and keeps other
// users from ptrace and /proc/PID/mem (see prctl(2), core(5)). Both hold
// until swanpathd exits (it execs nothing, which would reset dumpable).
func noCoreDumps() error {
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
		return fmt.Errorf("setrlimit RLIMIT_CORE 0: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl PR_SET_DUMPABLE 0: %w", err)
	}
	return nil
}
