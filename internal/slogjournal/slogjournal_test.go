package slogjournal

import (
	"log/slog"
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
)

type entry struct {
	msg  string
	pri  journal.Priority
	vars map[string]string
}

// The keys swanpath logs with (STYLE rule 8) become journal fields that
// journalctl can match, with the value as logged.
func TestHandlerFields(t *testing.T) {
	var got []entry
	send := func(m string, p journal.Priority, v map[string]string) error {
		got = append(got, entry{m, p, v})
		return nil
	}
	var lv slog.LevelVar
	log := slog.New(New(&lv, "swanpathd", send))
	log.With("port", "wan").Info("SA added", "spi", "0x0000c001", "reqid", 7, "child-name", "net net")
	log.WithGroup("ctl").Warn("odd", "message", "x", slog.Group("sa", "dir", "in"))
	log.Debug("not at info")
	lv.Set(slog.LevelDebug)
	log.Debug("now at debug", "lcore", 1)

	if len(got) != 3 {
		t.Fatalf("%d entries, want 3: %+v", len(got), got)
	}
	want := map[string]string{"SPI": "0x0000c001", "REQID": "7", "PORT": "wan", "CHILD_NAME": "net net", "SYSLOG_IDENTIFIER": "swanpathd"}
	for k, v := range want {
		if got[0].vars[k] != v {
			t.Errorf("field %s = %q, want %q (all: %v)", k, got[0].vars[k], v, got[0].vars)
		}
	}
	if m := `SA added port=wan spi=0x0000c001 reqid=7 child-name="net net"`; got[0].msg != m || got[0].pri != journal.PriInfo {
		t.Errorf("message %q pri %d, want %q pri %d", got[0].msg, got[0].pri, m, journal.PriInfo)
	}
	if got[1].vars["CTL_ATTR_MESSAGE"] != "" || got[1].vars["CTL_MESSAGE"] != "x" || got[1].vars["CTL_SA_DIR"] != "in" || got[1].pri != journal.PriWarning {
		t.Errorf("grouped entry: %+v", got[1])
	}
	if got[2].vars["LCORE"] != "1" || got[2].pri != journal.PriDebug {
		t.Errorf("debug entry after the level changed: %+v", got[2])
	}
}

func TestFieldName(t *testing.T) {
	for in, want := range map[string]string{"spi": "SPI", "iface": "IFACE", "plugin_socket": "PLUGIN_SOCKET", "a.b-c": "A_B_C", "1x": "F1X", "_x": "F_X", "": "F"} {
		if got := FieldName(in); got != want {
			t.Errorf("FieldName(%q) = %q, want %q", in, got, want)
		}
	}
}
