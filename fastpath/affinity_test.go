package fastpath

import (
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/swanpath/swanpath/internal/cpus"
)

// threadsOffWorkers checks, in a child process with a running Fastpath,
// that no thread but the worker lcores' may run on a worker's CPU, and
// that GOMAXPROCS is no more than the CPUs left.
func threadsOffWorkers(t *testing.T, fp *Fastpath) {
	t.Helper()
	if runtime.NumCPU() <= len(fp.workers) {
		t.Logf("%d CPUs for %d workers: nothing to keep apart", runtime.NumCPU(), len(fp.workers))
		return
	}
	workers := map[int]bool{}
	var wcpus unix.CPUSet
	for i := range fp.workers {
		tid := int(fp.dp.w[i].tid)
		if tid <= 0 {
			t.Fatalf("worker %d did not record its thread", i)
		}
		var s unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &s); err != nil {
			t.Fatal(err)
		}
		workers[tid] = true
		cpus.Or(&wcpus, &s)
	}
	tids, err := cpus.Threads()
	if err != nil {
		t.Fatal(err)
	}
	var control unix.CPUSet
	for _, tid := range tids {
		var s unix.CPUSet
		if workers[tid] || unix.SchedGetaffinity(tid, &s) != nil {
			continue
		}
		for c := range cpus.Size {
			if s.IsSet(c) && wcpus.IsSet(c) {
				t.Errorf("thread %d may run on CPU %d, a worker's (%s)", tid, c, cpus.List(&wcpus))
			}
		}
		cpus.Or(&control, &s)
	}
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) > control.Count() {
		t.Errorf("GOMAXPROCS %d, more than the %d CPUs beside the workers (%s)", runtime.GOMAXPROCS(0), control.Count(), cpus.List(&control))
	}
}
