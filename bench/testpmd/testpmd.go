// Package testpmd measures what the benchmark's in-memory ports cost on
// their own: DPDK's dpdk-testpmd forwarding the same pcap (net_pcap,
// infinite_rx: a copy of every frame into a fresh mbuf) into the same
// net_null port, on the same worker lcore, with no IPsec at all. A fast
// path adds at least its crypto to this, so it gives an estimate of the
// highest share of the crypto ceiling a fast path can reach on this
// harness.
package testpmd

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/swanpath/swanpath/bench/sut"
)

// Bin is Debian's dpdk-testpmd (package dpdk-dev).
const Bin = "/usr/bin/dpdk-testpmd"

// Config is one run.
type Config struct {
	Pcap       string // the input port's frames
	Frames     int    // how many frames the pcap holds (mbufs for infinite_rx)
	Lcores     string // "0,1": lcore 1 forwards
	MemoryMB   int
	FilePrefix string
}

const (
	inPort  = 0 // net_pcap
	outPort = 1 // net_null
)

// args builds the command line: io forwarding (no parsing, no header
// writes) from port 0 to port 1 in bursts of 32, as the fast paths read.
func (c Config) args() []string {
	mbufs := c.Frames + 16384
	return []string{
		"-l", c.Lcores, "--file-prefix", c.FilePrefix, "--in-memory", "--no-pci",
		"-m", fmt.Sprint(c.MemoryMB), "--log-level", "lib.eal:notice",
		"--vdev", "net_pcap0,rx_pcap=" + c.Pcap + ",infinite_rx=1",
		"--vdev", "net_null0,no-rx=1",
		"--",
		"--forward-mode=io", "--auto-start", "--nb-cores=1", "--rxq=1", "--txq=1",
		"--burst=32", "--portlist=0,1", "--total-num-mbufs=" + fmt.Sprint(mbufs),
		"--no-lsc-interrupt",
	}
}

// Run is a running dpdk-testpmd.
type Run struct {
	proc   *sut.Proc
	stdin  io.Closer
	prefix string
	tel    *sut.Telemetry
}

// Start runs dpdk-testpmd and returns once frames come out of the null
// port. Without -i it forwards until a line arrives on its standard
// input; that pipe stays open until Close.
func Start(ctx context.Context, c Config) (r *Run, err error) {
	if _, err := os.Stat(Bin); err != nil {
		return nil, fmt.Errorf("dpdk-testpmd: %w (Debian package dpdk-dev)", err)
	}
	r = &Run{prefix: c.FilePrefix}
	defer func() {
		if err != nil {
			r.Close()
			r = nil
		}
	}()
	cmd := sut.Command(ctx, Bin, c.args()...)
	in, err := cmd.StdinPipe()
	if err != nil {
		return r, err
	}
	r.stdin = in
	r.proc, err = sut.Start("dpdk-testpmd", cmd, nil)
	if err != nil {
		return r, err
	}
	r.tel, err = sut.WaitSending(ctx, r.proc, c.FilePrefix, outPort, 60*time.Second)
	if err != nil {
		return r, fmt.Errorf("%w:\n%s", err, r.proc.Tail(15))
	}
	return r, nil
}

// Tx is the number of frames the null port has taken.
func (r *Run) Tx() (uint64, error) {
	select {
	case <-r.proc.Done():
		return 0, fmt.Errorf("dpdk-testpmd exited: %v\n%s", r.proc.Err(), r.proc.Tail(10))
	default:
	}
	return r.tel.PortTx(outPort)
}

// Close stops dpdk-testpmd and removes its runtime directory.
func (r *Run) Close() error {
	err := sut.StopDPDK(r.proc, r.tel, r.prefix)
	if r.stdin != nil {
		r.stdin.Close()
	}
	return err
}
