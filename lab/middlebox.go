package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
)

// middlebox sets up the router of Options.Middlebox: proxy ARP on both of
// its links (the gateway and the peer stay in one subnet, WANNet), a host
// route to the peer out of Far, and nftables counters of the fragments it
// forwards, each way, of those it drops (m.DropFrags percent) and of the
// ICMP "fragmentation needed" it sends.
func (l *Lab) middlebox(ctx context.Context, m *Middlebox) error {
	h := l.Host(m.Host)
	for _, ifc := range []string{m.Near, m.Far} {
		for k, v := range map[string]string{
			"net.ipv4.conf." + ifc + ".proxy_arp": "1",
			"net.ipv4.conf." + ifc + ".rp_filter": "0",
			// answer at once, not after up to 0.8 s
			"net.ipv4.neigh." + ifc + ".proxy_delay": "0",
		} {
			if err := h.Sysctl(ctx, k, v); err != nil {
				return fmt.Errorf("middlebox: %w", err)
			}
		}
	}
	if _, err := h.Exec(ctx, "ip", "route", "add", PRWanAddr+"/32", "dev", m.Far, "src", m.Addr.String()); err != nil {
		return fmt.Errorf("middlebox: %w", err)
	}
	drop := ""
	if m.DropFrags > 0 {
		drop = fmt.Sprintf("\t\tip frag-off & 0x3fff != 0 numgen random mod 100 < %d counter name \"dropped\" drop\n", m.DropFrags)
	}
	rules := fmt.Sprintf(`flush ruleset
table ip mb {
	counter near { }
	counter far { }
	counter dropped { }
	counter fragneeded { }
	chain forward {
		type filter hook forward priority filter; policy accept;
		ip frag-off & 0x3fff != 0 iifname %q counter name "near"
		ip frag-off & 0x3fff != 0 iifname %q counter name "far"
%s	}
	chain output {
		type filter hook output priority filter; policy accept;
		icmp type destination-unreachable icmp code frag-needed counter name "fragneeded"
	}
}
`, m.Near, m.Far, drop)
	path := filepath.Join(l.dir, "middlebox.nft")
	if err := os.WriteFile(path, []byte(rules), 0o644); err != nil {
		return fmt.Errorf("middlebox: %w", err)
	}
	if _, err := h.Exec(ctx, "nft", "-f", path); err != nil {
		return fmt.Errorf("middlebox: %w", err)
	}
	return nil
}

// MiddleboxCounts are the middlebox's nftables counters (packets).
type MiddleboxCounts struct {
	FragsNear  uint64 // IPv4 fragments it forwarded or dropped, from the gateway's side
	FragsFar   uint64 // the same from the peer's side
	Dropped    uint64 // fragments dropped (MiddleboxOptions.DropFrags)
	FragNeeded uint64 // ICMP "fragmentation needed" it sent
}

func (c MiddleboxCounts) String() string {
	return fmt.Sprintf("fragments from the gateway's side %d, from the peer's side %d, dropped %d; ICMP fragmentation needed sent %d",
		c.FragsNear, c.FragsFar, c.Dropped, c.FragNeeded)
}

var nftPackets = regexp.MustCompile(`packets (\d+) bytes \d+`)

// MiddleboxCounts reads the middlebox's counters.
func (l *Lab) MiddleboxCounts(ctx context.Context) (MiddleboxCounts, error) {
	m := l.topo.Middlebox
	if m == nil {
		return MiddleboxCounts{}, errors.New("middlebox counts: the lab has no middlebox")
	}
	var c MiddleboxCounts
	for name, to := range map[string]*uint64{"near": &c.FragsNear, "far": &c.FragsFar, "dropped": &c.Dropped, "fragneeded": &c.FragNeeded} {
		out, err := l.Host(m.Host).Exec(ctx, "nft", "list", "counter", "ip", "mb", name)
		if err != nil {
			return c, fmt.Errorf("middlebox counts: %w", err)
		}
		sm := nftPackets.FindStringSubmatch(out)
		if sm == nil {
			return c, fmt.Errorf("middlebox counts: counter %s: no packets in %q", name, out)
		}
		if *to, err = strconv.ParseUint(sm[1], 10, 64); err != nil {
			return c, fmt.Errorf("middlebox counts: counter %s: %w", name, err)
		}
	}
	return c, nil
}

// Middlebox says whether the lab has a middlebox (Options.Middlebox).
func (l *Lab) Middlebox() bool { return l.topo.Middlebox != nil }

// Sub is c less an earlier reading.
func (c MiddleboxCounts) Sub(before MiddleboxCounts) MiddleboxCounts {
	return MiddleboxCounts{FragsNear: c.FragsNear - before.FragsNear, FragsFar: c.FragsFar - before.FragsFar,
		Dropped: c.Dropped - before.Dropped, FragNeeded: c.FragNeeded - before.FragNeeded}
}
