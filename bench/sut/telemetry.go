package sut

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Telemetry is DPDK's telemetry socket of a running DPDK process
// (/var/run/dpdk/<file-prefix>/dpdk_telemetry.v2): one JSON request, one
// JSON reply, over a SOCK_SEQPACKET unix socket.
type Telemetry struct {
	c   *net.UnixConn
	buf []byte
}

// TelemetryPath is where a DPDK process with this --file-prefix listens.
func TelemetryPath(prefix string) string {
	return filepath.Join("/var/run/dpdk", prefix, "dpdk_telemetry.v2")
}

// RemoveRuntimeDir removes what EAL leaves in /var/run/dpdk for prefix
// (the telemetry socket stays behind even with --in-memory).
func RemoveRuntimeDir(prefix string) {
	if prefix != "" {
		_ = os.RemoveAll(filepath.Join("/var/run/dpdk", prefix))
	}
}

// DialTelemetry connects and reads the greeting.
func DialTelemetry(path string) (*Telemetry, error) {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("telemetry %s: %w", path, err)
	}
	t := &Telemetry{c: c, buf: make([]byte, 1<<20)}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(t.buf); err != nil {
		c.Close()
		return nil, fmt.Errorf("telemetry %s: greeting: %w", path, err)
	}
	return t, nil
}

// Close closes the connection.
func (t *Telemetry) Close() error { return t.c.Close() }

// Query sends cmd (e.g. "/ethdev/stats,1") and decodes the value of the
// reply's single key into v.
func (t *Telemetry) Query(cmd string, v any) error {
	_ = t.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := t.c.Write([]byte(cmd)); err != nil {
		return fmt.Errorf("telemetry %s: %w", cmd, err)
	}
	n, err := t.c.Read(t.buf)
	if err != nil {
		return fmt.Errorf("telemetry %s: %w", cmd, err)
	}
	var rep map[string]json.RawMessage
	if err := json.Unmarshal(t.buf[:n], &rep); err != nil {
		return fmt.Errorf("telemetry %s: %w", cmd, err)
	}
	for _, raw := range rep {
		if string(raw) == "null" {
			return fmt.Errorf("telemetry %s: no such command or object", cmd)
		}
		return json.Unmarshal(raw, v)
	}
	return fmt.Errorf("telemetry %s: empty reply", cmd)
}

// PortTx is the number of packets port has sent (ethdev opackets).
func (t *Telemetry) PortTx(port int) (uint64, error) {
	var st struct {
		OPackets uint64 `json:"opackets"`
	}
	if err := t.Query(fmt.Sprintf("/ethdev/stats,%d", port), &st); err != nil {
		return 0, err
	}
	return st.OPackets, nil
}

// HeapAlloc is the bytes allocated from DPDK's malloc heaps (rte_malloc,
// memzones, mempools) of every socket.
func (t *Telemetry) HeapAlloc() (uint64, error) {
	var ids struct {
		List []int `json:"Heap_id"`
	}
	var list []int
	if err := t.Query("/eal/heap_list", &ids); err == nil {
		list = ids.List
	} else {
		return 0, err
	}
	var total uint64
	for _, id := range list {
		var info struct {
			Alloc uint64 `json:"Alloc_size"`
		}
		if err := t.Query(fmt.Sprintf("/eal/heap_info,%d", id), &info); err != nil {
			return 0, err
		}
		total += info.Alloc
	}
	return total, nil
}

// ErrExited and ErrSilent are why WaitSending gave up.
var (
	ErrExited = errors.New("exited")
	ErrSilent = errors.New("sends nothing")
)

// WaitSending connects to the telemetry socket of p, a DPDK process with
// this --file-prefix, and returns the connection once port has sent a
// packet: an error wrapping ErrExited when p ends first, ErrSilent after
// timeout.
func WaitSending(ctx context.Context, p *Proc, prefix string, port int, timeout time.Duration) (*Telemetry, error) {
	deadline := time.Now().Add(timeout)
	var tel *Telemetry
	for {
		if tel == nil {
			tel, _ = DialTelemetry(TelemetryPath(prefix))
		}
		if tel != nil {
			if n, err := tel.PortTx(port); err == nil && n > 0 {
				return tel, nil
			}
		}
		var err error
		select {
		case <-p.Done():
			err = fmt.Errorf("%s %w: %v", p.Name, ErrExited, p.Err())
		case <-ctx.Done():
			err = ctx.Err()
		case <-time.After(100 * time.Millisecond):
			if time.Now().After(deadline) {
				err = fmt.Errorf("%s %w within %s", p.Name, ErrSilent, timeout)
			}
		}
		if err != nil {
			if tel != nil {
				tel.Close()
			}
			return nil, err
		}
	}
}

// StopDPDK ends a DPDK process started with Start and watched with
// WaitSending: closes its telemetry connection, stops it (SIGINT, then
// SIGKILL after 15 s) and removes its runtime directory. p and tel may be
// nil (a start that failed early).
func StopDPDK(p *Proc, tel *Telemetry, prefix string) error {
	var err error
	if tel != nil {
		tel.Close()
	}
	if p != nil {
		err = p.Stop(syscall.SIGINT, 15*time.Second)
	}
	RemoveRuntimeDir(prefix)
	return err
}
