//go:build storage

package storage

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/envtestutil"
	"github.com/sharedlvm/sharedlvm-operator/internal/testbed"
	"github.com/sharedlvm/sharedlvm-operator/roles"
)

// cluster is a control plane with the operator and one agent per bed host.
type cluster struct {
	t      *testing.T
	env    *envtestutil.Env
	c      client.WithWatch
	ctx    context.Context
	nodes  []*node
	agents map[string]context.CancelFunc
	// reportInterval of the agents: 2 s keeps the scenarios short; the bench uses the
	// product's default (each report takes the VG lock shared for ~0.2 s on this bed, which
	// a metadata change on another host then waits for).
	reportInterval time.Duration
	// procCfg, when set, gives each process ("operator" or a node name) its apiserver config
	// (the chaos tier's per-process proxies).
	procCfg func(name string) *rest.Config
}

func (cl *cluster) config(name string) *rest.Config {
	if cl.procCfg != nil {
		return cl.procCfg(name)
	}
	return cl.env.Config
}

// startOperator runs the operator (again: the old one is stopped first).
func (cl *cluster) startOperator() {
	cl.t.Helper()
	if stop := cl.agents["operator"]; stop != nil {
		stop()
	}
	octx, cancel := context.WithCancel(cl.ctx)
	op, err := roles.NewOperator(octx, cl.config("operator"), roles.OperatorOptions{MetricsAddr: "0", ProbeAddr: "0"})
	if err != nil {
		cl.t.Fatal(err)
	}
	go func() { _ = op.Start(octx) }()
	cl.agents["operator"] = cancel
}

// startAgent runs the real agent for a bed host (again, after a reboot: the old agent
// process died with the node).
func (cl *cluster) startAgent(n *node) {
	cl.t.Helper()
	if stop := cl.agents[n.Name]; stop != nil {
		stop()
	}
	actx, cancel := context.WithCancel(cl.ctx)
	mgr, err := roles.NewAgent(actx, cl.config(n.Name), roles.AgentOptions{NodeName: n.Name, MetricsAddr: "0", ProbeAddr: "0", Executor: n.Host, ReportInterval: cmp.Or(cl.reportInterval, 2*time.Second)})
	if err != nil {
		cl.t.Fatal(err)
	}
	go func() { _ = mgr.Start(actx) }()
	cl.agents[n.Name] = cancel
}

func startCluster(t *testing.T, bed *testbed.Bed) *cluster {
	return startClusterWith(t, bed, 0)
}

// startClusterWith starts the cluster with the agents' report interval (0: 2 s).
func startClusterWith(t *testing.T, bed *testbed.Bed, reportInterval time.Duration) *cluster {
	return startClusterVia(t, bed, reportInterval, nil)
}

// startClusterVia starts the cluster with each process's apiserver config from procCfg
// (nil: straight to the apiserver).
func startClusterVia(t *testing.T, bed *testbed.Bed, reportInterval time.Duration, procCfg func(*envtestutil.Env, string) *rest.Config) *cluster {
	t.Helper()
	// Controller logs go to a file beside the VM logs: t.Log after the test ends would panic.
	// controller-runtime's root logger is fulfilled once per process, so every test's agents
	// and operator log through one switching writer into that test's own run directory
	// (#14: a failed run kept an empty controllers.log).
	logFile, err := os.Create(filepath.Join(bed.Dir, "controllers.log"))
	if err != nil {
		t.Fatal(err)
	}
	controllerLogs.set(logFile)
	t.Cleanup(func() { controllerLogs.set(nil); logFile.Close() })
	controllerLogsOnce.Do(func() {
		logf.SetLogger(zap.New(zap.WriteTo(&controllerLogs), zap.Level(zapcore.InfoLevel), func(o *zap.Options) { o.TimeEncoder = zapcore.RFC3339NanoTimeEncoder }))
	})
	env, err := envtestutil.Start()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); time.Sleep(200 * time.Millisecond); _ = env.Stop() })
	c, err := client.NewWithWatch(env.Config, client.Options{Scheme: roles.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	cl := &cluster{t: t, env: env, c: c, ctx: ctx, nodes: nodes(bed), agents: map[string]context.CancelFunc{}, reportInterval: reportInterval}
	if procCfg != nil {
		cl.procCfg = func(name string) *rest.Config { return procCfg(env, name) }
	}
	for _, n := range cl.nodes {
		if err := c.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{"san": "lun0"}}}); err != nil {
			t.Fatal(err)
		}
		cl.startAgent(n)
	}
	cl.startOperator()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cloud"}}); err != nil {
		t.Fatal(err)
	}
	return cl
}

type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// wait polls cond until it returns nil, failing the test after timeout with the last error.
func (cl *cluster) wait(what string, timeout time.Duration, cond func() error) time.Duration {
	cl.t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < timeout {
		if err = cond(); err == nil {
			return time.Since(start)
		}
		// Fine-grained at first, so that the bench's timings of sub-second operations
		// are not rounded up by the polling; then gentle on the apiserver.
		if time.Since(start) < 3*time.Second {
			time.Sleep(5 * time.Millisecond)
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	cl.t.Fatalf("%s: not done after %v: %v", what, timeout, err)
	return 0
}

// createVG creates VolumeGroup "cinder" for VG vg1 on pvs (/dev/vda by default): no node sees a VG on the
// LUN yet, so the operator has one node create it and the other join its lockspace.
func (cl *cluster) createVG(pvs ...v1.DevicePath) {
	cl.t.Helper()
	if len(pvs) == 0 {
		pvs = []v1.DevicePath{"/dev/vda"}
	}
	if err := cl.c.Create(cl.ctx, &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: "cinder"},
		Spec: v1.VolumeGroupSpec{VGName: vg, PVs: pvs,
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"san": "lun0"}}}}); err != nil {
		cl.t.Fatal(err)
	}
	cl.wait("VG created and lockspaces started on both hosts", 4*time.Minute, func() error {
		var g v1.VolumeGroup
		if err := cl.c.Get(cl.ctx, client.ObjectKey{Name: "cinder"}, &g); err != nil {
			return err
		}
		if g.Status.NodesReady != "2/2" || g.Status.VGUUID == "" {
			return fmt.Errorf("nodesReady %q vgUUID %q nodes %+v", g.Status.NodesReady, g.Status.VGUUID, g.Status.Nodes)
		}
		return nil
	})
}

func (cl *cluster) createVolume(name, size string, multiAttach bool) *v1.SharedVolume {
	cl.t.Helper()
	vol := &v1.SharedVolume{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: name},
		Spec: v1.SharedVolumeSpec{VolumeGroup: "cinder", Size: resource.MustParse(size), MultiAttach: multiAttach}}
	if err := cl.c.Create(cl.ctx, vol); err != nil {
		cl.t.Fatal(err)
	}
	return vol
}

func (cl *cluster) available(vol *v1.SharedVolume) func() error {
	return func() error {
		if err := cl.c.Get(cl.ctx, client.ObjectKeyFromObject(vol), vol); err != nil {
			return err
		}
		if vol.Status.Phase != v1.VolumeAvailable {
			return fmt.Errorf("%s phase %q", vol.Name, vol.Status.Phase)
		}
		return nil
	}
}

func (cl *cluster) attach(name, volume, node string, purpose v1.AttachmentPurpose) *v1.VolumeAttachment {
	cl.t.Helper()
	a := &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: name},
		Spec: v1.VolumeAttachmentSpec{Volume: v1.ObjectName(volume), Node: v1.ObjectName(node), Purpose: purpose}}
	if err := cl.c.Create(cl.ctx, a); err != nil {
		cl.t.Fatal(err)
	}
	return a
}

func (cl *cluster) attached(name string, mode v1.LockMode) func() error {
	return func() error {
		var a v1.VolumeAttachment
		if err := cl.c.Get(cl.ctx, client.ObjectKey{Namespace: "cloud", Name: name}, &a); err != nil {
			return err
		}
		if a.Status.Phase != v1.AttachmentAttached || a.Status.AppliedLock != mode {
			return fmt.Errorf("phase %q applied %q desired %q", a.Status.Phase, a.Status.AppliedLock, a.Status.DesiredLock)
		}
		return nil
	}
}

func (cl *cluster) goneFn(obj client.Object) func() error {
	return func() error {
		err := cl.c.Get(cl.ctx, client.ObjectKeyFromObject(obj), obj)
		if err == nil {
			return fmt.Errorf("%s still exists", obj.GetName())
		}
		return client.IgnoreNotFound(err)
	}
}

// TestCoreFlowsOnRealSharedLVM drives the product only through its custom resources and
// checks every step on the hosts themselves: lvs tags, sanlock leases, refused activations,
// and that a deleted volume's data never shows through a new one.
func TestCoreFlowsOnRealSharedLVM(t *testing.T) {
	bed := newBed(t, testbed.Config{Hosts: 2, LUNs: 1, LUNSize: 1 << 30, IOTimeout: 3})
	tm := &timings{dir: bed.Dir}
	defer tm.report(t)
	cl := startCluster(t, bed)
	a, b := cl.nodes[0], cl.nodes[1]
	ctx := cl.ctx

	start := time.Now()
	cl.createVG()
	tm.add("VolumeGroup CR → VG created + both lockspaces started", time.Since(start))

	// Create.
	vol := &v1.SharedVolume{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: "volume-e2e"},
		Spec: v1.SharedVolumeSpec{VolumeGroup: "cinder", Size: resource.MustParse("64Mi")}}
	start = time.Now()
	if err := cl.c.Create(ctx, vol); err != nil {
		t.Fatal(err)
	}
	tm.add("SharedVolume CR → Available (LV created)", cl.wait("volume available", time.Minute, func() error {
		if err := cl.c.Get(ctx, client.ObjectKeyFromObject(vol), vol); err != nil {
			return err
		}
		if vol.Status.Phase != v1.VolumeAvailable {
			return fmt.Errorf("phase %q conditions %+v", vol.Status.Phase, vol.Status.Conditions)
		}
		return nil
	}))
	uuid := vol.Status.LVUUID
	for _, n := range cl.nodes {
		rep, err := n.LVM.Report(ctx, vg)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := rep.VG(vg)
		lv, ok := v.LV("volume-e2e")
		if !ok || lv.UUID != uuid || !lv.HasTag(v1.OwnerTag(string(vol.UID))) || !lv.HasTag(v1.TagManaged) {
			t.Fatalf("%s: lvs shows %+v, want UUID %s with the owner tag", n.Name, lv, uuid)
		}
		mustNoLease(ctx, t, n, vg, uuid)
	}

	extend := func(size, what string) {
		t.Helper()
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := cl.c.Get(ctx, client.ObjectKeyFromObject(vol), vol); err != nil {
				return err
			}
			vol.Spec.Size = resource.MustParse(size)
			return cl.c.Update(ctx, vol)
		}); err != nil {
			t.Fatal(err)
		}
		tm.add(what, cl.wait("extended to "+size, time.Minute, func() error {
			if err := cl.c.Get(ctx, client.ObjectKeyFromObject(vol), vol); err != nil {
				return err
			}
			if vol.Status.AllocatedSize == nil || vol.Status.AllocatedSize.String() != size {
				return fmt.Errorf("allocated %v", vol.Status.AllocatedSize)
			}
			return nil
		}))
	}
	// Unattached: the executor extends under LVM's transient lock; no lease is left behind.
	extend("80Mi", "extend unattached volume (spec.size) → allocated")
	for _, n := range cl.nodes {
		mustNoLease(ctx, t, n, vg, uuid)
	}

	attach := func(name, node string, purpose v1.AttachmentPurpose) {
		t.Helper()
		if err := cl.c.Create(ctx, &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: name},
			Spec: v1.VolumeAttachmentSpec{Volume: "volume-e2e", Node: v1.ObjectName(node), Purpose: purpose}}); err != nil {
			t.Fatal(err)
		}
	}
	detach := func(name string) client.Object {
		t.Helper()
		o := &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: name}}
		if err := cl.c.Delete(ctx, o); err != nil {
			t.Fatal(err)
		}
		return o
	}

	// Attach on host1: exclusive there; host2's own lvchange -aey is refused.
	start = time.Now()
	attach("e2e-host1", "host1", v1.PurposeInstance)
	cl.wait("attached ex on host1", time.Minute, cl.attached("e2e-host1", v1.LockExclusive))
	tm.add("VolumeAttachment (1st node) → Attached exclusive", time.Since(start))
	mustLease(ctx, t, a, vg, uuid, false)
	if err := b.LVM.Activate(ctx, vg, lvm.Exclusive, "volume-e2e"); !errors.Is(err, lvm.ErrLockHeldByOther) {
		t.Fatalf("host2 lvchange -aey: want refused, got %v", err)
	}
	// Attached: the exclusive holder extends; its device grows at once.
	extend("96Mi", "extend on the exclusive holder → allocated")
	if got := strings.TrimSpace(run(ctx, t, a, "blockdev", "--getsize64", "/dev/vg1/volume-e2e")); got != fmt.Sprint(96<<20) {
		t.Fatalf("host1 device size %s after extend", got)
	}
	mustLease(ctx, t, a, vg, uuid, false)
	run(ctx, t, a, "dd", "if=/dev/urandom", "of=/tmp/pattern", "bs=1M", "count=16")
	run(ctx, t, a, "dd", "if=/tmp/pattern", "of=/dev/vg1/volume-e2e", "bs=1M", "oflag=direct")
	pattern := md5(ctx, t, a, "/tmp/pattern")

	// Live migration target on host2: both shared, each per its own sanlock.
	start = time.Now()
	attach("e2e-host2", "host2", v1.PurposeMigrationTarget)
	cl.wait("both shared", time.Minute, func() error {
		if err := cl.attached("e2e-host2", v1.LockShared)(); err != nil {
			return err
		}
		return cl.attached("e2e-host1", v1.LockShared)()
	})
	tm.add("VolumeAttachment (2nd node) → both Shared (ex→sh, then sh)", time.Since(start))
	mustLease(ctx, t, a, vg, uuid, true)
	mustLease(ctx, t, b, vg, uuid, true)
	run(ctx, t, b, "dd", "if=/dev/vg1/volume-e2e", "of=/tmp/read", "bs=1M", "count=16", "iflag=direct")
	if got := md5(ctx, t, b, "/tmp/read"); got != pattern {
		t.Fatalf("host2 reads %s, host1 wrote %s", got, pattern)
	}

	// Source detaches: host2 exclusive.
	start = time.Now()
	gone1 := detach("e2e-host1")
	cl.wait("host2 exclusive", time.Minute, cl.attached("e2e-host2", v1.LockExclusive))
	cl.wait("host1 attachment gone", time.Minute, cl.goneFn(gone1))
	tm.add("delete 1st VolumeAttachment → other node Exclusive", time.Since(start))
	mustNoLease(ctx, t, a, vg, uuid)
	mustLease(ctx, t, b, vg, uuid, false)

	// Back and again (A→B→A→B, #14 item 3): each hop is a migration-target on the other host
	// while the source's attachment exists (both shared per each host's own sanlock), then the
	// source's goes (the destination exclusive, nothing left on the source).
	last := "e2e-host2"
	for i, hop := range []struct {
		src, dst, srcNode, dstNode string
		srcHost, dstHost           *node
	}{
		{"e2e-host2", "e2e-host1b", "host2", "host1", b, a},
		{"e2e-host1b", "e2e-host2b", "host1", "host2", a, b},
	} {
		srcHost, dstHost := hop.srcHost, hop.dstHost
		start = time.Now()
		attach(hop.dst, hop.dstNode, v1.PurposeMigrationTarget)
		cl.wait(fmt.Sprintf("hop %d both shared", i+1), time.Minute, func() error {
			if err := cl.attached(hop.dst, v1.LockShared)(); err != nil {
				return err
			}
			return cl.attached(hop.src, v1.LockShared)()
		})
		mustLease(ctx, t, srcHost, vg, uuid, true)
		mustLease(ctx, t, dstHost, vg, uuid, true)
		gone := detach(hop.src)
		cl.wait(fmt.Sprintf("hop %d %s exclusive", i+1, hop.dstNode), time.Minute, cl.attached(hop.dst, v1.LockExclusive))
		cl.wait(fmt.Sprintf("hop %d source gone", i+1), time.Minute, cl.goneFn(gone))
		tm.add("migrate back/again: migration-target → both Shared → source gone → Exclusive", time.Since(start))
		mustNoLease(ctx, t, srcHost, vg, uuid)
		mustLease(ctx, t, dstHost, vg, uuid, false)
		run(ctx, t, dstHost, "dd", "if=/dev/vg1/volume-e2e", "of=/tmp/read", "bs=1M", "count=16", "iflag=direct")
		if got := md5(ctx, t, dstHost, "/tmp/read"); got != pattern {
			t.Fatalf("hop %d: %s reads %s, host1 wrote %s", i+1, hop.dstNode, got, pattern)
		}
		last = hop.dst
	}

	// Last detach: no lease anywhere.
	start = time.Now()
	gone2 := detach(last)
	cl.wait("host2 attachment gone", time.Minute, cl.goneFn(gone2))
	tm.add("delete last VolumeAttachment → released", time.Since(start))
	for _, n := range cl.nodes {
		mustNoLease(ctx, t, n, vg, uuid)
	}

	// Delete: wiped, then removed.
	start = time.Now()
	if err := cl.c.Delete(ctx, vol); err != nil {
		t.Fatal(err)
	}
	cl.wait("volume deleted", 2*time.Minute, cl.goneFn(vol))
	tm.add("delete SharedVolume (96Mi) → wiped and removed", time.Since(start))
	rep, _ := a.LVM.Report(ctx, vg)
	v, _ := rep.VG(vg)
	if _, ok := v.LV("volume-e2e"); ok {
		t.Fatal("LV still exists after delete")
	}

	// A new volume on the same extents reads back as zeros: the pattern did not survive.
	fresh := &v1.SharedVolume{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: "volume-after"},
		Spec: v1.SharedVolumeSpec{VolumeGroup: "cinder", Size: resource.MustParse("96Mi")}}
	if err := cl.c.Create(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	if err := cl.c.Create(ctx, &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: "after-host1"},
		Spec: v1.VolumeAttachmentSpec{Volume: "volume-after", Node: "host1"}}); err != nil {
		t.Fatal(err)
	}
	cl.wait("new volume attached", time.Minute, cl.attached("after-host1", v1.LockExclusive))
	rep, _ = a.LVM.Report(ctx, vg)
	v, _ = rep.VG(vg)
	lv, _ := v.LV("volume-after")
	t.Logf("new LV on %v (the deleted one was on /dev/vda too)", lv.Devices)
	run(ctx, t, a, "dd", "if=/dev/zero", "of=/tmp/zeros", "bs=1M", "count=16")
	run(ctx, t, a, "dd", "if=/dev/vg1/volume-after", "of=/tmp/read", "bs=1M", "count=16", "iflag=direct")
	if got, zeros := md5(ctx, t, a, "/tmp/read"), md5(ctx, t, a, "/tmp/zeros"); got != zeros {
		t.Fatalf("new volume does not read as zeros (md5 %s, pattern was %s): deleted data exposed", got, pattern)
	}

	// The raw commands doing the same work, on the same host and VG, in the same run.
	raw := func(op string, argv ...string) {
		s := time.Now()
		run(ctx, t, a, argv...)
		tm.add("raw: "+op, time.Since(s))
	}
	raw("lvcreate -an 64MiB", "lvcreate", "-y", "-an", "-Zn", "-n", "rawlv", "-L", "64m", vg)
	raw("lvchange -aey", "lvchange", "-aey", vg+"/rawlv")
	raw("lvchange -asy (convert)", "lvchange", "-asy", vg+"/rawlv")
	raw("lvchange -an", "lvchange", "-an", vg+"/rawlv")
	raw("blkdiscard --zeroout 64MiB + lvremove", "sh", "-c", "lvchange -aey vg1/rawlv && blkdiscard --zeroout /dev/vg1/rawlv && lvchange -an vg1/rawlv && lvremove -y vg1/rawlv")
}

// detach deletes an attachment and waits until its node has released the lock.
func (cl *cluster) detach(name string) {
	cl.t.Helper()
	att := &v1.VolumeAttachment{}
	att.Namespace, att.Name = "cloud", name
	if err := cl.c.Delete(cl.ctx, att); err != nil {
		cl.t.Fatal(err)
	}
	cl.wait("detached "+name, time.Minute, cl.goneFn(att))
}

// powerCycle kills a host (its agent dies with it), boots it again and reports the new boot
// ID on its Node as the kubelet would; it returns that boot ID. The agent is not restarted.
func (cl *cluster) powerCycle(n *node) string {
	cl.t.Helper()
	return cl.reboot(n, false)
}

// reboot is powerCycle, or with clean a clean power-off (the guest's own; what a planned
// shutdown ran before it, such as leave-lockspaces, is the caller's).
func (cl *cluster) reboot(n *node, clean bool) string {
	cl.t.Helper()
	if clean {
		if err := n.Stop(cl.ctx); err != nil {
			// Stop's own lockstop failed and it powered off hard: the next join waits.
			cl.t.Logf("clean power-off of %s: %v (powered off hard)", n.Name, err)
		}
	} else {
		n.Kill()
	}
	if stop := cl.agents[n.Name]; stop != nil {
		stop()
	}
	if err := n.Boot(cl.ctx); err != nil {
		cl.t.Fatal(err)
	}
	bootID := strings.TrimSpace(run(cl.ctx, cl.t, n, "cat", "/proc/sys/kernel/random/boot_id"))
	var node corev1.Node
	if err := cl.c.Get(cl.ctx, client.ObjectKey{Name: n.Name}, &node); err != nil {
		cl.t.Fatal(err)
	}
	node.Status.NodeInfo.BootID = bootID
	if err := cl.c.Status().Update(cl.ctx, &node); err != nil {
		cl.t.Fatal(err)
	}
	return bootID
}

var (
	controllerLogs     switchWriter
	controllerLogsOnce sync.Once
)

// switchWriter writes to the current test's log file (nowhere between tests).
type switchWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *switchWriter) set(w io.Writer) {
	s.mu.Lock()
	s.w = w
	s.mu.Unlock()
}

func (s *switchWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w == nil {
		return len(p), nil
	}
	return s.w.Write(p)
}
