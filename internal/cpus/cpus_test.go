package cpus

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestList(t *testing.T) {
	var s unix.CPUSet
	if got := List(&s); got != "" {
		t.Fatalf("empty set: %q", got)
	}
	for _, c := range []int{0, 2, 3, 4, 7} {
		s.Set(c)
	}
	if got := List(&s); got != "0,2-4,7" {
		t.Fatalf("got %q, want 0,2-4,7", got)
	}
	var d unix.CPUSet
	d.Set(9)
	Or(&d, &s)
	if got := List(&d); got != "0,2-4,7,9" {
		t.Fatalf("Or: got %q", got)
	}
}

func TestThreadsHasSelf(t *testing.T) {
	tids, err := Threads()
	if err != nil {
		t.Fatal(err)
	}
	self := unix.Gettid()
	for _, tid := range tids {
		if tid == self {
			return
		}
	}
	t.Fatalf("thread %d not among %v", self, tids)
}
