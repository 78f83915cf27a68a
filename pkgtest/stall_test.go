package pkgtest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// stallWorker stops one worker thread (DPDK names them lcore-worker-N or
// rte-worker-N) of
// process pid and nothing else, as a worker stuck in a loop would: it
// seizes the thread with ptrace and interrupts it. The rest of swanpathd
// runs on, so only the progress check can notice. No hook in swanpathd is
// needed, so none is there for an operator to reach. The thread stays
// stopped until the process exits (the watchdog's restart); the tracer
// reaps it then so systemd sees the exit.
func stallWorker(t *testing.T, pid int) {
	t.Helper()
	tid := 0
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, e := range tasks {
		comm, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "task", e.Name(), "comm"))
		if strings.HasPrefix(string(comm), "lcore-worker") || strings.HasPrefix(string(comm), "rte-worker") {
			tid, _ = strconv.Atoi(e.Name())
			break
		}
	}
	if tid == 0 {
		var names []string
		for _, e := range tasks {
			comm, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "task", e.Name(), "comm"))
			names = append(names, strings.TrimSpace(string(comm)))
		}
		t.Fatalf("no DPDK worker thread in process %d (threads: %v)", pid, names)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // ptrace requests come from the tracer thread
		defer runtime.UnlockOSThread()
		if err := unix.PtraceSeize(tid); err != nil {
			errc <- fmt.Errorf("ptrace seize %d: %w", tid, err)
			return
		}
		if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_INTERRUPT, uintptr(tid), 0, 0, 0, 0); e != 0 {
			errc <- fmt.Errorf("ptrace interrupt %d: %w", tid, e)
			return
		}
		errc <- nil
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			var ws unix.WaitStatus
			got, err := unix.Wait4(tid, &ws, unix.WALL, nil)
			if err != nil || (got == tid && (ws.Exited() || ws.Signaled())) {
				return
			}
		}
		_ = unix.PtraceDetach(tid)
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Logf("worker thread %d of swanpathd %d stopped", tid, pid)
}
