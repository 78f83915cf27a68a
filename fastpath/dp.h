/*
 * swanpath fast path: the C half. Go owns lifecycle and builds the tables;
 * this code runs the per-packet loop on a worker lcore and reads the tables
 * through pointers that Go publishes atomically (sp_publish_*) and frees
 * only after the worker has passed a quiescent state (rte_rcu_qsbr).
 *
 * Go uses these structs and enums through cgo (C.struct_sp_sa_params ...),
 * not through hand-written mirrors. What Go relies on beyond cgo's own
 * view is listed in fastpath/contract.go and checked, without EAL, by
 * fastpath/contract_test.go: every field of the structs Go fills or reads
 * at the same offset in cgo's view as in the C compiler's, the counter
 * names, the enum values Go maps its own to, and the notes' union read
 * back by Go as the worker writes it.
 *
 * Files: dp.h (this, shared with Go), dp_priv.h (the worker's private
 * declarations), dp_worker.c (the worker's translation unit, with its
 * stages in dp_*.h), the cold paths (dp_icmp.c, dp_hold.c, dp_gate.c,
 * dp_notes.c, dp_frag.c), set-up (dp_dev.c, dp_sa.c, dp_tables.c).
 */
#ifndef SP_DP_H
#define SP_DP_H

#include <stddef.h>
#include <stdint.h>
#include <rte_config.h>
#include <rte_common.h>
#include <rte_ether.h>
#include <rte_ipsec.h>
#include <rte_ipsec_sad.h>
#include <rte_lpm.h>
#include <rte_lpm6.h>
#include <rte_acl.h>
#include <rte_hash.h>
#include <rte_rcu_qsbr.h>
#include <rte_mempool.h>

#define SP_MAX_PORTS 8
#define SP_MAX_WORKERS 8	/* worker lcores; each has queue w of every port and crypto device */
#define SP_BURST 32

/* Drop and exception reasons, counted per port: X(enum name, the name Go
 * shows). Go's list is dataplane.CounterNames, by position; the contract
 * test (fastpath/contract_test.go) compares the two by name and position,
 * through sp_cnt_names (contract.go). */
#define SP_COUNTERS(X) \
	X(RX, "rx")                             /* frames received from the wire */ \
	X(TX, "tx")                             /* frames sent to the wire */ \
	X(TAP_RX, "tap_rx")                     /* frames the kernel sent through the TAP */ \
	X(TAP_TX, "tap_tx")                     /* frames handed to the kernel */ \
	X(ESP_IN, "esp_in")                     /* ESP packets decrypted */ \
	X(ESP_OUT, "esp_out")                   /* packets encrypted */ \
	X(DROP_UNKNOWN_SPI, "drop_unknown_spi") /* no SA of its SPI (after SP_SPI_HOLD_MS held, see spi_held) */ \
	X(SPI_HELD, "spi_held")                 /* ESP held for an SPI with no SA yet (a rekey's first packets) */ \
	X(DROP_AUTH, "drop_auth")               /* ICV / integrity check failed */ \
	X(DROP_REPLAY, "drop_replay") \
	X(DROP_MALFORMED, "drop_malformed")     /* bad lengths, bad padding, truncated */ \
	X(DROP_POLICY, "drop_policy")           /* inbound policy mismatch, drop policy */ \
	X(DROP_NO_NEIGH, "drop_no_neigh") \
	X(DROP_NO_ROUTE, "drop_no_route") \
	X(DROP_NO_SA, "drop_no_sa")             /* policy matched but no SA installed yet */ \
	X(DROP_CRYPTO, "drop_crypto")           /* crypto device refused or lost an op */ \
	X(DROP_TX, "drop_tx")                   /* TX queue full */ \
	X(DROP_NOMEM, "drop_nomem")             /* out of crypto ops / mbuf room */ \
	X(DROP_MTU, "drop_mtu")                 /* too big to send, and DF set or no ICMP source */ \
	X(ICMP_MTU, "icmp_mtu")                 /* ICMP "fragmentation needed" sent for a DF packet */ \
	X(DROP_EXPIRED, "drop_expired")         /* SA past its hard lifetime */ \
	X(DROP_CLOSED, "drop_closed")           /* closed: before charon's replay, or no charon and no policy */ \
	X(FRAG_IN, "frag_in")                   /* packets reassembled from fragments */ \
	X(FRAG_OUT, "frag_out")                 /* fragments sent of packets fragmented here */ \
	X(DROP_FRAG, "drop_frag")               /* fragments that could not be reassembled (reasons: frag_*) */ \
	X(DROP_SPOOF, "drop_spoof")             /* plaintext from the wire claiming a protected source */ \
	X(ICMP_LIMITED, "icmp_limited")         /* ICMP errors not sent: rate limit */ \
	X(DROP_SEQ, "drop_seq")                 /* outbound SA without a safe sequence number */ \
	X(PMTU_LEARNED, "pmtu_learned")         /* ICMP about our ESP: an SA's path MTU learned */ \
	X(PMTU_IGNORED, "pmtu_ignored")         /* ICMP "too big" to us not taken: none of our SAs, bogus MTU, rate */ \
	SP_FRAG_COUNTERS(X)

/* Why fragments were dropped (dp_frag.c), each fragment counted once in
 * one of these and in drop_frag, their sum. Kept apart from the list
 * above, and last, so that counters added there merge cleanly. */
#define SP_FRAG_COUNTERS(X) \
	X(FRAG_BAD, "frag_bad")                 /* malformed: no data, non-last not 8-byte aligned, IPv6 fragment header behind other headers */ \
	X(FRAG_OVERSIZE, "frag_oversize")       /* the datagram would exceed 65535 bytes, or not fit one reassembly buffer */ \
	X(FRAG_OVERLAP, "frag_overlap")         /* overlapping, duplicate or inconsistent pieces: the datagram is dropped */ \
	X(FRAG_TOO_MANY, "frag_too_many")       /* more pieces than RTE_LIBRTE_IP_FRAG_MAX_FRAG (8): the datagram is dropped */ \
	X(FRAG_TIMEOUT, "frag_timeout")         /* not whole within the reassembly timeout */ \
	X(FRAG_EVICTED, "frag_evicted")         /* given up early to make room: the table was full or held too many mbufs */ \
	X(FRAG_TABLE_FULL, "frag_table_full")   /* no room for a new datagram even after evicting */

#define SP_CNT_ENUM(e, name) SP_CNT_##e,
enum sp_cnt {
	SP_COUNTERS(SP_CNT_ENUM)
	SP_CNT_MAX
};
#undef SP_CNT_ENUM

struct sp_port_stats {
	uint64_t cnt[SP_CNT_MAX];
} __rte_cache_aligned;

/* Cipher and integrity of an SA, as the fast path names them. */
enum sp_enc {
	SP_ENC_AES_GCM = 1,	/* AEAD, RFC 4106 */
	SP_ENC_CHACHA20_POLY1305,	/* AEAD, RFC 7634 */
	SP_ENC_AES_GMAC,	/* integrity only, RFC 4543 */
	SP_ENC_AES_CBC,		/* RFC 3602 */
	SP_ENC_AES_CTR,		/* RFC 3686 */
	SP_ENC_NULL,		/* RFC 2410 */
};

enum sp_auth {
	SP_AUTH_NONE = 0,
	SP_AUTH_HMAC_SHA1,
	SP_AUTH_HMAC_SHA256,
	SP_AUTH_HMAC_SHA384,
	SP_AUTH_HMAC_SHA512,
};

/* Parameters of one SA, filled by Go. Addresses in network byte order
 * (IPv4 in the first 4 bytes), ports host order, keys raw (salt/nonce split
 * off into salt). */
struct sp_sa_params {
	uint32_t spi;		/* host order */
	uint32_t reqid;
	uint8_t src[16];	/* outer source */
	uint8_t dst[16];
	uint8_t family;		/* of the outer addresses: 4 or 6 */
	uint8_t transport;	/* transport mode (else tunnel) */
	uint16_t sport;		/* NAT-T ports, host order */
	uint16_t dport;
	uint8_t inbound;
	uint8_t encap;
	uint8_t esn;
	uint8_t icv_len;	/* bytes */
	uint32_t replay_window;
	/* outbound: the first sequence number (0 = 1); inbound: the highest
	 * one received before (0 = none), which the replay window starts
	 * above: every number up to it is a replay (see dp_sa.c) */
	uint64_t seq_start;
	uint64_t hard_packets;	/* 0 = no limit */
	uint64_t hard_bytes;
	uint32_t salt;		/* as on the wire (network order bytes) */
	uint8_t enc;		/* enum sp_enc */
	uint8_t auth;		/* enum sp_auth */
	uint8_t key_len;
	uint8_t auth_key_len;
	uint8_t key[32];
	uint8_t auth_key[64];
	uint8_t n_cdevs;	/* crypto devices to try, in order */
	uint8_t cdevs[8];
	uint8_t sync_crypto;	/* use CPU crypto where the device has it */
	uint8_t multi_worker;	/* more than one worker: atomic sequence numbers */
	uint8_t ifc;		/* route-based: 1 + the index of its interface
				 * (struct sp_dp's ifc ports); 0 = policy-based */
};

/* What every packet of an SA adds to one worker's count. */
struct sp_sa_ctr {
	uint64_t packets;
	uint64_t bytes;
	uint64_t last_use;	/* rte_get_tsc_cycles() of the last packet */
	/* inbound: the highest sequence number authenticated (64-bit with
	 * ESN), from seq_start on; Go checkpoints it, so that after a restart
	 * the replay window starts above it */
	uint64_t seq_max;
};

struct sp_sa_stats {
	struct sp_sa_ctr c;	/* with more than one worker; else in sp_sa.ctr */
	uint64_t drop_auth;
	uint64_t drop_replay;
	uint64_t drop_malformed;
	uint64_t drop_policy;
} __rte_cache_aligned;

/* One SA: rte_ipsec session plus what the loop needs beside it. Lives
 * until Go frees it after a quiescent period.
 *
 * Inbound SAs run rte_ipsec in transport mode whatever their mode: the loop
 * reads the ESP trailer's next header itself, so that one tunnel SA carries
 * IPv4 and IPv6 inside (as XFRM does). A tunnel packet goes to rte_ipsec
 * without its outer headers (taken off before crypto; their length kept in
 * outer_l3_len), so that rte_ipsec has no header to move.
 * Outbound tunnel SAs run rte_ipsec's tunnel mode with next header IPv4 and
 * the loop sets IPv6 in the trailer of IPv6 packets before encryption. */
struct sp_sa {
	struct rte_ipsec_session ss;	/* cache aligned, first (ss.sa: its rte_ipsec state) */
	/* what the loop reads and writes of an SA for every packet, in the
	 * line after ss: with CPU crypto and one worker a cold SA costs these
	 * two lines and its rte_ipsec state (see SP_SA_HOT_END); with more
	 * workers, also the worker's st[w]; lookaside crypto, and IPv6 in an
	 * outbound tunnel, read ss_async too */
	struct sp_sa_ctr ctr;		/* the counts of the only worker; with more
					 * than one, each counts in its st[w].c instead
					 * (no line written by two) */
	uint32_t spi;
	uint32_t reqid;
	uint32_t hdr_sum;		/* outbound IPv4 tunnel: one's complement sum of the
					 * outer header template's 16-bit words, bar
					 * total_length, packet_id and checksum (which are 0) */
	uint16_t mtu;			/* outbound: the path MTU learned from ICMP
					 * (sp_pmtu_learn), SP_MTU_NONE when none; the
					 * loop uses the lower of it and tun_mtu */
	uint16_t esp_fixed;		/* ESP header + IV + ICV */
	uint16_t overhead;		/* outer_len + esp_fixed */
	uint16_t pad_align;		/* ESP payload + trailer padded to this */
	uint16_t peer_port;		/* its NAT-T port (host order), 0 = plain ESP */
	uint8_t cdev_id;
	uint8_t inbound;		/* 0 outbound; SP_SA_IN, or SP_SA_IN_IFC: a
					 * route-based SA, whose plaintext leaves
					 * through its interface (the one flag the
					 * inbound path tests per run of an SA) */
	uint8_t encap;
	uint8_t family;			/* outer: 4 or 6 */
	uint8_t transport;
	uint8_t icv_len;
	uint8_t sqh_len;		/* ESN high bits kept behind the trailer during crypto */
	uint8_t cpu;			/* ss is synchronous: RTE_SECURITY_ACTION_TYPE_CPU_CRYPTO */
	uint8_t limited;		/* hard_packets or hard_bytes is set */
	uint8_t dead;			/* 0, or why it carries nothing: SP_SA_EXPIRED
					 * (hard lifetime over: drop everything,
					 * drop_expired), SP_SA_BLOCKED (outbound, no
					 * sequence number known safe: drop_seq) */
	/* the rest: set-up, hard limits, NAT-T, ICMP errors */
	uint64_t hard_packets;		/* hard limits, 0 = none: nothing passes beyond */
	uint64_t hard_bytes;
	uint64_t lim_packets;		/* what the limits count, shared by the workers */
	uint64_t lim_bytes;
	void *cses;			/* cryptodev sym session */
	uint32_t salt;			/* AEAD salt / CTR nonce, kept for sp_sa_move */
	uint8_t ifc;			/* route-based: 1 + its interface's index */
	uint16_t outer_len;		/* outer IP (+UDP) a tunnel adds */
	uint64_t pmtu_until;		/* TSC when a learned mtu expires (0: none) */
	uint8_t src[16];		/* outer source (network order) */
	uint8_t peer[16];		/* the remote end (network order) */
	struct sp_sa_stats st[SP_MAX_WORKERS];	/* per worker: no shared writes */
	/* an outbound tunnel SA whose ss is synchronous (CPU crypto) needs
	 * this lookaside session of the same rte_ipsec SA for IPv6 inside:
	 * the trailer's next header is set between prepare and crypto */
	struct rte_ipsec_session ss_async;
};

/* struct sp_sa's mtu when no path MTU was learned */
#define SP_MTU_NONE UINT16_MAX

/* struct sp_sa's inbound values */
#define SP_SA_IN 1
#define SP_SA_IN_IFC 2

/* struct sp_sa's dead bits, set and cleared atomically by Go */
#define SP_SA_EXPIRED 1
#define SP_SA_BLOCKED 2

/* The per-packet fields end within the SA's second cache line. */
#define SP_SA_HOT_END (offsetof(struct sp_sa, dead) + 1)
_Static_assert(SP_SA_HOT_END <= 2 * RTE_CACHE_LINE_SIZE,
	"struct sp_sa: the per-packet fields must fit in its first two cache lines");

/* What a policy does with a packet it matches (bridge/model's
 * PolicyAction, mapped by name in fastpath/contract.go). */
enum sp_action {
	SP_ACT_IPSEC = 0,	/* protect (outbound) / must arrive protected (inbound) */
	SP_ACT_PASS = 1,	/* bypass IPsec */
	SP_ACT_DROP = 2,
};

/*
 * One policy selector (IPv4). Addresses/masks network order, ports host.
 * What the loop reads of a matched policy comes first (reqid, action):
 * entries are 32 (IPv6: 80) bytes in cache aligned tables, so these never
 * straddle two cache lines. The SA of an outbound policy is not here but
 * in the table's out_sa (see struct sp_ipsec_tables).
 */
struct sp_policy {
	uint32_t reqid;
	uint8_t action;		/* enum sp_action */
	uint8_t proto;		/* 0 = any */
	uint16_t pad;
	uint32_t src;
	uint32_t src_mask;
	uint32_t dst;
	uint32_t dst_mask;
	uint16_t sport_lo, sport_hi;
	uint16_t dport_lo, dport_hi;
};

/* One policy selector (IPv6), as sp_policy. */
struct sp_policy6 {
	uint32_t reqid;
	uint8_t action;		/* enum sp_action */
	uint8_t proto;
	uint16_t pad;
	uint64_t src[2], src_mask[2];
	uint64_t dst[2], dst_mask[2];
	uint16_t sport_lo, sport_hi;
	uint16_t dport_lo, dport_hi;
};

_Static_assert(sizeof(struct sp_policy) == 32 && sizeof(struct sp_policy6) == 80,
	"policy entries: a multiple of 16 bytes whose first 8 never straddle a cache line");

/* What rte_acl classifies of a packet: the selector fields in network
 * order (rte_acl wants the first field one byte long). */
struct sp_acl_key4 {
	uint8_t proto;
	uint8_t pad[3];
	uint32_t src;
	uint32_t dst;
	uint16_t sport;
	uint16_t dport;
};

struct sp_acl_key6 {
	uint8_t proto;
	uint8_t pad[3];
	uint8_t src[16];
	uint8_t dst[16];
	uint16_t sport;
	uint16_t dport;
};

/* IPsec tables, immutable once published. A policy table of more than
 * SP_ACL_MIN policies has an rte_acl context whose match is 1 + the index
 * of the first policy, in table order, that matches; a smaller one is
 * searched in order (building an rte_acl context costs milliseconds). */
#define SP_ACL_MIN 16
struct sp_ipsec_tables {
	uint32_t n_out;
	uint32_t n_in;			/* in + fwd policies */
	struct sp_policy *out;		/* ordered by priority */
	struct sp_policy *in;
	uint32_t n_out6;
	uint32_t n_in6;
	struct sp_policy6 *out6;
	struct sp_policy6 *in6;
	/*
	 * The SA of outbound policy i is out_sa[i] (out6_sa[i]): NULL while
	 * the policy has none (and always for a pass or drop policy). Go
	 * changes them in place (rekey), atomically. Apart from the policies,
	 * eight to a cache line: what the loop reads per packet between the
	 * classification and the SA is all here.
	 */
	struct sp_sa **out_sa;
	struct sp_sa **out6_sa;
	struct rte_acl_ctx *acl_out, *acl_in, *acl_out6, *acl_in6;
	/*
	 * Route-based interfaces (policies with an XFRM interface id or a
	 * mark): ifc[i] holds the policies of interface i, in tables of
	 * their own (NULL: none), owned by these tables and freed with them.
	 * They never take part in the classification of what comes in on a
	 * port: only what the kernel routes into the interface is looked up
	 * in its outbound policies, and only what its inbound SAs decrypt in
	 * its inbound ones (as XFRM matches an if_id policy only for packets
	 * of its xfrm interface). In a nested table, ifc[] is unused.
	 */
	struct sp_ipsec_tables *ifc[SP_MAX_PORTS];
};

/* Next hop of a route. */
enum sp_nh_kind { SP_NH_UNICAST = 0, SP_NH_LOCAL = 1, SP_NH_BLACKHOLE = 2 };

struct sp_nexthop {
	uint32_t gw;		/* IPv4 routes: network order; 0 = on link */
	uint8_t gw6[16];	/* IPv6 routes: all zero = on link */
	uint8_t port;		/* fast path port index */
	uint8_t kind;		/* enum sp_nh_kind */
	uint16_t pad;
};

struct sp_neigh_key {
	uint32_t ip;		/* network order */
	uint32_t port;
};

struct sp_neigh6_key {
	uint8_t ip[16];
	uint32_t port;
};

/* Forwarding tables (mirror of the kernel), immutable once published. The
 * route tables (lpm, lpm6) are not the FIB's own: Go keeps two pairs and
 * builds each FIB on the pair the FIB before the published one used,
 * changing only the routes that changed (an rte_lpm is 64 MiB, which a
 * new one per FIB would allocate and clear each time). */
struct sp_fib {
	struct rte_lpm *lpm;		/* dst -> index into nh */
	struct rte_lpm6 *lpm6;
	struct sp_nexthop *nh;
	uint32_t n_nh;
	/* 1 + the index into nh of the default route of each family (0:
	 * none): not in the route tables, where it would fill all of the
	 * first level (and touch every page of it) */
	uint32_t def4;
	uint32_t def6;
	struct rte_hash *neigh;		/* sp_neigh_key -> index into macs */
	struct rte_hash *neigh6;	/* sp_neigh6_key -> index into macs */
	struct rte_ether_addr *macs;
	/* the gateway's own addresses, as the source of the ICMP errors it
	 * sends for a tunnel of the other family (0 / zero: none) */
	uint32_t src4;
	uint8_t src6[16];
	/* the gateway's own addresses, exactly those configured on its
	 * interfaces (not what a local route covers: a local route for a
	 * prefix must not widen what the fast path takes for itself): the
	 * only destinations of ESP-in-UDP it decapsulates and the only ends of
	 * IKE and neighbour discovery that pass beside the policies. Sorted,
	 * for a binary search: IPv4 in host order, IPv6 as bytes. */
	uint32_t n_own4;
	uint32_t n_own6;
	uint32_t *own4;
	uint8_t (*own6)[16];
};

/* The next hop index of dst (host order) in f: the route tables' longest
 * match, else the default route; -1 for none. */
static inline int
sp_fib_lookup4(const struct sp_fib *f, uint32_t dst, uint32_t *idx)
{
	if (rte_lpm_lookup(f->lpm, dst, idx) == 0)
		return 0;
	if (f->def4 == 0)
		return -1;
	*idx = f->def4 - 1;
	return 0;
}

static inline int
sp_fib_lookup6(const struct sp_fib *f, const uint8_t *dst, uint32_t *idx)
{
	if (rte_lpm6_lookup(f->lpm6, dst, idx) == 0)
		return 0;
	if (f->def6 == 0)
		return -1;
	*idx = f->def6 - 1;
	return 0;
}

/* Notes from the loop to Go: a next hop without neighbour (Go asks the
 * kernel to resolve it) or a packet for a policy without SA (Go raises an
 * acquire to charon). Single producer (the worker), single consumer (Go);
 * lossy when full: the next packet notes it again. */
#define SP_NOTE_RING 256
enum sp_note_kind { SP_NOTE_MISS = 1, SP_NOTE_ACQUIRE = 2, SP_NOTE_MAPPING = 3 };
struct sp_note_miss {
	uint32_t port;		/* the fast path port of the next hop */
};
struct sp_note_acquire {
	uint32_t reqid;		/* of the policy without SA */
};
struct sp_note_mapping {
	uint32_t spi;		/* of the inbound SA */
	uint16_t sport;		/* the peer's new NAT-T port (host order) */
	uint16_t pad;
};
struct sp_note {
	uint32_t kind;		/* enum sp_note_kind: which of u */
	union {
		struct sp_note_miss miss;
		struct sp_note_acquire acquire;
		struct sp_note_mapping mapping;
	} u;
	uint8_t family;		/* of the addresses: 4 or 6 */
	uint8_t pad[3];
	uint8_t a[16];		/* MISS: next hop; ACQUIRE: packet source; MAPPING: new
				 * remote address (network order; IPv4 in the first 4) */
	uint8_t d[16];		/* ACQUIRE: packet destination */
};

/* A fast path port: a wire device and its TAP. The route-based interfaces
 * (struct sp_dp's n_ifc) follow the ports in the same array: their phys is
 * SP_NO_PORT, their tap the ethdev of their TUN device (net_tun: IP without
 * Ethernet, point-to-point, no ARP, as an XFRM interface), mtu its MTU. */
#define SP_NO_PORT UINT16_MAX
struct sp_port {
	uint16_t phys;		/* ethdev port id of the wire side */
	uint16_t tap;		/* ethdev port id of the TAP */
	struct rte_ether_addr mac;
	uint16_t mtu;		/* IP MTU of the wire */
	/* route-based interfaces: the TCP MSS that SYNs through them are
	 * clamped to, IPv4 and IPv6 (0: no clamping, the default) */
	uint16_t mss4, mss6;
	/* the wire is a live link, which may deliver frames for other hosts'
	 * MACs (a bridge or switch that floods): those go to the kernel,
	 * which drops them (to_us); 0 for a capture file replayed */
	uint8_t l2;
};

/* What each worker owns: counters and its ring of notes to Go. */
/*
 * Latency inside the fast path: for each frame handed to a wire port, the
 * time from the rx burst it came in with to the tx burst, in TSC units of
 * 2^lat_shift cycles, counted in log-linear buckets: units 0..31 one bucket
 * each, then 16 buckets per power of two (about 6% wide). sp_lat_bucket
 * and latBucketLow (Go) are inverses.
 */
#define SP_LAT_BUCKETS 448

static inline uint32_t
sp_lat_bucket(uint64_t units)
{
	uint32_t msb, idx;

	if (units < 32)
		return (uint32_t)units;
	msb = 63 - __builtin_clzll(units);
	idx = 32 + (msb - 5) * 16 + (uint32_t)((units >> (msb - 4)) & 15);
	return idx < SP_LAT_BUCKETS ? idx : SP_LAT_BUCKETS - 1;
}

struct sp_worker {
	struct sp_port_stats stats[SP_MAX_PORTS];
	uint64_t lat[SP_LAT_BUCKETS];	/* see sp_lat_bucket */
	volatile uint32_t running;
	int32_t tid;			/* the worker's OS thread, set before running */
	volatile uint32_t note_head;	/* written by the worker */
	volatile uint32_t note_tail;	/* written by Go */
	struct sp_note note[SP_NOTE_RING];
	/* bumped once per loop iteration by the worker; read by Go
	 * (Fastpath.Progress) so swanpathd pets systemd's watchdog only
	 * while every worker goes round */
	volatile uint64_t progress;
} __rte_cache_aligned;

struct sp_dp {
	/* published tables; read by the workers with acquire loads */
	struct sp_ipsec_tables *ipsec;
	struct sp_fib *fib;

	struct rte_rcu_qsbr *qsv;	/* one reader per worker */
	/* control threads waiting in sp_synchronize: a worker reports a
	 * quiescent state only with no lookaside crypto op in flight (an op
	 * holds its SA), which under steady load never happens by itself,
	 * so a worker that sees this finishes its ops first */
	uint32_t sync_waiting;
	/* inbound SPI -> struct sp_sa; changed in place (rte_hash with
	 * reader-writer concurrency), SAs freed after a quiescent period */
	struct rte_ipsec_sad *sad;
	/* bumped after every SA added to it: workers holding ESP for an SPI
	 * with no SA yet look again (see spi_hold) */
	uint32_t sad_gen;
	struct rte_mempool *cop_pool;
	uint32_t n_ports;
	uint32_t n_workers;
	/* ports[0..n_ports) are the wire ports; ports[n_ports..n_ports+n_ifc)
	 * the route-based interfaces (their counters are theirs too) */
	struct sp_port ports[SP_MAX_PORTS];
	uint32_t n_ifc;
	uint16_t natt_port;	/* local UDP port for ESP-in-UDP, host order */
	uint16_t tun_mtu;	/* smallest wire MTU: encrypted packets must fit */
	uint32_t idle_sleep_us;	/* sleep when idle; 0 = busy poll */
	uint32_t lat_shift;	/* latency unit: 2^lat_shift TSC cycles */
	/* fail closed: while set (from the start until charon's plugin has
	 * replayed its SAs and policies, and whenever no charon is there and
	 * no policy is left) only what the gateway needs to negotiate passes
	 * (ARP, neighbour discovery, its own IKE); the rest is dropped
	 * (drop_closed). Written by Go, read by the workers. */
	volatile uint32_t closed;
	volatile uint32_t stop;
	/* fragments (dp_frag.c): a reassembled packet is copied into one
	 * mbuf of whole_pool; a fragment made here has its header in an mbuf
	 * of hdr_pool (the rx pool) and its data by reference (ind_pool) */
	struct rte_mempool *whole_pool, *hdr_pool, *ind_pool;
	struct sp_worker w[SP_MAX_WORKERS];
} __rte_cache_aligned;

/* dp_dev.c: offsets of the mbuf dynamic fields the loop keeps: while a
 * packet is in a crypto device (lookaside), the struct sp_sa it belongs to
 * and the port it came in on */
extern int sp_mbuf_sa_off;
extern int sp_mbuf_port_off;	/* uint32_t */
extern int sp_mbuf_rxt_off;	/* uint64_t: TSC of the rx burst a frame came in with */

/* dp_dev.c: ports, pools, crypto devices, the shared state (called by Go) */
int sp_port_setup(uint16_t port, struct rte_mempool *pool, uint16_t mtu, uint16_t nq, char *err,
	size_t errlen);
int sp_port_mac(uint16_t port, uint8_t *mac);
int sp_port_set_mac(uint16_t port, uint8_t *mac);
int sp_port_by_name(const char *name, uint16_t *port);
void sp_port_stop(uint16_t port);
struct rte_mempool *sp_session_pool(uint32_t n, char *err, size_t errlen);
/* the crypto op pool; registers the mbuf dynamic fields above first */
struct rte_mempool *sp_cop_pool(uint32_t n, char *err, size_t errlen);
int sp_cdev_setup(const char *name, struct rte_mempool *sess_pool, uint16_t nqp, int *id,
	char *err, size_t errlen);
void sp_cdev_stop_all(void);
struct sp_dp *sp_dp_new(uint32_t max_threads);
void sp_dp_free(struct sp_dp *dp);

/* dp_sa.c */
struct sp_sa *sp_sa_create(const struct sp_sa_params *p, struct rte_mempool *sess_pool,
	char *err, size_t errlen);
int sp_sa_cdev(const struct sp_sa *sa);
struct sp_sa *sp_sa_move(const struct sp_sa_params *p, struct sp_sa *from, char *err, size_t errlen);
void sp_sa_free(struct sp_sa *sa);

/* dp_tables.c */
struct sp_ipsec_tables *sp_ipsec_tables_new(uint32_t n_out, uint32_t n_in, uint32_t n_out6,
	uint32_t n_in6);
int sp_sad_create(struct sp_dp *dp, uint32_t max_sa);
int sp_sad_add(struct sp_dp *dp, struct sp_sa *sa);
int sp_sad_del(struct sp_dp *dp, struct sp_sa *sa);
int sp_ipsec_tables_build_acl(struct sp_ipsec_tables *t, char *err, size_t errlen);
void sp_ipsec_tables_free(struct sp_ipsec_tables *t);
struct sp_fib *sp_fib_new(uint32_t n_nh, uint32_t n_neigh, struct rte_lpm *lpm,
	struct rte_lpm6 *lpm6);
struct rte_lpm *sp_lpm_new(uint32_t max_rules);
struct rte_lpm6 *sp_lpm6_new(uint32_t max_rules);
int sp_lpm_add(struct rte_lpm *lpm, uint32_t dst, uint8_t depth, uint32_t nh_idx);
int sp_lpm_del(struct rte_lpm *lpm, uint32_t dst, uint8_t depth);
int sp_fib_route(const struct sp_fib *f, int v6, const uint8_t *dst, struct sp_nexthop *nh);
int sp_fib_add_neigh(struct sp_fib *f, uint32_t ip, uint32_t port, const uint8_t *mac, uint32_t idx);
int sp_fib_add_neigh6(struct sp_fib *f, const uint8_t *ip, uint32_t port, const uint8_t *mac, uint32_t idx);
int sp_fib_set_own(struct sp_fib *f, uint32_t n4, const uint32_t *own4, uint32_t n6,
	const uint8_t *own6);
void sp_fib_free(struct sp_fib *f);
void sp_publish_ipsec(struct sp_dp *dp, struct sp_ipsec_tables *t);
void sp_publish_fib(struct sp_dp *dp, struct sp_fib *f);
void sp_synchronize(struct sp_dp *dp);

/* dp_frag.c: reassembly (librte_ip_frag) and fragmentation. Each worker
 * has a table per kind of fragment: one from the wire never completes a
 * datagram whose other fragments came from the kernel or out of ESP. */
enum sp_frag_kind { SP_FRAG_WIRE = 0, SP_FRAG_TAP, SP_FRAG_ESP, SP_FRAG_KINDS };
#define SP_FRAG_OUT_MAX 16	/* fragments one packet may become */
struct sp_frag;
int sp_frag_pools(struct sp_dp *dp, struct rte_mempool *hdr_pool, char *err, size_t errlen);
struct sp_frag *sp_frag_new(struct sp_dp *dp, uint32_t wid);
void sp_frag_free(struct sp_frag *fr);
struct rte_mbuf *sp_frag_in(struct sp_frag *fr, uint32_t port, enum sp_frag_kind kind,
	struct rte_mbuf *m, uint32_t l2, uint64_t now);
int sp_frag_reap(struct sp_frag *fr, uint64_t now);
uint16_t sp_frag_out(struct sp_frag *fr, uint32_t port, struct rte_mbuf *m, uint16_t mtu,
	struct rte_mbuf **out);

/* dp_worker.c */
int sp_worker_run(struct sp_dp *dp, uint32_t wid);

/* dp_notes.c: the worker's notes (producer), Go's sp_note_pop (consumer) */
void sp_note_miss(struct sp_worker *w, uint32_t port, uint8_t family, const void *nh);
void sp_note_acquire(struct sp_worker *w, uint32_t reqid, uint8_t family, const void *src,
	const void *dst);
void sp_note_mapping(struct sp_worker *w, uint32_t spi, uint8_t family, const void *src,
	uint16_t sport);
uint32_t sp_note_pop(struct sp_dp *dp, uint32_t wid, struct sp_note *out, uint32_t max);
int sp_running(struct sp_dp *dp);

#endif
