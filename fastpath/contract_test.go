package fastpath

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/model"
)

// The Go↔C contract (contract.go), checked without EAL: one test, one
// subtest per part, so that each broken part shows.
func TestContract(t *testing.T) {
	t.Run("counters", testContractCounters)
	t.Run("layout", testContractLayout)
	t.Run("enums", testContractEnums)
	t.Run("notes", testContractNotes)
}

// The C counter enum (SP_COUNTERS in dp.h) and dataplane.CounterNames are
// matched by position: a counter added on one side only, or two swapped,
// shifts the names Go shows.
func testContractCounters(t *testing.T) {
	c := cCounterNames()
	if len(c) != numCounters {
		t.Fatalf("SP_COUNTERS has %d names, enum sp_cnt %d counters", len(c), numCounters)
	}
	if len(dataplane.CounterNames) != len(c) {
		t.Errorf("dataplane.CounterNames has %d names, enum sp_cnt %d", len(dataplane.CounterNames), len(c))
	}
	for i := range max(len(c), len(dataplane.CounterNames)) {
		var g, cn string
		if i < len(dataplane.CounterNames) {
			g = dataplane.CounterNames[i]
		}
		if i < len(c) {
			cn = c[i]
		}
		if g != cn {
			t.Errorf("counter %d: C %q, dataplane.CounterNames %q", i, cn, g)
		}
	}
}

// Every field of the structs Go fills or reads sits where cgo's view (the
// C.struct_ types Go uses) says, and cgo's view has no field the C table
// lacks: a field added to a struct in dp.h must be added to the table in
// contract.go, and so is checked too.
func testContractLayout(t *testing.T) {
	goStructs := cgoStructs()
	byStruct := map[string][]cField{}
	for _, f := range cLayout() {
		byStruct[f.Struct] = append(byStruct[f.Struct], f)
	}
	for name := range byStruct {
		if goStructs[name] == nil {
			t.Errorf("struct %s: in the C table, not in cgoStructs", name)
		}
	}
	for name, gt := range goStructs {
		fields := byStruct[name]
		if len(fields) == 0 {
			t.Errorf("struct %s: not in the C table of contract.go", name)
			continue
		}
		seen := map[string]bool{}
		for _, f := range fields {
			if f.Name == "" {
				if gt.Size() != f.Size {
					t.Errorf("sizeof(struct %s): C %d, cgo %d", name, f.Size, gt.Size())
				}
				continue
			}
			seen[f.Name] = true
			gf, ok := gt.FieldByName(f.Name)
			if !ok {
				t.Errorf("struct %s: field %s not in cgo's view", name, f.Name)
				continue
			}
			if gf.Offset != f.Off || gf.Type.Size() != f.Size {
				t.Errorf("struct %s field %s: C offset %d size %d, cgo offset %d size %d",
					name, f.Name, f.Off, f.Size, gf.Offset, gf.Type.Size())
			}
		}
		for i := range gt.NumField() {
			gf := gt.Field(i)
			if gf.Name == "_" {
				continue // cgo's padding
			}
			if !seen[gf.Name] {
				t.Errorf("struct %s: cgo has field %s (offset %d), the C table of contract.go does not",
					name, gf.Name, gf.Offset)
			}
		}
	}
}

// The values Go maps its own to, and those pinned because C relies on
// them.
func testContractEnums(t *testing.T) {
	for _, c := range []struct {
		a    model.PolicyAction
		want string
	}{
		{model.ActionIPsec, "SP_ACT_IPSEC"},
		{model.ActionPass, "SP_ACT_PASS"},
		{model.ActionDrop, "SP_ACT_DROP"},
	} {
		if got := policyActionC(c.a); got != cEnums[c.want] {
			t.Errorf("policy action %v: C %d, want %s (%d)", c.a, got, c.want, cEnums[c.want])
		}
	}
	for name, want := range map[string]int{
		// the worker decides on action 0 without reading the policy
		// (spd_get: an outbound policy with an SA)
		"SP_ACT_IPSEC": 0,
		// a next hop Go leaves zeroed is a unicast one
		"SP_NH_UNICAST": 0,
		// notes: kind 0 is a cleared slot, never a note
		"SP_NOTE_MISS": 1, "SP_NOTE_ACQUIRE": 2, "SP_NOTE_MAPPING": 3,
	} {
		if cEnums[name] != want {
			t.Errorf("%s = %d, want %d", name, cEnums[name], want)
		}
	}
	distinct := func(names ...string) {
		vals := map[int]string{}
		for _, n := range names {
			if o, dup := vals[cEnums[n]]; dup {
				t.Errorf("%s and %s are both %d", o, n, cEnums[n])
			}
			vals[cEnums[n]] = n
		}
	}
	distinct("SP_ACT_IPSEC", "SP_ACT_PASS", "SP_ACT_DROP")
	distinct("SP_NH_UNICAST", "SP_NH_LOCAL", "SP_NH_BLACKHOLE")
	if e, b := cEnums["SP_SA_EXPIRED"], cEnums["SP_SA_BLOCKED"]; e&b != 0 || e == 0 || b == 0 {
		t.Errorf("SP_SA_EXPIRED %d and SP_SA_BLOCKED %d must be distinct bits", e, b)
	}
}

// What the worker notes comes back to Go as it was noted: each kind's
// member of the union, the addresses of both families.
func testContractNotes(t *testing.T) {
	in := []dataplane.Note{
		{Kind: dataplane.NoteNoNeighbour, Port: 3, Dst: netip.MustParseAddr("192.0.2.1")},
		{Kind: dataplane.NoteNoNeighbour, Port: 7, Dst: netip.MustParseAddr("2001:db8::1")},
		{Kind: dataplane.NoteAcquire, Reqid: 0xfedcba98,
			Src: netip.MustParseAddr("10.1.0.5"), Dst: netip.MustParseAddr("10.2.0.6")},
		{Kind: dataplane.NoteAcquire, Reqid: 42,
			Src: netip.MustParseAddr("fd00:1::5"), Dst: netip.MustParseAddr("fd00:2::6")},
		{Kind: dataplane.NoteMapping, SPI: 0xc0ffee01, Src: netip.MustParseAddr("198.51.100.9"), SrcPort: 65000},
		{Kind: dataplane.NoteMapping, SPI: 0x01020304, Src: netip.MustParseAddr("2001:db8:9::9"), SrcPort: 4500},
	}
	out := notesRoundTrip(in)
	if !slices.Equal(in, out) {
		t.Errorf("notes through the ring:\n got %+v\nwant %+v", out, in)
	}
}
