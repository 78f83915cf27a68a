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

#endif
