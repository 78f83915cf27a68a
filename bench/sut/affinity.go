package sut

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// KeepOff confines every thread of this process, and so every process it
// starts from now on (a child inherits its creator's CPUs), to the CPUs
// other than cpus, and GOMAXPROCS to at most their number: the worker lcores'
// CPUs stay for the workers (DPDK processes pin their lcores themselves).
// The returned func undoes it.
func KeepOff(cpus []int) (restore func(), err error) {
	var orig unix.CPUSet
	if err := unix.SchedGetaffinity(0, &orig); err != nil {
		return nil, fmt.Errorf("CPU affinity: %w", err)
	}
	set := orig
	for _, c := range cpus {
		set.Clear(c)
	}
	if set.Count() == 0 {
		return nil, fmt.Errorf("no CPU left beside %v", cpus)
	}
	if err := setAll(&set); err != nil {
		setAll(&orig)
		return nil, err
	}
	runtime.GOMAXPROCS(min(runtime.GOMAXPROCS(0), set.Count()))
	return func() {
		setAll(&orig)
		runtime.SetDefaultGOMAXPROCS()
	}, nil
}

// setAll sets the CPUs of every thread of the process (twice: a thread
// may start during the first pass).
func setAll(s *unix.CPUSet) error {
	for range 2 {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if err := unix.SchedSetaffinity(tid, s); err != nil && err != unix.ESRCH {
				return fmt.Errorf("CPU affinity of thread %d: %w", tid, err)
			}
		}
	}
	return nil
}

// WorkerCPUs are the CPUs of the worker lcores of an EAL -l list (every
// lcore but the first, the main one; lcore n runs on CPU n).
func WorkerCPUs(lcores string) ([]int, error) {
	var all []int
	for _, part := range strings.Split(lcores, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(strings.TrimSpace(lo))
		if err != nil {
			return nil, fmt.Errorf("lcores %q: %w", lcores, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(strings.TrimSpace(hi)); err != nil || b < a {
				return nil, fmt.Errorf("lcores %q: bad range %q", lcores, part)
			}
		}
		for c := a; c <= b; c++ {
			all = append(all, c)
		}
	}
	if len(all) < 2 {
		return nil, fmt.Errorf("lcores %q: want a main lcore and a worker", lcores)
	}
	return all[1:], nil
}
