package engine

import (
	"net/netip"

	"github.com/swanpath/swanpath/bridge/model"
)

// EventKind says which kernel-style event an Event is.
type EventKind uint8

const (
	EventExpire  EventKind = iota + 1 // soft or hard lifetime reached
	EventAcquire                      // packet matched a policy without SA
	EventMapping                      // ESP-in-UDP seen from a new address/port
)

func (k EventKind) String() string {
	switch k {
	case EventExpire:
		return "expire"
	case EventAcquire:
		return "acquire"
	case EventMapping:
		return "mapping"
	}
	return "event"
}

// Event is what the engine tells the IKE daemon, as the kernel's
// XFRM_MSG_EXPIRE, _ACQUIRE and _MAPPING would: each source (the charon
// plugin socket, an XFRM mirror) puts it in its own wire format.
type Event struct {
	Kind  EventKind
	SA    model.SAID // expire, mapping
	Hard  bool       // expire
	Reqid uint32     // acquire
	// acquire: the packet's addresses (as selectors); mapping: the
	// peer's new address in Src and its port in NewPort.
	Src, Dst netip.Addr
	NewPort  uint16 // mapping
}
