/*
 * Cold path: the closed gate (see struct sp_dp's closed in dp.h). While
 * closed, only what the gateway needs to negotiate passes.
 */
#include "dp_priv.h"
#include "dp_parse.h"
#include "dp_own.h"

/*
 * Closed (see dp.h): does frame m, from the wire or the TAP, pass? ARP,
 * neighbour discovery and the gateway's own IKE: what it needs to
 * negotiate. Fragments and ESP-in-UDP do not.
 */
static int
gate_pass(const struct sp_ctx *c, const struct rte_mbuf *m, int from_wire)
{
	const struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, const struct rte_ether_hdr *);
	struct sp_pkt k;

	if (rte_pktmbuf_data_len(m) < ETH_HLEN)
		return 0;
	if (eh->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP))
		return 1;
	if (!is_ip(m) || ip_parse(m, ETH_HLEN, &k) != 0)
		return 0;
	return bypass(c, rte_pktmbuf_mtod_offset(m, const uint8_t *, ETH_HLEN), &k, from_wire);
}

/* A burst from the wire side (from_wire) or the TAP of port p while
 * closed: what gate_pass lets through goes to the other side unchanged,
 * the rest is dropped (drop_closed). */
void
sp_closed_burst(struct sp_ctx *c, uint32_t p, struct rte_mbuf **mb, uint16_t n, int from_wire)
{
	uint16_t i;

	c->w->stats[p].cnt[from_wire ? SP_CNT_RX : SP_CNT_TAP_RX] += n;
	for (i = 0; i < n; i++) {
		struct rte_mbuf *m = mb[i];

		*RXT(m) = c->now;
		if (!gate_pass(c, m, from_wire))
			drop(c, p, m, SP_CNT_DROP_CLOSED);
		else if (from_wire)
			to_tap(c, p, m);
		else
			txq_put(c, &c->wire[p], p, m);
	}
}
