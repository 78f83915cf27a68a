// Package cryptoperf measures the crypto ceiling: what the crypto PMD
// alone does on one worker core (dpdk-test-crypto-perf, throughput test),
// for the suite and the exact number of bytes ESP encrypts per packet.
package cryptoperf

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/swanpath/swanpath/bench/sut"
	"github.com/swanpath/swanpath/bench/traffic"
)

// Bin is Debian's dpdk-test-crypto-perf (package dpdk-dev).
const Bin = "/usr/bin/dpdk-test-crypto-perf"

// Config is one measurement series.
type Config struct {
	Suite      traffic.Suite
	Inbound    bool   // decrypt (+ verify) instead of encrypt (+ generate)
	Vdev       string // "crypto_aesni_gcm", "crypto_aesni_mb", ...
	Buffers    []int  // buffer sizes in bytes
	Ops        int    // operations per buffer size
	Lcores     string // "0,1": lcore 1 runs the test
	MemoryMB   int
	FilePrefix string
	part       string // "cipher" or "auth": one half of an inbound AES-CBC + HMAC (see Run)
}

// Result is the operations per second by buffer size.
type Result map[int]float64

// args builds the command line. The ICV is the suite's; AES-GCM takes the
// 8-byte AAD of ESP (SPI and sequence number, RFC 4106 §5). Decryption
// ops fail their tag check on crypto-perf's made-up data, which costs the
// same as a passing check.
func (c Config) args() []string {
	sizes := make([]string, len(c.Buffers))
	for i, b := range c.Buffers {
		sizes[i] = strconv.Itoa(b)
	}
	a := []string{"-l", c.Lcores, "--file-prefix", c.FilePrefix, "--in-memory", "--no-pci",
		"-m", strconv.Itoa(c.MemoryMB), "--log-level", "lib.eal:notice", "--vdev", c.Vdev + "0",
		"--", "--ptest", "throughput", "--devtype", c.Vdev,
		"--buffer-sz", strings.Join(sizes, ","), "--burst-sz", "32",
		"--total-ops", strconv.Itoa(c.Ops), "--csv-friendly", "--silent"}
	s := c.Suite
	if s.AEAD() {
		op := "encrypt"
		if c.Inbound {
			op = "decrypt"
		}
		return append(a, "--optype", "aead", "--aead-algo", "aes-gcm", "--aead-op", op,
			"--aead-key-sz", strconv.Itoa(s.EncKeyLen-s.SaltLen), "--aead-iv-sz", "12",
			"--aead-aad-sz", "8", "--digest-sz", strconv.Itoa(s.ICVLen))
	}
	switch c.part {
	case "cipher":
		return append(a, "--optype", "cipher-only", "--cipher-algo", "aes-cbc", "--cipher-op", "decrypt",
			"--cipher-key-sz", strconv.Itoa(s.EncKeyLen), "--cipher-iv-sz", "16")
	case "auth":
		return append(a, "--optype", "auth-only", "--auth-algo", "sha2-256-hmac", "--auth-op", "generate",
			"--auth-key-sz", strconv.Itoa(s.IntKeyLen), "--digest-sz", strconv.Itoa(s.ICVLen))
	}
	optype, cop, aop := "cipher-then-auth", "encrypt", "generate"
	if c.Inbound {
		optype, cop, aop = "auth-then-cipher", "decrypt", "verify"
	}
	return append(a, "--optype", optype,
		"--cipher-algo", "aes-cbc", "--cipher-op", cop, "--cipher-key-sz", strconv.Itoa(s.EncKeyLen),
		"--cipher-iv-sz", "16",
		"--auth-algo", "sha2-256-hmac", "--auth-op", aop, "--auth-key-sz", strconv.Itoa(s.IntKeyLen),
		"--digest-sz", strconv.Itoa(s.ICVLen))
}

// Run runs dpdk-test-crypto-perf once and parses its CSV lines
// ("lcore,buffer size,burst,enq,deq,failed enq,failed deq,Mops,Gbps,cycles/buf").
//
// Inbound AES-CBC + HMAC is measured in two halves, decryption alone and
// the HMAC alone, whose times per operation add up: crypto-perf's chained
// verify op needs a test-vector file (the digest must match, else the op
// fails and the run stops), and it refuses decrypt + generate.
func Run(ctx context.Context, c Config) (Result, string, error) {
	if c.Inbound && !c.Suite.AEAD() && c.part == "" {
		c.part = "cipher"
		rc, out, err := Run(ctx, c)
		if err != nil {
			return nil, out, err
		}
		c.part = "auth"
		ra, out2, err := Run(ctx, c)
		if err != nil {
			return nil, out2, err
		}
		res := Result{}
		for b, v := range rc {
			res[b] = 1 / (1/v + 1/ra[b])
		}
		return res, out + out2, nil
	}
	cmd := sut.Command(ctx, Bin, c.args()...)
	out, err := cmd.CombinedOutput()
	defer sut.RemoveRuntimeDir(c.FilePrefix)
	if err != nil {
		return nil, string(out), fmt.Errorf("dpdk-test-crypto-perf: %w: %s", err, tail(string(out), 15))
	}
	res := Result{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Split(strings.TrimSpace(sc.Text()), ",")
		if len(f) < 10 || strings.HasPrefix(f[0], "#") {
			continue
		}
		size, err1 := strconv.Atoi(f[1])
		mops, err2 := strconv.ParseFloat(f[7], 64)
		if err1 != nil || err2 != nil {
			continue
		}
		res[size] = mops * 1e6
	}
	for _, b := range c.Buffers {
		if _, ok := res[b]; !ok {
			return nil, string(out), fmt.Errorf("dpdk-test-crypto-perf: no result for %d B: %s", b, tail(string(out), 15))
		}
	}
	return res, string(out), nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
