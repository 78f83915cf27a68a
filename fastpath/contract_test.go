package fastpath

import (
	"testing"

	"github.com/swanpath/swanpath/bridge/dataplane"
)

// The C counter enum (dp.h, enum sp_cnt) and dataplane.CounterNames are
// matched by position: a counter added on one side only shifts every name
// after it. No EAL needed.
func TestCounterNamesMatchC(t *testing.T) {
	if len(dataplane.CounterNames) != numCounters {
		t.Fatalf("dataplane.CounterNames has %d names, enum sp_cnt %d counters", len(dataplane.CounterNames), numCounters)
	}
}
