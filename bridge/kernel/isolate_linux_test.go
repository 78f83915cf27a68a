package kernel

import (
	"errors"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TestIsolateTCAgain: the tc ingress drop (Isolate on a kernel without
// nftables' netdev family, e.g. the UML gateway) stays after swanpathd
// exits, so the next start finds it: found by e2e TestLibreswanRestarts,
// where swanpathd's restart failed with "matchall drop filter: file
// exists". Another isolateTC succeeds and leaves one drop filter.
func TestIsolateTCAgain(t *testing.T) {
	l := newLab(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(l.gw); err != nil {
		t.Fatal(err)
	}
	defer netns.Set(orig)

	if err := isolateTC("vgw"); errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EOPNOTSUPP) {
		// this machine's kernel has no cls_matchall (nor modules to load)
		t.Skipf("no tc matchall classifier in this kernel (%v); e2e TestLibreswanRestarts covers it in the UML kernel", err)
	}
	for i := range 2 {
		if err := isolateTC("vgw"); err != nil {
			t.Fatalf("isolateTC, run %d: %v", i+1, err)
		}
	}
	link, err := netlink.LinkByName("vgw")
	if err != nil {
		t.Fatal(err)
	}
	fs, err := netlink.FilterList(link, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 1 || !hasDropAll(link) {
		t.Fatalf("ingress filters after two runs: %+v; want one matchall drop", fs)
	}
}
