// Package cpus places the threads of this process on CPUs: the fast path
// keeps its control threads off its workers' CPUs, the benchmark keeps
// itself off them.
package cpus

import (
	"fmt"
	"os"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Size is the number of CPUs a unix.CPUSet holds.
const Size = len(unix.CPUSet{}) * int(unsafe.Sizeof(unix.CPUSet{}[0])) * 8

// Or adds the CPUs of src to dst.
func Or(dst, src *unix.CPUSet) {
	for c := range Size {
		if src.IsSet(c) {
			dst.Set(c)
		}
	}
}

// Threads lists the threads of this process.
func Threads() ([]int, error) {
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

// SetAll gives every thread of this process but those in skip the CPUs of
// s; twice, since a thread may start during the first pass (threads that
// start later inherit their creator's CPUs). Threads that ended meanwhile
// are no error.
func SetAll(s *unix.CPUSet, skip map[int]bool) error {
	for range 2 {
		tids, err := Threads()
		if err != nil {
			return err
		}
		for _, tid := range tids {
			if skip[tid] {
				continue
			}
			if err := unix.SchedSetaffinity(tid, s); err != nil && err != unix.ESRCH {
				return fmt.Errorf("CPU affinity of thread %d: %w", tid, err)
			}
		}
	}
	return nil
}

// List formats a CPU set as Linux does ("0,2-3").
func List(s *unix.CPUSet) string {
	out := ""
	for c := 0; c < Size; c++ {
		if !s.IsSet(c) {
			continue
		}
		e := c
		for e+1 < Size && s.IsSet(e+1) {
			e++
		}
		if out != "" {
			out += ","
		}
		out += strconv.Itoa(c)
		if e > c {
			out += "-" + strconv.Itoa(e)
		}
		c = e
	}
	return out
}
