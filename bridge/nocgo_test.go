package bridge_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The control plane must build and test without DPDK: no package under
// bridge/ may depend on cgo (STYLE.md rule 2).
func TestBridgeHasNoCgo(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{if .CgoFiles}}CGO{{end}}", "./...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasSuffix(line, " CGO") && !strings.HasPrefix(line, "runtime/cgo") {
			pkg := strings.TrimSuffix(line, " CGO")
			// the standard library's optional cgo (net, os/user) is fine
			if !strings.Contains(pkg, ".") {
				continue
			}
			t.Errorf("bridge depends on cgo package %s", pkg)
		}
	}
}
