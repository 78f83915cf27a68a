package fastpath

// The Go↔C contract: what Go relies on of dp.h beyond what cgo itself
// keeps consistent, exposed so that contract_test.go (which, as a test
// file, cannot use cgo) checks it without EAL:
//   - the counter enum (SP_COUNTERS) against dataplane.CounterNames, by
//     name and position;
//   - every field of the structs Go fills or reads, at the same offset and
//     size in cgo's view (the C.struct_ types Go uses) as in the C
//     compiler's (offsetof), so that no packing, bit field or union is
//     silently mistranslated;
//   - the enum values Go maps its own to (policy actions) or pins;
//   - the notes' union, written by the worker's producer and read back by
//     appendNotes.

/*
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "dp.h"

#define SP_CNT_NAME(e, name) name,
static const char *const sp_cnt_names[SP_CNT_MAX] = { SP_COUNTERS(SP_CNT_NAME) };
#undef SP_CNT_NAME

static const char *
sp_cnt_name(int i)
{
	return i >= 0 && i < SP_CNT_MAX ? sp_cnt_names[i] : NULL;
}

// The layout of the structs Go fills or reads, as the C compiler sees it:
// a struct's own row (empty field name) gives its size.
struct sp_field {
	const char *st, *name;
	size_t off, size;
};
#define SP_S(s) { #s, "", 0, sizeof(struct s) },
#define SP_F(s, f) { #s, #f, offsetof(struct s, f), sizeof(((struct s *)0)->f) },
static const struct sp_field sp_fields[] = {
	SP_S(sp_sa_params)
	SP_F(sp_sa_params, spi) SP_F(sp_sa_params, reqid) SP_F(sp_sa_params, src)
	SP_F(sp_sa_params, dst) SP_F(sp_sa_params, family) SP_F(sp_sa_params, transport)
	SP_F(sp_sa_params, sport) SP_F(sp_sa_params, dport) SP_F(sp_sa_params, inbound)
	SP_F(sp_sa_params, encap) SP_F(sp_sa_params, esn) SP_F(sp_sa_params, icv_len)
	SP_F(sp_sa_params, replay_window) SP_F(sp_sa_params, seq_start)
	SP_F(sp_sa_params, hard_packets) SP_F(sp_sa_params, hard_bytes) SP_F(sp_sa_params, salt)
	SP_F(sp_sa_params, enc) SP_F(sp_sa_params, auth) SP_F(sp_sa_params, key_len)
	SP_F(sp_sa_params, auth_key_len) SP_F(sp_sa_params, key) SP_F(sp_sa_params, auth_key)
	SP_F(sp_sa_params, n_cdevs) SP_F(sp_sa_params, cdevs) SP_F(sp_sa_params, sync_crypto)
	SP_F(sp_sa_params, multi_worker) SP_F(sp_sa_params, ifc)
	SP_S(sp_policy)
	SP_F(sp_policy, reqid) SP_F(sp_policy, action) SP_F(sp_policy, proto) SP_F(sp_policy, pad)
	SP_F(sp_policy, src) SP_F(sp_policy, src_mask) SP_F(sp_policy, dst) SP_F(sp_policy, dst_mask)
	SP_F(sp_policy, sport_lo) SP_F(sp_policy, sport_hi) SP_F(sp_policy, dport_lo)
	SP_F(sp_policy, dport_hi)
	SP_S(sp_policy6)
	SP_F(sp_policy6, reqid) SP_F(sp_policy6, action) SP_F(sp_policy6, proto) SP_F(sp_policy6, pad)
	SP_F(sp_policy6, src) SP_F(sp_policy6, src_mask) SP_F(sp_policy6, dst)
	SP_F(sp_policy6, dst_mask) SP_F(sp_policy6, sport_lo) SP_F(sp_policy6, sport_hi)
	SP_F(sp_policy6, dport_lo) SP_F(sp_policy6, dport_hi)
	SP_S(sp_nexthop)
	SP_F(sp_nexthop, gw) SP_F(sp_nexthop, gw6) SP_F(sp_nexthop, port) SP_F(sp_nexthop, kind)
	SP_F(sp_nexthop, pad)
	SP_S(sp_note)
	SP_F(sp_note, kind) SP_F(sp_note, u) SP_F(sp_note, family) SP_F(sp_note, pad)
	SP_F(sp_note, a) SP_F(sp_note, d)
	SP_S(sp_note_miss)
	SP_F(sp_note_miss, port)
	SP_S(sp_note_acquire)
	SP_F(sp_note_acquire, reqid)
	SP_S(sp_note_mapping)
	SP_F(sp_note_mapping, spi) SP_F(sp_note_mapping, sport) SP_F(sp_note_mapping, pad)
	SP_S(sp_port)
	SP_F(sp_port, phys) SP_F(sp_port, tap) SP_F(sp_port, mac) SP_F(sp_port, mtu)
	SP_F(sp_port, mss4) SP_F(sp_port, mss6) SP_F(sp_port, l2)
	SP_S(sp_port_stats)
	SP_F(sp_port_stats, cnt)
	SP_S(sp_sa_ctr)
	SP_F(sp_sa_ctr, packets) SP_F(sp_sa_ctr, bytes) SP_F(sp_sa_ctr, last_use)
	SP_F(sp_sa_ctr, seq_max)
	SP_S(sp_sa_stats)
	SP_F(sp_sa_stats, c) SP_F(sp_sa_stats, drop_auth) SP_F(sp_sa_stats, drop_replay)
	SP_F(sp_sa_stats, drop_malformed) SP_F(sp_sa_stats, drop_policy)
};
#undef SP_S
#undef SP_F

static const struct sp_field *
sp_field_at(int i)
{
	return i >= 0 && i < (int)RTE_DIM(sp_fields) ? &sp_fields[i] : NULL;
}

// The enum values Go maps its own to or relies on.
struct sp_enum {
	const char *name;
	long value;
};
#define SP_E(e) { #e, e },
static const struct sp_enum sp_enums[] = {
	SP_E(SP_ACT_IPSEC) SP_E(SP_ACT_PASS) SP_E(SP_ACT_DROP)
	SP_E(SP_NOTE_MISS) SP_E(SP_NOTE_ACQUIRE) SP_E(SP_NOTE_MAPPING)
	SP_E(SP_NH_UNICAST) SP_E(SP_NH_LOCAL) SP_E(SP_NH_BLACKHOLE)
	SP_E(SP_SA_EXPIRED) SP_E(SP_SA_BLOCKED)
};
#undef SP_E

static const struct sp_enum *
sp_enum_at(int i)
{
	return i >= 0 && i < (int)RTE_DIM(sp_enums) ? &sp_enums[i] : NULL;
}

// A worker's note ring without EAL, for the notes' round trip.
static struct sp_dp *
sp_contract_dp(void)
{
	struct sp_dp *dp = aligned_alloc(RTE_CACHE_LINE_SIZE, sizeof(*dp));

	if (dp != NULL)
		memset(dp, 0, sizeof(*dp));
	return dp;
}
*/
import "C"

import (
	"net/netip"
	"reflect"
	"strings"
	"unsafe"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/model"
)

// policyAction is the C action (enum sp_action) of a policy's action. An
// action the model does not define is IPsec: a packet it matches needs an
// SA.
func policyAction(a model.PolicyAction) C.uint8_t {
	switch a {
	case model.ActionPass:
		return C.SP_ACT_PASS
	case model.ActionDrop:
		return C.SP_ACT_DROP
	}
	return C.SP_ACT_IPSEC
}

// cCounterNames are the names of enum sp_cnt, in enum order (SP_COUNTERS).
func cCounterNames() []string {
	names := make([]string, 0, numCounters)
	for i := 0; ; i++ {
		s := C.sp_cnt_name(C.int(i))
		if s == nil {
			return names
		}
		names = append(names, C.GoString(s))
	}
}

// cField is a field of a C struct as the C compiler lays it out; Name ""
// is the struct itself.
type cField struct {
	Struct, Name string
	Off, Size    uintptr
}

// cLayout is the layout table of contract.go's preamble.
func cLayout() []cField {
	var out []cField
	for i := 0; ; i++ {
		f := C.sp_field_at(C.int(i))
		if f == nil {
			return out
		}
		out = append(out, cField{C.GoString(f.st), C.GoString(f.name), uintptr(f.off), uintptr(f.size)})
	}
}

// cgoStructs are the same structs as Go sees them (the types it fills
// and reads), by C name (cgo names the Go type _Ctype_struct_<name>).
func cgoStructs() map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for _, v := range []any{
		C.struct_sp_sa_params{}, C.struct_sp_policy{}, C.struct_sp_policy6{},
		C.struct_sp_nexthop{}, C.struct_sp_port{}, C.struct_sp_port_stats{},
		C.struct_sp_note{}, C.struct_sp_note_miss{}, C.struct_sp_note_acquire{},
		C.struct_sp_note_mapping{}, C.struct_sp_sa_ctr{}, C.struct_sp_sa_stats{},
	} {
		t := reflect.TypeOf(v)
		m[strings.TrimPrefix(t.Name(), "_Ctype_struct_")] = t
	}
	return m
}

// cEnums are the C enum values Go maps its own to or relies on, by name
// (the table in the preamble).
var cEnums = func() map[string]int {
	m := map[string]int{}
	for i := 0; ; i++ {
		e := C.sp_enum_at(C.int(i))
		if e == nil {
			return m
		}
		m[C.GoString(e.name)] = int(e.value)
	}
}()

// policyActionC is policyAction as an int, for the test.
func policyActionC(a model.PolicyAction) int { return int(policyAction(a)) }

// notesRoundTrip writes notes through the worker's producer (dp_notes.c)
// into a ring of its own (no EAL), takes them out with sp_note_pop and
// reads them as Notes does. Only the fields of each kind count.
func notesRoundTrip(notes []dataplane.Note) []dataplane.Note {
	dp := C.sp_contract_dp()
	if dp == nil {
		return nil
	}
	defer C.free(unsafe.Pointer(dp))
	w := &dp.w[0]
	for _, n := range notes {
		var a, d [16]byte
		fam, src := addrBytes(n.Src, &a)
		_, dst := addrBytes(n.Dst, &d)
		switch n.Kind {
		case dataplane.NoteNoNeighbour:
			fam, dst = addrBytes(n.Dst, &d)
			C.sp_note_miss(w, C.uint32_t(n.Port), fam, dst)
		case dataplane.NoteAcquire:
			C.sp_note_acquire(w, C.uint32_t(n.Reqid), fam, src, dst)
		case dataplane.NoteMapping:
			C.sp_note_mapping(w, C.uint32_t(n.SPI), fam, src, C.uint16_t(n.SrcPort))
		}
	}
	var buf [C.SP_NOTE_RING]C.struct_sp_note
	k := C.sp_note_pop(dp, 0, &buf[0], C.SP_NOTE_RING)
	return (*Fastpath)(nil).appendNotes(nil, buf[:k])
}

// addrBytes puts a into b as a note carries it (IPv4 in the first 4).
func addrBytes(a netip.Addr, b *[16]byte) (C.uint8_t, unsafe.Pointer) {
	if a.Is4() {
		v := a.As4()
		copy(b[:], v[:])
		return 4, unsafe.Pointer(&b[0])
	}
	*b = a.As16()
	return 6, unsafe.Pointer(&b[0])
}
