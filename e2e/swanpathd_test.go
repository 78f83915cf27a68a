package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/swanpath/swanpath/lab"
)

// Binaries built once per test run by TestMain.
var (
	swanpathdBin   string
	swanpathctlBin string
)

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "swanpath-e2e-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		if !testingShort() {
			for _, b := range []struct {
				out *string
				pkg string
			}{
				{&swanpathdBin, "./cmd/swanpathd"}, {&swanpathctlBin, "./cmd/swanpathctl"},
			} {
				*b.out = filepath.Join(dir, filepath.Base(b.pkg))
				cmd := exec.Command("go", "build", "-o", *b.out, b.pkg)
				cmd.Dir = repoRoot()
				if out, err := cmd.CombinedOutput(); err != nil {
					fmt.Fprintf(os.Stderr, "build %s: %v\n%s", b.pkg, err, out)
					return 1
				}
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

func testingShort() bool {
	for _, a := range os.Args {
		if a == "-test.short" || a == "-test.short=true" {
			return true
		}
	}
	return false
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// waitFor polls cond every 100 ms until it holds or ctx ends (lab.Poll).
func waitFor(ctx context.Context, what string, cond func() (bool, error)) error {
	return lab.Poll(ctx, what, 100*time.Millisecond, cond)
}

func contains(s string, subs ...string) error {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return fmt.Errorf("output lacks %q:\n%s", x, s)
		}
	}
	return nil
}
