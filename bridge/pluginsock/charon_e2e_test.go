package pluginsock

// End-to-end: a real charon with the kernel-swanpath plugin (installed by
// `make -C charon install`) talks to this package's Server with the
// in-memory fake Handler, and negotiates with a second charon using
// kernel-libipsec: the gateway and the peer of a lab (package lab, which
// has no cgo), their addresses on the veths.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/model"
	"github.com/swanpath/swanpath/lab"
)

// poll waits every 50 ms until cond holds (polling a condition, not
// sleeping for a guessed time), or fails the test when ctx ends.
func poll(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	if err := lab.Poll(ctx, what, 50*time.Millisecond, func() (bool, error) { return cond(), nil }); err != nil {
		t.Fatalf("waiting for %v", err)
	}
}

// startPluginCharon starts the lab's gateway charon with the
// kernel-swanpath plugin on socket sock and the tunnel it returns.
func startPluginCharon(t *testing.T, l *lab.Lab, sock string) (*lab.Charon, lab.Tunnel) {
	t.Helper()
	tun := lab.Tunnel{IKEProposals: "aes128-sha256-modp2048", ESPProposals: "aes128gcm16"}
	gw, err := l.StartCharon(lab.GW, lab.CharonOptions{
		Plugins: []lab.Plugin{{Name: "kernel-swanpath", Settings: []string{"socket = " + sock}}},
		Swanctl: tun.GatewayConf(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return gw, tun
}

func TestCharonPluginEndToEnd(t *testing.T) {
	if _, err := os.Stat(lab.PluginPath); err != nil {
		t.Skipf("plugin not installed (make -C charon install): %v", err)
	}
	// gw 192.0.2.1 with 10.1.0.1, pr 192.0.2.2 with 10.2.0.1: kernel-libipsec
	// routes into the tunnel from an address inside its local selector
	l := lab.New(t, lab.Options{GatewayAddrs: true})

	// The plugin's socket server with the fake handler.
	sock := filepath.Join(t.TempDir(), "run", "charon.sock") // its directory made 0700 by Listen
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	fake := newFakeHandler()
	srv, err := Listen(context.Background(), log, sock, fake)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	gw, tun := startPluginCharon(t, l, sock)
	if err := gw.LoadAll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := l.StartPeer(ctx, tun); err != nil {
		t.Fatal(err)
	}
	if err := gw.Initiate(ctx, lab.ChildName); err != nil {
		t.Fatalf("initiate: %v", err)
	}

	// Two SAs and the out/in/fwd policies reached the fake.
	installed := func(f *fakeHandler) bool {
		dirs := map[model.Dir]bool{}
		for p := range f.mu.policies {
			dirs[p.Dir] = true
		}
		return len(f.mu.sas) == 2 && dirs[model.DirOut] && dirs[model.DirIn] && dirs[model.DirFwd]
	}
	if err := fake.waitFor(ctx, installed); err != nil {
		t.Fatalf("SAs and policies not installed: %v\ncalls: %q", err, fake.calls())
	}
	fake.mu.Lock()
	sas := map[model.SAID]model.SA{}
	for k, sa := range fake.mu.sas {
		sas[k] = sa
		t.Logf("SA %s src=%s inbound=%v mode=%s reqid=%d encap=%v ports=%d/%d enc=%d key=%s icv=%d replay=%d soft=%+v hard=%+v",
			sa.SAID, sa.Src, sa.Inbound, sa.Mode, sa.Reqid, sa.Encap, sa.SrcPort, sa.DstPort, sa.EncAlg, sa.EncKey, sa.ICVLen, sa.ReplayWindow, sa.Soft, sa.Hard)
		if sa.EncAlg != model.EncrAESGCM16 || len(sa.EncKey) != 20 || sa.ICVLen != 16 || sa.Mode != model.ModeTunnel {
			t.Errorf("SA %s: enc %d key %d bytes icv %d mode %s; want AES-GCM-16, 20-byte key incl. salt, ICV 16, tunnel",
				sa.SAID, sa.EncAlg, len(sa.EncKey), sa.ICVLen, sa.Mode)
		}
		// kernel-libipsec requires UDP encapsulation, so both SAs use it.
		if !sa.Encap || sa.SrcPort != 4500 || sa.DstPort != 4500 {
			t.Errorf("SA %s: encap %v ports %d/%d; want ESP-in-UDP 4500/4500", sa.SAID, sa.Encap, sa.SrcPort, sa.DstPort)
		}
		if sa.Hard.Time == 0 || sa.Soft.Time == 0 || sa.Soft.Time >= sa.Hard.Time {
			t.Errorf("SA %s: lifetimes soft %v hard %v", sa.SAID, sa.Soft.Time, sa.Hard.Time)
		}
	}
	for p, refs := range fake.mu.policies {
		t.Logf("policy %s %s refs=%d", p.Sel, p.Dir, refs)
	}
	nPolicies := len(fake.mu.policies)
	fake.mu.Unlock()
	if calls := strings.Join(fake.calls(), "\n"); !strings.Contains(calls, "GetSPI 192.0.2.2 192.0.2.1 50") {
		t.Errorf("no GET_SPI for the inbound SA:\n%s", calls)
	}

	// query_sa: swanctl --list-sas shows the fake's counters.
	out, err := gw.Swanctl(ctx, "--list-sas")
	if err != nil {
		t.Fatalf("list-sas: %v\n%s", err, out)
	}
	t.Logf("gw swanctl --list-sas:\n%s", out)
	if !strings.Contains(out, "123456 bytes") || !strings.Contains(out, "789 packets") {
		t.Errorf("list-sas does not show the counters from swanpathd (123456 bytes, 789 packets)")
	}

	// Restart the server: the plugin reconnects and replays everything.
	srv.Close()
	poll(t, ctx, "unreachable log line", func() bool {
		return strings.Contains(gw.Log(), "kernel-swanpath: swanpathd not reachable at "+sock)
	})
	fake2 := newFakeHandler()
	srv2, err := Listen(context.Background(), log, sock, fake2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv2.Close() })
	if err := fake2.waitFor(ctx, func(f *fakeHandler) bool {
		return len(f.mu.sas) == 2 && len(f.mu.policies) == nPolicies
	}); err != nil {
		t.Fatalf("no replay after restart: %v\ncalls: %q", err, fake2.calls())
	}
	fake2.mu.Lock()
	for k, sa := range fake2.mu.sas {
		if want, ok := sas[k]; !ok || string(want.EncKey) != string(sa.EncKey) || want.Encap != sa.Encap {
			t.Errorf("replayed SA %s differs from the original", k)
		}
	}
	fake2.mu.Unlock()
	// HELLO, the SAs, the policies, then REPLAY_DONE with their count
	if err := fake2.waitFor(ctx, func(f *fakeHandler) bool {
		return len(f.mu.calls) >= 2+nPolicies+2
	}); err != nil {
		t.Fatalf("no REPLAY_DONE after the replay: %v\ncalls: %q", err, fake2.calls())
	}
	calls := fake2.calls()
	t.Logf("after restart: %q", calls)
	if len(calls) < 3 || !strings.HasPrefix(calls[0], "connected ") || !strings.HasPrefix(calls[1], "AddSA") || !strings.HasPrefix(calls[2], "AddSA") {
		t.Errorf("replay does not start with HELLO and the SAs: %q", calls)
	}
	if want := fmt.Sprintf("replay-done 1 %d/0", 2+nPolicies); len(calls) != 2+nPolicies+2 || calls[len(calls)-1] != want {
		t.Errorf("replay does not end with %q after the policies: %q", want, calls)
	}
	poll(t, ctx, "replay line in charon's log", func() bool {
		return strings.Contains(gw.Log(), "kernel-swanpath: replayed 2 SAs and 3 policies")
	})

	// A soft EXPIRE from swanpathd makes charon rekey the CHILD_SA: a new
	// SPI and two new SAs arrive.
	var inbound model.SAID
	for k, sa := range sas {
		if sa.Inbound {
			inbound = k
		}
	}
	srv2.Notify(Event{Kind: EventExpire, SA: inbound})
	if err := fake2.waitFor(ctx, func(f *fakeHandler) bool {
		added := 0
		for _, c := range f.mu.calls {
			if strings.HasPrefix(c, "AddSA") {
				added++
			}
		}
		return added >= 4 && len(f.mu.sas) >= 2
	}); err != nil {
		t.Fatalf("no rekey after a soft EXPIRE: %v\ncalls: %q", err, fake2.calls())
	}
	poll(t, ctx, "expire in charon's log", func() bool {
		return strings.Contains(gw.Log(), fmt.Sprintf("kernel-swanpath: soft expire for SA with SPI %08x", inbound.SPI))
	})

	// A replay in which swanpathd refuses SAs still replays every policy
	// (a policy without its SA drops, as on the kernel) and ends with
	// REPLAY_DONE counting the refusals.
	srv2.Close()
	fake3 := newFakeHandler()
	fake3.refuse = func(sa *model.SA) bool { return sa.Inbound }
	srv3, err := Listen(context.Background(), log, sock, fake3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv3.Close() })
	if err := fake3.waitFor(ctx, func(f *fakeHandler) bool {
		return slices.ContainsFunc(f.mu.calls, func(c string) bool { return strings.HasPrefix(c, "replay-done ") })
	}); err != nil {
		t.Fatalf("no REPLAY_DONE after a replay with refusals: %v\ncalls: %q", err, fake3.calls())
	}
	calls = fake3.calls()
	// what the plugin holds may be mid-rekey (the soft expire above), so
	// count what came: every SA tried, every policy after them, and the
	// REPLAY_DONE's totals agree with that
	var tried, refused, policies int
	for _, c := range calls {
		switch {
		case strings.HasPrefix(c, "AddSA refused "):
			refused++
			tried++
		case strings.HasPrefix(c, "AddSA "):
			tried++
		case strings.HasPrefix(c, "AddPolicy "):
			policies++
		}
	}
	// references, not distinct policies: mid-rekey charon holds some
	// policy twice (once per CHILD_SA), and replays each reference
	fake3.mu.Lock()
	nPol3 := 0
	for _, refs := range fake3.mu.policies {
		nPol3 += refs
	}
	fake3.mu.Unlock()
	last := calls[len(calls)-1]
	if refused == 0 || policies == 0 || nPol3 != policies || last != fmt.Sprintf("replay-done 1 %d/%d", tried+policies, refused) {
		t.Errorf("replay with %d of %d SAs refused: %d policies replayed, %d references installed, last call %q; calls %q",
			refused, tried, policies, nPol3, last, calls)
	}
}
