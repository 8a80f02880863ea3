//go:build nodes

package nodes

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/sharedlvm/sharedlvm-operator/agent/sanlock"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/envtestutil"
	"github.com/sharedlvm/sharedlvm-operator/internal/testbed"
	"github.com/sharedlvm/sharedlvm-operator/roles"
)

// script runs a hack/ script and returns its last line of output (the directory it prints).
func script(t *testing.T, name string, args ...string) string {
	t.Helper()
	start := time.Now()
	cmd := exec.Command(filepath.Join(envtestutil.RepoRoot(), "hack", name), args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hack/%s: %v", name, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	t.Logf("hack/%s %s: %.1fs", name, strings.Join(args, " "), time.Since(start).Seconds())
	return lines[len(lines)-1]
}

// env is the nodes tier's world: the control plane, the bed's hosts as nodes, a client.
type env struct {
	t       *testing.T
	ctx     context.Context
	cluster *Cluster
	bed     *testbed.Bed
	c       client.Client
	helm    string
	images  map[string]string // tag -> directory of hack/images.sh
}

func (e *env) wait(what string, bound time.Duration, f func() error, onFail ...func()) time.Duration {
	e.t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < bound {
		if err = f(); err == nil {
			return time.Since(start)
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, g := range onFail {
		g()
	}
	e.t.Fatalf("%s: not within %s: %v", what, bound, err)
	return 0
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// setup brings up the control plane, builds the images (tags), and boots the bed's hosts as
// nodes running the first tag's images.
func setup(t *testing.T, hosts int, tags ...string) *env {
	logf.SetLogger(logr.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, images: map[string]string{}}
	envtestDir := script(t, "envtest-binaries.sh")
	bins := script(t, "node-binaries.sh")
	for _, tag := range tags {
		e.images[tag] = script(t, "images.sh", tag)
	}
	e.helm = script(t, "tools.sh", "helm")
	dir := filepath.Join(testbed.CacheDir(), "nodes", "runs", time.Now().Format("20060102-150405"))
	cl, err := Start(ctx, filepath.Join(dir, "control-plane"), envtestDir, bins)
	if err != nil {
		t.Fatal(err)
	}
	e.cluster = cl
	t.Cleanup(func() {
		cl.Stop()
		if t.Failed() {
			t.Logf("control plane logs in %s", cl.Dir)
		}
	})
	if e.c, err = client.New(cl.Config, client.Options{Scheme: roles.Scheme()}); err != nil {
		t.Fatal(err)
	}
	img := e.images[tags[0]]
	refs, err := os.ReadFile(filepath.Join(img, "refs"))
	if err != nil {
		t.Fatal(err)
	}
	var sandbox string
	for _, r := range strings.Fields(string(refs)) {
		if strings.Contains(r, "/pause:") {
			sandbox = r
		}
	}
	var dirs []string
	for i := 1; i <= hosts; i++ {
		d := filepath.Join(dir, fmt.Sprintf("host%d", i))
		if err := cl.WriteNodeDir(d, Node{Name: fmt.Sprintf("host%d", i), Subnet: fmt.Sprintf("10.244.%d.0/24", i),
			Kubelet: filepath.Join(bins, "kubelet"), Sandbox: sandbox, Containerd: os.Getenv("SHAREDLVM_NODES_CONTAINERD"),
			Images: []string{filepath.Join(img, "operator.tar"), filepath.Join(img, "agent.tar"), filepath.Join(img, "pause.tar")}}); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	start := time.Now()
	bctx, bcancel := context.WithTimeout(ctx, 5*time.Minute)
	defer bcancel()
	e.bed, err = testbed.New(bctx, testbed.Config{Name: t.Name(), Hosts: hosts, LUNs: 1, MemoryMB: 1536,
		GuestForwards: []testbed.GuestForward{{Addr: ServiceIP, Port: 443, HostPort: cl.Port}}, NodeDirs: dirs})
	if err != nil {
		t.Fatalf("booting the bed: %v", err)
	}
	t.Cleanup(func() {
		e.bed.Close()
		if t.Failed() {
			t.Logf("VM console logs in %s (the guests' /var/log/{kubelet,containerd}.log are gone with them)", e.bed.Dir)
		}
	})
	booted := time.Since(start)
	for _, h := range e.bed.Hosts {
		e.wait(h.Name+" registered and Ready", 5*time.Minute, func() error {
			var n corev1.Node
			if err := e.c.Get(ctx, client.ObjectKey{Name: h.Name}, &n); err != nil {
				return fmt.Errorf("%w (kubelet log: %s)", err, e.tail(h, "/var/log/kubelet.log"))
			}
			if !nodeReady(&n) {
				return fmt.Errorf("not Ready: %+v (kubelet log: %s)", n.Status.Conditions, e.tail(h, "/var/log/kubelet.log"))
			}
			return nil
		})
		// What the kubelet says of the runtime (containerd 1.x has no RuntimeConfig call:
		// the kubelet falls back to its own cgroupDriver and counts it as losing support).
		if out, err := h.MustRun(ctx, "grep", "-m1", "-o", "CRI implementation should be updated[^\"]*", "/var/log/kubelet.log"); err == nil {
			t.Logf("%s's kubelet: %s", h.Name, strings.TrimSpace(out))
		}
		t.Logf("timings: %s: VM booted (guest daemon answers) %.1fs, node Ready (seen) %.1fs after the boot started", h.Name, booted.Seconds(), time.Since(start).Seconds())
	}
	return e
}

// tail is the end of a file in a guest (its logs).
func (e *env) tail(h *testbed.Host, path string) string {
	out, _ := h.MustRun(e.ctx, "tail", "-n", "5", path)
	return strings.TrimSpace(out)
}

const (
	release   = "sharedlvm"
	namespace = "sharedlvm-system"
)

// helmRun runs helm against the control plane.
func (e *env) helmRun(args ...string) string {
	e.t.Helper()
	cmd := exec.CommandContext(e.ctx, e.helm, append(args, "--kubeconfig", e.cluster.Admin)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		e.t.Fatalf("helm %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// podLogs is the end of each container's log of a pod, read on its node (the apiserver
// cannot reach the kubelets: kubectl logs does not work on the bed).
func (e *env) podLogs(p *corev1.Pod) string {
	h := e.hostOf(p.Spec.NodeName)
	if h == nil {
		return ""
	}
	dir := fmt.Sprintf("/var/log/pods/%s_%s_%s", p.Namespace, p.Name, p.UID)
	ls, err := h.MustRun(e.ctx, "find", dir, "-name", "*.log")
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, f := range strings.Fields(ls) {
		tail, _ := h.MustRun(e.ctx, "tail", "-n", "15", f)
		out = append(out, "== "+f+"\n"+tail)
	}
	return strings.Join(out, "\n")
}

// rolledOut waits until the operator Deployment and the agent DaemonSet run tag's image with
// every pod ready.
func (e *env) rolledOut(tag string, bound time.Duration) time.Duration {
	e.t.Helper()
	return e.wait("operator and agents rolled out with "+tag, bound, func() error {
		var pods corev1.PodList
		if err := e.c.List(e.ctx, &pods, client.InNamespace(namespace)); err != nil {
			return err
		}
		ready := map[string]int{}
		var notes []string
		for _, p := range pods.Items {
			comp := p.Labels["app.kubernetes.io/component"]
			ok := p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning
			for _, c := range p.Status.ContainerStatuses {
				ok = ok && c.Ready && strings.HasSuffix(c.Image, ":"+tag)
			}
			if ok && len(p.Status.ContainerStatuses) > 0 {
				ready[comp]++
			} else {
				notes = append(notes, fmt.Sprintf("%s on %s: %s %s", p.Name, p.Spec.NodeName, p.Status.Phase, podWhy(&p)))
			}
		}
		if ready["operator"] != 2 || ready["agent"] != len(e.bed.Hosts) || len(notes) > 0 {
			return fmt.Errorf("ready %v; %s", ready, strings.Join(notes, "; "))
		}
		return nil
	}, func() {
		var pods corev1.PodList
		_ = e.c.List(e.ctx, &pods, client.InNamespace(namespace))
		for i := range pods.Items {
			e.t.Logf("%s:\n%s", pods.Items[i].Name, e.podLogs(&pods.Items[i]))
		}
	})
}

// podWhy says why a pod is not ready (its waiting or terminated containers' reasons).
func podWhy(p *corev1.Pod) string {
	var out []string
	for _, c := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		switch {
		case c.State.Waiting != nil:
			out = append(out, fmt.Sprintf("%s waiting %s %s", c.Name, c.State.Waiting.Reason, c.State.Waiting.Message))
		case c.State.Terminated != nil && c.State.Terminated.ExitCode != 0:
			out = append(out, fmt.Sprintf("%s exited %d %s", c.Name, c.State.Terminated.ExitCode, c.State.Terminated.Message))
		case c.State.Running != nil && !c.Ready:
			out = append(out, c.Name+" running, not ready")
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			out = append(out, fmt.Sprintf("%s: %s", c.Type, c.Message))
		}
	}
	return strings.Join(out, ", ")
}

func TestNodesOnRealKubelets(t *testing.T) {
	e := setup(t, 2, "bed-1", "bed-2")
	chart := filepath.Join(envtestutil.RepoRoot(), "charts", "sharedlvm-operator")

	t.Log("helm install: the operator Deployment (2 replicas, leader election) and the agent DaemonSet as pods")
	// cinder-volume's namespace exists before the chart (chart README: cinder.namespace).
	e.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "openstack"}})
	start := time.Now()
	e.helmRun("install", release, chart, "--namespace", namespace, "--create-namespace", "--set", "image.tag=bed-1",
		"--set", "waitLocks.serviceAccounts[0].namespace=launchers", "--set", "waitLocks.serviceAccounts[0].name=launcher")
	d := e.rolledOut("bed-1", 10*time.Minute)
	t.Logf("timings: helm install -> every pod ready: %.1fs (install %.1fs)", (time.Since(start)).Seconds(), (time.Since(start) - d).Seconds())

	e.coreFlows()
	var uuid string
	if os.Getenv("SHAREDLVM_NODES_SHORT") == "1" {
		// The short form (the README's test command): no power cycle, whose lockspace
		// rejoin after an unclean shutdown alone takes ~100 s on this bed.
		vol, _ := e.volume2()
		uuid = vol.Status.LVUUID
		t.Log("SHAREDLVM_NODES_SHORT=1: the power cycle with the launcher skipped")
	} else {
		uuid = e.rebootWithLauncher()
	}
	e.upgradeWithWriter(chart, uuid)
	e.tokens()
	e.metricsAndProbes()
	e.uninstall(uuid)
}

// lease1 makes volume-2 attached exclusive on host1, the volume the later steps keep.
func (e *env) volume2() (*v1.SharedVolume, *v1.VolumeAttachment) {
	vol := &v1.SharedVolume{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: "volume-2"},
		Spec: v1.SharedVolumeSpec{VolumeGroup: "cinder", Size: resource.MustParse("64Mi")}}
	e.create(vol)
	e.wait("volume-2 Available", 2*time.Minute, func() error {
		if err := e.c.Get(e.ctx, client.ObjectKeyFromObject(vol), vol); err != nil {
			return err
		}
		if vol.Status.Phase != v1.VolumeAvailable {
			return fmt.Errorf("phase %q", vol.Status.Phase)
		}
		return nil
	})
	a := &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: "volume-2-host1"},
		Spec: v1.VolumeAttachmentSpec{Volume: "volume-2", Node: "host1", Purpose: v1.PurposeInstance}}
	e.create(a)
	e.wait("volume-2 attached exclusive on host1", 2*time.Minute, e.attached(a, v1.LockExclusive))
	return vol, a
}

// launcher is the VM launcher stand-in: a pod on the node whose init container is
// `sharedlvm wait-locks` as the README documents it (operator image, NODE_NAME).
func (e *env) launcher(node string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "launchers", Name: "launcher-" + node},
		Spec: corev1.PodSpec{
			ServiceAccountName: "launcher",
			NodeSelector:       map[string]string{"kubernetes.io/hostname": node},
			InitContainers: []corev1.Container{{Name: "wait-locks", Image: e.ref("sharedlvm-operator", "bed-1"),
				Command: []string{"/sharedlvm", "wait-locks", "--timeout=15m"},
				Env: []corev1.EnvVar{{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{
					FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}}}},
			Containers: []corev1.Container{{Name: "vms", Image: e.ref("pause", "bed-1")}},
		}}
}

// ref is an image reference hack/images.sh built.
func (e *env) ref(name, tag string) string {
	b, err := os.ReadFile(filepath.Join(e.images[tag], "refs"))
	if err != nil {
		e.t.Fatal(err)
	}
	for _, r := range strings.Fields(string(b)) {
		if strings.Contains(r, "/"+name+":") {
			return r
		}
	}
	e.t.Fatalf("no image %s:%s", name, tag)
	return ""
}

func restoreCondition(n *corev1.Node) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == v1.NodeConditionLocksRestored {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// rebootWithLauncher power-cycles host1 while it holds volume-2 and runs the launcher: the
// kubelet comes back, the agent pod restores the node's locks, the startup taint goes, and
// the launcher's init container returns only after that. It returns volume-2's LV UUID.
func (e *env) rebootWithLauncher() string {
	t := e.t
	vol, _ := e.volume2()
	uuid := vol.Status.LVUUID
	e.expectLeases(uuid, "host1=ex host2=")
	e.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "launchers"}})
	e.create(&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "launchers", Name: "launcher"}})
	pod := e.launcher("host1")
	e.create(pod)
	e.wait("the launcher runs on host1", 3*time.Minute, func() error {
		if err := e.c.Get(e.ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return err
		}
		if pod.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("%s %s", pod.Status.Phase, podWhy(pod))
		}
		return nil
	})

	h := e.bed.Hosts[0]
	var node corev1.Node
	if err := e.c.Get(e.ctx, client.ObjectKey{Name: h.Name}, &node); err != nil {
		t.Fatal(err)
	}
	oldBoot := node.Annotations[v1.AnnotationRestoredBootID]
	t.Log("host1 loses power and boots again")
	h.Kill()
	t0 := time.Now()
	bctx, cancel := context.WithTimeout(e.ctx, 5*time.Minute)
	defer cancel()
	if err := h.Boot(bctx); err != nil {
		t.Fatalf("rebooting host1: %v", err)
	}
	bootTook := time.Since(t0)
	boot, err := h.MustRun(e.ctx, "cat", "/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Fatal(err)
	}
	boot = strings.TrimSpace(boot)
	if boot == oldBoot {
		t.Fatalf("the boot ID did not change")
	}
	var tainted bool
	backAfter := e.wait("host1's kubelet back (Ready with the new boot ID)", 5*time.Minute, func() error {
		if err := e.c.Get(e.ctx, client.ObjectKey{Name: h.Name}, &node); err != nil {
			return err
		}
		tainted = tainted || v1.StartupTaint(&node) != nil
		if node.Status.NodeInfo.BootID != boot || !nodeReady(&node) {
			return fmt.Errorf("bootID %q ready %v", node.Status.NodeInfo.BootID, nodeReady(&node))
		}
		return nil
	})
	restored := e.wait("host1's agent pod restored this boot's locks", 5*time.Minute, func() error {
		if err := e.c.Get(e.ctx, client.ObjectKey{Name: h.Name}, &node); err != nil {
			return err
		}
		tainted = tainted || v1.StartupTaint(&node) != nil
		if node.Annotations[v1.AnnotationRestoredBootID] != boot || node.Labels[v1.LabelLocksRestored] != "true" {
			return fmt.Errorf("restored for %q, label %q, condition %+v", node.Annotations[v1.AnnotationRestoredBootID], node.Labels[v1.LabelLocksRestored], restoreCondition(&node))
		}
		if v1.StartupTaint(&node) != nil {
			return fmt.Errorf("the startup taint is still there")
		}
		if c := restoreCondition(&node); c == nil || c.Status != corev1.ConditionTrue {
			return fmt.Errorf("condition %+v", c)
		}
		return nil
	})
	cond := restoreCondition(&node)
	t.Logf("timings: reboot: guest up %.1fs after power-on, kubelet Ready with the new boot %.1fs after that, locks restored %.1fs later (%s)", bootTook.Seconds(), backAfter.Seconds(), restored.Seconds(), cond.Message)
	if !tainted {
		t.Fatal("the startup taint was not on the rebooted Node while it restored (polled every 0.5 s)")
	}
	e.expectLeases(uuid, "host1=ex host2=")

	// The agent pod's start to restore done, from the pod's own status.
	var pods corev1.PodList
	if err := e.c.List(e.ctx, &pods, client.InNamespace(namespace), client.MatchingLabels{"app.kubernetes.io/component": "agent"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName != h.Name {
			continue
		}
		for _, c := range p.Status.ContainerStatuses {
			if c.State.Running != nil {
				t.Logf("timings: reboot: agent container started -> restore recorded: %.0fs (second resolution)", cond.LastTransitionTime.Sub(c.State.Running.StartedAt.Time).Seconds())
			}
		}
	}
	e.wait("the launcher runs again, its init container after the restore", 5*time.Minute, func() error {
		if err := e.c.Get(e.ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return err
		}
		if pod.Status.Phase != corev1.PodRunning || len(pod.Status.InitContainerStatuses) == 0 {
			return fmt.Errorf("%s %s", pod.Status.Phase, podWhy(pod))
		}
		st := pod.Status.InitContainerStatuses[0].State.Terminated
		if st == nil || st.ExitCode != 0 {
			return fmt.Errorf("init container %+v", pod.Status.InitContainerStatuses[0].State)
		}
		if st.FinishedAt.Time.Before(t0) {
			return fmt.Errorf("init container finished at %s, before the reboot", st.FinishedAt)
		}
		if st.FinishedAt.Time.Before(cond.LastTransitionTime.Time) {
			t.Fatalf("the launcher's init container returned at %s, before the restore (%s)", st.FinishedAt, cond.LastTransitionTime)
		}
		return nil
	})
	t.Logf("the launcher's wait-locks returned after the restore (%s), as %q says", cond.LastTransitionTime.Format(time.RFC3339), "wait-locks")
	return uuid
}

const vgName = "vg1"

// leaseOn is host h's own sanlock's view of the LV's lease: "", "ex" or "sh".
func (e *env) leaseOn(h *testbed.Host, uuid string) string {
	e.t.Helper()
	st, err := (&sanlock.Client{Exec: h}).Status(e.ctx)
	if err != nil {
		e.t.Fatalf("%s: sanlock client status: %v", h.Name, err)
	}
	r, ok := st.Lease(vgName, uuid)
	switch {
	case !ok:
		return ""
	case r.Shared:
		return "sh"
	default:
		return "ex"
	}
}

// leases is every host's lease on the LV, e.g. "host1=ex host2=".
func (e *env) leases(uuid string) string {
	var out []string
	for _, h := range e.bed.Hosts {
		out = append(out, h.Name+"="+e.leaseOn(h, uuid))
	}
	return strings.Join(out, " ")
}

func (e *env) attached(a *v1.VolumeAttachment, mode v1.LockMode) func() error {
	return func() error {
		if err := e.c.Get(e.ctx, client.ObjectKeyFromObject(a), a); err != nil {
			return err
		}
		if a.Status.Phase != v1.AttachmentAttached || a.Status.AppliedLock != mode {
			return fmt.Errorf("%s: phase %q applied %q desired %q conditions %+v", a.Name, a.Status.Phase, a.Status.AppliedLock, a.Status.DesiredLock, a.Status.Conditions)
		}
		return nil
	}
}

func (e *env) gone(o client.Object) func() error {
	return func() error {
		err := e.c.Get(e.ctx, client.ObjectKeyFromObject(o), o)
		if err == nil {
			return fmt.Errorf("%s still exists", o.GetName())
		}
		return client.IgnoreNotFound(err)
	}
}

func (e *env) create(o client.Object) {
	e.t.Helper()
	if err := e.c.Create(e.ctx, o); err != nil {
		e.t.Fatalf("create %s: %v", o.GetName(), err)
	}
}

func (e *env) remove(o client.Object) {
	e.t.Helper()
	if err := e.c.Delete(e.ctx, o); err != nil {
		e.t.Fatalf("delete %s: %v", o.GetName(), err)
	}
	e.wait(o.GetName()+" gone", 2*time.Minute, e.gone(o))
}

func (e *env) expectLeases(uuid, want string) {
	e.t.Helper()
	e.wait("leases "+want, 30*time.Second, func() error {
		if got := e.leases(uuid); got != want {
			return fmt.Errorf("sanlock says %s", got)
		}
		return nil
	})
	e.t.Logf("sanlock on the hosts: %s", want)
}

// coreFlows drives VG, create, attach, live migration, detach and delete through the CRs,
// every agent a pod, each step checked on the hosts' own sanlock.
func (e *env) coreFlows() {
	t := e.t
	e.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cloud"}})
	start := time.Now()
	e.create(&v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: "cinder"},
		Spec: v1.VolumeGroupSpec{VGName: vgName, PVs: []v1.DevicePath{v1.DevicePath(testbed.GuestDevice(0))}}})
	e.wait("VG created, lockspaces started on every node", 5*time.Minute, func() error {
		var g v1.VolumeGroup
		if err := e.c.Get(e.ctx, client.ObjectKey{Name: "cinder"}, &g); err != nil {
			return err
		}
		if g.Status.NodesReady != fmt.Sprintf("%d/%d", len(e.bed.Hosts), len(e.bed.Hosts)) || g.Status.VGUUID == "" {
			return fmt.Errorf("nodesReady %q vgUUID %q nodes %+v", g.Status.NodesReady, g.Status.VGUUID, g.Status.Nodes)
		}
		return nil
	})
	t.Logf("timings: VolumeGroup created and every lockspace joined: %.1fs", time.Since(start).Seconds())
	for _, h := range e.bed.Hosts {
		out, err := h.MustRun(e.ctx, "sanlock", "client", "gets")
		if err != nil || !strings.Contains(out, "lvm_"+vgName) {
			t.Fatalf("%s: sanlock has no lockspace lvm_%s: %v %s", h.Name, vgName, err, out)
		}
	}

	vol := &v1.SharedVolume{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: "volume-1"},
		Spec: v1.SharedVolumeSpec{VolumeGroup: "cinder", Size: resource.MustParse("64Mi")}}
	e.create(vol)
	e.wait("volume-1 Available", 2*time.Minute, func() error {
		if err := e.c.Get(e.ctx, client.ObjectKeyFromObject(vol), vol); err != nil {
			return err
		}
		if vol.Status.Phase != v1.VolumeAvailable {
			return fmt.Errorf("phase %q conditions %+v", vol.Status.Phase, vol.Status.Conditions)
		}
		return nil
	})
	uuid := vol.Status.LVUUID
	e.expectLeases(uuid, "host1= host2=")

	a1 := &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: "volume-1-host1"},
		Spec: v1.VolumeAttachmentSpec{Volume: "volume-1", Node: "host1", Purpose: v1.PurposeInstance}}
	start = time.Now()
	e.create(a1)
	e.wait("attached exclusive on host1", 2*time.Minute, e.attached(a1, v1.LockExclusive))
	t.Logf("timings: attach exclusive: %.1fs", time.Since(start).Seconds())
	e.expectLeases(uuid, "host1=ex host2=")

	a2 := &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: "volume-1-host2"},
		Spec: v1.VolumeAttachmentSpec{Volume: "volume-1", Node: "host2", Purpose: v1.PurposeMigrationTarget}}
	start = time.Now()
	e.create(a2)
	e.wait("live migration: shared on the target", 2*time.Minute, e.attached(a2, v1.LockShared))
	e.wait("live migration: shared on the source", time.Minute, e.attached(a1, v1.LockShared))
	t.Logf("timings: live migration ex -> sh on both: %.1fs", time.Since(start).Seconds())
	e.expectLeases(uuid, "host1=sh host2=sh")

	start = time.Now()
	e.remove(a1)
	e.wait("migration done: exclusive on the target", 2*time.Minute, e.attached(a2, v1.LockExclusive))
	t.Logf("timings: source detached, target exclusive: %.1fs", time.Since(start).Seconds())
	e.expectLeases(uuid, "host1= host2=ex")

	e.remove(a2)
	e.expectLeases(uuid, "host1= host2=")
	e.remove(vol)
	out, err := e.bed.Hosts[0].MustRun(e.ctx, "lvs", "--noheadings", "-o", "lv_name,lv_tags", vgName)
	if err != nil || strings.Contains(out, string(vol.UID)) {
		t.Fatalf("volume-1's LV is still there after its deletion: %v %s", err, out)
	}
	t.Log("core flows through the CRs with every agent a pod: VG, create, attach ex, live migration sh+sh, ex on the target, detach, delete")
}
