package lab

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/strongswan/govici/vici"
)

// IKESA is one IKE_SA as listed by VICI list-sas.
type IKESA struct {
	Name       string // connection name
	UniqueID   string
	State      string // e.g. ESTABLISHED, CONNECTING
	LocalHost  string
	LocalPort  string
	RemoteHost string
	RemotePort string
	NATAny     bool // any NAT detected (or faked, as kernel-libipsec does)
	Children   []ChildSA
}

// ChildSA is one CHILD_SA of an IKE_SA. SPIs are hex as charon prints them.
type ChildSA struct {
	Name       string
	UniqueID   string
	ReqID      string
	State      string // e.g. INSTALLED, REKEYED
	Mode       string
	Protocol   string
	Encap      bool // ESP in UDP
	SPIIn      string
	SPIOut     string
	EncrAlg    string
	EncrKey    string
	BytesIn    uint64
	PacketsIn  uint64
	BytesOut   uint64
	PacketsOut uint64
	LocalTS    []string
	RemoteTS   []string
}

// ListSAs returns the IKE_SAs and their CHILD_SAs, sorted by name.
func (c *Charon) ListSAs(ctx context.Context) ([]IKESA, error) {
	s, err := c.session()
	if err != nil {
		return nil, fmt.Errorf("list-sas %s: %w", c.host, err)
	}
	defer s.Close()
	var out []IKESA
	for m, err := range s.CallStreaming(ctx, "list-sas", "list-sa", nil) {
		if err != nil {
			return nil, fmt.Errorf("list-sas %s: %w", c.host, err)
		}
		for _, name := range m.Keys() {
			ike, ok := m.Get(name).(*vici.Message)
			if !ok {
				continue
			}
			out = append(out, parseIKESA(name, ike))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func parseIKESA(name string, m *vici.Message) IKESA {
	sa := IKESA{
		Name:       name,
		UniqueID:   str(m, "uniqueid"),
		State:      str(m, "state"),
		LocalHost:  str(m, "local-host"),
		LocalPort:  str(m, "local-port"),
		RemoteHost: str(m, "remote-host"),
		RemotePort: str(m, "remote-port"),
		NATAny:     str(m, "nat-any") == "yes",
	}
	children, _ := m.Get("child-sas").(*vici.Message)
	if children == nil {
		return sa
	}
	for _, k := range children.Keys() {
		cm, ok := children.Get(k).(*vici.Message)
		if !ok {
			continue
		}
		sa.Children = append(sa.Children, ChildSA{
			Name:       str(cm, "name"),
			UniqueID:   str(cm, "uniqueid"),
			ReqID:      str(cm, "reqid"),
			State:      str(cm, "state"),
			Mode:       str(cm, "mode"),
			Protocol:   str(cm, "protocol"),
			Encap:      str(cm, "encap") == "yes",
			SPIIn:      str(cm, "spi-in"),
			SPIOut:     str(cm, "spi-out"),
			EncrAlg:    str(cm, "encr-alg"),
			EncrKey:    str(cm, "encr-keysize"),
			BytesIn:    num(cm, "bytes-in"),
			PacketsIn:  num(cm, "packets-in"),
			BytesOut:   num(cm, "bytes-out"),
			PacketsOut: num(cm, "packets-out"),
			LocalTS:    list(cm, "local-ts"),
			RemoteTS:   list(cm, "remote-ts"),
		})
	}
	return sa
}

func str(m *vici.Message, k string) string {
	s, _ := m.Get(k).(string)
	return s
}

func num(m *vici.Message, k string) uint64 {
	n, _ := strconv.ParseUint(str(m, k), 10, 64)
	return n
}

func list(m *vici.Message, k string) []string {
	l, _ := m.Get(k).([]string)
	return l
}

// Child finds the installed CHILD_SA named child under an established
// IKE_SA. ok is false when there is none.
func Child(sas []IKESA, child string) (ike IKESA, c ChildSA, ok bool) {
	for _, ike := range sas {
		if ike.State != "ESTABLISHED" {
			continue
		}
		for _, c := range ike.Children {
			if c.Name == child && c.State == "INSTALLED" {
				return ike, c, true
			}
		}
	}
	return IKESA{}, ChildSA{}, false
}

// WaitEstablished polls until CHILD_SA child is INSTALLED under an
// ESTABLISHED IKE_SA, or ctx ends.
func (c *Charon) WaitEstablished(ctx context.Context, child string) (ChildSA, error) {
	var found ChildSA
	err := Poll(ctx, child+" established", 100*time.Millisecond, func() (bool, error) {
		select {
		case <-c.proc.Done():
			return false, fmt.Errorf("charon exited: %v", c.proc.err)
		default:
		}
		sas, err := c.ListSAs(ctx)
		if err != nil {
			return false, err
		}
		_, ch, ok := Child(sas, child)
		found = ch
		if !ok {
			return false, fmt.Errorf("not established: %s", summarize(sas))
		}
		return true, nil
	})
	if err != nil {
		return ChildSA{}, fmt.Errorf("wait for %s in %s: %w", child, c.host, err)
	}
	return found, nil
}

func summarize(sas []IKESA) string {
	if len(sas) == 0 {
		return "no IKE_SA"
	}
	var parts []string
	for _, ike := range sas {
		p := ike.Name + "=" + ike.State
		for _, c := range ike.Children {
			p += " " + c.Name + "=" + c.State
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "; ")
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
