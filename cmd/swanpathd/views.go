package main

import (
	"fmt"
	"time"

	"github.com/swanpath/swanpath/bridge/ctl"
	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/engine"
	"github.com/swanpath/swanpath/bridge/model"
)

// views renders the engine's state for swanpathctl.
type views struct {
	eng   *engine.Engine
	dp    dataplane.Dataplane
	rates *rates // nil: no rates
	// ifcs are the route-based interfaces ([[interface]]), to name
	// the one of a route-based SA or policy
	ifcs []interfaceConf
}

// routeBased is the interface ([[interface]] name) and the XFRM interface
// id and mark of a route-based SA or policy, as the fast path binds them
// (if_id first, else a whole mark); "" for a policy-based one.
func (v *views) routeBased(mark, mask, ifID uint32) (name string, id uint32, markStr string) {
	if mark != 0 || mask != 0 {
		markStr = fmt.Sprintf("0x%x/0x%x", mark, mask)
	}
	for _, ifc := range v.ifcs {
		if (ifID != 0 && ifc.IfID == ifID) || (ifID == 0 && mark != 0 && mask == 0xffffffff && ifc.Mark == mark) {
			return ifc.Name, ifID, markStr
		}
	}
	return "", ifID, markStr
}

func (v *views) SAs() []ctl.SA {
	var out []ctl.SA
	for _, s := range v.eng.ListSAs() {
		row := ctl.SA{
			SPI: fmt.Sprintf("0x%08x", s.SPI), Dir: s.Direction(),
			Src: s.Src.String(), Dst: s.Dst.String(), Proto: "esp", Mode: s.Mode.String(),
			Reqid: s.Reqid, Encap: s.Encap, ReplayWindow: s.ReplayWindow, ESN: s.ESN,
			Crypto: s.Crypto, CryptoMode: s.CryptoMode, KeyBits: s.KeyBits, Bytes: s.Bytes, Packets: s.Packets,
			DropAuth: s.DropAuth, DropReplay: s.DropReplay, DropMalform: s.DropMalformed,
			DropPolicy: s.DropPolicy, PathMTU: s.PathMTU, Names: ctl.Names{Conn: s.Conn, Child: s.Child},
		}
		if n, ok := v.eng.NamesOfSA(&s.SA); ok {
			row.Names = ctl.Names(n)
		}
		if s.Encap {
			row.SrcPort, row.DstPort = s.SrcPort, s.DstPort
		}
		row.Interface, row.IfID, row.Mark = v.routeBased(s.Mark, s.MarkMask, s.IfID)
		if row.Interface == "" {
			row.Interface = s.Interface // through its policies (libreswan's VTI)
		}
		row.Aead, row.Enc, row.Auth, row.ICVBits = suiteNames(s.EncAlg, s.IntAlg)
		if !s.LastUse.IsZero() {
			row.LastUse = s.LastUse.UTC().Format(time.RFC3339)
		}
		out = append(out, row)
	}
	return out
}

// suiteNames are an SA's algorithms as ip xfrm state names them (the
// suite table's XFRM names), the AEAD's or the integrity's ICV in bits.
func suiteNames(encAlg, intAlg uint16) (aead, enc, auth string, icvBits int) {
	e, _ := model.LookupEncr(encAlg)
	name := e.XFRM
	if name == "" {
		name = fmt.Sprintf("transform-%d", encAlg)
	}
	if e.AEAD() {
		return name, "", "", e.ICV * 8
	}
	if a, ok := model.LookupInteg(intAlg); ok && a.XFRM != "" {
		return "", name, a.XFRM, a.ICV * 8
	}
	return "", name, "", 0
}

func portRange(lo, hi uint16) string {
	if lo == 0 && (hi == 0 || hi == 0xffff) {
		return ""
	}
	if lo == hi {
		return fmt.Sprint(lo)
	}
	return fmt.Sprintf("%d-%d", lo, hi)
}

func (v *views) Policies() []ctl.Policy {
	var out []ctl.Policy
	for _, p := range v.eng.ListPolicies() {
		row := ctl.Policy{
			Src: p.Sel.Src.String(), Dst: p.Sel.Dst.String(), Proto: p.Sel.Proto,
			Sport: portRange(p.Sel.SrcPortLo, p.Sel.SrcPortHi), Dport: portRange(p.Sel.DstPortLo, p.Sel.DstPortHi),
			Dir: p.Dir.String(), Action: p.Action.String(), Priority: p.Priority,
			Reqid: p.Reqid, Mode: p.Mode.String(), Refs: p.Refs,
		}
		if p.TmplSrc.IsValid() {
			row.TmplSrc = p.TmplSrc.String()
		}
		if p.TmplDst.IsValid() {
			row.TmplDst = p.TmplDst.String()
		}
		if p.SPI != 0 {
			row.SPI = fmt.Sprintf("0x%08x", p.SPI)
		}
		if n, ok := v.eng.NamesOfReqid(p.Reqid); ok {
			row.Conn, row.Child, row.ChildID, row.IKEID = n.Conn, n.Child, n.ChildID, n.IKEID
		}
		out = append(out, row)
	}
	return out
}

func (v *views) Stats() ctl.Stats {
	var st ctl.Stats
	stats := v.dp.PortStats()
	for i, p := range v.dp.Ports() {
		row := ctl.Port{Name: p.Name, Device: p.Device, Tap: p.Tap, MAC: p.MAC.String()}
		if i < len(stats) {
			row.Counters = stats[i].Counters
		}
		st.Ports = append(st.Ports, row)
	}
	// the route-based interfaces' counters follow the ports'
	for i := len(v.dp.Ports()); i < len(stats); i++ {
		st.Ports = append(st.Ports, ctl.Port{Name: stats[i].Name, Device: "net_tun (route-based)", Tap: stats[i].Name,
			Counters: stats[i].Counters})
	}
	if src, ok := v.dp.(interface{ Latency() dataplane.Latency }); ok {
		st.Latency = ctl.NewLatency(src.Latency())
	}
	return st
}
