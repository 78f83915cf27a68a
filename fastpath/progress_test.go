package fastpath

import (
	"io"
	"log/slog"
	"testing"
	"time"
)

// Every worker's progress counter moves while its loop runs, idle or not:
// swanpathd's watchdog keep-alive depends on it.
func TestFastpathProgress(t *testing.T) {
	runChild(t, "fpp", "TestFastpathProgressChild", childEnv, "", false)
}

func TestFastpathProgressChild(t *testing.T) {
	ns := childArg(t, childEnv, "TestFastpathProgress")
	fp, err := Open(Config{
		EALArgs:   childEAL(ns, "--lcores", "0@0,1@0,2@0"),
		Ports:     []PortConfig{{Name: "n", Device: "net_null0,no-rx=1", Tap: "tpp"}},
		IdleSleep: 100 * time.Microsecond,
		Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer fp.Close()
	a := fp.Progress()
	if len(a) != 2 {
		t.Fatalf("progress of %d workers, want 2", len(a))
	}
	time.Sleep(100 * time.Millisecond)
	b := fp.Progress()
	for w := range a {
		if b[w] <= a[w] {
			t.Errorf("worker %d: progress %d then %d, want it to move", w, a[w], b[w])
		}
	}
	fp.Stop()
	c := fp.Progress()
	time.Sleep(50 * time.Millisecond)
	if d := fp.Progress(); d[0] != c[0] || d[1] != c[1] {
		t.Errorf("stopped workers still progress: %v then %v", c, d)
	}
}
