package lab

import (
	"github.com/swanpath/swanpath/internal/syncbuf"

	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/strongswan/govici/vici"
)

// CharonBin is Debian's charon.
const CharonBin = "/usr/lib/ipsec/charon"

// basePlugins are always loaded. kernel-netlink stays for kernel_net
// (addresses, routes, interfaces) even when another plugin provides
// kernel_ipsec.
var basePlugins = []string{
	"random", "nonce", "openssl", "aes", "sha1", "sha2", "hmac", "gcm", "kdf",
	"pem", "pkcs1", "pubkey", "x509", "socket-default", "kernel-netlink", "vici",
}

// Plugin is an extra charon plugin with its settings, e.g.
// {Name: "kernel-swanpath", Settings: []string{"socket = /path"}}.
type Plugin struct {
	Name     string
	Settings []string // lines inside charon.plugins.<Name> { }
}

// CharonOptions configure one charon.
type CharonOptions struct {
	// Plugins are loaded in addition to basePlugins, e.g. kernel-libipsec or
	// kernel-swanpath.
	Plugins []Plugin
	// Settings are extra lines inside charon { }, e.g. "install_routes = no".
	Settings []string
	// Swanctl is the content of swanctl.conf (see TunnelConfig).
	Swanctl string
	// RunBinds are directories under /run (e.g. "/run/swanpath") that stay
	// visible to charon although it gets a private /run. They must exist.
	RunBinds []string
	// LogLevels override the file logger's levels per subsystem.
	LogLevels map[string]int
}

var defaultLogLevels = map[string]int{
	"default": 1, "ike": 1, "cfg": 1, "knl": 2, "net": 1, "esp": 1, "chd": 1, "enc": 0, "lib": 1, "job": 0, "mgr": 0,
}

// Charon is a running charon in one namespace.
type Charon struct {
	host    Host
	dir     string // config, logs
	runDir  string // mounted over /run inside charon's mount namespace
	conf    string // strongswan.conf
	swanctl string // swanctl.conf
	logPath string
	sock    string // VICI unix socket path
	proc    *Proc
	kernel  *UML // the host when it is a kernel host: files and VICI inside
	// start runs this charon's process again with the same files (Restart)
	start func() (*Proc, error)
}

// StartCharon writes a strongswan.conf and swanctl.conf for namespace role
// and starts charon there with a private /run (Debian's charon hard-codes
// /var/run/charon.pid), its own VICI socket and file log. It returns once
// VICI answers. The config is not loaded yet: call LoadAll.
func (l *Lab) StartCharon(role string, opts CharonOptions) (*Charon, error) {
	host := l.Host(role)
	if host == nil {
		return nil, fmt.Errorf("start charon: the lab has no host %q", role)
	}
	if u, ok := host.(*UML); ok {
		return l.startKernelCharon(u, role, opts)
	}
	dir := filepath.Join(l.dir, "charon-"+role)
	c := &Charon{
		host:    host,
		dir:     dir,
		runDir:  filepath.Join(dir, "run"),
		conf:    filepath.Join(dir, "strongswan.conf"),
		swanctl: filepath.Join(dir, "swanctl.conf"),
		logPath: filepath.Join(dir, "charon.log"),
	}
	c.sock = filepath.Join(dir, "charon.vici")
	if len(c.sock) > 100 { // sun_path is 108 bytes
		short, err := os.MkdirTemp("", "spv")
		if err != nil {
			return nil, err
		}
		l.t.Cleanup(func() { os.RemoveAll(short) })
		c.sock = filepath.Join(short, "charon.vici")
	}
	if err := os.MkdirAll(c.runDir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(c.conf, []byte(c.strongswanConf(opts)), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(c.swanctl, []byte(opts.Swanctl), 0o600); err != nil {
		return nil, err
	}

	// ip netns exec already gives a slave mount namespace; unshare makes a
	// private one of our own so the /run overmount stays with charon.
	var script strings.Builder
	script.WriteString("set -e\n")
	args := []string{"unshare", "-m", "--propagation", "private", "sh", "-c", "", "sh", c.runDir}
	for i, b := range opts.RunBinds {
		if !strings.HasPrefix(b, "/run/") {
			return nil, fmt.Errorf("start charon in %s: RunBinds %q is not under /run", host, b)
		}
		// $1 is the private run dir, $2... are the bind targets inside it.
		fmt.Fprintf(&script, "mkdir -p \"$%d\"\nmount --bind %q \"$%d\"\n", i+2, b, i+2)
		args = append(args, filepath.Join(c.runDir, strings.TrimPrefix(b, "/run/")))
	}
	script.WriteString("mount --rbind \"$1\" /run\nexec " + CharonBin + "\n")
	args[6] = script.String()
	return l.launchCharon(c, func() (*Proc, error) { return host.StartEnv([]string{"STRONGSWAN_CONF=" + c.conf}, args...) })
}

// launchCharon starts c with start (kept for Restart), registers it for
// the lab's teardown and waits for its VICI socket.
func (l *Lab) launchCharon(c *Charon, start func() (*Proc, error)) (*Charon, error) {
	c.start = start
	p, err := c.start()
	if err != nil {
		return nil, err
	}
	c.proc = p
	l.mu.Lock()
	l.mu.charons = append(l.mu.charons, c)
	l.mu.Unlock()
	return c, c.waitVICI()
}

// Restart starts this charon again with the same configuration once its
// process has exited (a test killed it: Proc().Signal(SIGKILL)), and
// returns once VICI answers. Its connections are not loaded: LoadAll.
func (c *Charon) Restart(ctx context.Context) error {
	if err := c.proc.Wait(ctx); err != nil && ctx.Err() != nil {
		return fmt.Errorf("restart charon in %s: the old process did not exit: %w", c.host, err)
	}
	p, err := c.start()
	if err != nil {
		return fmt.Errorf("restart charon in %s: %w", c.host, err)
	}
	c.proc = p
	return c.waitVICI()
}

// waitVICI returns once charon's VICI socket answers.
func (c *Charon) waitVICI() error {
	err := PollFor(context.Background(), "VICI answers", 15*time.Second, 50*time.Millisecond, func() (bool, error) {
		select {
		case <-c.proc.Done():
			return false, errors.New("charon exited")
		default:
		}
		s, err := c.session()
		if err != nil {
			return false, err
		}
		s.Close()
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("start charon in %s: %w\noutput: %s\nlog:\n%s", c.host, err, c.proc.Output(), tail(c.Log(), 50))
	}
	return nil
}

// startKernelCharon starts charon inside kernel host u: its files in the
// instance's private /run (the VICI socket is reached through the agent),
// no mount namespace of its own (the instance's /run is charon's alone).
func (l *Lab) startKernelCharon(u *UML, role string, opts CharonOptions) (*Charon, error) {
	dir := kernelCharonDir(role)
	c := &Charon{
		host: u, kernel: u, dir: dir, runDir: "/run",
		conf:    dir + "/strongswan.conf",
		swanctl: dir + "/swanctl.conf",
		logPath: dir + "/charon.log",
		sock:    dir + "/charon.vici",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := u.WriteFile(ctx, c.conf, []byte(c.strongswanConf(opts)), 0o644); err != nil {
		return nil, err
	}
	if err := u.WriteFile(ctx, c.swanctl, []byte(opts.Swanctl), 0o600); err != nil {
		return nil, err
	}
	return l.launchCharon(c, func() (*Proc, error) { return u.StartEnv([]string{"STRONGSWAN_CONF=" + c.conf}, CharonBin) })
}

// kernelCharonDir holds the files of charon on kernel host role
// (strongswan.conf, swanctl.conf, its log and VICI socket).
func kernelCharonDir(role string) string { return "/run/lab/charon-" + role }

// session opens a VICI session to this charon (through the agent on a
// kernel host).
func (c *Charon) session() (*vici.Session, error) {
	if c.kernel != nil {
		u := c.kernel
		return vici.NewSession(vici.WithDialContext(func(context.Context, string, string) (net.Conn, error) {
			return u.Dial("unix", c.sock)
		}))
	}
	return vici.NewSession(vici.WithSocketPath(c.sock))
}

func (c *Charon) strongswanConf(opts CharonOptions) string {
	levels := map[string]int{}
	for k, v := range defaultLogLevels {
		levels[k] = v
	}
	for k, v := range opts.LogLevels {
		levels[k] = v
	}
	var b strings.Builder
	b.WriteString("# generated by swanpath lab\ncharon {\n\tload_modular = yes\n")
	for _, s := range opts.Settings {
		fmt.Fprintf(&b, "\t%s\n", s)
	}
	fmt.Fprintf(&b, "\tfilelog {\n\t\tlab {\n\t\t\tpath = %s\n\t\t\ttime_format = %%H:%%M:%%S\n"+
		"\t\t\tike_name = yes\n\t\t\tappend = no\n\t\t\tflush_line = yes\n", c.logPath)
	for _, k := range sortedKeys(levels) {
		fmt.Fprintf(&b, "\t\t\t%s = %d\n", k, levels[k])
	}
	b.WriteString("\t\t}\n\t}\n\tsyslog {\n\t\tdaemon {\n\t\t\tdefault = -1\n\t\t}\n\t}\n")
	b.WriteString("\tplugins {\n")
	seen := map[string]bool{}
	for _, p := range basePlugins {
		seen[p] = true
		var settings []string
		if p == "vici" {
			settings = []string{"socket = unix://" + c.sock}
		}
		writePlugin(&b, p, settings)
	}
	for _, p := range opts.Plugins {
		if seen[p.Name] {
			continue
		}
		seen[p.Name] = true
		writePlugin(&b, p.Name, p.Settings)
	}
	b.WriteString("\t}\n}\n")
	b.WriteString("swanctl {\n\tload = random nonce openssl pem pkcs1 pkcs8 x509 pubkey\n}\n")
	return b.String()
}

func writePlugin(b *strings.Builder, name string, settings []string) {
	fmt.Fprintf(b, "\t\t%s {\n\t\t\tload = yes\n", name)
	for _, s := range settings {
		fmt.Fprintf(b, "\t\t\t%s\n", s)
	}
	b.WriteString("\t\t}\n")
}

// Log returns charon's log file.
func (c *Charon) Log() string {
	if c.kernel != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := c.kernel.ReadFile(ctx, c.logPath)
		if err != nil {
			return fmt.Sprintf("(no log: %v)", err)
		}
		return out
	}
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// LogPath is the path of charon's log file.
func (c *Charon) LogPath() string { return c.logPath }

// VICISocket is the path of charon's VICI socket.
func (c *Charon) VICISocket() string { return c.sock }

// Dir holds strongswan.conf, swanctl.conf and the log.
func (c *Charon) Dir() string { return c.dir }

// Proc is charon's process.
func (c *Charon) Proc() *Proc { return c.proc }

// Stop terminates charon (SIGTERM, then SIGKILL after 5 s).
func (c *Charon) Stop() error { return c.proc.Stop() }

// Swanctl runs swanctl against this charon's VICI socket and its
// swanctl.conf. Returns stdout.
func (c *Charon) Swanctl(ctx context.Context, args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("swanctl: no command")
	}
	// The command comes first; its options, --uri included, after it.
	full := append([]string{args[0], "--uri", "unix://" + c.sock}, args[1:]...)
	if c.kernel != nil {
		out, err := c.kernel.ExecEnv(ctx, []string{"SWANCTL_DIR=" + c.dir, "STRONGSWAN_CONF=" + c.conf}, append([]string{"swanctl"}, full...)...)
		if err != nil {
			return out, fmt.Errorf("swanctl %s (%s): %w", strings.Join(args, " "), c.host, err)
		}
		return out, nil
	}
	cmd := exec.CommandContext(ctx, "swanctl", full...)
	// SWANCTL_DIR points the load commands at our swanctl.conf (5.9.8's
	// swanctl has no working --file for --load-all); the swanctl section
	// of our strongswan.conf keeps it from probing absent plugins.
	cmd.Env = append(os.Environ(), "SWANCTL_DIR="+c.dir, "STRONGSWAN_CONF="+c.conf)
	var out, errb syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("swanctl %s (%s): %w: %s%s", strings.Join(args, " "), c.host, err,
			strings.TrimSpace(errb.String()), strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// LoadAll loads connections and secrets from swanctl.conf.
func (c *Charon) LoadAll(ctx context.Context) error {
	_, err := c.Swanctl(ctx, "--load-all", "--noprompt")
	return err
}

// Load replaces swanctl.conf with swanctl and loads it (LoadAll):
// connections no longer in it are unloaded, SAs already up stay.
func (c *Charon) Load(ctx context.Context, swanctl string) error {
	if c.kernel != nil {
		if err := c.kernel.WriteFile(ctx, c.swanctl, []byte(swanctl), 0o600); err != nil {
			return err
		}
		return c.LoadAll(ctx)
	}
	if err := os.WriteFile(c.swanctl, []byte(swanctl), 0o600); err != nil {
		return err
	}
	return c.LoadAll(ctx)
}

// Terminate closes IKE_SA ike (a connection name) with its CHILD_SAs and
// waits until charon has deleted it (ctx bounds the wait).
func (c *Charon) Terminate(ctx context.Context, ike string) error {
	return c.callUntil(ctx, "terminate", "ike", ike)
}

// Initiate initiates CHILD_SA child and waits for the result (charon
// retransmits on its own; ctx bounds the wait).
func (c *Charon) Initiate(ctx context.Context, child string) error {
	return c.callUntil(ctx, "initiate", "child", child)
}

// callUntil sends VICI command cmd for key = name with charon's own
// timeout set to ctx's deadline (30 s without one), so that charon stops
// waiting when the caller does.
func (c *Charon) callUntil(ctx context.Context, cmd, key, name string) error {
	timeout := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	m := vici.NewMessage()
	_ = m.Set(key, name)
	_ = m.Set("timeout", fmt.Sprint(timeout.Milliseconds()))
	if _, err := c.call(ctx, cmd, m); err != nil {
		return fmt.Errorf("%s %s in %s: %w", cmd, name, c.host, err)
	}
	return nil
}

func (c *Charon) call(ctx context.Context, cmd string, in *vici.Message) (*vici.Message, error) {
	s, err := c.session()
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.Call(ctx, cmd, in)
}
