package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"
)

// LibreswanPackages make the root of a libreswan kernel host (besides
// Debian's minbase): libreswan 4.10, the tools the lab runs inside, and
// what swanpathd needs at run time (`ldd bin/swanpathd`: the DPDK 22.11
// libraries; the PMDs it loads: af_packet, tap, the ring mempool, the
// crypto PMDs). Debian's libreswan conflicts with strongSwan's packages,
// so it cannot share this machine's root with the lab's charons.
var LibreswanPackages = []string{
	"libreswan", "iproute2", "kmod", "procps", "ethtool", "iputils-ping", "tcpdump",
	"librte-ipsec23", "librte-acl23", "librte-lpm23", "librte-ip-frag23", "librte-net-af-packet23", "librte-net-tap23",
	"librte-mempool-ring23", "librte-crypto-ipsec-mb23", "librte-crypto-openssl23",
}

// umlInitStub is UMLInitStub in a root of its own: the lab's init script
// is a file of this machine, reached through hostfs.
const umlInitStub = `#!/bin/sh
# swanpath lab: PID 1 of a kernel host with a root of its own
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p ` + UMLHostDir + `
mount -t hostfs -o ro,/ none ` + UMLHostDir + `
exec /bin/sh "` + UMLHostDir + `$swanpath_init"
`

var libreswanRootOnce struct {
	sync.Mutex
	dir string
}

// LibreswanRoot returns the root directory for a libreswan kernel host
// (Options.KernelGatewayRoot): made once by mmdebstrap (~30 s) under
// build/lab in the repository, keyed by the package list and the lab's
// changes to it (never committed), then reused. The changes: UMLInitStub,
// and /etc/ipsec.conf and /etc/ipsec.secrets as links into /run/ipsec,
// where StartPluto writes them (the root is read-only inside).
func LibreswanRoot(ctx context.Context) (string, error) {
	libreswanRootOnce.Lock()
	defer libreswanRootOnce.Unlock()
	if libreswanRootOnce.dir != "" {
		return libreswanRootOnce.dir, nil
	}
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("libreswan root: cannot find the repository")
	}
	sum := sha256.Sum256([]byte("bookworm minbase " + strings.Join(LibreswanPackages, ",") + "\n" + umlInitStub))
	dir := filepath.Join(filepath.Dir(filepath.Dir(self)), "build", "lab", "libreswan-"+hex.EncodeToString(sum[:6]))
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		libreswanRootOnce.dir = dir
		return dir, nil
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		return "", errors.New("libreswan root: mmdebstrap not installed (run `make setup`)")
	}
	tmp := dir + ".tmp"
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "mmdebstrap", "--variant=minbase", "--include="+strings.Join(LibreswanPackages, ","), "bookworm", tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("libreswan root: mmdebstrap: %w\n%s", err, tail(string(out), 30))
	}
	if err := os.WriteFile(filepath.Join(tmp, UMLInitStub), []byte(umlInitStub), 0o755); err != nil {
		return "", err
	}
	for _, f := range []string{"ipsec.conf", "ipsec.secrets"} {
		p := filepath.Join(tmp, "etc", f)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		if err := os.Symlink("/run/ipsec/"+f, p); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
		return "", err
	}
	_ = os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	libreswanRootOnce.dir = dir
	return dir, nil
}

// LibreswanConn is one libreswan connection (ipsec.conf) of the gateway
// towards the lab's peer: IKEv2, PSK, tunnel mode between the lab's LANs.
type LibreswanConn struct {
	Name  string // "site" by default
	ESP   string // esp=, "aes_gcm128-null" by default
	IKE   string // ike=, "aes_gcm128-sha2_256-dh31" by default (the lab's IKE proposal)
	Encap bool   // encapsulation=yes
	Extra []string
	PSK   string // Tunnel's default by default

	// Lifetimes (ipsec.conf(5) of libreswan 4.10); zero leaves
	// libreswan's default. pluto replaces an SA rekeymargin (minus
	// rekeyfuzz percent of it, at random) before its lifetime ends; the
	// kernel gets ipsec-max-bytes (in and out each) as the SA's hard
	// byte limit and a fuzzed share of it as the soft one (seen: 26-35%).
	SALifetime    time.Duration // salifetime=
	IKELifetime   time.Duration // ikelifetime=
	RekeyMargin   time.Duration // rekeymargin=
	RekeyFuzz     string        // rekeyfuzz=, e.g. "0%"
	IPsecMaxBytes uint64        // ipsec-max-bytes=
}

func (c LibreswanConn) withDefaults() LibreswanConn {
	if c.Name == "" {
		c.Name = "site"
	}
	if c.ESP == "" {
		c.ESP = "aes_gcm128-null"
	}
	if c.IKE == "" {
		c.IKE = "aes_gcm128-sha2_256-dh31"
	}
	if c.PSK == "" {
		c.PSK = Tunnel{}.withDefaults().PSK
	}
	return c
}

// IPsecConf is the gateway's ipsec.conf for c.
func (c LibreswanConn) IPsecConf() string {
	c = c.withDefaults()
	var b strings.Builder
	fmt.Fprintf(&b, `# generated by swanpath lab
config setup
	plutodebug=none
	logtime=yes
	dumpdir=/run/pluto
conn %s
	left=%s
	leftid=@gw.lab
	leftsubnet=%s
	right=%s
	rightid=@pr.lab
	rightsubnet=%s
	authby=secret
	ikev2=insist
	type=tunnel
	ike=%s
	esp=%s
	encapsulation=%s
	auto=add
`, c.Name, GWWanAddr, LeftNet, PRWanAddr, RightNet, c.IKE, c.ESP, map[bool]string{true: "yes", false: "no"}[c.Encap])
	secs := func(d time.Duration) string { return fmt.Sprintf("%ds", int64(d/time.Second)) }
	for _, o := range []struct {
		key string
		val string
		set bool
	}{
		{"salifetime", secs(c.SALifetime), c.SALifetime > 0},
		{"ikelifetime", secs(c.IKELifetime), c.IKELifetime > 0},
		{"rekeymargin", secs(c.RekeyMargin), c.RekeyMargin > 0},
		{"rekeyfuzz", c.RekeyFuzz, c.RekeyFuzz != ""},
		{"ipsec-max-bytes", fmt.Sprint(c.IPsecMaxBytes), c.IPsecMaxBytes > 0},
	} {
		if o.set {
			fmt.Fprintf(&b, "\t%s=%s\n", o.key, o.val)
		}
	}
	for _, e := range c.Extra {
		fmt.Fprintf(&b, "\t%s\n", e)
	}
	return b.String()
}

// Pluto is libreswan's IKE daemon on a kernel host with LibreswanRoot.
type Pluto struct {
	u    *UML
	proc *Proc
	Conn LibreswanConn // StartPluto's (zero with StartPlutoConf)
	name string        // the connection pluto adds and brings up
}

// StartPluto writes ipsec.conf and ipsec.secrets for conn, makes pluto's
// NSS database, starts pluto in the foreground (its log is the Proc's
// output), waits until it answers and adds conn.
func (l *Lab) StartPluto(ctx context.Context, role string, conn LibreswanConn) (*Pluto, error) {
	conn = conn.withDefaults()
	secrets := fmt.Sprintf("@gw.lab @pr.lab : PSK %q\n", conn.PSK)
	p, err := l.StartPlutoConf(ctx, role, conn.Name, conn.IPsecConf(), secrets)
	if p != nil {
		p.Conn = conn
	}
	return p, err
}

// StartPlutoConf is StartPluto with ipsec.conf and ipsec.secrets as given
// (their content as is), adding connection name.
func (l *Lab) StartPlutoConf(ctx context.Context, role, name, ipsecConf, secrets string) (*Pluto, error) {
	u, ok := l.Host(role).(*UML)
	if !ok {
		return nil, fmt.Errorf("pluto on %s: not a kernel host", role)
	}
	if err := u.WriteFile(ctx, "/run/ipsec/ipsec.conf", []byte(ipsecConf), 0o644); err != nil {
		return nil, err
	}
	if err := u.WriteFile(ctx, "/run/ipsec/ipsec.secrets", []byte(secrets), 0o600); err != nil {
		return nil, err
	}
	if _, err := u.Exec(ctx, "sh", "-c", "mkdir -p /run/pluto /var/lib/ipsec/nss && [ -f /var/lib/ipsec/nss/cert9.db ] || ipsec initnss >/dev/null"); err != nil {
		return nil, err
	}
	p := &Pluto{u: u, name: name}
	if err := p.start(ctx); err != nil {
		return p, err
	}
	return p, nil
}

func (p *Pluto) start(ctx context.Context) error {
	proc, err := p.u.Start("ipsec", "pluto", "--nofork", "--stderrlog", "--config", "/etc/ipsec.conf")
	if err != nil {
		return err
	}
	p.proc = proc
	err = PollFor(ctx, "pluto answers", 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		select {
		case <-proc.Done():
			return false, Abort(fmt.Errorf("pluto exited:\n%s", proc.Tail(40)))
		default:
		}
		_, err := p.u.Exec(ctx, "ipsec", "whack", "--status")
		return err == nil, err
	})
	if err != nil {
		return err
	}
	if _, err := p.Ipsec(ctx, "auto", "--add", p.name); err != nil {
		return fmt.Errorf("ipsec auto --add: %w\n%s", err, proc.Tail(40))
	}
	return nil
}

// Restart stops pluto (SIGTERM: it deletes its SAs) and starts it again
// with the same connection added.
func (p *Pluto) Restart(ctx context.Context) error {
	if err := p.proc.Stop(); err != nil {
		return err
	}
	return p.start(ctx)
}

// ServiceRestart restarts pluto as Debian's ipsec.service does on
// `ipsec restart`: `whack --shutdown` (pluto deletes its SAs and tells the
// peer), then the unit's ExecStopPost and the `_stackmanager start` of its
// ExecStartPre flush the kernel's XFRM policies and SAs (twice: once
// after the stop, once before the start), then pluto starts with the
// connection added. The connection is not brought up.
func (p *Pluto) ServiceRestart(ctx context.Context) error {
	if _, err := p.Ipsec(ctx, "whack", "--shutdown"); err != nil {
		return fmt.Errorf("pluto shutdown: %w\n%s", err, p.proc.Tail(20))
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	err := p.proc.Wait(wctx)
	cancel()
	if errors.Is(err, wctx.Err()) && err != nil {
		_ = p.proc.Stop()
	}
	for i := 0; i < 2; i++ {
		for _, what := range []string{"policy", "state"} {
			if _, err := p.u.Exec(ctx, "ip", "xfrm", what, "flush"); err != nil {
				return err
			}
		}
	}
	return p.start(ctx)
}

// Ipsec runs `ipsec ARGS` inside.
func (p *Pluto) Ipsec(ctx context.Context, args ...string) (string, error) {
	return p.u.Exec(ctx, append([]string{"ipsec"}, args...)...)
}

// Up is `ipsec auto --up` of the connection: it returns when the IPsec
// SA is established (or pluto gave up).
func (p *Pluto) Up(ctx context.Context) error {
	out, err := p.Ipsec(ctx, "auto", "--up", p.name)
	if err != nil || !strings.Contains(out, "established Child SA") && !strings.Contains(out, "IPsec SA established") {
		return fmt.Errorf("ipsec auto --up %s: %v\n%s\npluto:\n%s", p.name, err, out, p.proc.Tail(40))
	}
	return nil
}

// Output is pluto's log so far.
func (p *Pluto) Output() string { return p.proc.Output() }

// Traffic is one line of `ipsec trafficstatus`.
type Traffic struct {
	Conn              string
	InBytes, OutBytes uint64
}

var trafficRe = regexp.MustCompile(`"([^"]+)".*inBytes=(\d+), outBytes=(\d+)`)

// TrafficStatus is `ipsec trafficstatus`, parsed.
func (p *Pluto) TrafficStatus(ctx context.Context) ([]Traffic, error) {
	out, err := p.Ipsec(ctx, "trafficstatus")
	if err != nil {
		return nil, err
	}
	var ts []Traffic
	for _, m := range trafficRe.FindAllStringSubmatch(out, -1) {
		var t Traffic
		t.Conn = m[1]
		fmt.Sscan(m[2], &t.InBytes)
		fmt.Sscan(m[3], &t.OutBytes)
		ts = append(ts, t)
	}
	return ts, nil
}
