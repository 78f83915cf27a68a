package fastpath

/*
#include "dp.h"
*/
import "C"

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// pinControlThreads keeps every other thread of the process (Go's, the
// EAL's service threads, Go threads cloned from a worker lcore's thread)
// off the CPUs of the worker lcores. A worker polls without pause: a
// control thread that the kernel schedules on its CPU takes turns with it,
// which stalls the fast path and delays the control thread (a plugin
// request then waits for the worker's time slice). GOMAXPROCS follows the
// CPUs left (at most), unless the environment sets it. With no CPU left beside the
// workers nothing changes.
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
		orCPUs(&wcpus, &s)
	}
	tids, err := threads()
	if err != nil {
		return control, err
	}
	for _, tid := range tids {
		var s unix.CPUSet
		if workers[tid] || unix.SchedGetaffinity(tid, &s) != nil {
			continue // a worker, or a thread that ended
		}
		orCPUs(&control, &s)
	}
	for c := range cpuSetSize {
		if wcpus.IsSet(c) {
			control.Clear(c)
		}
	}
	if control.Count() == 0 {
		return control, nil
	}
	// twice: a thread may start while the first pass runs (threads that
	// start later inherit their creator's affinity)
	for range 2 {
		if tids, err = threads(); err != nil {
			return control, err
		}
		for _, tid := range tids {
			if workers[tid] {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &control); err != nil && err != unix.ESRCH {
				return control, fmt.Errorf("affinity of thread %d: %w", tid, err)
			}
		}
	}
	if os.Getenv("GOMAXPROCS") == "" {
		// never above the default (which follows a cgroup CPU quota)
		runtime.GOMAXPROCS(min(runtime.GOMAXPROCS(0), control.Count()))
	}
	return control, nil
}

// cpuSetSize is the number of CPUs a unix.CPUSet holds.
const cpuSetSize = len(unix.CPUSet{}) * int(unsafe.Sizeof(unix.CPUSet{}[0])) * 8

func orCPUs(dst, src *unix.CPUSet) {
	for c := range cpuSetSize {
		if src.IsSet(c) {
			dst.Set(c)
		}
	}
}

// threads lists the process's threads.
func threads() ([]int, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, err
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}

// cpuList formats a CPU set as Linux does ("0,2-3").
func cpuList(s *unix.CPUSet) string {
	out := ""
	for c := 0; c < cpuSetSize; c++ {
		if !s.IsSet(c) {
			continue
		}
		e := c
		for e+1 < cpuSetSize && s.IsSet(e+1) {
			e++
		}
		if out != "" {
			out += ","
		}
		if e == c {
			out += strconv.Itoa(c)
		} else {
			out += strconv.Itoa(c) + "-" + strconv.Itoa(e)
		}
		c = e
	}
	return out
}
