package fastpath

/*
#include "dp.h"
*/
import "C"

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/swanpath/swanpath/internal/cpus"
)

// pinControlThreads keeps every other thread of the process (Go's, the
// EAL's service threads, Go threads cloned from a worker lcore's thread)
// off the CPUs of the worker lcores. A worker polls without pause: a
// control thread that the kernel schedules on its CPU takes turns with it,
// which stalls the fast path and delays the control thread (a plugin
// request then waits for the worker's time slice). GOMAXPROCS follows the
// CPUs left (at most), unless the environment sets it. With no CPU left
// beside the workers nothing changes.
func (f *Fastpath) pinControlThreads() (control unix.CPUSet, err error) {
	workers := map[int]bool{}
	var wcpus unix.CPUSet
	for i := range f.workers {
		tid := int(f.dp.w[i].tid)
		var s unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &s); err != nil {
			return control, fmt.Errorf("affinity of worker thread %d: %w", tid, err)
		}
		workers[tid] = true
		cpus.Or(&wcpus, &s)
	}
	tids, err := cpus.Threads()
	if err != nil {
		return control, err
	}
	for _, tid := range tids {
		var s unix.CPUSet
		if workers[tid] || unix.SchedGetaffinity(tid, &s) != nil {
			continue // a worker, or a thread that ended
		}
		cpus.Or(&control, &s)
	}
	for c := range cpus.Size {
		if wcpus.IsSet(c) {
			control.Clear(c)
		}
	}
	if control.Count() == 0 {
		return control, nil
	}
	if err := cpus.SetAll(&control, workers); err != nil {
		return control, err
	}
	if os.Getenv("GOMAXPROCS") == "" {
		// never above the default (which follows a cgroup CPU quota)
		runtime.GOMAXPROCS(min(runtime.GOMAXPROCS(0), control.Count()))
	}
	return control, nil
}
