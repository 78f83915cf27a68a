package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// A damaged state file no longer stops swanpathd: it starts with an empty
// state; and whatever it found, the file says not clean from the start on
// (a crash then adds the margin).
func TestOpenSeqState(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for name, content := range map[string]string{
		"damaged": `{"clean":tr`,
		"clean":   `{"clean":true,"sas":[{"dst":"192.0.2.2","spi":256,"seq":5000}]}`,
	} {
		path := filepath.Join(t.TempDir(), "seq.json")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if st := openSeqState(log, path); st == nil {
			t.Fatalf("%s: no state", name)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var f struct {
			Clean bool
			SAs   []struct{ Seq uint64 }
		}
		if err := json.Unmarshal(data, &f); err != nil || f.Clean {
			t.Fatalf("%s: the file after start: %s (%v), want it not clean", name, data, err)
		}
		if name == "clean" && (len(f.SAs) != 1 || f.SAs[0].Seq != 5000) {
			t.Fatalf("clean: the record was not kept: %s", data)
		}
	}
}
