/*
 * Cold path: packets whose next hop has no neighbour entry yet, held per
 * worker (SP_HOLD of them, SP_HOLD_MS at most) until the mirror publishes
 * one, as the kernel queues packets on an unresolved neighbour.
 */
#include "dp_priv.h"

/*
 * No neighbour entry for the next hop yet (the mirror asked the kernel to
 * resolve it): hold the packet (data at its IP header) for a moment, as the
 * kernel queues packets on an unresolved neighbour; drop it when the hold
 * is full.
 */
void
sp_hold(struct sp_ctx *c, uint32_t in_port, uint32_t out_port, struct rte_mbuf *m, uint64_t since)
{
	if (c->nheld == SP_HOLD) {
		drop(c, out_port, m, SP_CNT_DROP_NO_NEIGH);
		return;
	}
	rte_pktmbuf_adj(m, ETH_HLEN);
	c->held[c->nheld].m = m;
	c->held[c->nheld].since = since;
	c->held[c->nheld].in_port = in_port;
	c->held[c->nheld].out_port = out_port;
	c->nheld++;
	c->held_fib = c->f;
	c->held_try = c->now;
}

/*
 * The held packets: when the FIB has changed since they missed (or a
 * millisecond has passed: a new FIB may sit where the old one was), route
 * them again (their TTL is already down); past SP_HOLD_MS they are dropped.
 */
void
sp_held_retry(struct sp_ctx *c)
{
	struct sp_held h[SP_HOLD];
	uint16_t n = c->nheld, i;

	if (c->f == c->held_fib && c->now - c->held_try < c->retry_tsc) {
		/* nothing new: only the expired ones go */
		for (i = 0; i < n; i++) {
			if (c->now - c->held[i].since > c->hold_tsc) {
				drop(c, c->held[i].out_port, c->held[i].m, SP_CNT_DROP_NO_NEIGH);
				c->held[i] = c->held[--n];
				i--;
			}
		}
		c->nheld = n;
		return;
	}
	memcpy(h, c->held, n * sizeof(h[0]));
	c->nheld = 0;
	for (i = 0; i < n; i++) {
		if (c->now - h[i].since > c->hold_tsc)
			drop(c, h[i].out_port, h[i].m, SP_CNT_DROP_NO_NEIGH);
		else
			sp_route_out_since(c, h[i].in_port, h[i].m, 0, h[i].since);
	}
	c->held_fib = c->f;
	c->held_try = c->now;
}
