package pkgtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// rootPackages is what the test root holds besides minbase: systemd as
// init and the tools the test runs inside. Nothing of swanpath.
var rootPackages = []string{"systemd-sysv", "dbus", "iproute2", "kmod", "nftables", "procps"}

func repoRoot(t testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

func run(t testing.TB, ctx context.Context, name string, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, tail(string(out), 40))
	}
	return string(out)
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// cachedRoot returns a pristine Debian 12 root made by mmdebstrap, made
// once per package list under build/pkgtest (never committed).
func cachedRoot(t testing.TB, ctx context.Context) string {
	sum := sha256.Sum256([]byte("bookworm minbase " + strings.Join(rootPackages, ",")))
	dir := filepath.Join(repoRoot(t), "build", "pkgtest", "root-"+hex.EncodeToString(sum[:6]))
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return dir
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		t.Skip("mmdebstrap not installed (apt-get install mmdebstrap)")
	}
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	run(t, ctx, "mmdebstrap", "--variant=minbase", "--include="+strings.Join(rootPackages, ","), "bookworm", dir)
	if err := os.WriteFile(filepath.Join(dir, ".complete"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("mmdebstrap root in %s", time.Since(start).Round(time.Second))
	return dir
}

// freshRoot copies the cached root for one test and removes the copy at
// the end.
func freshRoot(t testing.TB, ctx context.Context) string {
	base := cachedRoot(t, ctx)
	dir := filepath.Join(repoRoot(t), "build", "pkgtest", fmt.Sprintf("run-%d", os.Getpid()))
	_ = os.RemoveAll(dir)
	run(t, ctx, "cp", "-a", base, dir)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	// the host's apt sources and resolver
	for _, f := range []string{"/etc/apt/sources.list.d/debian.sources", "/etc/resolv.conf"} {
		if data, err := os.ReadFile(f); err == nil {
			dst := filepath.Join(dir, f)
			_ = os.Remove(dst)
			if err := os.WriteFile(dst, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := os.Stat("/etc/apt/sources.list.d/debian.sources"); err == nil {
		_ = os.Remove(filepath.Join(dir, "etc/apt/sources.list"))
	}
	return dir
}

// inChroot runs a shell command in root with /proc and the shared apt
// archive cache mounted, in a private mount namespace (the mounts go with
// it, whatever happens).
func inChroot(t testing.TB, ctx context.Context, root, script string) string {
	t.Helper()
	cache := filepath.Join(repoRoot(t), "build", "pkgtest", "apt-archives")
	if err := os.MkdirAll(filepath.Join(cache, "partial"), 0o755); err != nil {
		t.Fatal(err)
	}
	sh := `set -e
mount --make-rprivate /
mount --bind "$1" "$2/var/cache/apt/archives"
mount -t proc proc "$2/proc"
exec chroot "$2" /bin/sh -ec "$3"`
	cmd := exec.CommandContext(ctx, "unshare", "-m", "sh", "-c", sh, "sh", cache, root, script)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "PATH=/usr/sbin:/usr/bin:/sbin:/bin")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("in the root: %s: %v\n%s", script, err, tail(out.String(), 40))
	}
	return out.String()
}
