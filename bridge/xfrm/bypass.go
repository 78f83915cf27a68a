package xfrm

import (
	"fmt"

	"github.com/vishvananda/netlink/nl"
)

// Bypass policies: the kernel must never encrypt with a key the fast path
// also uses (two encryptors of one AES-GCM key reuse IVs). The fast path's
// ports are not the kernel's, so the kernel never sees their ESP; what is
// left is traffic the gateway itself originates (or receives, decrypted by
// the fast path and handed to the kernel through the TAP) for a protected
// selector. For every mirrored IPsec policy swanpathd installs (now only as
// the fallback of the global pairs below), in the same
// direction and with the same selector, policies that let that traffic
// pass in clear (action allow, no template): out, it then leaves by its
// route into the TAP, where the fast path applies the mirrored policy;
// in, the kernel accepts what the fast path decrypted.
//
// XFRM keys a policy by type, selector, direction, mark and if_id, not by
// priority: a policy with the daemon's own selector and mark would replace
// the daemon's. So swanpathd's pair differs by mark: value 0 and value 1
// under mask 1. Together they match every packet whatever its mark, and
// neither can be a policy the IKE daemon installs (swanpathd refuses
// marked policies anyway). Their priority is one better (lower) than the
// daemon's policy, so they win for exactly its traffic.
//
// They are swanpathd's own: never mirrored (toPolicy), removed with the
// mirrored policy, and the initial dump removes any left from an earlier
// run that no mirrored policy wants. They are left in place when swanpathd
// stops: the kernel then sends the protected traffic into a TAP that is
// gone (fail closed), instead of encrypting it with the fast path's keys
// (the kernel's sequence numbers lag what the fast path sent).

const bypassMarkMask = 1

// Global bypass policies. The per-policy pair above is installed when the
// mirror sees the daemon's policy, a moment after the kernel has it: in
// that moment the kernel encrypts with its copy of the SA (sequence
// numbers from 1) what the fast path does not yet protect — found by the
// libreswan end-to-end test as ESP sequence numbers sent twice on one SA.
// So swanpathd also holds, for each family and direction, a pair that
// matches every packet at priority 0, the best there is: the kernel then
// never applies an IPsec policy of its own at all, from the first
// moment, and the fast path is the only encryptor.

// The per-policy pairs are a fallback for when the global pairs are not
// in (a flush took them and installing them again failed): with the
// global pairs in, a daemon's policy gets no pair of its own. A pair of
// its own breaks the daemon's XFRM_MSG_MIGRATE (libreswan's MOBIKE): the
// kernel migrates the first policy of the selector and direction by
// priority, whatever its mark (xfrm_migrate_policy_find), which would be
// swanpathd's pair, one priority better and without a template, and
// answers the daemon ENODATA (found by TestXFRMMirrorMigrate). Kernels
// that look the policy to migrate up as a packet would be (newer than 6.1:
// xfrm_migrate_policy_find by xfrm_policy_lookup_bytype) find the global
// pair itself: MIGRATE fails there still (README, known gap).

// installGlobals installs the global pairs not yet in.
func (m *Mirror) installGlobals(conn Conn) error {
	for _, k := range globalBypasses() {
		if p, ok := m.bypass[k]; ok && p == 0 {
			continue
		}
		if err := conn.Do(nl.XFRM_MSG_UPDPOLICY, 0, bypassAdd(k, 0)); err != nil {
			return fmt.Errorf("installing the global bypass policies (the kernel could encrypt with the fast path's keys): %w", err)
		}
		m.bypass[k] = 0
	}
	return nil
}

// globalsIn says whether every global pair is installed.
func (m *Mirror) globalsIn() bool {
	for _, k := range globalBypasses() {
		if p, ok := m.bypass[k]; !ok || p != 0 {
			return false
		}
	}
	return true
}

// globalBypasses are the pairs for every packet of each family and
// direction (in, out, fwd).
func globalBypasses() []bypassKey {
	var ks []bypassKey
	for _, fam := range []uint16{nl.FAMILY_V4, nl.FAMILY_V6} {
		for dir := uint8(0); dir <= 2; dir++ {
			for mark := uint32(0); mark <= 1; mark++ {
				ks = append(ks, bypassKey{sel: nl.XfrmSelector{Family: fam}, dir: dir, mark: mark})
			}
		}
	}
	return ks
}

// isGlobal says whether k is one of the global pairs.
func isGlobal(k bypassKey) bool {
	return k.sel == nl.XfrmSelector{Family: k.sel.Family} && k.dir <= 2 &&
		(k.sel.Family == nl.FAMILY_V4 || k.sel.Family == nl.FAMILY_V6)
}

// bypassKey identifies one of swanpathd's bypass policies.
type bypassKey struct {
	sel  nl.XfrmSelector
	dir  uint8
	mark uint32 // 0 or 1, under bypassMarkMask
}

// isBypass says whether p is one of swanpathd's bypass policies.
func isBypass(p *kpolicy) bool {
	return p.markMask == bypassMarkMask && p.mark <= 1 && p.info.Action == xfrmPolicyAllow &&
		len(p.tmpls) == 0 && p.ifID == 0
}

// bypassesFor returns the bypass policies a mirrored IPsec policy wants.
func bypassesFor(p *kpolicy) []bypassKey {
	sel := p.info.Sel
	return []bypassKey{{sel: sel, dir: p.info.Dir, mark: 0}, {sel: sel, dir: p.info.Dir, mark: 1}}
}

// bypassPriority is one better than the daemon's policy.
func bypassPriority(prio uint32) uint32 {
	if prio == 0 {
		return 0
	}
	return prio - 1
}
