package swanpathdconf

import (
	"strings"
	"testing"
)

// The omitempty zero fields are left out, IdleSleepUS 0 is written.
func TestRenderOmitsDefaults(t *testing.T) {
	c := Config{EAL: EAL{Lcores: "0,1", Memory: 256, FilePrefix: "x", InMemory: true},
		Ports:  []Port{{Name: "lan", Device: "net_null0", Tap: "tl"}},
		Plugin: Socket{"/p"}, Control: Socket{"/c"}, Fastpath: Fastpath{StateFile: "/s"}, Log: Log{"warn"}}
	b, err := c.Render("test")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{"# written by test\n", "[[port]]", `lcores = "0,1"`, "idle_sleep_us = 0", "in_memory = true"} {
		if !strings.Contains(s, want) {
			t.Errorf("rendered config lacks %q:\n%s", want, s)
		}
	}
	for _, absent := range []string{"mbufs", "max_sas", "natt_port", "mtu", "no_huge", "huge_dir", "[crypto]"} {
		if strings.Contains(s, absent) {
			t.Errorf("rendered config has %q although it is zero:\n%s", absent, s)
		}
	}
}
