package lab

import (
	"testing"
	"time"
)

func TestSeqResult(t *testing.T) {
	ok := SeqResult{Sent: 3, Received: 3}
	if !ok.Exact() {
		t.Fatal("complete stream not exact")
	}
	lost := SeqResult{Sent: 5, Received: 2, Missing: []uint64{1, 2, 4}, Duplicates: 1, Duplicated: []uint64{0},
		SentAt: []time.Duration{0, 1e6, 2e6, 3e6, 4e6}}
	if lost.Exact() {
		t.Fatal("stream with losses is exact")
	}
	want := "sent 5 in 0.0s, received 2 distinct, 1 duplicates, 0 unexpected, 0 corrupt, 0 foreign; " +
		"missing 3: 1-2 (sent at 0.001s-0.002s), 4 (sent at 0.004s); duplicated 1: 0 (sent at 0.000s)"
	if got := lost.String(); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	for _, r := range []SeqResult{{}, {Sent: 1, Received: 1, Corrupt: 1}, {Sent: 1, Received: 1, Unexpected: 1}} {
		if r.Exact() {
			t.Errorf("%+v is exact", r)
		}
	}
}
