package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
)

var pingStats = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// Ping sends pings from namespace role fromNS to toIP (IPv4 or IPv6) until count replies
// arrived (ping -c count -w deadline); it fails if fewer did before ctx's
// deadline (default 10 s + 1 s per ping).
func (l *Lab) Ping(ctx context.Context, fromNS, toIP string, count int) error {
	deadline := 10 + count
	if dl, ok := ctx.Deadline(); ok {
		if s := int(time.Until(dl).Seconds()); s >= 1 && s < deadline {
			deadline = s
		}
	}
	// the family explicitly (ping -4/-6), as ping would otherwise pick one
	// for a host name
	family := "-4"
	if a, err := netip.ParseAddr(toIP); err == nil && a.Is6() && !a.Is4In6() {
		family = "-6"
	}
	out, err := l.Host(fromNS).Exec(ctx, "ping", family, "-n", "-q", "-i", "0.2", "-W", "1",
		"-c", strconv.Itoa(count), "-w", strconv.Itoa(deadline), toIP)
	if m := pingStats.FindStringSubmatch(out); m != nil {
		rx, _ := strconv.Atoi(m[2])
		if rx >= count {
			return nil
		}
		return fmt.Errorf("ping %s -> %s: %s of %d replies: %s", fromNS, toIP, m[2], count, strings.TrimSpace(out))
	}
	if err != nil {
		return fmt.Errorf("ping %s -> %s: %w", fromNS, toIP, err)
	}
	return fmt.Errorf("ping %s -> %s: unexpected output: %s", fromNS, toIP, out)
}

// IperfResult is the summary of an iperf3 TCP run, from the receiver's view.
type IperfResult struct {
	Seconds     float64
	SentBytes   uint64
	Bytes       uint64 // received
	BitsPerSec  float64
	Retransmits int
}

// Iperf3 runs an iperf3 server in serverNS bound to serverIP and a client in
// clientNS for seconds seconds (reverse: server sends), with extra client
// arguments (e.g. "-b", "20M"). The server is a one-off (-1) and is
// stopped afterwards.
func (l *Lab) Iperf3(ctx context.Context, serverNS, serverIP, clientNS string, seconds int, reverse bool, extra ...string) (IperfResult, error) {
	srv, err := l.iperf3Server(ctx, serverNS, serverIP)
	if err != nil {
		return IperfResult{}, err
	}
	defer srv.Stop()

	args := []string{"iperf3", "--json", "-c", serverIP, "-p", "5201", "-t", strconv.Itoa(seconds),
		"--connect-timeout", "5000"}
	if reverse {
		args = append(args, "-R")
	}
	args = append(args, extra...)
	out, err := l.Host(clientNS).Exec(ctx, args...)
	var rep struct {
		Error string `json:"error"`
		End   struct {
			SumSent struct {
				Seconds     float64 `json:"seconds"`
				Bytes       uint64  `json:"bytes"`
				BitsPerSec  float64 `json:"bits_per_second"`
				Retransmits int     `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				Seconds    float64 `json:"seconds"`
				Bytes      uint64  `json:"bytes"`
				BitsPerSec float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if jerr := json.Unmarshal([]byte(out), &rep); jerr != nil {
		if err != nil {
			return IperfResult{}, fmt.Errorf("iperf3 %s -> %s: %w", clientNS, serverIP, err)
		}
		return IperfResult{}, fmt.Errorf("iperf3 %s -> %s: parse json: %w", clientNS, serverIP, jerr)
	}
	if rep.Error != "" {
		return IperfResult{}, fmt.Errorf("iperf3 %s -> %s: %s", clientNS, serverIP, rep.Error)
	}
	if err != nil {
		return IperfResult{}, fmt.Errorf("iperf3 %s -> %s: %w", clientNS, serverIP, err)
	}
	r := IperfResult{
		Seconds:     rep.End.SumReceived.Seconds,
		SentBytes:   rep.End.SumSent.Bytes,
		Bytes:       rep.End.SumReceived.Bytes,
		BitsPerSec:  rep.End.SumReceived.BitsPerSec,
		Retransmits: rep.End.SumSent.Retransmits,
	}
	if r.Bytes == 0 {
		return r, fmt.Errorf("iperf3 %s -> %s: no bytes received", clientNS, serverIP)
	}
	return r, nil
}
