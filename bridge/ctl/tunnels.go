package ctl

// Tunnel is one CHILD_SA as `swanctl --list-sas` groups them: both SAs,
// what the fast path counted on each, and charon's names when VICI tells
// them (empty otherwise).
type Tunnel struct {
	Names
	State      string    `json:"state,omitempty"` // charon's CHILD_SA state
	Reqid      uint32    `json:"reqid"`
	Mode       string    `json:"mode,omitempty"`
	SPIIn      string    `json:"spi_in,omitempty"`
	SPIOut     string    `json:"spi_out,omitempty"`
	In         TunnelDir `json:"in"`
	Out        TunnelDir `json:"out"`
	Crypto     string    `json:"crypto_dev,omitempty"`
	CryptoMode string    `json:"crypto_mode,omitempty"`
}

// TunnelDir is one SA of a tunnel: the fast path's counters, its drops by
// reason and its rate over the last second or so.
type TunnelDir struct {
	Bytes         uint64            `json:"bytes"`
	Packets       uint64            `json:"packets"`
	Drops         map[string]uint64 `json:"drops"`
	BytesPerSec   float64           `json:"bytes_per_sec"`
	PacketsPerSec float64           `json:"packets_per_sec"`
}

// TunnelSource is a Source that also lists tunnels.
type TunnelSource interface {
	Tunnels() []Tunnel
}
