// Package secgw runs DPDK's ipsec-secgw example (built from Debian's dpdk
// source package by scripts/bench-deps.sh) on the same in-memory ports,
// lcores, crypto PMD and SAs as swanpathd, for the side-by-side columns.
package secgw

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/swanpath/swanpath/bench/sut"
	"github.com/swanpath/swanpath/bench/traffic"
)

// Config is one run of ipsec-secgw.
type Config struct {
	Bin        string
	Plan       *traffic.Plan
	Inbound    bool
	Pcap       string // the input port's frames
	Frames     int    // how many frames the pcap holds (mbufs for infinite_rx)
	CryptoVdev string // e.g. "crypto_aesni_gcm" (the PMD swanpathd's SAs run on)
	CPUCrypto  bool   // SA type cpu-crypto (synchronous), else lookaside-none
	Lcores     string // "0,1"
	MemoryMB   int
	FilePrefix string
	Dir        string // for the configuration file
}

// Unsupported reports why ipsec-secgw cannot run a case at all, or "".
func Unsupported(p *traffic.Plan) string {
	if p.Encap {
		// sa.c accepts udp-encap only for inline and lookaside-protocol
		// sessions; with a software cryptodev it refuses the SA
		return "ipsec-secgw 22.11 supports UDP encapsulation only with inline or lookaside-protocol offload, not with a software crypto PMD"
	}
	return ""
}

func hexKey(b []byte) string {
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = fmt.Sprintf("%02x", x)
	}
	return strings.Join(parts, ":")
}

// Ports: 0 is the pcap (input), 1 the null port (output).
const (
	inPort  = 0
	outPort = 1
)

// writeConfig writes ipsec-secgw's sa/sp/rt/neigh rules for the plan's
// SAs in one direction. The file holds keys: mode 0600, removed after.
func (c *Config) writeConfig(path string) error {
	var b strings.Builder
	p := c.Plan
	typ := "no-offload"
	if c.CPUCrypto {
		typ = "cpu-crypto"
	}
	for i := range p.SAs {
		s := &p.SAs[i]
		spi, src, dst, dir := s.SPIOut, traffic.GatewayWAN, traffic.PeerWAN, "out"
		if c.Inbound {
			spi, src, dst, dir = s.SPIIn, traffic.PeerWAN, traffic.GatewayWAN, "in"
		}
		fmt.Fprintf(&b, "sa %s %d ", dir, spi)
		if p.Suite.AEAD() {
			fmt.Fprintf(&b, "aead_algo aes-128-gcm aead_key %s ", hexKey(s.EncKey))
		} else {
			fmt.Fprintf(&b, "cipher_algo aes-128-cbc cipher_key %s auth_algo sha256-hmac auth_key %s ",
				hexKey(s.EncKey), hexKey(s.IntKey))
		}
		fmt.Fprintf(&b, "mode ipv4-tunnel src %s dst %s type %s\n", src, dst, typ)
		if c.Inbound {
			fmt.Fprintf(&b, "sp ipv4 in esp protect %d pri 1 src %s dst %s sport 0:65535 dport 0:65535\n",
				spi, s.RemoteNet, traffic.LocalNet)
		} else {
			fmt.Fprintf(&b, "sp ipv4 out esp protect %d pri 1 src %s dst %s sport 0:65535 dport 0:65535\n",
				spi, traffic.LocalNet, s.RemoteNet)
		}
	}
	if !c.Inbound && len(p.SAs) > 0 {
		// ipsec-secgw refuses an unprotected port without an inbound SA
		// ("Cannot use unprotected portmask without configured SA
		// inbound"): the first SA's inbound half, which no frame uses
		s := &p.SAs[0]
		fmt.Fprintf(&b, "sa in %d ", s.SPIIn)
		if p.Suite.AEAD() {
			fmt.Fprintf(&b, "aead_algo aes-128-gcm aead_key %s ", hexKey(s.EncKey))
		} else {
			fmt.Fprintf(&b, "cipher_algo aes-128-cbc cipher_key %s auth_algo sha256-hmac auth_key %s ",
				hexKey(s.EncKey), hexKey(s.IntKey))
		}
		fmt.Fprintf(&b, "mode ipv4-tunnel src %s dst %s type %s\n", traffic.PeerWAN, traffic.GatewayWAN, typ)
		// and its SP rule: ipsec-secgw derives the SA's inner family from it
		fmt.Fprintf(&b, "sp ipv4 in esp protect %d pri 1 src %s dst %s sport 0:65535 dport 0:65535\n",
			s.SPIIn, s.RemoteNet, traffic.LocalNet)
	}
	mac := func(m [6]byte) string { return hexKey(m[:]) }
	if c.Inbound {
		fmt.Fprintf(&b, "rt ipv4 dst %s port %d\n", traffic.LocalNet, outPort)
		fmt.Fprintf(&b, "neigh port %d %s\n", outPort, mac(traffic.LANNextHopMAC))
	} else {
		fmt.Fprintf(&b, "rt ipv4 dst %s/32 port %d\n", traffic.PeerWAN, outPort)
		fmt.Fprintf(&b, "neigh port %d %s\n", outPort, mac(traffic.PeerMAC))
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// Run is a running ipsec-secgw.
type Run struct {
	proc   *sut.Proc
	conf   string
	prefix string
	tel    *sut.Telemetry
}

// Start starts ipsec-secgw and returns once its telemetry answers and
// its worker forwards.
func Start(ctx context.Context, c Config) (r *Run, err error) {
	if why := Unsupported(c.Plan); why != "" {
		return nil, errors.New(why)
	}
	if _, err := os.Stat(c.Bin); err != nil {
		return nil, fmt.Errorf("ipsec-secgw not built (%w): see build/ipsec-secgw-build.log", err)
	}
	r = &Run{conf: filepath.Join(c.Dir, "ep.cfg"), prefix: c.FilePrefix}
	defer func() {
		if err != nil {
			r.Close()
			r = nil
		}
	}()
	if err := c.writeConfig(r.conf); err != nil {
		return r, err
	}
	// the pcap port needs as many queues as ipsec-secgw opens TX queues
	// (one per lcore); each rx_pcap is one queue, only queue 0 is polled
	pcapDev := "net_pcap0"
	for range strings.Split(c.Lcores, ",") {
		pcapDev += ",rx_pcap=" + c.Pcap
	}
	pcapDev += ",infinite_rx=1"
	unprotected := "0x2" // the null port carries ESP (outbound)
	if c.Inbound {
		unprotected = "0x1" // the pcap port brings ESP
	}
	// mbufs: the pcap's frames (held by infinite_rx, once per queue),
	// descriptors and bursts in flight
	mbufs := c.Frames*len(strings.Split(c.Lcores, ",")) + 16384
	args := []string{
		"-l", c.Lcores, "--file-prefix", c.FilePrefix, "--in-memory", "--no-pci",
		"-m", fmt.Sprint(c.MemoryMB), "--log-level", "lib.eal:notice",
		"--vdev", pcapDev, "--vdev", "net_null0,no-rx=1", "--vdev", c.CryptoVdev + "0",
		"--",
		"-p", "0x3", "-P", "-u", unprotected, "-l", "-w", "0",
		"--config", fmt.Sprintf("(%d,0,1),(%d,0,1)", inPort, outPort),
		"-f", r.conf, "-s", fmt.Sprint(mbufs),
	}
	cmd := sut.Command(ctx, c.Bin, args...)
	r.proc, err = sut.Start("ipsec-secgw", cmd, nil)
	if err != nil {
		return r, err
	}
	r.tel, err = sut.WaitSending(ctx, r.proc, c.FilePrefix, outPort, 120*time.Second)
	switch {
	case errors.Is(err, sut.ErrExited):
		return r, fmt.Errorf("%w\n%s", err, r.why())
	case err != nil:
		return r, fmt.Errorf("%w:\n%s", err, r.proc.Tail(25))
	}
	return r, nil
}

// Tx is the output port's packet counter.
func (r *Run) Tx() (uint64, error) {
	select {
	case <-r.proc.Done():
		return 0, fmt.Errorf("ipsec-secgw exited: %v\n%s", r.proc.Err(), r.why())
	default:
	}
	return r.tel.PortTx(outPort)
}

// Rx is the input port's packet counter.
func (r *Run) Rx() (uint64, error) {
	var st struct {
		IPackets uint64 `json:"ipackets"`
	}
	err := r.tel.Query(fmt.Sprintf("/ethdev/stats,%d", inPort), &st)
	return st.IPackets, err
}

// why is what ipsec-secgw said when it gave up: its "Cause:" and error
// lines (stdout and stderr interleave), then the last lines.
func (r *Run) why() string {
	var b strings.Builder
	for _, l := range strings.Split(r.proc.Output(), "\n") {
		if strings.Contains(l, "Cause:") || strings.Contains(strings.ToLower(l), "error") {
			b.WriteString(l + "\n")
		}
	}
	return b.String() + r.proc.Tail(10)
}

// Output is what ipsec-secgw printed.
func (r *Run) Output() string { return r.proc.Output() }

// Close stops ipsec-secgw and removes its files.
func (r *Run) Close() error {
	err := sut.StopDPDK(r.proc, r.tel, r.prefix)
	_ = os.Remove(r.conf)
	return err
}
