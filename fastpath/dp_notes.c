/*
 * Notes from the workers to Go (struct sp_note in dp.h): a ring per
 * worker, single producer, single consumer, lossy when full.
 */
#include "dp_priv.h"

void
sp_note_push(struct sp_worker *w, uint32_t kind, uint32_t port, uint8_t family,
	const void *a, const void *d, uint32_t b)
{
	uint32_t h = w->note_head;
	uint32_t alen = family == 6 ? 16 : 4;
	struct sp_note *n;

	if (h - __atomic_load_n(&w->note_tail, __ATOMIC_ACQUIRE) >= SP_NOTE_RING)
		return;	/* Go is behind; the next packet notes it again */
	n = &w->note[h % SP_NOTE_RING];
	memset(n, 0, sizeof(*n));
	n->kind = kind;
	n->port = port;
	n->family = family;
	n->b = b;
	if (a != NULL)
		memcpy(n->a, a, alen);
	if (d != NULL)
		memcpy(n->d, d, alen);
	__atomic_store_n(&w->note_head, h + 1, __ATOMIC_RELEASE);
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
