package main

// A Kubernetes node in a test-bed VM (kernel command line sharedlvm.node=DIR): what a node's
// init does before and after sanlock and lvmlockd, then containerd and the kubelet. DIR is a
// directory of the machine that runs the bed (the guest sees its root read-only) holding:
//
//	containerd.toml   containerd's configuration
//	containerd.bin    (optional) the containerd binary to run instead of Debian's
//	cni.conflist      the pod network (Debian's bridge and host-local plugins)
//	kubelet.args      the kubelet's arguments, one per line
//	images/*.tar      images imported into containerd's k8s.io namespace at every boot (the
//	                  runtime's state is on tmpfs, like the rest of the guest's writes)
//
// sharedlvm.kmods=DIR is the unpacked kernel's tree, for the modules pods need (bridge, veth,
// netfilter for the CNI plugin's masquerade).

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

var nodeModules = []string{
	"bridge", "veth", "br_netfilter", "nf_tables", "nft_compat", "nft_chain_nat", "nf_nat", "nf_conntrack",
	"nft_masq", "xt_MASQUERADE", "xt_comment", "xt_addrtype", "xt_conntrack", "xt_mark", "xt_multiport",
	"nft_ct", "ip_tables", "iptable_nat", "iptable_filter", "ip6_tables", "ip6table_filter",
}

// nodeInit runs as its own process (children of PID 1 are reaped by PID 1's loop, which
// would race exec's waits); the daemons it starts outlive it, in their own sessions.
func nodeInit(dir, kmods string) {
	start := time.Now()
	run := func(argv ...string) error {
		c := exec.Command(argv[0], argv[1:]...)
		c.Env = env
		out, err := c.CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%v: %v: %s", argv, err, strings.TrimSpace(string(out)))
			logf("node: %v", err)
		}
		return err
	}
	if kmods != "" {
		for _, m := range nodeModules {
			_ = run("modprobe", "-d", kmods, m)
		}
	}
	_ = run("ip", "link", "set", "lo", "up")
	_ = run("ip", "link", "set", "eth0", "up")
	_ = run("ip", "addr", "add", "10.0.2.15/24", "dev", "eth0")
	_ = run("ip", "route", "add", "default", "via", "10.0.2.2")
	for _, s := range []string{"net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables"} {
		_ = os.WriteFile("/proc/sys/"+s, []byte("1"), 0o644)
	}
	_ = os.MkdirAll("/sys/fs/cgroup", 0o755)
	if err := syscall.Mount("cgroup2", "/sys/fs/cgroup", "cgroup2", 0, ""); err != nil && !errors.Is(err, syscall.EBUSY) {
		logf("node: mount cgroup2: %v", err)
	}
	// overlayfs (containerd's snapshotter) cannot put its upper layers on the guest's
	// overlay root: its state goes on a tmpfs of its own.
	for _, d := range []string{"/var/lib/containerd", "/var/lib/kubelet", "/var/log/pods"} {
		_ = os.MkdirAll(d, 0o755)
	}
	if err := syscall.Mount("tmpfs", "/var/lib/containerd", "tmpfs", 0, "mode=0711"); err != nil {
		logf("node: tmpfs /var/lib/containerd: %v", err)
	}
	_ = os.MkdirAll("/etc/cni/net.d", 0o755)
	if b, err := os.ReadFile(filepath.Join(dir, "cni.conflist")); err == nil {
		_ = os.WriteFile("/etc/cni/net.d/10-bed.conflist", b, 0o644)
	}
	// /etc/machine-id: the kubelet reads it (systemd would have written it).
	if _, err := os.Stat("/etc/machine-id"); err != nil {
		_ = os.WriteFile("/etc/machine-id", []byte(fmt.Sprintf("%032x\n", time.Now().UnixNano())), 0o444)
	}
	// containerd.bin (optional): another containerd than Debian's, its shims beside it.
	ctrd, ctrdEnv := "containerd", env
	if b, err := os.ReadFile(filepath.Join(dir, "containerd.bin")); err == nil {
		ctrd = strings.TrimSpace(string(b))
		ctrdEnv = append([]string{"PATH=" + filepath.Dir(ctrd) + ":" + strings.TrimPrefix(env[0], "PATH=")}, env[1:]...)
	}
	if err := spawnEnv("/var/log/containerd.log", ctrdEnv, ctrd, "--config", filepath.Join(dir, "containerd.toml")); err != nil {
		logf("node: containerd: %v", err)
		return
	}
	deadline := time.Now().Add(2 * time.Minute)
	for run("ctr", "--address", "/run/containerd/containerd.sock", "version") != nil {
		if time.Now().After(deadline) {
			logf("node: containerd does not answer")
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	logf("node: containerd answers %.1fs after init", time.Since(start).Seconds())
	tars, _ := filepath.Glob(filepath.Join(dir, "images", "*.tar"))
	for _, t := range tars {
		_ = run("ctr", "--address", "/run/containerd/containerd.sock", "-n", "k8s.io", "images", "import", "--no-unpack", t)
	}
	logf("node: containerd up, %d images imported, %.1fs after init", len(tars), time.Since(start).Seconds())
	b, err := os.ReadFile(filepath.Join(dir, "kubelet.args"))
	if err != nil {
		logf("node: %v", err)
		return
	}
	var argv []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			argv = append(argv, l)
		}
	}
	if err := spawn("/var/log/kubelet.log", argv...); err != nil {
		logf("node: kubelet: %v", err)
		return
	}
	logf("node: kubelet started %.1fs after init", time.Since(start).Seconds())
}

// spawn starts argv in a session of its own with its output appended to log.
func spawn(log string, argv ...string) error { return spawnEnv(log, env, argv...) }

func spawnEnv(log string, environ []string, argv ...string) error {
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	c := exec.Command(argv[0], argv[1:]...)
	c.Env = environ
	c.Stdout, c.Stderr = f, f
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.Start(); err != nil {
		return err
	}
	return c.Process.Release()
}
