package tsc

import (
	"testing"
	"time"
)

func TestHzPlausible(t *testing.T) {
	hz := Hz(50 * time.Millisecond)
	if hz < 1e8 || hz > 1e10 {
		t.Fatalf("TSC %.0f Hz: implausible", hz)
	}
}
