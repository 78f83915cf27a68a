package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// A reload applies log.level at once and names every other change as
// waiting for a restart; a broken file changes nothing.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "swanpathd.toml")
	base := `
[[port]]
name = "lan"
device = "net_af_packet0,iface=eth0"
tap = "sp-lan"

[log]
level = "info"
`
	if err := os.WriteFile(path, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	cur, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	var lv slog.LevelVar
	r := &reloader{log: slog.New(slog.NewTextHandler(&out, nil)), path: path, level: &lv, cur: cur}

	changed := strings.Replace(base, `level = "info"`, `level = "debug"`, 1) +
		"\n[eal]\nlcores = \"0-2\"\n"
	changed = strings.Replace(changed, "sp-lan", "sp-lan2", 1)
	if err := os.WriteFile(path, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	live, restart, err := r.reload()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(live, []string{"log.level"}) || !reflect.DeepEqual(restart, []string{"eal.lcores", "port"}) {
		t.Errorf("live %v restart %v; want [log.level] [eal.lcores port]", live, restart)
	}
	if lv.Level() != slog.LevelDebug {
		t.Errorf("level %v after reload, want debug", lv.Level())
	}
	if s := out.String(); !strings.Contains(s, "keys=eal.lcores,port") || !strings.Contains(s, "keys=log.level") {
		t.Errorf("log does not name the keys:\n%s", s)
	}

	if err := os.WriteFile(path, []byte("[log]\nlevel = \"warn\"\nbogus = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.reload(); err == nil {
		t.Error("a file with an unknown key was accepted")
	}
	if lv.Level() != slog.LevelDebug {
		t.Errorf("a refused file changed the level to %v", lv.Level())
	}
}
