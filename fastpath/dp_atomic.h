/* Atomic accessors the Go side uses on the loop's shared state (an SA's
 * dead bits, a policy's SA slot): cgo cannot express C11 atomics. */
#ifndef SP_DP_ATOMIC_H
#define SP_DP_ATOMIC_H

#include "dp.h"

static inline void sp_sa_kill(struct sp_sa *sa) { __atomic_fetch_or(&sa->dead, SP_SA_EXPIRED, __ATOMIC_RELAXED); }
static inline void sp_sa_block(struct sp_sa *sa) { __atomic_fetch_or(&sa->dead, SP_SA_BLOCKED, __ATOMIC_RELAXED); }
static inline uint8_t sp_sa_dead(struct sp_sa *sa) { return __atomic_load_n(&sa->dead, __ATOMIC_RELAXED); }
static inline uint16_t sp_sa_mtu(struct sp_sa *sa) { return __atomic_load_n(&sa->mtu, __ATOMIC_RELAXED); }
static inline void sp_sa_set_dead(struct sp_sa *sa, uint8_t v) { __atomic_store_n(&sa->dead, v, __ATOMIC_RELAXED); }
static inline void sp_slot_set(struct sp_sa **slot, struct sp_sa *sa) { __atomic_store_n(slot, sa, __ATOMIC_RELEASE); }
static inline struct sp_sa *sp_slot_get(struct sp_sa **slot) { return __atomic_load_n(slot, __ATOMIC_ACQUIRE); }

static inline struct sp_fib *sp_fib_published(struct sp_dp *dp) { return __atomic_load_n(&dp->fib, __ATOMIC_ACQUIRE); }

/* An inbound SA follows a route-based interface (1 + its index) or none
 * (0): ifc_inbound reads inbound, then ifc, and drops when ifc names no
 * interface, so the order of the two stores keeps every packet on a path
 * that exists. */
static inline void sp_sa_set_ifc(struct sp_sa *sa, uint8_t ifc)
{
	if (ifc != 0) {
		__atomic_store_n(&sa->ifc, ifc, __ATOMIC_RELAXED);
		__atomic_store_n(&sa->inbound, SP_SA_IN_IFC, __ATOMIC_RELEASE);
	} else {
		__atomic_store_n(&sa->inbound, SP_SA_IN, __ATOMIC_RELEASE);
		__atomic_store_n(&sa->ifc, 0, __ATOMIC_RELAXED);
	}
}

#endif
