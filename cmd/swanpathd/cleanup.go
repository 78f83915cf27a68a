package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/swanpath/swanpath/bridge/ctl"
	"github.com/swanpath/swanpath/bridge/kernel"
)

// runtimeDir is the service's RuntimeDirectory= (packaging/swanpathd.service).
const runtimeDir = "/run/swanpath"

// cleanup removes what swanpathd leaves on the machine on purpose between
// runs — its persistent TAPs, the nftables table that keeps the kernel off
// its ports, its sockets and state file, DPDK's runtime directory and
// hugepage files of its --file-prefix — for the package's prerm on
// removal (`swanpathd -cleanup`). It refuses while swanpathd answers on its
// control socket. Outbound sequence numbers are lost with the state file:
// charon must not keep SAs it installed through swanpath after this.
func cleanup(cfg Config) error {
	if _, err := ctl.Call(cfg.Control.Socket, "stats"); err == nil {
		return fmt.Errorf("cleanup: swanpathd is running (%s answers): stop it first", cfg.Control.Socket)
	}
	var ifaces, taps []string
	for _, p := range cfg.Ports {
		taps = append(taps, p.Tap)
		if ifname := kernelIface(p.Device); ifname != "" {
			ifaces = append(ifaces, ifname)
		}
	}
	errs := []error{kernel.Release(ifaces, taps)}
	for _, f := range []string{cfg.Plugin.Socket, cfg.Control.Socket, cfg.Fastpath.StateFile, cfg.Fastpath.StateFile + ".tmp"} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(runtimeDir); err != nil {
		errs = append(errs, err)
	}
	if cfg.EAL.FilePrefix != "" && !strings.ContainsAny(cfg.EAL.FilePrefix, "/*?[") {
		if err := os.RemoveAll(filepath.Join("/var/run/dpdk", cfg.EAL.FilePrefix)); err != nil {
			errs = append(errs, err)
		}
		hugeDir := cfg.EAL.HugeDir
		if hugeDir == "" {
			hugeDir = "/dev/hugepages"
		}
		files, _ := filepath.Glob(filepath.Join(hugeDir, cfg.EAL.FilePrefix+"map_*"))
		for _, f := range files {
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
