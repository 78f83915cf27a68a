package pluginsock

import (
	"context"
	"net/netip"

	"github.com/swanpath/swanpath/bridge/model"
)

// Handler is what the plugin socket server calls for each request of
// strongSwan's kernel_ipsec_t interface. swanpathd implements it on top of
// the fast path; tests implement it in memory. Calls may come from several
// connections at once; the handler serialises what it must.
type Handler interface {
	// GetSPI allocates an unused inbound SPI for (src, dst, proto).
	GetSPI(ctx context.Context, src, dst netip.Addr, proto uint8) (uint32, error)
	// AddSA installs an SA. The handler copies what it keeps of sa: the
	// server wipes sa's keys as soon as AddSA returns, success or not (the
	// engine hands them to the fast path and wipes them itself).
	AddSA(ctx context.Context, sa *model.SA) error
	// UpdateSA moves an SA to new addresses/ports (MOBIKE, NAT mapping).
	UpdateSA(ctx context.Context, id model.SAID, src netip.Addr, newSrc, newDst netip.Addr, newSport, newDport uint16, encap bool) error
	QuerySA(ctx context.Context, id model.SAID) (model.SAStats, error)
	DelSA(ctx context.Context, id model.SAID) error
	FlushSAs(ctx context.Context) error
	AddPolicy(ctx context.Context, p *model.Policy) error
	// QueryPolicy returns the last time traffic matched the policy.
	QueryPolicy(ctx context.Context, id model.PolicyID) (model.SAStats, error)
	DelPolicy(ctx context.Context, id model.PolicyID) error
	FlushPolicies(ctx context.Context) error
}

// SessionHandler is implemented by a Handler that wants to know the
// plugin connections' life: the fast path fails closed until a plugin has
// replayed what it installed. conn identifies a connection for its life.
type SessionHandler interface {
	// Connected: a plugin said HELLO; its replay follows.
	Connected(conn uint64, h Hello)
	// ReplayDone: the plugin has sent again every SA and policy it had
	// installed (some may have been refused) and goes on normally.
	ReplayDone(conn uint64, r ReplayDone)
	// Disconnected: the connection is gone.
	Disconnected(conn uint64)
}

// EventKind says which kernel event an Event carries back to charon.
type EventKind uint8

const (
	EventExpire  EventKind = 1 // soft or hard lifetime reached
	EventAcquire EventKind = 2 // packet matched a policy without SA
	EventMapping EventKind = 3 // ESP-in-UDP seen from a new address/port
)

// Event is sent from swanpathd to every connected plugin.
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
