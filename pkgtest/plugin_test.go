package pkgtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A plugin built for another strongSwan version refuses to load, and
// charon says why. The plugin is built with SWANPATH_STRONGSWAN_VERSION
// "5.9.7" and put in place of the installed one inside a private mount
// namespace (the machine's plugin is untouched), where charon starts
// without network for a few seconds.
func TestPluginRefusesOtherStrongswan(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root and strongSwan")
	}
	const installed = "/usr/lib/ipsec/plugins/libstrongswan-kernel-swanpath.so"
	if _, err := os.Stat(installed); err != nil {
		t.Skipf("no installed plugin to stand in for (%v)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	so := filepath.Join(dir, "libstrongswan-kernel-swanpath.so")
	run(t, ctx, "make", "-s", "-C", filepath.Join(repoRoot(t), "charon"), "all", "PLUGIN="+so,
		"OBJDIR="+filepath.Join(dir, "obj"), `PLUGIN_CFLAGS=-DSWANPATH_STRONGSWAN_VERSION='"5.9.7"'`)
	logf := filepath.Join(dir, "charon.log")
	conf := filepath.Join(dir, "strongswan.conf")
	if err := os.WriteFile(conf, []byte(`charon {
  load_modular = yes
  filelog {
    f {
      path = `+logf+`
      default = 1
    }
  }
  plugins {
    kernel-swanpath {
      load = yes
    }
    include /etc/strongswan.d/charon/*.conf
  }
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	sh := `mount --make-rprivate / && mount --bind "$1" "$2" && mount -t tmpfs none /run &&
STRONGSWAN_CONF="$3" timeout 4 /usr/lib/ipsec/charon >/dev/null 2>&1; true`
	if out, err := exec.CommandContext(ctx, "unshare", "-m", "-n", "sh", "-c", sh, "sh", so, installed, conf).CombinedOutput(); err != nil {
		t.Fatalf("charon: %v\n%s", err, out)
	}
	data, err := os.ReadFile(logf)
	if err != nil {
		t.Fatal(err)
	}
	log := string(data)
	for _, want := range []string{"kernel-swanpath: built for strongSwan 5.9.7, but strongSwan ", "is installed: not loading",
		"plugin 'kernel-swanpath': failed to load"} {
		if !strings.Contains(log, want) {
			t.Errorf("charon's log lacks %q:\n%s", want, tail(log, 30))
		}
	}
}
