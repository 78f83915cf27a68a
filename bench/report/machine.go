package report

import (
	"bufio"
	"os"
	"os/exec"
	"runtime"
	"strings"
)

// Machine describes where the numbers come from.
type Machine struct {
	CPU        string  `json:"cpu"`
	Cores      int     `json:"cores"`
	CPUFlags   string  `json:"crypto_flags"` // the ones that matter for crypto speed
	Kernel     string  `json:"kernel"`
	OS         string  `json:"os"`
	Virt       string  `json:"virtualization,omitempty"`
	MemoryKB   string  `json:"memory"`
	Hugepages  string  `json:"hugepages"`
	DPDK       string  `json:"dpdk"`
	IPsecMB    string  `json:"intel_ipsec_mb"`
	Go         string  `json:"go"`
	Swanpath   string  `json:"swanpath_commit"`
	TSCHz      float64 `json:"tsc_hz"`
	LoadBefore string  `json:"loadavg_before"`
	LoadAfter  string  `json:"loadavg_after"`
}

func cmdOut(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func fileField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// LoadAvg is /proc/loadavg's first three fields.
func LoadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// Describe collects the machine description; repo is the swanpath checkout.
func Describe(repo string, tscHz float64) Machine {
	m := Machine{
		CPU:        fileField("/proc/cpuinfo", "model name"),
		Cores:      runtime.NumCPU(),
		Kernel:     cmdOut("uname", "-r"),
		OS:         strings.Trim(strings.TrimPrefix(cmdOut("grep", "-m1", "^PRETTY_NAME=", "/etc/os-release"), "PRETTY_NAME="), `"`),
		Virt:       cmdOut("systemd-detect-virt"),
		MemoryKB:   fileField("/proc/meminfo", "MemTotal"),
		Hugepages:  fileField("/proc/meminfo", "HugePages_Total") + " x " + fileField("/proc/meminfo", "Hugepagesize"),
		DPDK:       cmdOut("pkg-config", "--modversion", "libdpdk") + " (Debian " + cmdOut("dpkg-query", "-W", "-f", "${Version}", "libdpdk-dev") + ")",
		IPsecMB:    cmdOut("dpkg-query", "-W", "-f", "${Version}", "libipsec-mb1"),
		Go:         runtime.Version(),
		TSCHz:      tscHz,
		LoadBefore: LoadAvg(),
	}
	if m.Virt == "none" {
		m.Virt = ""
	}
	var flags []string
	have := map[string]bool{}
	for _, f := range strings.Fields(fileField("/proc/cpuinfo", "flags")) {
		have[f] = true
	}
	for _, f := range []string{"aes", "vaes", "vpclmulqdq", "pclmulqdq", "sha_ni", "avx2", "avx512f", "constant_tsc", "nonstop_tsc"} {
		if have[f] {
			flags = append(flags, f)
		}
	}
	m.CPUFlags = strings.Join(flags, " ")
	commit := cmdOut("git", "-C", repo, "rev-parse", "--short=12", "HEAD")
	if commit != "" && cmdOut("git", "-C", repo, "status", "--porcelain", "--untracked-files=no") != "" {
		commit += " (with uncommitted changes)"
	}
	m.Swanpath = commit
	return m
}
