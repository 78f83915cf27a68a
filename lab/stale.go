package lab

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Every lab's namespaces are named namePrefix + 6 hex digits + "-" + role.
// A marker file markerDir/<prefix> holds the pid of the owning test binary;
// RemoveStale deletes what belongs to dead owners. Other projects' namespaces
// (pl-*, ...) never match.
const (
	namePrefix = "sp"
	markerDir  = "/run/swanpath-lab"
)

var labName = regexp.MustCompile(`^(sp[0-9a-f]{6})-[a-z0-9]+$`)

func writeMarker(prefix string) error {
	if err := os.MkdirAll(markerDir, 0o755); err != nil {
		return fmt.Errorf("marker dir: %w", err)
	}
	p := filepath.Join(markerDir, prefix)
	pid := os.Getpid()
	line := fmt.Sprintf("%d %s\n", pid, procStart(pid))
	if err := os.WriteFile(p, []byte(line), 0o644); err != nil {
		return fmt.Errorf("write marker: %w", err)
	}
	return nil
}

func removeMarker(prefix string) { _ = os.Remove(filepath.Join(markerDir, prefix)) }

// ownerAlive reports whether the marker of prefix names a live process: same
// pid, same start time (pids are reused), not a zombie. A missing or
// unreadable marker counts as dead: New writes the marker before it creates
// any namespace.
func ownerAlive(prefix string) bool {
	b, err := os.ReadFile(filepath.Join(markerDir, prefix))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 0 {
		return false
	}
	if pid == os.Getpid() {
		return true
	}
	start := procStart(pid)
	if start == "" || (len(f) > 1 && f[1] != start) {
		return false
	}
	return true
}

// procStart is the start time of pid (field 22 of /proc/pid/stat), or ""
// if pid does not exist or is a zombie.
func procStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name (field 2) may contain spaces; fields after ")".
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return ""
	}
	return f[19]
}

// RemoveStale deletes the namespaces (and the processes in them) of labs
// whose owning process is gone, and their markers. It touches only names of
// the form spXXXXXX-role.
func RemoveStale() error {
	prefixes := map[string]bool{}
	ents, err := os.ReadDir("/run/netns")
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	for _, e := range ents {
		if m := labName.FindStringSubmatch(e.Name()); m != nil {
			prefixes[m[1]] = true
		}
	}
	if ms, err := os.ReadDir(markerDir); err == nil {
		for _, e := range ms {
			if labName.MatchString(e.Name() + "-x") {
				prefixes[e.Name()] = true
			}
		}
	}
	var errs []error
	for p := range prefixes {
		if ownerAlive(p) {
			continue
		}
		var roles []string
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), p+"-") {
				roles = append(roles, strings.TrimPrefix(e.Name(), p+"-"))
			}
		}
		errs = append(errs, destroy(p, roles)...)
	}
	return errors.Join(errs...)
}

// Live labs of this process, for the signal handler.
var registry struct {
	sync.Mutex
	labs map[*Lab]bool
}

func register(l *Lab) {
	registry.Lock()
	defer registry.Unlock()
	if registry.labs == nil {
		registry.labs = map[*Lab]bool{}
	}
	registry.labs[l] = true
}

func unregister(l *Lab) {
	registry.Lock()
	defer registry.Unlock()
	delete(registry.labs, l)
}

var signalOnce sync.Once

// installSignalHandler makes SIGINT/SIGTERM remove every live lab of this
// process before it exits, since t.Cleanup does not run on a signal.
func installSignalHandler() {
	signalOnce.Do(func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
		go func() {
			sig := <-ch
			fmt.Fprintf(os.Stderr, "lab: %v: removing lab namespaces\n", sig)
			registry.Lock()
			labs := make([]*Lab, 0, len(registry.labs))
			for l := range registry.labs {
				labs = append(labs, l)
			}
			registry.Unlock()
			for _, l := range labs {
				if err := l.teardown(); err != nil {
					fmt.Fprintf(os.Stderr, "lab %s: cleanup: %v\n", l.prefix, err)
				}
			}
			code := 128 + int(sig.(syscall.Signal))
			os.Exit(code)
		}()
	})
}
