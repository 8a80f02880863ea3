// Command guestd is PID 1 of a test-bed VM. It prepares the guest (tmpfs /run, LVM config
// with the host's sanlock host_id), starts sanlock, lvmlockd and lvmpolld as a real node's
// init would, and serves commands from the host over a virtio-serial port named "exec".
//
// Kernel command line: sharedlvm.guestd=PATH sharedlvm.hostid=N sharedlvm.iot=SECONDS
// sharedlvm.daemons=0|1 sharedlvm.name=NAME.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
	"github.com/sharedlvm/sharedlvm-operator/internal/testbed/protocol"
)

var env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "LANG=C", "HOME=/root", "LVM_SUPPRESS_FD_WARNINGS=1"}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		serve()
		return
	}
	if len(os.Args) > 3 && os.Args[1] == "node" {
		nodeInit(os.Args[2], os.Args[3])
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "guestd: run as PID 1 of a test-bed VM, or with 'serve'")
		os.Exit(2)
	}
	initGuest()
}

func cmdline() map[string]string {
	b, _ := os.ReadFile("/proc/cmdline")
	out := map[string]string{}
	for _, f := range strings.Fields(string(b)) {
		if k, v, ok := strings.Cut(f, "="); ok && strings.HasPrefix(k, "sharedlvm.") {
			out[strings.TrimPrefix(k, "sharedlvm.")] = v
		}
	}
	return out
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stdout, "guestd: "+format+"\n", args...)
}

// initGuest sets the guest up, then runs the server as a child and reaps every orphan
// (daemons double-fork), restarting the server if it ever exits.
func initGuest() {
	cl := cmdline()
	must := func(err error, what string) {
		if err != nil {
			logf("%s: %v", what, err)
		}
	}
	for _, m := range []struct{ fs, dir string }{{"tmpfs", "/run"}, {"tmpfs", "/tmp"}, {"tmpfs", "/dev/shm"}} {
		_ = os.MkdirAll(m.dir, 0o755)
		must(syscall.Mount(m.fs, m.dir, m.fs, 0, "mode=1777"), "mount "+m.dir)
	}
	for _, d := range []string{"/run/lock/lvm", "/run/lvm", "/run/sanlock"} {
		must(os.MkdirAll(d, 0o755), "mkdir "+d)
	}
	if name := cl["name"]; name != "" {
		must(syscall.Sethostname([]byte(name)), "hostname")
	}
	// Plain devices, no udev: LVM scans /dev/vd* directly. lvmpolld runs pvmove's polling.
	// With sharedlvm.dmpaths=1 each LUN is reached through a device-mapper linear device
	// /dev/mapper/lunN instead (the host's "path" to it, which the bed can fail by loading
	// the error target), and LVM sees only those.
	filter := `"a|^/dev/vd|", "r|.*|"`
	if cl["dmpaths"] == "1" {
		filter = `"a|^/dev/mapper/lun[0-9]+$|", "r|.*|"`
		disks, _ := filepath.Glob("/sys/block/vd*")
		for i, d := range disks {
			b, err := os.ReadFile(filepath.Join(d, "size"))
			if err != nil {
				must(err, "size of "+d)
				continue
			}
			table := fmt.Sprintf("0 %s linear /dev/%s 0", strings.TrimSpace(string(b)), filepath.Base(d))
			c := exec.Command("dmsetup", "create", fmt.Sprintf("lun%d", i), "--table", table)
			c.Env = env
			if out, err := c.CombinedOutput(); err != nil {
				logf("dmsetup create lun%d: %v: %s", i, err, out)
			}
		}
		// No udev here to make the /dev/mapper nodes.
		c := exec.Command("dmsetup", "mknodes")
		c.Env = env
		if out, err := c.CombinedOutput(); err != nil {
			logf("dmsetup mknodes: %v: %s", err, out)
		}
	}
	// With sharedlvm.killcmd=PATH, lvmlockctl --kill (run by sanlock when a VG's lease
	// storage is lost) runs "PATH kill-vg VG" to take the VG's LVs offline.
	global := ""
	if k := cl["killcmd"]; k != "" {
		global = "\n  lvmlockctl_kill_command = \"" + k + " kill-vg\""
	}
	lvmConf := `devices {
  use_devicesfile = 0
  obtain_device_list_from_udev = 0
  filter = [ ` + filter + ` ]
  hints = "none"
}
activation {
  udev_sync = 0
  udev_rules = 0
  monitoring = 0
}
global {
  use_lvmlockd = 1
  use_lvmpolld = 1
  event_activation = 0` + global + `
}
backup {
  backup = 0
  archive = 0
}
`
	must(os.MkdirAll("/etc/lvm", 0o755), "mkdir /etc/lvm")
	must(os.WriteFile("/etc/lvm/lvm.conf", []byte(lvmConf), 0o644), "lvm.conf")
	hostID := cl["hostid"]
	if hostID == "" {
		hostID = "1"
	}
	must(os.WriteFile("/etc/lvm/lvmlocal.conf", []byte("local {\n  host_id = "+hostID+"\n}\n"), 0o644), "lvmlocal.conf")
	if cl["daemons"] != "0" {
		startDaemons(cl["iot"])
	}
	logf("ready: host_id %s", hostID)
	if dir := cl["node"]; dir != "" {
		// After sanlock and lvmlockd, as a node's init orders them; not waited for.
		c := exec.Command("/proc/self/exe", "node", dir, cl["kmods"])
		c.Stdout, c.Stderr, c.Env = os.Stdout, os.Stderr, env
		if err := c.Start(); err != nil {
			logf("node init: %v", err)
		}
	}

	for {
		cmd := exec.Command("/proc/self/exe", "serve")
		cmd.Stdout, cmd.Stderr, cmd.Env = os.Stdout, os.Stderr, env
		if err := cmd.Start(); err != nil {
			logf("start server: %v", err)
			time.Sleep(time.Second)
			continue
		}
		server := cmd.Process.Pid
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, 0, nil)
			if err != nil && !errors.Is(err, syscall.EINTR) {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			if pid == server {
				logf("server exited (%v), restarting", ws)
				break
			}
		}
	}
}

func startDaemons(iot string) []string {
	if iot == "" {
		iot = "10"
	}
	var errs []string
	for _, argv := range [][]string{
		{"sanlock", "daemon", "-w", "0"},
		{"lvmlockd", "-o", iot, "-A", "1"}, // adopt the locks of a previous instance after a restart (as a node should run it)
		{"lvmpolld", "-t", "0"},
	} {
		c := exec.Command(argv[0], argv[1:]...)
		c.Env = env
		if out, err := c.CombinedOutput(); err != nil {
			errs = append(errs, fmt.Sprintf("%v: %v: %s", argv, err, out))
		}
	}
	// Wait until both daemons answer, as a node's init would before starting services.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		a := exec.Command("sanlock", "client", "status")
		b := exec.Command("lvmlockctl", "--info")
		a.Env, b.Env = env, env
		if a.Run() == nil && b.Run() == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return errs
}

func findPort() (string, error) {
	dirs, _ := filepath.Glob("/sys/class/virtio-ports/*")
	for _, d := range dirs {
		if b, err := os.ReadFile(filepath.Join(d, "name")); err == nil && strings.TrimSpace(string(b)) == "exec" {
			return filepath.Join("/dev", filepath.Base(d)), nil
		}
	}
	return "", errors.New("no virtio-serial port named exec")
}

func serve() {
	for {
		path, err := findPort()
		if err != nil {
			logf("%v", err)
			time.Sleep(time.Second)
			continue
		}
		port, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		var wmu sync.Mutex
		write := func(r protocol.Response) {
			b, _ := json.Marshal(r)
			wmu.Lock()
			defer wmu.Unlock()
			_, _ = port.Write(append(b, '\n'))
		}
		sc := bufio.NewScanner(port)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var req protocol.Request
			if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
				continue
			}
			go func() { write(run(req)) }()
		}
		// EOF: the host is not connected (yet, or any more). Reopen and wait.
		port.Close()
		time.Sleep(200 * time.Millisecond)
	}
}

// run answers one request; the named result lets the deferred timing reach the response.
func run(req protocol.Request) (resp protocol.Response) {
	start := time.Now()
	resp = protocol.Response{ID: req.ID}
	defer func() { resp.DurationMS = time.Since(start).Milliseconds() }()
	if len(req.Argv) == 0 {
		resp.Error = "empty argv"
		return resp
	}
	switch req.Argv[0] {
	case protocol.Ping:
		up, _ := os.ReadFile("/proc/uptime")
		resp.Stdout = []byte(strings.Fields(string(up) + " 0")[0])
		return resp
	case protocol.PowerOff:
		syscall.Sync()
		_ = syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
		return resp
	case protocol.StartDaemons:
		if errs := startDaemons(cmdline()["iot"]); len(errs) > 0 {
			resp.Exit, resp.Stderr = 1, []byte(strings.Join(errs, "\n"))
		}
		return resp
	case protocol.ReadDevice:
		var off, n int64
		if len(req.Argv) != 4 {
			resp.Error = "usage: @pread PATH OFFSET LENGTH"
			return resp
		}
		if _, err := fmt.Sscan(req.Argv[2]+" "+req.Argv[3], &off, &n); err != nil {
			resp.Error = err.Error()
			return resp
		}
		b, err := executor.ReadDirect(req.Argv[1], off, n)
		if err != nil {
			resp.Exit, resp.Stderr = 1, []byte(err.Error())
			return resp
		}
		resp.Stdout = b
		return resp
	case protocol.KillDaemons:
		for _, p := range []string{"/run/sanlock/sanlock.pid", "/run/lvmlockd.pid", "/run/lvmpolld.pid"} {
			if b, err := os.ReadFile(p); err == nil {
				var pid int
				if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 1 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		return resp
	}
	ctx := context.Background()
	if req.TimeoutMS > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutMS)*time.Millisecond)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, req.Argv[0], req.Argv[1:]...)
	cmd.Env = env
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	resp.Stdout, resp.Stderr = []byte(stdout.String()), []byte(stderr.String())
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		resp.Error = "timeout: " + ctx.Err().Error()
		resp.Exit = -1
	case errors.As(err, &exitErr):
		resp.Exit = exitErr.ExitCode()
	default:
		resp.Error = err.Error()
		resp.Exit = -1
	}
	return resp
}
