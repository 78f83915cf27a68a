package pluginsock

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/model"
)

// keySA is testSA with keys whose every 4-byte run is unique to them, so
// that a leftover run in a buffer cannot be a coincidence.
func keySA(spi uint32) model.SA {
	sa := testSA()
	sa.SPI, sa.Mark, sa.MarkMask, sa.IfID = spi, 0, 0, 0
	sa.EncAlg, sa.EncKey = model.EncrAESCBC, make(model.Key, 32)
	sa.IntAlg, sa.IntKey = model.IntegHMACSHA256_128, make(model.Key, 32)
	for i := range sa.EncKey {
		sa.EncKey[i] = byte(0x40 + i)
		sa.IntKey[i] = byte(0xa0 + i)
	}
	sa.ICVLen = 0
	return sa
}

// keyRun reports where b holds a run of 4 bytes of one of the keys.
func keyRun(b []byte, keys ...[]byte) (int, bool) {
	for _, k := range keys {
		for i := 0; i+4 <= len(k); i++ {
			if at := bytes.Index(b, k[i:i+4]); at >= 0 {
				return at, true
			}
		}
	}
	return 0, false
}

func addSAFrame(t *testing.T, sa model.SA, pad int) []byte {
	t.Helper()
	b, err := AppendMessage(nil, &Message{Type: TypeAddSA, Seq: sa.SPI, SA: sa})
	if err != nil {
		t.Fatal(err)
	}
	if pad > 0 {
		// an unknown attribute first makes the frame outgrow the buffer
		p := append(tlv(999, make([]byte, pad)...), b[HeaderLen:]...)
		b = append(b[:HeaderLen:HeaderLen], p...)
		binary.BigEndian.PutUint32(b[8:], uint32(len(p)))
	}
	return b
}

// TestServerLeavesNoKeyBytes serves ADD_SAs through the real server (frame
// reader, decoder, dispatch, fake handler) and then looks for any 4-byte
// run of the keys in the connection's reused read buffer and in the SA the
// handler was given: after an SA is installed, after the handler refused
// it, after the server refused it before the handler, after a frame that
// outgrew the buffer, and after frames that do not decode or are cut short
// (those close the connection).
func TestServerLeavesNoKeyBytes(t *testing.T) {
	s, h, logs := startServer(t, nil)
	bufs := make(chan []byte, 1)
	s.mu.Lock()
	s.mu.afterFrame = func(buf []byte) { bufs <- bytes.Clone(buf) }
	s.mu.Unlock()
	sa := keySA(0xc0000001)
	keys := [][]byte{append([]byte(nil), sa.EncKey...), append([]byte(nil), sa.IntKey...)}

	noDst := keySA(0xc0000002)
	noDst.Dst = netip.Addr{}
	truncated := addSAFrame(t, keySA(0xc0000004), 0)
	truncated = append(truncated, 0, 1) // half an attribute header
	binary.BigEndian.PutUint32(truncated[8:], uint32(len(truncated)-HeaderLen))

	tests := []struct {
		name   string
		frame  []byte
		cut    int    // leave off this many bytes at the end, then close
		status Status // RESULT expected; closed if the frame is malformed
		closed bool
	}{
		{name: "installed", frame: addSAFrame(t, sa, 0), status: StatusOK},
		{name: "handler error", frame: addSAFrame(t, sa, 0), status: StatusExists},
		{name: "refused before the handler", frame: addSAFrame(t, noDst, 0), status: StatusInvalid},
		{name: "frame outgrows the buffer", frame: addSAFrame(t, keySA(0xc0000003), 3000), status: StatusOK},
		{name: "does not decode", frame: truncated, closed: true},
		{name: "cut short", frame: addSAFrame(t, keySA(0xc0000005), 0), cut: 10, closed: true},
	}
	var c net.Conn
	for _, tt := range tests {
		if c == nil {
			var err error
			if c, err = net.Dial("unix", s.Path()); err != nil {
				t.Fatal(err)
			}
			defer c.Close()
		}
		b := tt.frame[:len(tt.frame)-tt.cut]
		if _, err := c.Write(b); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if tt.cut > 0 {
			c.(*net.UnixConn).CloseWrite()
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		m, err := ReadMessage(c)
		switch {
		case tt.closed:
			if !errors.Is(err, io.EOF) {
				t.Errorf("%s: read = %+v, %v; want the connection closed", tt.name, m, err)
			}
			c.Close()
			c = nil
		case err != nil:
			t.Fatalf("%s: %v", tt.name, err)
		case m.Result.Status != tt.status:
			t.Errorf("%s: status %s (%s), want %s", tt.name, m.Result.Status, m.Result.Message, tt.status)
		}
		buf := <-bufs
		if at, ok := keyRun(buf, keys...); ok {
			t.Errorf("%s: key bytes left in the read buffer at %d of %d", tt.name, at, len(buf))
		}
		if len(buf) < len(tt.frame)-HeaderLen {
			t.Errorf("%s: read buffer %d bytes, the frame was %d: not the buffer the frame went through", tt.name, len(buf), len(tt.frame))
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.mu.given) != 3 {
		t.Errorf("handler saw %d ADD_SAs, want 3", len(h.mu.given))
	}
	for i, g := range h.mu.given {
		if at, ok := keyRun(append(append([]byte(nil), g.EncKey...), g.IntKey...), keys...); ok {
			t.Errorf("ADD_SA %d: the SA given to the handler still holds key bytes at %d", i, at)
		}
	}
	// the fake's own copy is what was installed
	if got := h.mu.sas[sa.SAID]; !bytes.Equal(got.EncKey, keys[0]) || !bytes.Equal(got.IntKey, keys[1]) {
		t.Errorf("installed SA has keys %v %v, want the ones sent", got.EncKey, got.IntKey)
	}
	if _, ok := keyRun([]byte(logs.String()), keys...); ok {
		t.Errorf("key bytes in the log:\n%s", logs)
	}
}
