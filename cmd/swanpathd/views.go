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
}

var encNames = map[uint16]string{
	model.EncrAESGCM8:          "rfc4106(gcm(aes))",
	model.EncrAESGCM12:         "rfc4106(gcm(aes))",
	model.EncrAESGCM16:         "rfc4106(gcm(aes))",
	model.EncrAESCBC:           "cbc(aes)",
	model.EncrAESCTR:           "rfc3686(ctr(aes))",
	model.EncrNull:             "ecb(cipher_null)",
	model.EncrNullAESGMAC:      "rfc4543(gcm(aes))",
	model.EncrChaCha20Poly1305: "rfc7539esp(chacha20,poly1305)",
}

// aeadICV: AEAD (and GMAC) transforms and their ICV bytes.
var aeadICV = map[uint16]int{
	model.EncrAESGCM8: 8, model.EncrAESGCM12: 12, model.EncrAESGCM16: 16,
	model.EncrChaCha20Poly1305: 16, model.EncrNullAESGMAC: 16,
}

var authNames = map[uint16]struct {
	name string
	icv  int
}{
	model.IntegHMACSHA1_96:    {"hmac(sha1)", 12},
	model.IntegHMACSHA256_128: {"hmac(sha256)", 16},
	model.IntegHMACSHA384_192: {"hmac(sha384)", 24},
	model.IntegHMACSHA512_256: {"hmac(sha512)", 32},
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
			DropPolicy: s.DropPolicy, Conn: s.Conn, Child: s.Child,
		}
		if n, ok := v.eng.NamesOfSA(&s.SA); ok {
			row.Conn, row.Child, row.ChildID, row.IKEID, row.RemoteID, row.Remote = n.Conn, n.Child, n.ChildID, n.IKEID, n.RemoteID, n.Remote
		}
		if s.Encap {
			row.SrcPort, row.DstPort = s.SrcPort, s.DstPort
		}
		name := encNames[s.EncAlg]
		if name == "" {
			name = fmt.Sprintf("transform-%d", s.EncAlg)
		}
		if icv, aead := aeadICV[s.EncAlg]; aead {
			row.Aead, row.ICVBits = name, icv*8
		} else {
			row.Enc = name
			if a, ok := authNames[s.IntAlg]; ok {
				row.Auth, row.ICVBits = a.name, a.icv*8
			}
		}
		if !s.LastUse.IsZero() {
			row.LastUse = s.LastUse.UTC().Format(time.RFC3339)
		}
		out = append(out, row)
	}
	return out
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
	if src, ok := v.dp.(interface{ Latency() dataplane.Latency }); ok {
		st.Latency = ctl.NewLatency(src.Latency())
	}
	return st
}
