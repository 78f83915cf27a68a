package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const hardenChildEnv = "SWANPATHD_TEST_HARDEN_CHILD"

// TestNoCoreDumps runs noCoreDumps in a child process (this test binary
// again) and reads the child's core limit from outside, in
// /proc/PID/limits, while the child reports PR_GET_DUMPABLE (not in
// /proc/PID/status) and waits.
func TestNoCoreDumps(t *testing.T) {
	if os.Getenv(hardenChildEnv) != "" {
		if err := noCoreDumps(); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
		fmt.Printf("dumpable=%d err=%v\n", d, err)
		bufio.NewReader(os.Stdin).ReadString('\n') // the parent reads our limits
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestNoCoreDumps$")
	cmd.Env = append(os.Environ(), hardenChildEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("child: %q, %v", line, err)
	}
	if strings.TrimSpace(line) != "dumpable=0 err=<nil>" {
		t.Errorf("child after noCoreDumps: %q, want dumpable=0", line)
	}
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var core []string
	for _, l := range strings.Split(string(limits), "\n") {
		if strings.HasPrefix(l, "Max core file size") {
			core = strings.Fields(strings.TrimPrefix(l, "Max core file size"))
		}
	}
	if len(core) < 2 || core[0] != "0" || core[1] != "0" {
		t.Errorf("child's core limit (soft, hard) = %q, want 0 0\n%s", core, limits)
	}
}
