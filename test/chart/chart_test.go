// Package chart_test lints and renders the Helm chart, installs it with helm into a real
// apiserver (envtest), and checks what it created, including the agent NodeRestriction
// admission policy against impersonated agent identities. helm is built from the Go module
// proxy by hack/tools.sh (pinned) on first use.
package chart_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	sigsyaml "sigs.k8s.io/yaml"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/heartbeat"
	"github.com/sharedlvm/sharedlvm-operator/internal/envtestutil"
	"github.com/sharedlvm/sharedlvm-operator/roles"
)

const (
	release   = "sharedlvm"
	namespace = "sharedlvm-system"
	agentUser = "system:serviceaccount:" + namespace + ":sharedlvm-agent"
	nodeExtra = "authentication.kubernetes.io/node-name"
)

var chartDir = filepath.Join(envtestutil.RepoRoot(), "charts", "sharedlvm-operator")

func helm(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(envtestutil.RepoRoot(), "hack", "tools.sh"), "helm").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("building helm: %v\n%s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func runHelm(t *testing.T, bin string, args ...string) string {
	t.Helper()
	c := exec.Command(bin, args...)
	c.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("helm %v: %v\n%s%s", args, err, out, stderr.String())
	}
	return string(out)
}

func TestLintAndTemplate(t *testing.T) {
	bin := helm(t)
	t.Log(runHelm(t, bin, "lint", "--strict", chartDir))
	out := runHelm(t, bin, "template", release, chartDir, "-n", namespace, "--kube-version", "1.37.2")
	kinds := map[string][]string{}
	var ds *appsv1.DaemonSet
	var dep *appsv1.Deployment
	dec := yaml.NewYAMLOrJSONDecoder(strings.NewReader(out), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			break
		}
		if len(u.Object) == 0 {
			continue
		}
		kinds[u.GetKind()] = append(kinds[u.GetKind()], u.GetName())
		if u.GetKind() == "DaemonSet" {
			b, _ := sigsyaml.Marshal(u.Object)
			ds = &appsv1.DaemonSet{}
			if err := sigsyaml.Unmarshal(b, ds); err != nil {
				t.Fatal(err)
			}
		}
		if u.GetKind() == "Deployment" {
			b, _ := sigsyaml.Marshal(u.Object)
			dep = &appsv1.Deployment{}
			if err := sigsyaml.Unmarshal(b, dep); err != nil {
				t.Fatal(err)
			}
		}
	}
	// ClusterRoles: operator, agent, cinder, wait-locks (bound only to listed launchers).
	want := map[string]int{"ServiceAccount": 3, "ClusterRole": 4, "ClusterRoleBinding": 3, "Role": 1, "RoleBinding": 1,
		"Deployment": 1, "DaemonSet": 1, "Service": 1, "ValidatingAdmissionPolicy": 2, "ValidatingAdmissionPolicyBinding": 2}
	for k, n := range want {
		if len(kinds[k]) != n {
			t.Errorf("%d %s rendered (%v), want %d", len(kinds[k]), k, kinds[k], n)
		}
	}
	if ds == nil {
		t.Fatal("no DaemonSet")
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostPID || spec.Containers[0].SecurityContext == nil || !*spec.Containers[0].SecurityContext.Privileged {
		t.Error("the agent needs hostPID and privileged for nsenter into the host")
	}
	tolerated := false
	for _, tol := range spec.Tolerations {
		tolerated = tolerated || tol.Key == v1.TaintLocksNotRestored
	}
	if !tolerated {
		t.Error("the agent must tolerate its own startup taint")
	}
	tolerated = false
	for _, tol := range dep.Spec.Template.Spec.Tolerations {
		tolerated = tolerated || tol.Key == v1.TaintLocksNotRestored
	}
	if !tolerated {
		t.Error("the operator must tolerate the startup taint: the agents' restore waits for it (seen on real kubelets)")
	}
	bound := runHelm(t, bin, "template", release, chartDir, "-n", namespace, "--kube-version", "1.37.2",
		"--set", "waitLocks.serviceAccounts[0].namespace=openstack", "--set", "waitLocks.serviceAccounts[0].name=nova-compute")
	if !strings.Contains(bound, "name: "+release+"-wait-locks") || !strings.Contains(bound, "name: nova-compute") {
		t.Error("waitLocks.serviceAccounts does not bind the wait-locks ClusterRole")
	}
	mounts := map[string]bool{}
	for _, m := range spec.Containers[0].VolumeMounts {
		mounts[m.MountPath] = true
	}
	for _, p := range []string{"/dev", "/run/lvm", "/run/sanlock", "/etc/lvm"} {
		if !mounts[p] {
			t.Errorf("agent lacks mount %s", p)
		}
	}
	// Values change what they say.
	off := runHelm(t, bin, "template", release, chartDir, "-n", namespace, "--kube-version", "1.37.2", "--set", "admissionPolicy.enabled=false", "--set", "agent.hostNamespaces=false")
	if strings.Contains(off, "ValidatingAdmissionPolicy") || !strings.Contains(off, "hostPID: false") {
		t.Error("admissionPolicy.enabled=false or agent.hostNamespaces=false not honoured")
	}
}

// TestInstallIntoAPIServer: `helm install` into envtest; the objects exist with the generated
// RBAC rules, and the admission policy confines an agent to its own node's objects.
func TestInstallIntoAPIServer(t *testing.T) {
	bin := helm(t)
	env, err := envtestutil.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admin, err := client.New(env.Config, client.Options{Scheme: roles.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	// Cinder's namespace exists before the chart binds the driver's ServiceAccount there.
	must(t, admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "openstack"}}))
	start := time.Now()
	t.Log(runHelm(t, bin, "install", release, chartDir, "-n", namespace, "--create-namespace", "--kubeconfig", env.Kubeconfig))
	t.Logf("helm install took %.1fs", time.Since(start).Seconds())

	var dep appsv1.Deployment
	must(t, admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "sharedlvm-operator"}, &dep))
	var ds appsv1.DaemonSet
	must(t, admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "sharedlvm-agent"}, &ds))
	if ds.Spec.Template.Spec.ServiceAccountName != "sharedlvm-agent" || dep.Spec.Template.Spec.ServiceAccountName != "sharedlvm-operator" {
		t.Errorf("service accounts: operator %s agent %s", dep.Spec.Template.Spec.ServiceAccountName, ds.Spec.Template.Spec.ServiceAccountName)
	}
	for _, component := range []string{"operator", "agent"} {
		var role rbacv1.ClusterRole
		must(t, admin.Get(ctx, client.ObjectKey{Name: "sharedlvm-" + component}, &role))
		gen, err := os.ReadFile(filepath.Join(envtestutil.RepoRoot(), "config", "rbac", component, "role.yaml"))
		must(t, err)
		var want rbacv1.ClusterRole
		must(t, sigsyaml.Unmarshal(gen, &want))
		got, _ := sigsyaml.Marshal(role.Rules)
		exp, _ := sigsyaml.Marshal(want.Rules)
		if !bytes.Equal(got, exp) {
			t.Errorf("%s ClusterRole rules differ from the generated ones:\n%s\nwant\n%s", component, got, exp)
		}
	}
	var vap admissionv1.ValidatingAdmissionPolicy
	must(t, admin.Get(ctx, client.ObjectKey{Name: "sharedlvm-agent-node-restriction"}, &vap))

	// The Cinder driver's ServiceAccount: what the driver does, in Cinder's namespace only.
	cinderCfg := rest.CopyConfig(env.Config)
	cinderCfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:openstack:sharedlvm-cinder",
		Groups: []string{"system:serviceaccounts", "system:authenticated"}}
	cinder, err := client.New(cinderCfg, client.Options{Scheme: roles.Scheme()})
	must(t, err)
	sv := &v1.SharedVolume{ObjectMeta: metav1.ObjectMeta{Namespace: "openstack", Name: "volume-1"},
		Spec: v1.SharedVolumeSpec{VolumeGroup: "cinder", Size: resource.MustParse("1Gi")}}
	must(t, cinder.Create(ctx, sv))
	must(t, cinder.Patch(ctx, sv, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"size":"2Gi"}}`))))
	must(t, cinder.Create(ctx, &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "openstack", Name: "volume-1-node-1"},
		Spec: v1.VolumeAttachmentSpec{Volume: "volume-1", Node: "node-1"}}))
	must(t, cinder.List(ctx, &v1.VolumeAttachmentList{}, client.InNamespace("openstack")))
	must(t, cinder.List(ctx, &v1.VolumeGroupList{}))
	sv.Status.Phase = v1.VolumeAvailable
	for what, err := range map[string]error{
		"write a SharedVolume's status": cinder.Status().Update(ctx, sv),
		"create a SharedVolume in another namespace": cinder.Create(ctx, &v1.SharedVolume{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "x"},
			Spec: v1.SharedVolumeSpec{VolumeGroup: "cinder", Size: resource.MustParse("1Gi")}}),
		"create a VolumeGroup": cinder.Create(ctx, &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: "x"}, Spec: v1.VolumeGroupSpec{VGName: "x", PVs: []v1.DevicePath{"/dev/x"}}}),
	} {
		if !apierrors.IsForbidden(err) {
			t.Errorf("the Cinder driver's ServiceAccount may %s: %v", what, err)
		}
	}
	must(t, cinder.Delete(ctx, &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "openstack", Name: "volume-1-node-1"}}))
	must(t, cinder.Delete(ctx, sv))

	// Objects the agents will write.
	must(t, admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cloud"}}))
	for _, n := range []string{"node-1", "node-2"} {
		must(t, admin.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}))
		must(t, admin.Create(ctx, &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: "att-" + n},
			Spec: v1.VolumeAttachmentSpec{Volume: "vol", Node: v1.ObjectName(n)}}))
	}
	vg := &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: "cinder"}, Spec: v1.VolumeGroupSpec{VGName: "vg1", PVs: []v1.DevicePath{"/dev/sdb"}}}
	must(t, admin.Create(ctx, vg))
	vg.Status.Nodes = []v1.NodeLockspaceStatus{{Node: "node-1", HostID: 1}, {Node: "node-2", HostID: 2}}
	must(t, admin.Status().Update(ctx, vg))

	as := func(node string) client.Client {
		cfg := rest.CopyConfig(env.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: agentUser, Groups: []string{"system:serviceaccounts", "system:authenticated"}}
		if node != "" {
			cfg.Impersonate.Extra = map[string][]string{nodeExtra: {node}}
		}
		c, err := client.New(cfg, client.Options{Scheme: roles.Scheme()})
		must(t, err)
		return c
	}
	agent1 := as("node-1")
	setApplied := func(c client.Client, name string) error {
		var a v1.VolumeAttachment
		if err := c.Get(ctx, client.ObjectKey{Namespace: "cloud", Name: name}, &a); err != nil {
			return err
		}
		a.Status.AppliedLock = v1.LockExclusive
		return c.Status().Update(ctx, &a)
	}
	// The policy starts to apply a moment after it is created.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := setApplied(agent1, "att-node-2")
		if apierrors.IsForbidden(err) && strings.Contains(err.Error(), "may only write the status of attachments on its node") {
			t.Logf("denied as expected: %v", err)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent of node-1 writing node-2's attachment: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	must(t, setApplied(agent1, "att-node-1"))
	if err := setApplied(as(""), "att-node-1"); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "no node name") {
		t.Errorf("an agent token without a node name: %v", err)
	}

	// VolumeGroup: its own entry only.
	updateEntry := func(c client.Client, node string) error {
		var g v1.VolumeGroup
		if err := c.Get(ctx, client.ObjectKey{Name: "cinder"}, &g); err != nil {
			return err
		}
		orig := g.DeepCopy()
		for i := range g.Status.Nodes {
			if g.Status.Nodes[i].Node == node {
				g.Status.Nodes[i].LockspaceStarted = true
			}
		}
		return c.Status().Patch(ctx, &g, client.MergeFrom(orig)) // the agent may patch, not update
	}
	must(t, updateEntry(agent1, "node-1"))
	if err := updateEntry(agent1, "node-2"); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "its own entry") {
		t.Errorf("agent of node-1 changing node-2's VG entry: %v", err)
	}

	// Nodes: its own only.
	label := func(c client.Client, node string) error {
		var n corev1.Node
		if err := c.Get(ctx, client.ObjectKey{Name: node}, &n); err != nil {
			return err
		}
		n.Labels = map[string]string{v1.LabelLocksRestored: "true"}
		return c.Update(ctx, &n)
	}
	must(t, label(agent1, "node-1"))
	if err := label(agent1, "node-2"); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "its own Node") {
		t.Errorf("agent of node-1 labelling node-2: %v", err)
	}

	// SharedVolumes: only those assigned to the agent's node.
	vol := &v1.SharedVolume{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: "vol"}}
	vol.Spec.VolumeGroup, vol.Spec.Size = "cinder", resource.MustParse("1Gi")
	must(t, admin.Create(ctx, vol))
	vol.Status.ExecutorNode = "node-2"
	must(t, admin.Status().Update(ctx, vol))
	record := func(c client.Client) error {
		var v v1.SharedVolume
		if err := c.Get(ctx, client.ObjectKeyFromObject(vol), &v); err != nil {
			return err
		}
		v.Status.LVUUID = "x"
		return c.Status().Update(ctx, &v)
	}
	if err := record(agent1); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "assigned to it") {
		t.Errorf("agent of node-1 writing a volume assigned to node-2: %v", err)
	}
	must(t, record(as("node-2")))

	// Heartbeat Leases: its own only.
	beat := func(c client.Client, name, holder string) error {
		now := metav1.NewMicroTime(time.Now())
		l := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: heartbeat.DefaultNamespace, Name: name},
			Spec: coordv1.LeaseSpec{HolderIdentity: &holder, RenewTime: &now}}
		return c.Create(ctx, l)
	}
	must(t, beat(agent1, heartbeat.LeaseName("node-1"), "node-1"))
	if err := beat(agent1, heartbeat.LeaseName("node-2"), "node-2"); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "its own heartbeat") {
		t.Errorf("agent of node-1 writing node-2's heartbeat: %v", err)
	}
	if err := beat(agent1, "kube-scheduler", "node-1"); !apierrors.IsForbidden(err) {
		t.Errorf("agent of node-1 writing another Lease: %v", err)
	}
	// VolumeGroup create claims: in its own name only (#14 item 5).
	must(t, beat(agent1, v1.VGCreateClaimName("cinder"), "node-1"))
	if err := beat(agent1, v1.VGCreateClaimName("other"), "node-2"); !apierrors.IsForbidden(err) {
		t.Errorf("agent of node-1 claiming a VG create in node-2's name: %v", err)
	}

	// One VolumeGroup per VG name and per PV, at admission (#14 item 4).
	for _, dup := range []*v1.VolumeGroup{
		{ObjectMeta: metav1.ObjectMeta{Name: "dup-name"}, Spec: v1.VolumeGroupSpec{VGName: "vg1", PVs: []v1.DevicePath{"/dev/sdz"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "dup-pv"}, Spec: v1.VolumeGroupSpec{VGName: "vg9", PVs: []v1.DevicePath{"/dev/sdy", "/dev/sdb"}}},
	} {
		// The policy's params (every VolumeGroup) are watched: it applies a moment later.
		var err error
		for end := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			if err = admin.Create(ctx, dup); err != nil || time.Now().After(end) {
				break
			}
			must(t, admin.Delete(ctx, dup))
		}
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "already claimed by VolumeGroup cinder") {
			t.Errorf("duplicate VolumeGroup %s: %v", dup.Name, err)
		} else {
			t.Logf("refused as expected: %v", err)
		}
	}
	own := &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: "own"}, Spec: v1.VolumeGroupSpec{VGName: "vg2", PVs: []v1.DevicePath{"/dev/sdc"}}}
	must(t, admin.Create(ctx, own))
	get := func() { must(t, admin.Get(ctx, client.ObjectKeyFromObject(own), own)) }
	get()
	own.Finalizers = append(own.Finalizers, "example.com/keep")
	must(t, admin.Update(ctx, own)) // not a PV change: not checked
	get()
	own.Spec.PVs = append(own.Spec.PVs, "/dev/sdb")
	if err := admin.Update(ctx, own); !apierrors.IsInvalid(err) {
		t.Errorf("adding a PV another VolumeGroup claims: %v", err)
	}

	// RBAC: the agent cannot create or delete anything of the API.
	if err := agent1.Delete(ctx, &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: "att-node-1"}}); !apierrors.IsForbidden(err) {
		t.Errorf("agent deleting an attachment: %v", err)
	}
	t.Log(runHelm(t, bin, "uninstall", release, "-n", namespace, "--kubeconfig", env.Kubeconfig))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
