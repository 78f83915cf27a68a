package lab

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// UML is a Host that is a user-mode-Linux kernel (Debian's linux.uml, 6.1,
// with ESP, XFRM, VTI and GRE as modules): a real Linux network stack of
// its own, for what this machine's kernel lacks (ESP).
//
// It runs inside a namespace of its own (its shell, named like a namespace
// host: prefix-role), on that namespace's veths: the lab creates the
// topology's links as for a namespace host, and the instance's interface
// vecN (raw transport on the veth of the same name) is renamed to it
// inside, so "wan" inside is the veth "wan" of the shell. Its root is
// this machine's / through hostfs, read-only (charon, swanctl, ip, tcpdump
// are the host's own), with private tmpfs on /run, /tmp, /var and
// /etc/swanctl, and the UML module tree loaded through a modprobe wrapper
// (the kernel's crypto autoload uses it too).
//
// Control: the init script starts umlagent (lab/cmd/umlagent, a static Go
// binary) on a control veth pair of the shell (umlctl, 169.254.77.0/30);
// Exec and Start run `umlagent run` in the shell, which runs the command
// inside and passes output, signals and exit status through. Dial opens a
// stream inside through the agent (charon's VICI socket). Capture and
// SendFrames work on the shell's veth, which is the instance's wire.
// ListenPacket is not supported (no socket of the test process inside).
//
// Close kills the instance and deletes its shell; a killed test binary
// leaves a shell that RemoveStale deletes with the processes in it, as for
// any lab namespace. The console is kept in console.log in the instance's
// directory and logged for a failing test.
type UML struct {
	name   string // prefix-role, also the shell's name and the umid
	shell  *NS
	dir    string // init script, console log, uml_dir
	root   string // the root file system's directory here; "" for /
	ifaces []string
	tools  umlTools
	proc   *Proc // linux.uml
	booted time.Duration

	closeOnce sync.Once
	closeErr  error
}

var _ Host = (*UML)(nil)

// UML instance defaults.
const (
	UMLBin     = "/usr/bin/linux.uml"
	UMLModules = "/usr/lib/uml/modules"
	UMLMem     = "192M" // per instance (charon, tcpdump, ip)
	// UMLGatewayMem is a kernel host's with a root of its own (a
	// gateway running swanpathd: DPDK's memory is ordinary pages there)
	UMLGatewayMem = "1024M"
	// UMLHostDir is where a kernel host with a root of its own sees
	// this machine's / (read-only)
	UMLHostDir = "/run/host"
	// UMLInitStub is the program in such a root that mounts /proc,
	// /sys, /run and UMLHostDir and runs the lab's init script from
	// there (the kernel passes its path as swanpath_init=)
	UMLInitStub = "/sbin/swanpath-uml-init"
	umlCtlIf    = "umlctl"
	umlCtlHost  = "169.254.77.1"
	umlCtlGuest = "169.254.77.2"
	umlCtlPort  = 7001
)

// umlModules are loaded at boot: XFRM and ESP with the algorithms the lab
// negotiates (others autoload through the wrapper).
var umlModules = []string{
	"xfrm_user", "esp4", "esp6", "xfrm4_tunnel", "xfrm6_tunnel", "gcm", "ghash-generic", "seqiv", "echainiv",
	"authenc", "authencesn", "cbc", "hmac", "sha512_generic", "ctr", "chacha20poly1305",
}

// UMLAvailable says why kernel hosts cannot run here ("" if they can).
func UMLAvailable() string {
	if _, err := os.Stat(UMLBin); err != nil {
		return "user-mode-linux not installed (" + UMLBin + "): run `sudo make setup`"
	}
	if ents, err := os.ReadDir(UMLModules); err != nil || len(ents) == 0 {
		return "no UML module tree under " + UMLModules
	}
	if _, err := exec.LookPath("modprobe"); err != nil {
		return "modprobe (kmod) not installed"
	}
	return ""
}

// umlTools are the agent binary and the ptrace shim, built once per test
// binary into a directory named by the hash of their sources (so a run
// reuses what an earlier run built). They must be readable inside the
// instance, whose root is /: any host path is.
type umlTools struct{ agent, shim string }

var umlToolsOnce struct {
	sync.Once
	t   umlTools
	err error
}

func buildUMLTools() (umlTools, error) {
	umlToolsOnce.Do(func() { umlToolsOnce.t, umlToolsOnce.err = doBuildUMLTools() })
	return umlToolsOnce.t, umlToolsOnce.err
}

func doBuildUMLTools() (umlTools, error) {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return umlTools{}, errors.New("uml: cannot find the lab's sources")
	}
	src := filepath.Dir(self)
	agentSrc, shimSrc := filepath.Join(src, "cmd", "umlagent", "main.go"), filepath.Join(src, "umlshim", "xstate.c")
	h := sha256.New()
	for _, f := range []string{agentSrc, shimSrc} {
		b, err := os.ReadFile(f)
		if err != nil {
			return umlTools{}, fmt.Errorf("uml: %w", err)
		}
		h.Write(b)
	}
	dir := filepath.Join(os.TempDir(), "swanpath-uml-"+hex.EncodeToString(h.Sum(nil))[:12])
	t := umlTools{agent: filepath.Join(dir, "umlagent"), shim: filepath.Join(dir, "xstate.so")}
	if _, err := os.Stat(t.shim); err == nil {
		if _, err := os.Stat(t.agent); err == nil {
			return t, nil
		}
	}
	tmp, err := os.MkdirTemp(os.TempDir(), "swanpath-uml-build")
	if err != nil {
		return t, err
	}
	defer os.RemoveAll(tmp)
	gobin := "go"
	if _, err := exec.LookPath(gobin); err != nil {
		gobin = "/usr/local/go/bin/go"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, gobin, "build", "-o", filepath.Join(tmp, "umlagent"), "./cmd/umlagent")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return t, fmt.Errorf("uml: build umlagent: %w: %s", err, out)
	}
	if err := run(ctx, "cc", "-O2", "-shared", "-fPIC", "-o", filepath.Join(tmp, "xstate.so"), shimSrc, "-ldl"); err != nil {
		return t, fmt.Errorf("uml: build the ptrace shim: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return t, err
	}
	for _, f := range []string{"umlagent", "xstate.so"} {
		if err := os.Rename(filepath.Join(tmp, f), filepath.Join(dir, f)); err != nil {
			return t, err
		}
	}
	return t, nil
}

// bootUML starts an instance in shell on the shell's veths ifaces (vec0,
// vec1, ... in that order) and returns once its agent answers.
// With root set, the instance's root is that directory (read-only, with
// UMLInitStub in it; see LibreswanRoot), and this machine's / is under
// UMLHostDir inside.
func bootUML(ctx context.Context, shell *NS, dir string, ifaces []string, mem, root string) (*UML, error) {
	if why := UMLAvailable(); why != "" {
		return nil, errors.New("uml: " + why)
	}
	tools, err := buildUMLTools()
	if err != nil {
		return nil, err
	}
	if root == "/" {
		root = ""
	}
	u := &UML{name: shell.Name, shell: shell, dir: dir, ifaces: ifaces, tools: tools, root: root}
	if err := os.MkdirAll(filepath.Join(dir, "uml"), 0o700); err != nil {
		return nil, err
	}
	if _, err := shell.Exec(ctx, "ip", "link", "add", umlCtlIf, "type", "veth", "peer", "name", umlCtlIf+"u"); err != nil {
		return nil, err
	}
	for _, c := range [][]string{
		{"ip", "addr", "add", umlCtlHost + "/30", "dev", umlCtlIf},
		{"ip", "link", "set", umlCtlIf, "up"},
		{"ip", "link", "set", umlCtlIf + "u", "up"},
		{"ethtool", "-K", umlCtlIf, "tx", "off"},
		{"ethtool", "-K", umlCtlIf + "u", "tx", "off"},
	} {
		if _, err := shell.Exec(ctx, c...); err != nil {
			return nil, err
		}
	}
	initPath := filepath.Join(dir, "init.sh")
	if err := os.WriteFile(initPath, []byte(u.initScript()), 0o755); err != nil {
		return nil, err
	}
	args := []string{UMLBin, "mem=" + mem, "rootfstype=hostfs", "rootflags=/", "ro", "init=" + initPath,
		"con=null", "con0=null,fd:1", "umid=" + u.name, "uml_dir=" + filepath.Join(dir, "uml")}
	if root != "" {
		if _, err := os.Stat(filepath.Join(root, UMLInitStub)); err != nil {
			return nil, fmt.Errorf("uml: root %s has no %s: %w", root, UMLInitStub, err)
		}
		args[3], args[5] = "rootflags="+root, "init="+UMLInitStub
		args = append(args, "swanpath_init="+initPath)
	}
	for i, ifc := range append(append([]string(nil), ifaces...), umlCtlIf+"u") {
		args = append(args, fmt.Sprintf("vec%d:transport=raw,ifname=%s", i, ifc))
	}
	start := time.Now()
	// the shim: see lab/umlshim/xstate.c
	u.proc, err = shell.StartEnv([]string{"LD_PRELOAD=" + tools.shim}, args...)
	if err != nil {
		return nil, err
	}
	err = PollFor(ctx, "umlagent in "+u.name+" answers", 60*time.Second, 50*time.Millisecond, func() (bool, error) {
		select {
		case <-u.proc.Done():
			return false, Abort(errors.New("linux.uml exited"))
		default:
		}
		_, err := u.Exec(ctx, "true")
		return err == nil, err
	})
	u.booted = time.Since(start)
	if err != nil {
		u.Close()
		return nil, fmt.Errorf("boot %s: %w\nconsole:\n%s", u.name, err, u.proc.Tail(40))
	}
	return u, nil
}

// initScript is PID 1 of the instance: file systems, modules, interfaces,
// then the agent (the instance powers off if the agent ends).
func (u *UML) initScript() string {
	var b strings.Builder
	fmt.Fprintf(&b, `#!/bin/sh
# generated by swanpath lab for %s
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
%smkdir -p /run/lock /run/uml/modroot/lib/modules
cp %s /run/uml/umlagent
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /var
mkdir -p /var/lib /var/log /var/cache /var/tmp && ln -s /run /var/run && ln -s /run/lock /var/lock
[ -d /etc/swanctl ] && mount -t tmpfs -o mode=700 tmpfs /etc/swanctl
mount -t hostfs none /run/uml/modroot/lib/modules -o %s
printf '#!/bin/sh\nexec modprobe -d /run/uml/modroot "$@"\n' > /run/uml/modprobe
chmod 755 /run/uml/modprobe
echo /run/uml/modprobe > /proc/sys/kernel/modprobe
for m in %s; do /run/uml/modprobe $m || echo "init: modprobe $m failed"; done
ip link set lo up
`, u.name, u.mounts(), u.HostPath(u.tools.agent), UMLModules, strings.Join(umlModules, " "))
	// GRO off: the vector driver hands what it receives to GRO, which
	// merges a TCP flow's segments into one large frame before a packet
	// socket sees it; swanpathd's net_af_packet ports (frames of at most
	// 2 KiB) lost those, and TCP from the LAN through a kernel gateway
	// crawled at ~0.3 Mbit/s on retransmissions (TestLibreswanGateway's
	// iperf3)
	for i, ifc := range u.ifaces {
		fmt.Fprintf(&b, "ip link set vec%d name %s\nethtool -K %s tx off >/dev/null 2>&1\nethtool -K %s gro off >/dev/null 2>&1\nip link set %s up\n", i, ifc, ifc, ifc, ifc)
	}
	fmt.Fprintf(&b, `ip link set vec%d name %s
ip addr add %s/30 dev %s
ip link set %s up
echo "init: up"
/run/uml/umlagent serve -addr %s:%d &
wait $!
echo "init: umlagent exited"
echo o > /proc/sysrq-trigger
sleep 10
`, len(u.ifaces), umlCtlIf, umlCtlGuest, umlCtlIf, umlCtlIf, umlCtlGuest, umlCtlPort)
	return b.String()
}

// mounts are the init script's first file systems: all of them on this
// machine's root; the stub has mounted /proc, /sys and /run (with
// UMLHostDir in it) in a root of its own, whose /dev has no TUN device.
func (u *UML) mounts() string {
	if u.root == "" {
		// this machine's / again under UMLHostDir: its /tmp (where a
		// test's files may be, a CI clone too) is hidden by the
		// instance's own
		return "mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t tmpfs -o mode=755 tmpfs /run\n" +
			"mkdir -p " + UMLHostDir + " && mount -r -t hostfs none " + UMLHostDir + " -o /\n"
	}
	return `mount -t devtmpfs devtmpfs /dev 2>/dev/null || {
	mount -t tmpfs -o mode=755 tmpfs /dev
	mknod -m 666 /dev/null c 1 3; mknod -m 666 /dev/zero c 1 5; mknod -m 666 /dev/urandom c 1 9; mknod -m 666 /dev/random c 1 8
}
mkdir -p /dev/net /dev/pts /dev/shm
[ -e /dev/net/tun ] || mknod -m 666 /dev/net/tun c 10 200
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
`
}

// HostPath is where path of this machine is seen inside, read-only:
// under UMLHostDir (the instance's own /run, /tmp and /var hide this
// machine's).
func (u *UML) HostPath(path string) string {
	return UMLHostDir + path
}

func (u *UML) String() string { return u.name }

// BootTime is how long the instance took from start to its agent's answer.
func (u *UML) BootTime() time.Duration { return u.booted }

// Console is what the instance wrote to its console so far.
func (u *UML) Console() string { return u.proc.Output() }

func (u *UML) agentAddr() string { return net.JoinHostPort(umlCtlGuest, strconv.Itoa(umlCtlPort)) }

func (u *UML) client(env []string, out string, args []string) []string {
	c := []string{u.tools.agent, "run", "-addr", u.agentAddr()}
	for _, e := range env {
		c = append(c, "-e", e)
	}
	if out != "" {
		c = append(c, "-o", out)
	}
	return append(append(c, "--"), args...)
}

// Exec runs args inside the instance (see Host).
func (u *UML) Exec(ctx context.Context, args ...string) (string, error) {
	return u.ExecEnv(ctx, nil, args...)
}

// ExecEnv is Exec with extra environment variables ("K=V").
func (u *UML) ExecEnv(ctx context.Context, env []string, args ...string) (string, error) {
	out, err := u.shell.Exec(ctx, u.client(env, "", args)...)
	if err != nil {
		return out, fmt.Errorf("%s (kernel host): %w", u.name, err)
	}
	return out, nil
}

// Start runs args in the background inside the instance.
func (u *UML) Start(args ...string) (*Proc, error) { return u.StartEnv(nil, args...) }

// StartEnv is Start with extra environment variables.
func (u *UML) StartEnv(env []string, args ...string) (*Proc, error) {
	return u.shell.Start(u.client(env, "", args)...)
}

// Sysctl sets key inside the instance.
func (u *UML) Sysctl(ctx context.Context, key, value string) error {
	_, err := u.Exec(ctx, "sysctl", "-q", "-w", key+"="+value)
	return err
}

// Capture captures the instance's interface iface at its veth in the
// shell: every frame the instance sends or receives there.
func (u *UML) Capture(iface, bpfFilter string, snaplen int, path string) (*Capture, error) {
	return u.shell.Capture(iface, bpfFilter, snaplen, path)
}

// SendFrames writes frames onto iface's wire (from the shell's veth), as
// if the instance sent them.
func (u *UML) SendFrames(iface string, frames [][]byte) error {
	return u.shell.SendFrames(iface, frames)
}

// ListenPacket is not supported on a kernel host.
func (u *UML) ListenPacket(network, address string) (net.PacketConn, error) {
	return nil, fmt.Errorf("%s: ListenPacket on a kernel host is not supported", u.name)
}

// Dial connects to address from inside the instance ("tcp", "unix"),
// through the agent.
func (u *UML) Dial(network, address string) (net.Conn, error) {
	c, err := u.shell.Dial("tcp", u.agentAddr())
	if err != nil {
		return nil, fmt.Errorf("%s: dial the agent: %w", u.name, err)
	}
	b, _ := json.Marshal(map[string]string{"dial": network + ":" + address})
	if _, err := c.Write(append(b, '\n')); err != nil {
		c.Close()
		return nil, err
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ok" {
		c.Close()
		return nil, fmt.Errorf("%s: dial %s %s: %v %s", u.name, network, address, err, strings.TrimSpace(line))
	}
	return &bufConn{Conn: c, r: br}, nil
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// WriteFile writes data to path inside the instance (its parent made).
func (u *UML) WriteFile(ctx context.Context, path string, data []byte, mode os.FileMode) error {
	_, err := u.Exec(ctx, "sh", "-c", `mkdir -p "$(dirname "$2")" && printf %s "$1" | base64 -d > "$2" && chmod "$3" "$2"`,
		"sh", base64.StdEncoding.EncodeToString(data), path, fmt.Sprintf("%o", mode.Perm()))
	return err
}

// ReadFile reads path inside the instance.
func (u *UML) ReadFile(ctx context.Context, path string) (string, error) {
	return u.Exec(ctx, "cat", path)
}

// Close kills the instance (its root is read-only, its writable file
// systems are tmpfs: nothing to shut down cleanly), keeps its console in
// console.log and deletes the shell with whatever still runs there.
func (u *UML) Close() error {
	u.closeOnce.Do(func() {
		if u.proc != nil {
			_ = u.proc.Signal(syscall.SIGKILL)
			u.proc.Stop()
			_ = os.WriteFile(filepath.Join(u.dir, "console.log"), []byte(u.proc.Output()), 0o644)
		}
		u.closeErr = u.shell.Close()
	})
	return u.closeErr
}
