// Package testbed boots small qemu VMs that share raw disk images as SAN LUNs and run real
// lvm2 + lvmlockd + sanlock: the storage tier's "nodes". This machine's kernel has no
// device-mapper; the guests (Debian's stock kernel under TCG) do, and they run this
// machine's own userspace over a read-only 9p root, so whatever is installed here (and the
// project's binaries) runs there unchanged.
//
// Each Host implements executor.Executor over a virtio-serial command channel (no guest
// networking at all), so the unchanged agent code runs on this machine against "its" VM.
package testbed

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
	"github.com/sharedlvm/sharedlvm-operator/internal/testbed/protocol"
)

// Config describes a bed.
type Config struct {
	// Name labels the run directory (use the test name).
	Name string
	// Hosts to boot, with sanlock host_ids 1..Hosts.
	Hosts int
	// LocalHostIDs, when set, is the host_id each host's lvmlocal.conf sets instead (0: none),
	// to show what the agent does with misconfigured nodes.
	LocalHostIDs []int
	// LUNs shared by every host (/dev/vda, /dev/vdb, ... in the guests), each LUNSize bytes.
	LUNs    int
	LUNSize int64
	// IOTimeout is sanlock's io_timeout in seconds (lvmlockd -o). Small values make lockspace
	// joins and host-death detection take seconds instead of minutes.
	IOTimeout int
	// MemoryMB per guest (default 640).
	MemoryMB int
	// NoDaemons boots guests without sanlock/lvmlockd running (start them with StartDaemons).
	NoDaemons bool
	// Forwards are TCP ports of this machine's loopback that the guests may reach, at
	// ForwardAddr:port (a virtio-net NIC on QEMU's user network with restrict=on: nothing
	// else is reachable, and nothing reaches the guests). Empty: no NIC at all.
	Forwards []int
	// DMPaths puts a device-mapper linear device /dev/mapper/lunN between each guest and LUN
	// N, and LVM sees only those: the host's path to the LUN, which FailPath replaces with
	// the error target (a host losing its SAN path) and RestorePath brings back.
	DMPaths bool
	// GuestForwards are further guest addresses forwarded to this machine's loopback, on the
	// same restricted network as Forwards (e.g. a Kubernetes Service IP on :443 to the
	// apiserver: the part of kube-proxy the nodes tier needs).
	GuestForwards []GuestForward
	// NodeDirs makes host i+1 a Kubernetes node: its init runs containerd and the kubelet
	// from NodeDirs[i] after sanlock and lvmlockd (guestd's node.go says what the directory
	// holds). Needs Forwards or GuestForwards for the network.
	NodeDirs []string
	// KillCommand sets lvm.conf's lvmlockctl_kill_command to the product's
	// "sharedlvm kill-vg" (built from this tree), as a production node should.
	KillCommand bool
}

// GuestForward forwards Addr:Port in the guests to this machine's 127.0.0.1:HostPort.
type GuestForward struct {
	Addr     string
	Port     int
	HostPort int
}

// ForwardAddr is the address at which a guest reaches the forwarded loopback ports; the
// guest's own address on that network is GuestAddr.
const (
	ForwardAddr = "10.0.2.100"
	GuestAddr   = "10.0.2.15"
)

// Bed is a set of hosts sharing LUNs.
type Bed struct {
	Config Config
	// Dir holds the LUN images, sockets and console logs of this run.
	Dir   string
	LUNs  []string
	Hosts []*Host
	image string
	guest string
	// product is the sharedlvm binary built for KillCommand.
	product string
	// sockDir holds the virtio-serial sockets: a unix socket path must stay under 108
	// bytes, which a run directory named after a long test does not.
	sockDir string
}

// localHostID is the host_id the guest's lvmlocal.conf sets.
func (h *Host) localHostID() int {
	if i := h.ID - 1; i < len(h.bed.Config.LocalHostIDs) {
		return h.bed.Config.LocalHostIDs[i]
	}
	return h.ID
}

// Host is one VM: a node of the shared VG.
type Host struct {
	bed  *Bed
	ID   int
	Name string
	// Console is the guest's console log (kernel + guestd output).
	Console string
	sock    string

	mu      sync.Mutex
	qemu    *exec.Cmd
	exited  chan struct{}
	conn    net.Conn
	nextID  uint64
	waiters map[uint64]chan protocol.Response
	boots   int
	trace   atomic.Pointer[func(argv []string, took, inGuest time.Duration)]
}

// Trace calls f after each command with how long it took from the host's side and inside
// the guest (nil stops tracing): where a bench's time goes, command by command.
func (h *Host) Trace(f func(argv []string, took, inGuest time.Duration)) {
	if f == nil {
		h.trace.Store(nil)
		return
	}
	h.trace.Store(&f)
}

var (
	_ executor.Executor     = (*Host)(nil)
	_ executor.DeviceReader = (*Host)(nil)
)

// CacheDir is the project's cache directory (same rule as the hack/ scripts).
func CacheDir() string {
	if d := os.Getenv("SHAREDLVM_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "sharedlvm-operator")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "sharedlvm-operator")
}

func repoRoot() string {
	wd, _ := os.Getwd()
	for d := wd; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	return wd
}

// Prepare builds (or finds cached) the VM image and the guest daemon. It is idempotent.
func Prepare(ctx context.Context) (image, guestd string, err error) {
	root := repoRoot()
	out, err := exec.CommandContext(ctx, "bash", filepath.Join(root, "hack", "testbed-image.sh")).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", "", fmt.Errorf("hack/testbed-image.sh: %v: %s", err, ee.Stderr)
		}
		return "", "", fmt.Errorf("hack/testbed-image.sh: %w", err)
	}
	image = strings.TrimSpace(string(out))
	// The guest sees this machine's / read-only, so a binary in the cache runs there as is.
	guestd = filepath.Join(CacheDir(), "testbed", "bin", "guestd")
	build := exec.CommandContext(ctx, "go", "build", "-o", guestd, "./internal/testbed/guestd")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("building guestd: %v: %s", err, b)
	}
	return image, guestd, nil
}

// New creates the bed's LUN images and boots every host, waiting until each is ready.
func New(ctx context.Context, cfg Config) (*Bed, error) {
	if cfg.Hosts <= 0 {
		cfg.Hosts = 2
	}
	if cfg.LUNs <= 0 {
		cfg.LUNs = 1
	}
	if cfg.LUNSize <= 0 {
		cfg.LUNSize = 1 << 30
	}
	if cfg.IOTimeout <= 0 {
		cfg.IOTimeout = 3
	}
	if cfg.MemoryMB <= 0 {
		cfg.MemoryMB = 640
	}
	image, guestd, err := Prepare(ctx)
	if err != nil {
		return nil, err
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(cfg.Name)
	// On disk, not tmpfs: qemu opens the LUNs with O_DIRECT (cache=none) like a SAN path.
	dir := filepath.Join(CacheDir(), "testbed", "runs", fmt.Sprintf("%s-%s", name, time.Now().Format("20060102-150405.000")))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	sockDir, err := os.MkdirTemp("", "bed-")
	if err != nil {
		return nil, err
	}
	b := &Bed{Config: cfg, Dir: dir, image: image, guest: guestd, sockDir: sockDir}
	if cfg.KillCommand {
		b.product = filepath.Join(CacheDir(), "testbed", "bin", "sharedlvm")
		build := exec.CommandContext(ctx, "go", "build", "-o", b.product, ".")
		build.Dir = repoRoot()
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("building the sharedlvm binary: %v: %s", err, out)
		}
	}
	for i := 0; i < cfg.LUNs; i++ {
		p := filepath.Join(dir, fmt.Sprintf("lun%d.img", i))
		f, err := os.Create(p)
		if err != nil {
			return nil, err
		}
		if err := f.Truncate(cfg.LUNSize); err != nil {
			f.Close()
			return nil, err
		}
		f.Close()
		b.LUNs = append(b.LUNs, p)
	}
	for i := 1; i <= cfg.Hosts; i++ {
		h := &Host{bed: b, ID: i, Name: fmt.Sprintf("host%d", i)}
		b.Hosts = append(b.Hosts, h)
	}
	errs := make(chan error, len(b.Hosts))
	for _, h := range b.Hosts {
		go func() { errs <- h.Boot(ctx) }()
	}
	var first error
	for range b.Hosts {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		b.Close()
		return nil, first
	}
	return b, nil
}

// GuestDevice is the path of LUN i inside the guests (/dev/vda, /dev/vdb, ...).
func GuestDevice(i int) string { return "/dev/vd" + string(rune('a'+i)) }

// PV is the path through which the guests' LVM sees LUN i: GuestDevice(i), or
// /dev/mapper/lunI with DMPaths.
func (b *Bed) PV(i int) string {
	if b.Config.DMPaths {
		return fmt.Sprintf("/dev/mapper/lun%d", i)
	}
	return GuestDevice(i)
}

func (h *Host) nodeCmdline() string {
	if i := h.ID - 1; i < len(h.bed.Config.NodeDirs) && h.bed.Config.NodeDirs[i] != "" {
		return fmt.Sprintf(" sharedlvm.node=%s sharedlvm.kmods=%s", h.bed.Config.NodeDirs[i], filepath.Join(h.bed.image, "kernel"))
	}
	return ""
}

func (b *Bed) extraCmdline() string {
	var s string
	if b.Config.DMPaths {
		s += " sharedlvm.dmpaths=1"
	}
	if b.product != "" {
		s += " sharedlvm.killcmd=" + b.product
	}
	return s
}

// FailPath makes LUN i fail on this host (DMPaths): every I/O through /dev/mapper/lunI,
// sanlock's lease I/O included, returns EIO, as when a host loses its path to the SAN.
func (h *Host) FailPath(ctx context.Context, i int) error {
	return h.loadPath(ctx, i, "error")
}

// RestorePath brings LUN i's path back on this host.
func (h *Host) RestorePath(ctx context.Context, i int) error {
	return h.loadPath(ctx, i, "linear "+GuestDevice(i)+" 0")
}

func (h *Host) loadPath(ctx context.Context, i int, target string) error {
	if !h.bed.Config.DMPaths {
		return errors.New("the bed has no device-mapper paths (Config.DMPaths)")
	}
	name := fmt.Sprintf("lun%d", i)
	size, err := h.MustRun(ctx, "cat", "/sys/block/"+strings.TrimPrefix(GuestDevice(i), "/dev/")+"/size")
	if err != nil {
		return err
	}
	if _, err := h.MustRun(ctx, "dmsetup", "load", name, "--table", "0 "+strings.TrimSpace(size)+" "+target); err != nil {
		return err
	}
	_, err = h.MustRun(ctx, "dmsetup", "resume", name)
	return err
}

// Close kills every host. LUN images and console logs stay in Dir for debugging.
func (b *Bed) Close() {
	for _, h := range b.Hosts {
		h.Kill()
	}
	_ = os.RemoveAll(b.sockDir)
}

// Boot starts the VM (again, after Kill or Stop: a rebooted node on the same disks) and
// waits until the guest daemon answers, which it does once sanlock and lvmlockd run.
func (h *Host) Boot(ctx context.Context) error {
	h.mu.Lock()
	if h.qemu != nil {
		h.mu.Unlock()
		return fmt.Errorf("%s is running", h.Name)
	}
	h.boots++
	h.Console = filepath.Join(h.bed.Dir, fmt.Sprintf("%s-boot%d-console.log", h.Name, h.boots))
	h.sock = filepath.Join(h.bed.sockDir, fmt.Sprintf("%s.sock", h.Name))
	_ = os.Remove(h.sock)
	cfg := h.bed.Config
	daemons := "1"
	if cfg.NoDaemons {
		daemons = "0"
	}
	nic := "none"
	if len(cfg.Forwards)+len(cfg.GuestForwards) > 0 {
		nic = "user,model=virtio-net-pci,restrict=on"
		fwds := cfg.GuestForwards
		for _, p := range cfg.Forwards {
			fwds = append(fwds, GuestForward{Addr: ForwardAddr, Port: p, HostPort: p})
		}
		for _, f := range fwds {
			// cmd: spawns a relay per connection (a chardev target would carry only one).
			nic += fmt.Sprintf(",guestfwd=tcp:%s:%d-cmd:/bin/busybox nc 127.0.0.1 %d", f.Addr, f.Port, f.HostPort)
		}
	}
	args := []string{
		"-name", h.Name, "-accel", "tcg", "-cpu", "max", "-m", fmt.Sprint(cfg.MemoryMB), "-smp", "1",
		"-display", "none", "-monitor", "none", "-serial", "file:" + h.Console, "-no-reboot", "-nic", nic,
		"-kernel", filepath.Join(h.bed.image, "vmlinuz"), "-initrd", filepath.Join(h.bed.image, "initrd.gz"),
		"-append", fmt.Sprintf("console=ttyS0 quiet panic=-1 sharedlvm.guestd=%s sharedlvm.hostid=%d sharedlvm.iot=%d sharedlvm.daemons=%s sharedlvm.name=%s%s",
			h.bed.guest, h.localHostID(), cfg.IOTimeout, daemons, h.Name, h.bed.extraCmdline()+h.nodeCmdline()),
		"-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
		"-device", "virtio-serial",
		"-chardev", fmt.Sprintf("socket,id=c0,path=%s,server=on,wait=off", h.sock),
		"-device", "virtserialport,chardev=c0,name=exec",
	}
	for _, lun := range h.bed.LUNs {
		// file.locking=off: every host opens the same image, as every node sees the SAN LUN.
		args = append(args, "-drive", "file="+lun+",format=raw,if=virtio,cache=none,file.locking=off")
	}
	cmd := exec.Command("qemu-system-x86_64", args...)
	qlog, err := os.Create(filepath.Join(h.bed.Dir, fmt.Sprintf("%s-boot%d-qemu.log", h.Name, h.boots)))
	if err != nil {
		h.mu.Unlock()
		return err
	}
	cmd.Stdout, cmd.Stderr = qlog, qlog
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		h.mu.Unlock()
		qlog.Close()
		return fmt.Errorf("starting qemu for %s: %w", h.Name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); qlog.Close(); close(exited) }()
	h.qemu, h.exited = cmd, exited
	h.waiters = map[uint64]chan protocol.Response{}
	h.mu.Unlock()
	return h.waitReady(ctx)
}

func (h *Host) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-h.exitedCh():
			return fmt.Errorf("%s: qemu exited during boot; see %s", h.Name, h.Console)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := h.Run(pctx, []string{protocol.Ping})
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(300 * time.Millisecond)
	}
	return fmt.Errorf("%s: not ready after 3 minutes; see %s", h.Name, h.Console)
}

func (h *Host) exitedCh() chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.exited == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return h.exited
}

// connect returns the channel's connection, dialling qemu's socket if needed.
func (h *Host) connect() (net.Conn, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conn != nil {
		return h.conn, nil
	}
	if h.qemu == nil {
		return nil, fmt.Errorf("%s is not running", h.Name)
	}
	c, err := net.Dial("unix", h.sock)
	if err != nil {
		return nil, err
	}
	h.conn = c
	go h.readLoop(c)
	return c, nil
}

func (h *Host) readLoop(c net.Conn) {
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var r protocol.Response
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue
		}
		h.mu.Lock()
		w := h.waiters[r.ID]
		delete(h.waiters, r.ID)
		h.mu.Unlock()
		if w != nil {
			w <- r
		}
	}
	h.mu.Lock()
	if h.conn == c {
		h.conn = nil
	}
	h.mu.Unlock()
	c.Close()
}

// ErrHostDown is returned by Run when the host's VM is not running or dies meanwhile.
var ErrHostDown = errors.New("host is down")

// Run runs argv on the host and implements executor.Executor. The context's deadline is
// passed to the guest, which kills the command when it expires.
func (h *Host) Run(ctx context.Context, argv []string) (executor.Result, error) {
	if len(argv) == 0 {
		return executor.Result{}, errors.New("empty argv")
	}
	c, err := h.connect()
	if err != nil {
		return executor.Result{}, fmt.Errorf("%s: %w: %v", h.Name, ErrHostDown, err)
	}
	req := protocol.Request{Argv: argv}
	if dl, ok := ctx.Deadline(); ok {
		req.TimeoutMS = max(1, time.Until(dl).Milliseconds())
	}
	ch := make(chan protocol.Response, 1)
	h.mu.Lock()
	h.nextID++
	req.ID = h.nextID
	h.waiters[req.ID] = ch
	exited := h.exited
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.waiters, req.ID)
		h.mu.Unlock()
	}()
	b, _ := json.Marshal(req)
	start := time.Now()
	if _, err := c.Write(append(b, '\n')); err != nil {
		return executor.Result{}, fmt.Errorf("%s: %w: %v", h.Name, ErrHostDown, err)
	}
	select {
	case r := <-ch:
		res := executor.Result{Stdout: r.Stdout, Stderr: r.Stderr, ExitCode: r.Exit, Duration: time.Since(start)}
		if f := h.trace.Load(); f != nil {
			(*f)(argv, res.Duration, time.Duration(r.DurationMS)*time.Millisecond)
		}
		if r.Error != "" {
			if strings.HasPrefix(r.Error, "timeout") {
				return res, fmt.Errorf("%s: %s: %w", h.Name, strings.Join(argv, " "), context.DeadlineExceeded)
			}
			return res, fmt.Errorf("%s: %s: %s", h.Name, strings.Join(argv, " "), r.Error)
		}
		return res, nil
	case <-exited:
		return executor.Result{}, fmt.Errorf("%s: %w (qemu exited)", h.Name, ErrHostDown)
	case <-ctx.Done():
		return executor.Result{}, fmt.Errorf("%s: %s: %w", h.Name, strings.Join(argv, " "), ctx.Err())
	}
}

// ReadDevice implements executor.DeviceReader: the guest daemon reads the range in its
// own process, as an agent on a node reads its /dev.
func (h *Host) ReadDevice(ctx context.Context, path string, off, n int64) ([]byte, error) {
	r, err := h.Run(ctx, []string{protocol.ReadDevice, path, strconv.FormatInt(off, 10), strconv.FormatInt(n, 10)})
	if err != nil {
		return nil, err
	}
	if r.ExitCode != 0 {
		return nil, fmt.Errorf("%s: %s", h.Name, strings.TrimSpace(string(r.Stderr)))
	}
	if int64(len(r.Stdout)) != n {
		return nil, fmt.Errorf("%s: read %s: %d bytes, asked for %d", h.Name, path, len(r.Stdout), n)
	}
	return r.Stdout, nil
}

// MustRun is Run for test set-up steps: it fails unless the command exits 0.
func (h *Host) MustRun(ctx context.Context, argv ...string) (string, error) {
	r, err := h.Run(ctx, argv)
	if err != nil {
		return "", err
	}
	if r.ExitCode != 0 {
		return string(r.Stdout), fmt.Errorf("%s: %s: exit %d: %s", h.Name, strings.Join(argv, " "), r.ExitCode, strings.TrimSpace(string(r.Stderr)))
	}
	return string(r.Stdout), nil
}

// Kill ends the VM at once, like a node losing power: its sanlock leases stay on disk
// until the other hosts see its delta lease expire.
func (h *Host) Kill() {
	h.mu.Lock()
	cmd, exited, conn := h.qemu, h.exited, h.conn
	h.qemu, h.conn = nil, nil
	h.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// Stop shuts the host down cleanly: lockstop every started lockspace (releasing its host
// slot, as a node's shutdown does), then power off.
func (h *Host) Stop(ctx context.Context) error {
	if _, err := h.Run(ctx, []string{"vgchange", "--lockstop"}); err != nil {
		h.Kill()
		return err
	}
	h.mu.Lock()
	exited := h.exited
	h.mu.Unlock()
	_, _ = h.Run(ctx, []string{protocol.PowerOff}) // no answer expected
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
	}
	h.Kill()
	return nil
}

// Running reports whether the VM is up.
func (h *Host) Running() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.qemu != nil
}
