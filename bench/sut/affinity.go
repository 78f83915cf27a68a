package sut

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/swanpath/swanpath/internal/cpus"
)

// KeepOff confines every thread of this process, and so every process it
// starts from now on (a child inherits its creator's CPUs), to the CPUs
// other than workers, and GOMAXPROCS to at most their number: the worker lcores'
// CPUs stay for the workers (DPDK processes pin their lcores themselves).
// The returned func undoes it.
func KeepOff(workers []int) (restore func(), err error) {
	var orig unix.CPUSet
	if err := unix.SchedGetaffinity(0, &orig); err != nil {
		return nil, fmt.Errorf("CPU affinity: %w", err)
	}
	set := orig
	for _, c := range workers {
		set.Clear(c)
	}
	if set.Count() == 0 {
		return nil, fmt.Errorf("no CPU left beside %v", workers)
	}
	if err := cpus.SetAll(&set, nil); err != nil {
		cpus.SetAll(&orig, nil)
		return nil, err
	}
	runtime.GOMAXPROCS(min(runtime.GOMAXPROCS(0), set.Count()))
	return func() {
		cpus.SetAll(&orig, nil)
		runtime.SetDefaultGOMAXPROCS()
	}, nil
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
