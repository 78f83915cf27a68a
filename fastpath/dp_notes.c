/*
 * Notes from the workers to Go (struct sp_note in dp.h): a ring per
 * worker, single producer, single consumer, lossy when full.
 */
#include "dp_priv.h"

/* The next free note of w's ring, cleared, of kind and family; NULL when
 * the ring is full (Go is behind; the next packet notes it again). */
static struct sp_note *
note_get(struct sp_worker *w, enum sp_note_kind kind, uint8_t family)
{
	uint32_t h = w->note_head;
	struct sp_note *n;

	if (h - __atomic_load_n(&w->note_tail, __ATOMIC_ACQUIRE) >= SP_NOTE_RING)
		return NULL;
	n = &w->note[h % SP_NOTE_RING];
	memset(n, 0, sizeof(*n));
	n->kind = kind;
	n->family = family;
	return n;
}

/* Copy an address of family into a note's a or d. */
static inline void
note_addr(uint8_t *to, uint8_t family, const void *addr)
{
	memcpy(to, addr, family == 6 ? 16 : 4);
}

/* The note got last is Go's now. */
static inline void
note_put(struct sp_worker *w)
{
	__atomic_store_n(&w->note_head, w->note_head + 1, __ATOMIC_RELEASE);
}

/* A next hop (network order) on port without neighbour entry. */
void
sp_note_miss(struct sp_worker *w, uint32_t port, uint8_t family, const void *nh)
{
	struct sp_note *n = note_get(w, SP_NOTE_MISS, family);

	if (n == NULL)
		return;
	n->u.miss.port = port;
	note_addr(n->a, family, nh);
	note_put(w);
}

/* A packet from src to dst (network order) for a policy without SA. */
void
sp_note_acquire(struct sp_worker *w, uint32_t reqid, uint8_t family, const void *src,
	const void *dst)
{
	struct sp_note *n = note_get(w, SP_NOTE_ACQUIRE, family);

	if (n == NULL)
		return;
	n->u.acquire.reqid = reqid;
	note_addr(n->a, family, src);
	note_addr(n->d, family, dst);
	note_put(w);
}

/* Authenticated ESP-in-UDP of inbound SA spi from a new address src
 * (network order) or port sport (host order). */
void
sp_note_mapping(struct sp_worker *w, uint32_t spi, uint8_t family, const void *src, uint16_t sport)
{
	struct sp_note *n = note_get(w, SP_NOTE_MAPPING, family);

	if (n == NULL)
		return;
	n->u.mapping.spi = spi;
	n->u.mapping.sport = sport;
	note_addr(n->a, family, src);
	note_put(w);
}

/* Go takes the notes of worker wid (single consumer per ring). */
uint32_t
sp_note_pop(struct sp_dp *dp, uint32_t wid, struct sp_note *out, uint32_t max)
{
	struct sp_worker *w = &dp->w[wid];
	uint32_t t = w->note_tail, h = __atomic_load_n(&w->note_head, __ATOMIC_ACQUIRE);
	uint32_t n = 0;

	while (t != h && n < max)
		out[n++] = w->note[t++ % SP_NOTE_RING];
	__atomic_store_n(&w->note_tail, t, __ATOMIC_RELEASE);
	return n;
}
