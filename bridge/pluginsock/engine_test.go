package pluginsock

import (
	"net/netip"
	"testing"

	"github.com/swanpath/swanpath/bridge/engine"
	"github.com/swanpath/swanpath/bridge/model"
)

// Every engine event becomes the plugin protocol's, field for field, and
// a frame the codec writes.
func TestFromEngine(t *testing.T) {
	id := model.SAID{Dst: netip.MustParseAddr("192.0.2.1"), SPI: 0xc0000101, Proto: model.ProtoESP}
	src, dst := netip.MustParseAddr("10.1.0.2"), netip.MustParseAddr("10.2.0.2")
	for _, tc := range []struct {
		in   engine.Event
		want Event
		typ  Type
	}{
		{engine.Event{Kind: engine.EventExpire, SA: id, Hard: true}, Event{Kind: EventExpire, SA: id, Hard: true}, TypeExpire},
		{engine.Event{Kind: engine.EventExpire, SA: id}, Event{Kind: EventExpire, SA: id}, TypeExpire},
		{engine.Event{Kind: engine.EventAcquire, Reqid: 7, Src: src, Dst: dst}, Event{Kind: EventAcquire, Reqid: 7, Src: src, Dst: dst}, TypeAcquire},
		{engine.Event{Kind: engine.EventMapping, SA: id, Src: src, NewPort: 31000}, Event{Kind: EventMapping, SA: id, Src: src, NewPort: 31000}, TypeMapping},
	} {
		got := FromEngine(tc.in)
		if got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.in.Kind, got, tc.want)
		}
		m, err := EventMessage(got)
		if err != nil || m.Type != tc.typ {
			t.Errorf("%s: frame %v, %v", tc.in.Kind, m, err)
		}
	}
	if _, err := EventMessage(FromEngine(engine.Event{Kind: 99})); err == nil {
		t.Error("an unknown engine event made a frame")
	}
}
