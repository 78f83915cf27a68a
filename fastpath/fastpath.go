// Package fastpath is swanpath's DPDK data plane: EAL, ports, crypto devices
// and the worker lcore running the C packet loop (dp_worker.c). It is the only
// package with cgo. The control plane drives it through
// bridge/dataplane.Dataplane; tables are built here, published to the loop
// with an atomic store and reclaimed after an RCU quiescent period.
package fastpath

/*
#cgo pkg-config: libdpdk
#cgo CFLAGS: -O3 -DALLOW_EXPERIMENTAL_API -Wno-deprecated-declarations
#include <stdlib.h>
#include <rte_eal.h>
#include "dp.h"

static inline uint32_t sp_load_u32(volatile uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void sp_store_u32(volatile uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
*/
import "C"

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/yerden/go-dpdk/eal"
	"github.com/yerden/go-dpdk/mempool"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/model"
	"github.com/swanpath/swanpath/internal/cpus"
)

// PortConfig is one fast path port: a DPDK device (vdev arguments such as
// "net_af_packet0,iface=eth1", or a PCI address) and the name of the TAP
// interface that carries its exception traffic to the kernel.
type PortConfig struct {
	Name   string
	Device string
	Tap    string
	MTU    int
}

// InterfaceConfig is one route-based interface: a TUN device (DPDK's
// net_tun: point-to-point, no ARP, IP without Ethernet, as an XFRM
// interface) named Name with IP MTU MTU. The SAs and policies with XFRM
// interface id IfID, or with mark Mark (mask 0xffffffff), are its own:
// what the kernel routes into it is encrypted with the outbound SA of its
// matching policy, and what its inbound SAs decrypt comes out of it.
// IfID and Mark are not both 0.
type InterfaceConfig struct {
	Name string
	IfID uint32
	Mark uint32
	MTU  int
	// MSSClamp lowers the MSS option of TCP SYNs through the interface,
	// either way: 0 off, MSSClampPMTU to what fits the interface's MTU
	// (MTU - 40 for IPv4, - 60 for IPv6), else to this value.
	MSSClamp int
}

// MSSClampPMTU is InterfaceConfig.MSSClamp's "clamp to the MTU".
const MSSClampPMTU = -1

// Config is what Open needs.
type Config struct {
	// EAL arguments besides devices (lcores, memory, --file-prefix ...).
	EALArgs []string
	Ports   []PortConfig
	// Route-based interfaces; with the ports, at most SP_MAX_PORTS.
	Interfaces []InterfaceConfig
	// Crypto PMD: "aesni_gcm" (default), "aesni_mb" or "openssl".
	Crypto    string
	NATTPort  uint16
	IdleSleep time.Duration
	Mbufs     uint32
	// MaxSAs bounds the SAs, both directions and both sides of a rekey
	// together (the SAD's size and the crypto session pool's); 16384 when 0.
	MaxSAs uint32
	// LookasideCrypto makes every SA go through the crypto device's queue
	// pair (enqueue/dequeue) even where the PMD can run synchronously on
	// the worker's core (CPU crypto, the default where offered).
	LookasideCrypto bool
	Log             *slog.Logger
}

// afpFrame is the ring frame of a net_af_packet port, and the data room
// of the mbufs it receives into. DPDK 22.11's af_packet PMD joins its
// sockets to a fanout group with PACKET_FANOUT_FLAG_DEFRAG (not
// configurable), so the kernel reassembles IPv4 fragments before the PMD
// sees them; a datagram longer than the frame (2048 by default) arrived
// cut short and was dropped as malformed. 16 KiB holds a 9000-byte jumbo
// and NFS's 8 KiB datagrams; longer IPv4 datagrams on such a port still
// arrive cut (drop_malformed). IPv6 is not reassembled there (nor on any
// other kind of port): the loop does it (dp_frag.c).
const (
	afpFrame = 16384
	afpMbufs = 2048
)

// cryptoDrivers maps a config name to the vdev driver.
var cryptoDrivers = map[string]string{
	"aesni_gcm": "crypto_aesni_gcm",
	"aesni_mb":  "crypto_aesni_mb",
	"openssl":   "crypto_openssl",
}

// CryptoNames lists the accepted values of Config.Crypto.
func CryptoNames() []string { return []string{"aesni_gcm", "aesni_mb", "openssl"} }

type cdev struct {
	id   C.int
	name string
}

type saEntry struct {
	c      *C.struct_sp_sa
	params params   // suite and key lengths, for MoveSA
	sa     model.SA // without keys
	crypto string
}

// Fastpath is a running data plane.
type Fastpath struct {
	log      *slog.Logger
	dp       *C.struct_sp_dp
	ports    []dataplane.PortInfo
	ifcs     []InterfaceConfig // route-based interfaces, after the ports
	sessPool *C.struct_rte_mempool
	maxSAs   uint32 // Config.MaxSAs: the session pool's size
	mbufPool *C.struct_rte_mempool
	afpPool  *C.struct_rte_mempool // rx of net_af_packet ports (afpFrame); nil without
	// crypto devices in order of preference: the configured PMD, then
	// ipsec-mb (aesni_gcm, aesni_mb), then openssl
	cdevs []cdev
	// asyncCrypto: lookaside crypto only (Config.LookasideCrypto)
	asyncCrypto bool
	workers     []uint // worker lcores; worker i polls queue i of every port
	done        chan error
	tscHz       float64
	latShift    uint
	tscBase     uint64
	wallBase    time.Time

	mu struct {
		sync.Mutex
		sas   map[model.SAID]*saEntry
		pols  map[model.PolicyID]*polState
		bySA  map[model.SAID]map[model.PolicyID]struct{} // policies bound to an SA
		ipsec *C.struct_sp_ipsec_tables
		// when the policy tables are rebuilt (rebuild.go)
		rb *rebuilder[*polSnap, *C.struct_sp_ipsec_tables]
		// policies taken out of pols that the published tables still
		// hold, by the SA their slot points at (until the next install)
		orphans map[model.SAID][]*polState
		fib     *C.struct_sp_fib
		// route-based inbound policies by reqid and interface (count),
		// which inbound SAs without a mark of their own follow (ifcsa.go)
		reqIfc map[uint32]map[int]int
	}
	fib fibSets
}

// fibSets are the route tables the FIBs alternate between and which of
// them the next FIB is built on (fib.go); the lock serialises SetFIB and
// is taken before mu.
type fibSets struct {
	sync.Mutex
	sets [2]*routeSet
	next int
}

var _ dataplane.Dataplane = (*Fastpath)(nil)

// numCounters is how many per-port counters the C loop keeps (enum
// sp_cnt); dataplane.CounterNames names them by position.
const numCounters = int(C.SP_CNT_MAX)

func cerr(buf []C.char) string { return C.GoString(&buf[0]) }

// vdevName is the device name DPDK registers for a device argument.
func vdevName(dev string) string {
	name, _, _ := strings.Cut(dev, ",")
	return name
}

func isVdev(dev string) bool { return strings.HasPrefix(dev, "net_") }

// workersInArgs counts the worker lcores an EAL "-l" list gives (all but
// the main one), before EAL runs: af_packet ports need their queue count
// in the device arguments. 1 when it cannot tell.
func workersInArgs(args []string) int {
	for i := 0; i+1 < len(args); i++ {
		if args[i] != "-l" && args[i] != "--lcores" {
			continue
		}
		n := 0
		for _, part := range strings.Split(args[i+1], ",") {
			part, _, _ = strings.Cut(part, "@") // --lcores lcore@cpu
			lo, hi, isRange := strings.Cut(part, "-")
			a, err1 := strconv.Atoi(lo)
			b, err2 := a, error(nil)
			if isRange {
				b, err2 = strconv.Atoi(hi)
			}
			if err1 != nil || err2 != nil || b < a {
				return 1
			}
			n += b - a + 1
		}
		return max(n-1, 1)
	}
	return 1
}

// Open initialises EAL, the ports, their TAPs and the crypto device, and
// starts the worker lcore. EAL can be initialised once per process.
func Open(cfg Config) (*Fastpath, error) {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	if len(cfg.Ports) == 0 || len(cfg.Ports) > C.SP_MAX_PORTS {
		return nil, fmt.Errorf("fastpath: %d ports (need 1..%d)", len(cfg.Ports), C.SP_MAX_PORTS)
	}
	if err := checkInterfaces(cfg.Interfaces, len(cfg.Ports)); err != nil {
		return nil, err
	}
	if cfg.Crypto == "" {
		cfg.Crypto = "aesni_gcm"
	}
	_, ok := cryptoDrivers[cfg.Crypto]
	if !ok {
		return nil, fmt.Errorf("fastpath: unknown crypto PMD %q (want one of %s)", cfg.Crypto, strings.Join(CryptoNames(), ", "))
	}
	if cfg.NATTPort == 0 {
		cfg.NATTPort = 4500
	}
	if cfg.Mbufs == 0 {
		cfg.Mbufs = 8191
	}

	args := append([]string{"swanpathd"}, cfg.EALArgs...)
	if !slices.ContainsFunc(cfg.Ports, func(p PortConfig) bool { return !isVdev(p.Device) }) {
		// never probe (and take) the machine's own NICs
		args = append(args, "--no-pci")
	}
	nw := workersInArgs(cfg.EALArgs)
	for i, p := range cfg.Ports {
		if isVdev(p.Device) {
			dev := p.Device
			// af_packet: one queue pair per worker, spread by the
			// kernel's fanout hash
			if nw > 1 && strings.HasPrefix(dev, "net_af_packet") && !strings.Contains(dev, "qpairs=") {
				dev += fmt.Sprintf(",qpairs=%d", nw)
			}
			if strings.HasPrefix(dev, "net_af_packet") && !strings.Contains(dev, "framesz=") {
				dev += fmt.Sprintf(",framesz=%d,blocksz=%d", afpFrame, afpFrame)
			}
			args = append(args, "--vdev", dev)
		} else {
			args = append(args, "-a", p.Device)
		}
		// persist: the kernel interface (with its addresses and routes)
		// survives a restart of swanpathd, so charon sees no change
		args = append(args, "--vdev", fmt.Sprintf("net_tap%d,iface=%s,persist", i, p.Tap))
	}
	for i, ifc := range cfg.Interfaces {
		// persist: routes over it survive a restart of swanpathd
		args = append(args, "--vdev", fmt.Sprintf("net_tun%d,iface=%s,persist", i, ifc.Name))
	}
	// every crypto PMD is created: an SA whose suite the preferred one
	// lacks runs on the next that has it
	var cdevNames []string
	for _, name := range append([]string{cfg.Crypto}, CryptoNames()...) {
		n := cryptoDrivers[name] + "0"
		if !slices.Contains(cdevNames, n) {
			cdevNames = append(cdevNames, n)
			args = append(args, "--vdev", n)
		}
	}
	log.Info("starting EAL", "args", strings.Join(args[1:], " "))
	if _, err := eal.Init(args); err != nil {
		return nil, fmt.Errorf("fastpath: EAL init: %w", err)
	}
	workers := eal.LcoresWorker()
	if len(workers) == 0 || len(workers) > C.SP_MAX_WORKERS {
		ealCleanup()
		return nil, fmt.Errorf("fastpath: %d worker lcores: give EAL 2 to %d lcores (-l 0,1: main and one worker)",
			len(workers), C.SP_MAX_WORKERS+1)
	}

	f := &Fastpath{log: log, workers: workers, done: make(chan error, len(workers)), asyncCrypto: cfg.LookasideCrypto}
	f.mu.sas = make(map[model.SAID]*saEntry)
	f.mu.pols = make(map[model.PolicyID]*polState)
	f.mu.rb = newRebuilder[*polSnap, *C.struct_sp_ipsec_tables](&f.mu.Mutex, policyTables{f}, log)
	f.mu.bySA = make(map[model.SAID]map[model.PolicyID]struct{})
	if err := f.setup(cfg, cdevNames); err != nil {
		f.teardown()
		return nil, err
	}
	f.tscHz = float64(C.rte_get_tsc_hz())
	f.tscBase = uint64(C.rte_get_tsc_cycles())
	f.wallBase = time.Now()
	// latency unit: the power of two of TSC cycles nearest below 16 ns
	for f.latShift = 0; float64(uint64(2)<<f.latShift) <= f.tscHz*16e-9; f.latShift++ {
	}
	f.dp.lat_shift = C.uint32_t(f.latShift)

	for i, lc := range f.workers {
		wid := C.uint32_t(i)
		eal.ExecOnLcoreAsync(lc, f.done, func(*eal.LcoreCtx) {
			C.sp_worker_run(f.dp, wid)
		})
	}
	// READY means forwarding: wait until every loop runs
	deadline := time.Now().Add(10 * time.Second)
	for int(C.sp_running(f.dp)) < len(f.workers) {
		if time.Now().After(deadline) {
			f.Close()
			return nil, errors.New("fastpath: worker lcore did not start")
		}
		time.Sleep(time.Millisecond)
	}
	if control, err := f.pinControlThreads(); err != nil {
		log.Warn("control threads not kept off the worker CPUs", "err", err)
	} else if control.Count() > 0 {
		log.Info("control threads kept off the worker CPUs", "cpus", cpus.List(&control), "gomaxprocs", runtime.GOMAXPROCS(0))
	}
	log.Info("fast path forwarding", "worker_lcores", fmt.Sprint(f.workers), "ports", len(f.ports), "crypto", strings.Join(cdevNames, ","))
	return f, nil
}

func (f *Fastpath) setup(cfg Config, cdevNames []string) error {
	var ebuf [256]C.char
	f.dp = C.sp_dp_new(C.SP_MAX_WORKERS)
	if f.dp == nil {
		return errors.New("fastpath: out of memory for the data plane state")
	}
	nq := C.uint16_t(len(f.workers))
	f.dp.n_workers = C.uint32_t(nq)
	if cfg.MaxSAs == 0 {
		cfg.MaxSAs = 16384
	}
	f.maxSAs = cfg.MaxSAs
	if rc := C.sp_sad_create(f.dp, C.uint32_t(cfg.MaxSAs)); rc != 0 {
		return fmt.Errorf("fastpath: SAD for %d SAs: errno %d", cfg.MaxSAs, -rc)
	}
	f.dp.natt_port = C.uint16_t(cfg.NATTPort)
	f.dp.closed = 1 // until the control plane says charon has replayed
	f.dp.idle_sleep_us = C.uint32_t(cfg.IdleSleep / time.Microsecond)

	mp, err := mempool.CreateMbufPool("sp_mbuf", cfg.Mbufs, 2048+128,
		mempool.OptCacheSize(256), mempool.OptSocket(-1))
	if err != nil {
		return fmt.Errorf("fastpath: mbuf pool: %w", err)
	}
	pool := (*C.struct_rte_mempool)(unsafe.Pointer(mp))
	f.mbufPool = pool
	if slices.ContainsFunc(cfg.Ports, func(p PortConfig) bool { return strings.HasPrefix(p.Device, "net_af_packet") }) {
		mp, err := mempool.CreateMbufPool("sp_mbuf_afp", afpMbufs, afpFrame+128,
			mempool.OptCacheSize(64), mempool.OptSocket(-1))
		if err != nil {
			return fmt.Errorf("fastpath: mbuf pool for af_packet ports: %w", err)
		}
		f.afpPool = (*C.struct_rte_mempool)(unsafe.Pointer(mp))
	}
	// reassembled packets, and fragments made here (dp_frag.c)
	if rc := C.sp_frag_pools(f.dp, pool, &ebuf[0], C.size_t(len(ebuf))); rc != 0 {
		return fmt.Errorf("fastpath: %s", cerr(ebuf[:]))
	}

	f.sessPool = C.sp_session_pool(C.uint32_t(cfg.MaxSAs), &ebuf[0], C.size_t(len(ebuf)))
	if f.sessPool == nil {
		return fmt.Errorf("fastpath: %s", cerr(ebuf[:]))
	}
	f.dp.cop_pool = C.sp_cop_pool(4096, &ebuf[0], C.size_t(len(ebuf)))
	if f.dp.cop_pool == nil {
		return fmt.Errorf("fastpath: %s", cerr(ebuf[:]))
	}
	for _, name := range cdevNames {
		cname := C.CString(name)
		var id C.int
		rc := C.sp_cdev_setup(cname, f.sessPool, nq, &id, &ebuf[0], C.size_t(len(ebuf)))
		C.free(unsafe.Pointer(cname))
		if rc != 0 {
			return fmt.Errorf("fastpath: %s", cerr(ebuf[:]))
		}
		f.cdevs = append(f.cdevs, cdev{id: id, name: name})
	}

	for i, p := range cfg.Ports {
		phys, err := portByName(vdevName(p.Device))
		if err != nil {
			return fmt.Errorf("fastpath: port %s (%s): %w", p.Name, p.Device, err)
		}
		tap, err := portByName(fmt.Sprintf("net_tap%d", i))
		if err != nil {
			return fmt.Errorf("fastpath: port %s: TAP %s: %w", p.Name, p.Tap, err)
		}
		rxPool := pool
		if strings.HasPrefix(p.Device, "net_af_packet") {
			rxPool = f.afpPool
		}
		if rc := C.sp_port_setup(phys, rxPool, C.uint16_t(p.MTU), nq, &ebuf[0], C.size_t(len(ebuf))); rc != 0 {
			return fmt.Errorf("fastpath: port %s: %s", p.Name, cerr(ebuf[:]))
		}
		var mac [6]byte
		C.sp_port_mac(phys, (*C.uint8_t)(&mac[0]))
		// the kernel's interface carries the wire port's MAC, so what it
		// resolves and answers (ARP) is true on the wire
		if rc := C.sp_port_set_mac(tap, (*C.uint8_t)(&mac[0])); rc != 0 {
			return fmt.Errorf("fastpath: port %s: set TAP %s MAC: errno %d", p.Name, p.Tap, -rc)
		}
		if rc := C.sp_port_setup(tap, pool, C.uint16_t(p.MTU), nq, &ebuf[0], C.size_t(len(ebuf))); rc != 0 {
			return fmt.Errorf("fastpath: port %s: TAP: %s", p.Name, cerr(ebuf[:]))
		}
		mtu := p.MTU
		if mtu == 0 {
			mtu = 1500
		}
		f.dp.ports[i].mtu = C.uint16_t(mtu)
		if f.dp.tun_mtu == 0 || C.uint16_t(mtu) < f.dp.tun_mtu {
			f.dp.tun_mtu = C.uint16_t(mtu)
		}
		f.dp.ports[i].phys = phys
		f.dp.ports[i].tap = tap
		if liveLink(p.Device) {
			f.dp.ports[i].l2 = 1
		}
		C.memcpy(unsafe.Pointer(&f.dp.ports[i].mac), unsafe.Pointer(&mac[0]), 6)
		f.ports = append(f.ports, dataplane.PortInfo{
			Index: i, Name: p.Name, Device: p.Device, Tap: p.Tap,
			MAC: net.HardwareAddr(append([]byte(nil), mac[:]...)),
		})
		f.log.Info("port up", "port", p.Name, "device", p.Device, "tap", p.Tap, "mac", net.HardwareAddr(mac[:]).String())
	}
	f.dp.n_ports = C.uint32_t(len(cfg.Ports))
	for j, ifc := range cfg.Interfaces {
		i := len(cfg.Ports) + j
		tun, err := portByName(fmt.Sprintf("net_tun%d", j))
		if err != nil {
			return fmt.Errorf("fastpath: interface %s: %w", ifc.Name, err)
		}
		mtu := ifc.MTU
		if mtu == 0 {
			mtu = 1400
		}
		if rc := C.sp_port_setup(tun, pool, C.uint16_t(mtu), nq, &ebuf[0], C.size_t(len(ebuf))); rc != 0 {
			return fmt.Errorf("fastpath: interface %s: %s", ifc.Name, cerr(ebuf[:]))
		}
		f.dp.ports[i].phys = C.SP_NO_PORT
		f.dp.ports[i].tap = tun
		f.dp.ports[i].mtu = C.uint16_t(mtu)
		switch {
		case ifc.MSSClamp == MSSClampPMTU:
			f.dp.ports[i].mss4, f.dp.ports[i].mss6 = C.uint16_t(mtu-40), C.uint16_t(mtu-60)
		case ifc.MSSClamp > 0:
			f.dp.ports[i].mss4, f.dp.ports[i].mss6 = C.uint16_t(ifc.MSSClamp), C.uint16_t(ifc.MSSClamp)
		}
		f.dp.n_ifc = C.uint32_t(j + 1)
		f.ifcs = append(f.ifcs, ifc)
		f.log.Info("route-based interface up", "interface", ifc.Name, "if_id", ifc.IfID, "mark", ifc.Mark, "mtu", mtu)
	}
	return nil
}

// checkInterfaces reports everything wrong with the route-based
// interfaces at once.
func checkInterfaces(ifcs []InterfaceConfig, nports int) error {
	var errs []error
	if nports+len(ifcs) > C.SP_MAX_PORTS {
		errs = append(errs, fmt.Errorf("fastpath: %d ports and %d route-based interfaces: at most %d together",
			nports, len(ifcs), C.SP_MAX_PORTS))
	}
	ids, marks, names := map[uint32]bool{}, map[uint32]bool{}, map[string]bool{}
	for _, ifc := range ifcs {
		switch {
		case ifc.Name == "":
			errs = append(errs, errors.New("fastpath: route-based interface without a name"))
		case names[ifc.Name]:
			errs = append(errs, fmt.Errorf("fastpath: route-based interface %s: named twice", ifc.Name))
		}
		names[ifc.Name] = true
		if ifc.IfID == 0 && ifc.Mark == 0 {
			errs = append(errs, fmt.Errorf("fastpath: route-based interface %s: neither an if_id nor a mark", ifc.Name))
		}
		if ifc.IfID != 0 && ids[ifc.IfID] {
			errs = append(errs, fmt.Errorf("fastpath: route-based interface %s: if_id %d is another interface's", ifc.Name, ifc.IfID))
		}
		if ifc.Mark != 0 && marks[ifc.Mark] {
			errs = append(errs, fmt.Errorf("fastpath: route-based interface %s: mark %d is another interface's", ifc.Name, ifc.Mark))
		}
		ids[ifc.IfID], marks[ifc.Mark] = true, true
		if ifc.MSSClamp != 0 && ifc.MSSClamp != MSSClampPMTU && (ifc.MSSClamp < 536 || ifc.MSSClamp > 65495) {
			errs = append(errs, fmt.Errorf("fastpath: route-based interface %s: MSS %d out of range 536..65495", ifc.Name, ifc.MSSClamp))
		}
	}
	return errors.Join(errs...)
}

// ifcOf says which route-based interface an SA or policy with this mark
// and XFRM interface id belongs to: 0 for none (policy-based), else 1 +
// its index; an error when it is route-based but no interface is
// configured for it.
func ifcOf(ifcs []InterfaceConfig, mark, mask, ifID uint32) (int, error) {
	if mark == 0 && mask == 0 && ifID == 0 {
		return 0, nil
	}
	if mark != 0 && mask != 0xffffffff {
		return 0, fmt.Errorf("mark 0x%x/0x%x: only a whole mark (mask 0xffffffff) names a route-based interface: %w",
			mark, mask, model.ErrUnsupported)
	}
	for i, ifc := range ifcs {
		if (ifID != 0 && ifc.IfID == ifID) || (ifID == 0 && mark != 0 && ifc.Mark == mark) {
			return i + 1, nil
		}
	}
	if ifID != 0 {
		return 0, fmt.Errorf("XFRM interface id %d: no route-based interface of swanpathd has it ([[interface]] if_id): %w",
			ifID, model.ErrUnsupported)
	}
	return 0, fmt.Errorf("mark %d: no route-based interface of swanpathd has it ([[interface]] mark): %w",
		mark, model.ErrUnsupported)
}

func portByName(name string) (C.uint16_t, error) {
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	var id C.uint16_t
	if rc := C.sp_port_by_name(cn, &id); rc != 0 {
		return 0, fmt.Errorf("no DPDK port named %q", name)
	}
	return id, nil
}

// Close stops the worker, frees every SA (wiping keys in the PMD) and
// releases EAL.
func (f *Fastpath) Close() error {
	f.Stop()
	f.teardown()
	return nil
}

// Stop stops the packet loop (idempotent); counters stay readable until
// Close.
func (f *Fastpath) Stop() {
	if f.dp != nil && C.sp_running(f.dp) != 0 {
		C.sp_store_u32(&f.dp.stop, 1)
		for range f.workers {
			<-f.done
		}
	}
}

func (f *Fastpath) teardown() {
	f.fib.Lock()
	defer f.fib.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	// no rebuild starts from now on (nor runs once f.dp is gone)
	f.mu.rb.closeLocked()
	if f.dp != nil {
		C.sp_publish_ipsec(f.dp, nil)
		C.sp_publish_fib(f.dp, nil)
	}
	C.sp_ipsec_tables_free(f.mu.ipsec)
	C.sp_fib_free(f.mu.fib)
	f.mu.ipsec, f.mu.fib = nil, nil
	for i, rs := range f.fib.sets {
		if rs != nil {
			rs.close()
			f.fib.sets[i] = nil
		}
	}
	for id, e := range f.mu.sas {
		C.sp_sa_free(e.c)
		delete(f.mu.sas, id)
	}
	if f.dp != nil {
		for i := 0; i < int(f.dp.n_ports); i++ {
			C.sp_port_stop(f.dp.ports[i].phys)
			C.sp_port_stop(f.dp.ports[i].tap)
		}
		for i := int(f.dp.n_ports); i < int(f.dp.n_ports+f.dp.n_ifc); i++ {
			C.sp_port_stop(f.dp.ports[i].tap)
		}
	}
	C.sp_cdev_stop_all()
	C.sp_dp_free(f.dp)
	f.dp = nil
	eal.StopLcores()
	ealCleanup()
}

// ealCleanup releases EAL, then removes what it leaves in its runtime
// directory (/var/run/dpdk/<file-prefix>): its telemetry socket, which
// EAL unlinks only from a C atexit handler that a Go program never runs,
// and the directory if nothing else is in it. Only this process's own
// sockets go (found by inode among its file descriptors): --in-memory
// processes may share a prefix (the later ones bind dpdk_telemetry.v2:N).
// A process of the same prefix that has made the directory but not yet
// bound its socket at that instant would find it gone; with one
// swanpathd per prefix that does not happen.
func ealCleanup() {
	dir := C.GoString(C.rte_eal_get_runtime_dir())
	own := ownUnixSockets(dir)
	eal.Cleanup()
	for _, p := range own {
		_ = os.Remove(p)
	}
	if dir != "" {
		_ = os.Remove(dir) // fails while anything is left in it
	}
}

// ownUnixSockets lists the paths under dir of the unix sockets this
// process holds: /proc/net/unix gives each bound socket's inode and path,
// /proc/self/fd the inodes of the process's own.
func ownUnixSockets(dir string) []string {
	if dir == "" {
		return nil
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	tab, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(tab), "\n") {
		// Num RefCount Protocol Flags Type St Inode Path
		f := strings.Fields(line)
		if len(f) == 8 && inodes[f[6]] && filepath.Dir(f[7]) == filepath.Clean(dir) {
			out = append(out, f[7])
		}
	}
	return out
}

// Ports describes the ports.
func (f *Fastpath) Ports() []dataplane.PortInfo { return f.ports }

// PortStats reads the per-port counters.
func (f *Fastpath) PortStats() []dataplane.PortStats {
	out := make([]dataplane.PortStats, len(f.ports))
	for i, p := range f.ports {
		m := make(map[string]uint64, len(dataplane.CounterNames))
		for k, name := range dataplane.CounterNames {
			for w := range f.workers {
				m[name] += uint64(f.dp.w[w].stats[i].cnt[k])
			}
		}
		out[i] = dataplane.PortStats{Name: p.Name, Counters: m}
	}
	// the route-based interfaces' counters follow, under their names
	for j, ifc := range f.ifcs {
		i := len(f.ports) + j
		m := make(map[string]uint64, len(dataplane.CounterNames))
		for k, name := range dataplane.CounterNames {
			for w := range f.workers {
				m[name] += uint64(f.dp.w[w].stats[i].cnt[k])
			}
		}
		out = append(out, dataplane.PortStats{Name: ifc.Name, Counters: m})
	}
	return out
}

// Latency is the histogram of every worker's latency from receive burst
// to the wire's transmit queue, since start.
func (f *Fastpath) Latency() dataplane.Latency {
	l := dataplane.Latency{Buckets: make([]dataplane.LatencyBucket, C.SP_LAT_BUCKETS)}
	unit := float64(uint64(1)<<f.latShift) / f.tscHz * float64(time.Second)
	for i := range l.Buckets {
		l.Buckets[i].Low = time.Duration(float64(latBucketLow(i)) * unit)
		for w := range f.workers {
			l.Buckets[i].Count += uint64(f.dp.w[w].lat[i])
		}
	}
	return l
}

// latBucketLow is the smallest latency (in units) bucket i holds: the
// inverse of sp_lat_bucket (dp.h).
func latBucketLow(i int) uint64 {
	if i < 32 {
		return uint64(i)
	}
	msb := uint((i-32)/16 + 5)
	sub := uint64((i - 32) % 16)
	return (16 + sub) << (msb - 4)
}

// MbufsAvailable is the number of free mbufs (in the rx pools and the
// per-lcore caches); with no traffic in flight it must not shrink.
func (f *Fastpath) MbufsAvailable() int {
	n := int(C.rte_mempool_avail_count(f.mbufPool))
	if f.afpPool != nil {
		n += int(C.rte_mempool_avail_count(f.afpPool))
	}
	return n
}

// fragPoolsFree says how many mbufs of the pools of reassembled packets
// and of fragments are free, and how many they have.
func (f *Fastpath) fragPoolsFree() (free, size int) {
	for _, p := range []*C.struct_rte_mempool{f.dp.whole_pool, f.dp.ind_pool} {
		free += int(C.rte_mempool_avail_count(p))
		size += int(p.size)
	}
	return free, size
}

// SetClosed makes the workers fail closed or forward by policy (see
// dataplane.Dataplane). The fast path starts closed. It returns once every
// worker has finished the burst it may have begun under the old state: a
// worker reads the flag once per burst, so without the wait a frame that
// arrives after closing could still be forwarded.
func (f *Fastpath) SetClosed(closed bool) {
	var v C.uint32_t
	if closed {
		v = 1
	}
	C.sp_store_u32(&f.dp.closed, v)
	C.sp_synchronize(f.dp)
}

// Notes drains what the loop noted for the control plane since the last
// call: next hops without neighbour, packets for policies without SA.
func (f *Fastpath) Notes() []dataplane.Note {
	var buf [C.SP_NOTE_RING]C.struct_sp_note
	var out []dataplane.Note
	for w := range f.workers {
		n := C.sp_note_pop(f.dp, C.uint32_t(w), &buf[0], C.SP_NOTE_RING)
		out = f.appendNotes(out, buf[:n])
	}
	return out
}

func (f *Fastpath) appendNotes(out []dataplane.Note, notes []C.struct_sp_note) []dataplane.Note {
	for _, m := range notes {
		a, d := noteAddr(m.family, m.a), noteAddr(m.family, m.d)
		switch m.kind {
		case C.SP_NOTE_MISS:
			u := (*C.struct_sp_note_miss)(unsafe.Pointer(&m.u))
			out = append(out, dataplane.Note{Kind: dataplane.NoteNoNeighbour, Port: int(u.port), Dst: a})
		case C.SP_NOTE_MAPPING:
			u := (*C.struct_sp_note_mapping)(unsafe.Pointer(&m.u))
			out = append(out, dataplane.Note{Kind: dataplane.NoteMapping, SPI: uint32(u.spi),
				Src: a, SrcPort: uint16(u.sport)})
		case C.SP_NOTE_ACQUIRE:
			u := (*C.struct_sp_note_acquire)(unsafe.Pointer(&m.u))
			out = append(out, dataplane.Note{Kind: dataplane.NoteAcquire, Reqid: uint32(u.reqid),
				Src: a, Dst: d})
		}
	}
	return out
}

// noteAddr reads an address of a note (IPv4 in the first 4 bytes).
func noteAddr(family C.uint8_t, b [16]C.uint8_t) netip.Addr {
	var a [16]byte
	for i := range a {
		a[i] = byte(b[i])
	}
	if family == 6 {
		return netip.AddrFrom16(a)
	}
	return netip.AddrFrom4([4]byte(a[:4]))
}

func (f *Fastpath) tscToTime(tsc uint64) time.Time {
	if tsc == 0 {
		return time.Time{}
	}
	d := time.Duration(float64(int64(tsc-f.tscBase)) / f.tscHz * float64(time.Second))
	return f.wallBase.Add(d)
}

// liveLink says whether a port's device is a live link, where frames for
// other hosts' MACs may arrive (a bridge or a switch floods them), rather
// than a capture file replayed (net_pcap with rx_pcap=, as the benchmarks
// and some tests feed the fast path) or a null device.
func liveLink(device string) bool {
	return !strings.Contains(device, "rx_pcap=") && !strings.HasPrefix(device, "net_null")
}
