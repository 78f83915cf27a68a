package vici

import (
	"testing"

	"github.com/strongswan/govici/vici"
)

func msg(t *testing.T, kv ...any) *vici.Message {
	t.Helper()
	m := vici.NewMessage()
	for i := 0; i < len(kv); i += 2 {
		if err := m.Set(kv[i].(string), kv[i+1]); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// A list-sa event as charon 5.9 sends it: SPIs in hex, ids in decimal.
func TestParseIKE(t *testing.T) {
	child := msg(t, "name", "net", "uniqueid", "7", "reqid", "1", "state", "INSTALLED", "mode", "TUNNEL",
		"spi-in", "c1a2b3c4", "spi-out", "0badf00d")
	rekeyed := msg(t, "name", "net", "uniqueid", "5", "reqid", "1", "state", "REKEYED", "mode", "TUNNEL",
		"spi-in", "c0000001", "spi-out", "00000002")
	ike := msg(t, "uniqueid", "3", "remote-host", "192.0.2.2", "remote-id", "peer.example",
		"child-sas", msg(t, "net-7", child, "net-5", rekeyed))
	got := ParseIKE("s2s", ike)
	want := []Child{
		{Conn: "s2s", Child: "net", ChildID: 7, IKEID: 3, Reqid: 1, SPIIn: 0xc1a2b3c4, SPIOut: 0x0badf00d,
			State: "INSTALLED", Mode: "TUNNEL", RemoteID: "peer.example", Remote: "192.0.2.2"},
		{Conn: "s2s", Child: "net", ChildID: 5, IKEID: 3, Reqid: 1, SPIIn: 0xc0000001, SPIOut: 2,
			State: "REKEYED", Mode: "TUNNEL", RemoteID: "peer.example", Remote: "192.0.2.2"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("child %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if cs := ParseIKE("half", msg(t, "uniqueid", "4")); len(cs) != 0 {
		t.Errorf("an IKE_SA without CHILD_SA: %+v", cs)
	}
}
