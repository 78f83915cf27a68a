package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// IperfMode is the direction of an Iperf3Intervals run.
type IperfMode int

const (
	IperfForward IperfMode = iota // client sends
	IperfReverse                  // server sends (-R)
	IperfBidir                    // both at once (--bidir)
)

// IperfInterval is one reporting interval (1 s) of an iperf3 TCP run as
// the receiving side counted it.
type IperfInterval struct {
	Start, End float64 // seconds since the test began
	Bytes      uint64
}

// IperfRun holds the receivers' intervals of an iperf3 run, per direction.
type IperfRun struct {
	Forward []IperfInterval // client -> server, as the server received it
	Reverse []IperfInterval // server -> client, as the client received it
}

// Iperf3Intervals runs an iperf3 TCP test like Iperf3 (one-off server in
// serverNS bound to serverIP, client in clientNS, seconds long) and returns
// the per-second byte counts of each receiving side: the client's own
// report for what it received, the server's (--get-server-output) for what
// the server received. A receiver's count shows a stall that a sender's
// count, filling socket buffers, may hide.
func (l *Lab) Iperf3Intervals(ctx context.Context, serverNS, serverIP, clientNS string, seconds int, mode IperfMode) (IperfRun, error) {
	srv, err := l.iperf3Server(ctx, serverNS, serverIP, "-J")
	if err != nil {
		return IperfRun{}, err
	}
	defer srv.Stop()

	args := []string{"iperf3", "--json", "-c", serverIP, "-p", "5201", "-t", strconv.Itoa(seconds),
		"--connect-timeout", "5000", "--get-server-output"}
	switch mode {
	case IperfReverse:
		args = append(args, "-R")
	case IperfBidir:
		args = append(args, "--bidir")
	}
	out, err := l.Host(clientNS).Exec(ctx, args...)
	run, perr := parseIperfIntervals([]byte(out))
	if perr != nil {
		return IperfRun{}, fmt.Errorf("iperf3 %s -> %s: %w", clientNS, serverIP, errors.Join(perr, err))
	}
	if err != nil {
		return IperfRun{}, fmt.Errorf("iperf3 %s -> %s: %w", clientNS, serverIP, err)
	}
	if (mode != IperfReverse && len(run.Forward) == 0) || (mode != IperfForward && len(run.Reverse) == 0) {
		return run, fmt.Errorf("iperf3 %s -> %s: no receiver intervals (forward %d, reverse %d)",
			clientNS, serverIP, len(run.Forward), len(run.Reverse))
	}
	return run, nil
}

type iperfSum struct {
	Start  float64 `json:"start"`
	End    float64 `json:"end"`
	Bytes  uint64  `json:"bytes"`
	Sender *bool   `json:"sender"`
}

type iperfReport struct {
	Error     string `json:"error"`
	Intervals []struct {
		Sum        *iperfSum `json:"sum"`
		SumReverse *iperfSum `json:"sum_bidir_reverse"`
	} `json:"intervals"`
	Server *iperfReport `json:"server_output_json"`
}

// receiving returns the intervals in which this side received.
func (r *iperfReport) receiving() ([]IperfInterval, error) {
	var ivs []IperfInterval
	for _, iv := range r.Intervals {
		for _, s := range []*iperfSum{iv.Sum, iv.SumReverse} {
			if s == nil {
				continue
			}
			if s.Sender == nil {
				return nil, errors.New("interval without a sender field")
			}
			if !*s.Sender {
				ivs = append(ivs, IperfInterval{Start: s.Start, End: s.End, Bytes: s.Bytes})
			}
		}
	}
	return ivs, nil
}

func parseIperfIntervals(out []byte) (IperfRun, error) {
	var rep iperfReport
	if err := json.Unmarshal(out, &rep); err != nil {
		return IperfRun{}, fmt.Errorf("parse json: %w", err)
	}
	if rep.Error != "" {
		return IperfRun{}, errors.New(rep.Error)
	}
	if rep.Server == nil {
		return IperfRun{}, errors.New("no server_output_json (--get-server-output)")
	}
	if rep.Server.Error != "" {
		return IperfRun{}, fmt.Errorf("server: %s", rep.Server.Error)
	}
	var run IperfRun
	var err error
	if run.Reverse, err = rep.receiving(); err != nil {
		return IperfRun{}, fmt.Errorf("client report: %w", err)
	}
	if run.Forward, err = rep.Server.receiving(); err != nil {
		return IperfRun{}, fmt.Errorf("server report: %w", err)
	}
	return run, nil
}

// iperf3Server starts a one-off iperf3 server (-1) on host role bound to
// serverIP, port 5201, with extra arguments, and returns once it listens.
func (l *Lab) iperf3Server(ctx context.Context, role, serverIP string, extra ...string) (*Proc, error) {
	h := l.Host(role)
	if h == nil {
		return nil, fmt.Errorf("iperf3 server: the lab has no host %q", role)
	}
	srv, err := h.Start(append(append([]string{"iperf3", "-s", "-1"}, extra...), "-B", serverIP, "-p", "5201")...)
	if err != nil {
		return nil, err
	}
	err = PollFor(ctx, "iperf3 server in "+role+" listens", 10*time.Second, 20*time.Millisecond, func() (bool, error) {
		select {
		case <-srv.Done():
			return false, fmt.Errorf("iperf3 server exited: %s", srv.Output())
		default:
		}
		out, err := h.Exec(ctx, "ss", "-Hltn", "sport = :5201")
		return err == nil && strings.Contains(out, "5201"), err
	})
	if err != nil {
		srv.Stop()
		return nil, err
	}
	return srv, nil
}
