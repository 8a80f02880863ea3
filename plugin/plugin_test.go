package plugin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/envtestutil"
	"github.com/sharedlvm/sharedlvm-operator/plugin"
	"github.com/sharedlvm/sharedlvm-operator/roles"
)

// TestPluginAgainstAPIServer fills a real apiserver with the state agents report for a live
// migration in progress (one volume shared by two nodes, another exclusive) and checks each
// view in every output format.
func TestPluginAgainstAPIServer(t *testing.T) {
	env, err := envtestutil.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	ctx := context.Background()
	c, err := client.New(env.Config, client.Options{Scheme: roles.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cloud"}}))
	now := metav1.Now()
	for i, n := range []string{"compute-0", "compute-1"} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n,
			Labels:      map[string]string{v1.LabelLocksRestored: "true"},
			Annotations: map[string]string{v1.AnnotationRestoredBootID: "boot-" + n}}}
		if i == 1 { // compute-1 rebooted and has not restored yet
			node.Labels[v1.LabelLocksRestored] = "false"
			node.Spec.Taints = []corev1.Taint{{Key: v1.TaintLocksNotRestored, Effect: corev1.TaintEffectNoSchedule}}
		}
		must(c.Create(ctx, node))
		node.Status.NodeInfo.BootID = "boot-" + n
		if i == 1 {
			node.Status.NodeInfo.BootID = "boot-new"
		}
		node.Status.Conditions = []corev1.NodeCondition{{Type: v1.NodeConditionLocksRestored, Status: corev1.ConditionTrue, Reason: "Restored", LastTransitionTime: now, Message: "3 locks restored"}}
		must(c.Status().Update(ctx, node))
	}
	size, free := resource.MustParse("100Gi"), resource.MustParse("60Gi")
	vg := &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: "cinder"}, Spec: v1.VolumeGroupSpec{VGName: "vg1", PVs: []v1.DevicePath{"/dev/sdb", "/dev/sdc"}}}
	must(c.Create(ctx, vg))
	vg.Status = v1.VolumeGroupStatus{VGUUID: "vguuid", Size: &size, Free: &free, LVCount: 2, NodesReady: "2/2",
		Nodes: []v1.NodeLockspaceStatus{{Node: "compute-1", HostID: 2, VGFound: true, LockspaceStarted: true, LastReport: &now},
			{Node: "compute-0", HostID: 1, VGFound: true, LockspaceStarted: true, LastReport: &now}}}
	must(c.Status().Update(ctx, vg))
	vol := func(name, uuid string, off int64, mode v1.LockMode, holders ...string) {
		v := &v1.SharedVolume{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: name}, Spec: v1.SharedVolumeSpec{VolumeGroup: "cinder", Size: resource.MustParse("1Gi")}}
		must(c.Create(ctx, v))
		v.Status = v1.SharedVolumeStatus{VolumeGroup: "cinder", VGName: "vg1", LVName: name, LVUUID: uuid, LeaseOffset: &off, Lock: v1.LockStatus{Mode: mode, Holders: holders}}
		must(c.Status().Update(ctx, v))
	}
	att := func(name, volume, node, uuid string, mode v1.LockMode) {
		a := &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: name}, Spec: v1.VolumeAttachmentSpec{Volume: v1.ObjectName(volume), Node: v1.ObjectName(node)}}
		must(c.Create(ctx, a))
		a.Status = v1.VolumeAttachmentStatus{AppliedLock: mode, DesiredLock: mode, LVUUID: uuid, DevicePath: "/dev/vg1/" + volume}
		must(c.Status().Update(ctx, a))
	}
	vol("migrating", "UUID-M", 70254592, v1.LockShared, "compute-0", "compute-1")
	vol("quiet", "UUID-Q", 71303168, v1.LockExclusive, "compute-0")
	vol("unused", "UUID-U", 72351744, v1.LockNone)
	att("migrating-src", "migrating", "compute-0", "UUID-M", v1.LockShared)
	att("migrating-dst", "migrating", "compute-1", "UUID-M", v1.LockShared)
	att("quiet-0", "quiet", "compute-0", "UUID-Q", v1.LockExclusive)
	att("unused-pending", "unused", "compute-1", "", v1.LockNone)

	run := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := plugin.Run(ctx, c, args, &out); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return out.String()
	}

	locks := run("locks")
	t.Logf("kubectl sharedlvm locks:\n%s", locks)
	lines := strings.Split(strings.TrimSpace(locks), "\n")
	if len(lines) != 4 {
		t.Fatalf("want a header and 3 leases, got:\n%s", locks)
	}
	for _, want := range []string{"compute-0", "cloud/migrating", "vg1/migrating", "UUID-M", "Shared", "compute-0,compute-1", "70254592"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("first lease line %q lacks %q", lines[1], want)
		}
	}
	if strings.Contains(locks, "UUID-U") {
		t.Error("a lease nobody holds is listed")
	}
	if got := run("locks", "--node", "compute-1"); strings.Count(got, "\n") != 2 || !strings.Contains(got, "compute-1") || strings.Contains(got, "UUID-Q") {
		t.Errorf("--node compute-1:\n%s", got)
	}
	var asJSON struct{ Items []plugin.LockRow }
	must(json.Unmarshal([]byte(run("locks", "-o", "json")), &asJSON))
	if len(asJSON.Items) != 3 || asJSON.Items[1].Mode != "Exclusive" || *asJSON.Items[1].LeaseOffset != 71303168 {
		t.Errorf("json: %+v", asJSON.Items)
	}
	var asYAML struct{ Items []plugin.LockRow }
	must(yaml.Unmarshal([]byte(run("locks", "-o", "yaml")), &asYAML))
	if len(asYAML.Items) != 3 {
		t.Errorf("yaml: %+v", asYAML.Items)
	}
	if wide := run("locks", "-o", "wide"); !strings.Contains(wide, "migrating-dst") || !strings.Contains(wide, "/dev/vg1/migrating") {
		t.Errorf("wide lacks attachment and device:\n%s", wide)
	}

	vgs := run("vg")
	t.Logf("kubectl sharedlvm vg:\n%s", vgs)
	for _, want := range []string{"cinder", "vg1", "100Gi", "60Gi", "/dev/sdb,/dev/sdc", "2/2", "compute-0", "started"} {
		if !strings.Contains(vgs, want) {
			t.Errorf("vg view lacks %q", want)
		}
	}
	var vgJSON struct{ Items []plugin.VGRow }
	must(json.Unmarshal([]byte(run("vg", "cinder", "-o", "json")), &vgJSON))
	if len(vgJSON.Items) != 1 || len(vgJSON.Items[0].Nodes) != 2 || vgJSON.Items[0].Nodes[0].Node != "compute-0" || vgJSON.Items[0].Nodes[0].HostID != 1 {
		t.Errorf("vg json: %+v", vgJSON.Items)
	}

	rs := run("restore-status")
	t.Logf("kubectl sharedlvm restore-status:\n%s", rs)
	var rsJSON struct{ Items []plugin.RestoreRow }
	must(json.Unmarshal([]byte(run("restore-status", "-o", "json")), &rsJSON))
	if len(rsJSON.Items) != 2 || !rsJSON.Items[0].Restored || rsJSON.Items[1].Restored || !rsJSON.Items[1].Tainted {
		t.Errorf("restore-status json: %+v", rsJSON.Items)
	}
	if !strings.Contains(rsJSON.Items[1].Message, "has not restored") {
		t.Errorf("the unrestored node's row does not say why: %+v", rsJSON.Items[1])
	}

	for _, bad := range [][]string{{"locks", "-o", "xml"}, {"frobnicate"}, {}} {
		if err := plugin.Run(ctx, c, bad, &bytes.Buffer{}); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
