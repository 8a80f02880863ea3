package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/envtestutil"
	"github.com/sharedlvm/sharedlvm-operator/internal/testbed"
	"github.com/sharedlvm/sharedlvm-operator/plugin"
	"github.com/sharedlvm/sharedlvm-operator/roles"
)

// runVMs is the demo on real shared LVM: VMs sharing one LUN, one agent per VM, and a
// volume taken through create → attach → live migration → migration done.
func runVMs(nodes int, exitAfter time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if exitAfter > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, exitAfter)
		defer cancel()
	}
	t0 := time.Now()
	step := func(format string, a ...any) {
		fmt.Printf("\n[%5.1fs] "+format+"\n", append([]any{time.Since(t0).Seconds()}, a...)...)
	}
	step("booting %d VMs that share one 2 GiB LUN (real lvm2 + lvmlockd + sanlock; TCG, no KVM needed)...", nodes)
	bed, err := testbed.New(ctx, testbed.Config{Name: "demo", Hosts: nodes, LUNs: 1, LUNSize: 2 << 30, IOTimeout: 3})
	if err != nil {
		return fmt.Errorf("booting the VMs: %w (hack/run.sh --storage=model runs without VMs)", err)
	}
	defer func() {
		bed.Close()
		for _, l := range bed.LUNs {
			_ = os.Remove(l)
		}
		fmt.Println("VMs stopped, LUN image removed")
	}()
	step("VMs up; starting the control plane (kube-apiserver + etcd)...")
	env, err := envtestutil.Start()
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop(); fmt.Println("control plane stopped, cleaned up") }()
	c, err := client.New(env.Config, client.Options{Scheme: roles.Scheme()})
	if err != nil {
		return err
	}
	errs := make(chan error, nodes+1)
	hosts := make([]executor.Executor, 0, len(bed.Hosts))
	for _, h := range bed.Hosts {
		hosts = append(hosts, h)
	}
	names, err := startControlPlane(ctx, c, env, hosts, map[string]string{"sharedlvm.io/san": "lun0"}, errs)
	if err != nil {
		return err
	}
	kubeconfig, err := publishKubeconfig(env)
	if err != nil {
		return err
	}
	defer os.Remove(kubeconfig)
	show := func() {
		cmd := exec.Command(env.Kubectl, "--kubeconfig", kubeconfig, "get", "sharedlvm", "-A", "-o", "wide")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		fmt.Println("$ kubectl get sharedlvm -A -o wide")
		_ = cmd.Run()
		fmt.Println("$ kubectl sharedlvm locks")
		_ = plugin.Run(ctx, c, []string{"locks"}, os.Stdout)
	}
	tty := isTerminal(os.Stdout)
	wait := func(what string, timeout time.Duration, cond func() (bool, string)) error {
		start := time.Now()
		p := newProgress(os.Stdout, tty, what, start)
		for {
			ok, state := cond()
			if ok {
				p.done(time.Now())
				return nil
			}
			p.state(state, time.Now())
			select {
			case <-ctx.Done():
				return ctx.Err()
			case err := <-errs:
				return err
			case <-time.After(250 * time.Millisecond):
			}
			if time.Since(start) > timeout {
				return fmt.Errorf("%s: not done after %v (%s)", what, timeout, state)
			}
		}
	}

	step("creating VolumeGroup cinder on the shared LUN: one agent runs vgcreate --shared, the others join the sanlock lockspace")
	if err := c.Create(ctx, &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: "cinder"},
		Spec: v1.VolumeGroupSpec{VGName: "cinder-volumes", PVs: []v1.DevicePath{v1.DevicePath(testbed.GuestDevice(0))},
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"sharedlvm.io/san": "lun0"}}}}); err != nil {
		return err
	}
	want := fmt.Sprintf("%d/%d", nodes, nodes)
	if err := wait("VG created, lockspaces joined", 5*time.Minute, func() (bool, string) {
		var g v1.VolumeGroup
		if err := c.Get(ctx, client.ObjectKey{Name: "cinder"}, &g); err != nil {
			return false, err.Error()
		}
		return g.Status.NodesReady == want, "nodes ready " + g.Status.NodesReady
	}); err != nil {
		return err
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "openstack"}}); err != nil {
		return err
	}
	vol := &v1.SharedVolume{ObjectMeta: metav1.ObjectMeta{Namespace: "openstack", Name: "volume-1"},
		Spec: v1.SharedVolumeSpec{VolumeGroup: "cinder", Size: resource.MustParse("256Mi")}}
	step("creating SharedVolume volume-1 (256Mi): an LV tagged with the CR's UID, created unlocked")
	if err := c.Create(ctx, vol); err != nil {
		return err
	}
	if err := wait("volume Available", time.Minute, func() (bool, string) {
		_ = c.Get(ctx, client.ObjectKeyFromObject(vol), vol)
		return vol.Status.Phase == v1.VolumeAvailable, "phase " + string(vol.Status.Phase)
	}); err != nil {
		return err
	}
	show()
	attach := func(name, node string, purpose v1.AttachmentPurpose) error {
		return c.Create(ctx, &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "openstack", Name: name},
			Spec: v1.VolumeAttachmentSpec{Volume: "volume-1", Node: v1.ObjectName(node), Purpose: purpose}})
	}
	attached := func(name string, mode v1.LockMode) func() (bool, string) {
		return func() (bool, string) {
			var a v1.VolumeAttachment
			if err := c.Get(ctx, client.ObjectKey{Namespace: "openstack", Name: name}, &a); err != nil {
				return false, err.Error()
			}
			return a.Status.Phase == v1.AttachmentAttached && a.Status.AppliedLock == mode, fmt.Sprintf("%s, lock %s", a.Status.Phase, a.Status.AppliedLock)
		}
	}
	step("attaching volume-1 to %s (a VM starts there): exclusive lock", names[0])
	if err := attach("volume-1-"+names[0], names[0], v1.PurposeInstance); err != nil {
		return err
	}
	if err := wait("attached", time.Minute, attached("volume-1-"+names[0], v1.LockExclusive)); err != nil {
		return err
	}
	show()
	if nodes > 1 {
		step("live migration to %s: the target's attachment turns both nodes shared (%s converts in place first)", names[1], names[0])
		if err := attach("volume-1-"+names[1], names[1], v1.PurposeMigrationTarget); err != nil {
			return err
		}
		if err := wait("both shared", time.Minute, attached("volume-1-"+names[1], v1.LockShared)); err != nil {
			return err
		}
		show()
		step("migration done: the source's attachment goes, %s converts to exclusive", names[1])
		if err := c.Delete(ctx, &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "openstack", Name: "volume-1-" + names[0]}}); err != nil {
			return err
		}
		if err := wait(names[1]+" exclusive", time.Minute, attached("volume-1-"+names[1], v1.LockExclusive)); err != nil {
			return err
		}
		show()
	}
	if exitWhenDone {
		step("demo done; cleaning up (--exit-when-done)")
		return nil
	}
	step("demo done. Everything keeps running until Ctrl-C:")
	fmt.Printf(`  export KUBECONFIG=%s
  %s get sharedlvm -A -o wide
  go run . kubectl-sharedlvm locks        # or: go run . kubectl-sharedlvm vg / restore-status
  VM console logs: %s
  Metrics: http://127.0.0.1:18080/metrics
`, kubeconfig, env.Kubectl, bed.Dir)
	select {
	case <-ctx.Done():
		return nil
	case err := <-errs:
		return err
	}
}
