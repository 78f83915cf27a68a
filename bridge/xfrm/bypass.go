package xfrm

import (
	"github.com/vishvananda/netlink/nl"
)

// Bypass policies: the kernel must never encrypt with a key the fast path
// also uses (two encryptors of one AES-GCM key reuse IVs). The fast path's
// ports are not the kernel's, so the kernel never sees their ESP; what is
// left is traffic the gateway itself originates (or receives, decrypted by
// the fast path and handed to the kernel through the TAP) for a protected
// selector. For every mirrored IPsec policy swanpathd installs, in the same
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
