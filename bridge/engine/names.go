package engine

import (
	"sync"

	"github.com/swanpath/swanpath/bridge/model"
)

// Names are what charon calls an SA or a policy: the plugin socket knows
// SAs by SPI and reqid only, VICI (bridge/vici) by these.
type Names struct {
	Conn     string // connection
	Child    string // CHILD_SA name
	ChildID  uint32 // CHILD_SA unique id
	IKEID    uint32 // IKE_SA unique id
	RemoteID string // remote identity
	Remote   string // remote address
}

// Child is one CHILD_SA as charon lists it over VICI.
type Child struct {
	Names
	Reqid         uint32
	SPIIn, SPIOut uint32
	State         string
}

// nameTable is the last VICI listing, indexed.
type nameTable struct {
	sync.Mutex
	known    bool // a VICI listing is current
	children []Child
	in, out  map[uint32]int // SPI -> index in children
	reqid    map[uint32]int // reqid -> the newest CHILD_SA's index
}

// SetChildren replaces charon's names with a full listing (known false:
// VICI unreachable, every name forgotten).
func (e *Engine) SetChildren(known bool, cs []Child) {
	t := &e.names
	t.Lock()
	defer t.Unlock()
	t.known = known
	t.children = append([]Child(nil), cs...)
	t.in, t.out, t.reqid = make(map[uint32]int), make(map[uint32]int), make(map[uint32]int)
	for i, c := range t.children {
		if c.SPIIn != 0 {
			t.in[c.SPIIn] = i
		}
		if c.SPIOut != 0 {
			t.out[c.SPIOut] = i
		}
		if j, ok := t.reqid[c.Reqid]; !ok || c.ChildID > t.children[j].ChildID {
			t.reqid[c.Reqid] = i
		}
	}
}

// Children returns the last listing and whether VICI is connected.
func (e *Engine) Children() ([]Child, bool) {
	t := &e.names
	t.Lock()
	defer t.Unlock()
	return append([]Child(nil), t.children...), t.known
}

// NamesOfSA returns the names of the CHILD_SA that sa belongs to.
func (e *Engine) NamesOfSA(sa *model.SA) (Names, bool) {
	t := &e.names
	t.Lock()
	defer t.Unlock()
	idx := t.out
	if sa.Inbound {
		idx = t.in
	}
	i, ok := idx[sa.SPI]
	if !ok || t.children[i].Reqid != sa.Reqid && t.children[i].Reqid != 0 {
		return Names{}, false
	}
	return t.children[i].Names, true
}

// NamesOfReqid returns the names of the newest CHILD_SA with reqid (a
// policy's).
func (e *Engine) NamesOfReqid(reqid uint32) (Names, bool) {
	t := &e.names
	t.Lock()
	defer t.Unlock()
	i, ok := t.reqid[reqid]
	if !ok || reqid == 0 {
		return Names{}, false
	}
	return t.children[i].Names, true
}
