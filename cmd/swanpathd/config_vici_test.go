package main

import (
	"strings"
	"testing"

	"github.com/swanpath/swanpath/bridge/vici"
)

// vici.socket defaults to charon's socket, "" disables VICI, a relative
// path is refused beside the other problems, and unknown [vici] keys too.
func TestConfigVici(t *testing.T) {
	const port = "[[port]]\nname = \"wan\"\ndevice = \"net_tap0\"\ntap = \"twan\"\n"
	c, err := loadConfig(writeConfig(t, port))
	if err != nil {
		t.Fatal(err)
	}
	if c.Vici.Socket != vici.DefaultSocket {
		t.Errorf("vici.socket default %q, want %q", c.Vici.Socket, vici.DefaultSocket)
	}
	c, err = loadConfig(writeConfig(t, port+"[vici]\nsocket = \"\"\n"))
	if err != nil || c.Vici.Socket != "" {
		t.Fatalf("vici disabled: %q %v", c.Vici.Socket, err)
	}
	_, err = loadConfig(writeConfig(t, port+"[vici]\nsocket = \"charon.vici\"\nretry = 3\n[log]\nlevel = \"loud\"\n"))
	for _, want := range []string{`vici.socket "charon.vici"`, `unknown key "vici.retry"`, `log.level "loud"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q: %v", want, err)
		}
	}
}
