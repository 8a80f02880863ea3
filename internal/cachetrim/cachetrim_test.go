package cachetrim

import (
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

// attachmentJSON is an attached VolumeAttachment as the apiserver serves it (the shape the
// scale harness's attachments have once the operator and the agent wrote their status).
func attachmentJSON(i int) []byte {
	return fmt.Appendf(nil, `{"apiVersion":"sharedlvm.io/v1alpha1","kind":"VolumeAttachment","metadata":{"name":"vol-10000-%05d-src","namespace":"cloud","uid":"8d1c5e2a-1b7c-4c55-9a0e-%012d","resourceVersion":"%d","generation":1,"creationTimestamp":"2026-12-05T10:00:00Z","finalizers":["sharedlvm.io/attachment"],
"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"apiVersion\":\"sharedlvm.io/v1alpha1\",\"kind\":\"VolumeAttachment\"}"},
"managedFields":[{"manager":"sharedlvm-operator","operation":"Update","apiVersion":"sharedlvm.io/v1alpha1","time":"2026-12-05T10:00:01Z","fieldsType":"FieldsV1","fieldsV1":{"f:status":{"f:desiredLock":{},"f:phase":{}}},"subresource":"status"}]},
"spec":{"volume":"vol-10000-%05d","node":"node-%03d","purpose":"instance"},
"status":{"observedGeneration":1,"phase":"Attached","desiredLock":"Exclusive","appliedLock":"Exclusive","lv":{"vgName":"vg1","lvName":"volume-8d1c5e2a-%05d","lvUUID":"Q2w3e4-r5t6-y7u8-i9o0-p1a2-s3d4-%06d"},"devicePath":"/dev/vg1/volume-8d1c5e2a-%05d","lvUUID":"Q2w3e4-r5t6-y7u8-i9o0-p1a2-s3d4-%06d",
"conditions":[{"type":"Ready","status":"True","observedGeneration":1,"lastTransitionTime":"2026-12-05T10:00:02Z","reason":"Attached","message":"node node-%03d holds the LV's lock Exclusive"},{"type":"LockApplied","status":"True","observedGeneration":1,"lastTransitionTime":"2026-12-05T10:00:02Z","reason":"Applied","message":"node node-%03d holds Exclusive (granted by lvmlockd, checked against sanlock every 1m0s)"}]}}`,
		i, i, 1000+i, i, i%100+1, i, i, i, i, i%100+1, i%100+1)
}

func decode(t testing.TB, b []byte) *v1.VolumeAttachment {
	var a v1.VolumeAttachment
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatal(err)
	}
	return &a
}

func same(a, b string) bool { return unsafe.StringData(a) == unsafe.StringData(b) }

func TestTransformAttachment(t *testing.T) {
	tr := Transform()
	var out [2]*v1.VolumeAttachment
	for i := range out {
		o, err := tr(decode(t, attachmentJSON(i)))
		if err != nil {
			t.Fatal(err)
		}
		out[i] = o.(*v1.VolumeAttachment)
	}
	a, b := out[0], out[1]
	if a.ManagedFields != nil {
		t.Errorf("managedFields kept: %v", a.ManagedFields)
	}
	if _, ok := a.Annotations["kubectl.kubernetes.io/last-applied-configuration"]; !ok {
		t.Errorf("last-applied annotation dropped: an update of the cached object would drop it on the server")
	}
	// Everything else is kept, and reads the same.
	if a.Name != "vol-10000-00000-src" || a.Spec.Volume != "vol-10000-00000" || a.Status.LV.LVUUID != "Q2w3e4-r5t6-y7u8-i9o0-p1a2-s3d4-000000" ||
		a.Status.Conditions[0].Message != "node node-001 holds the LV's lock Exclusive" || a.Status.AppliedLock != v1.LockExclusive {
		t.Errorf("content changed: %+v", a)
	}
	for name, pair := range map[string][2]string{
		"apiVersion": {a.APIVersion, b.APIVersion}, "kind": {a.Kind, b.Kind}, "namespace": {a.Namespace, b.Namespace},
		"finalizer": {a.Finalizers[0], b.Finalizers[0]}, "purpose": {string(a.Spec.Purpose), string(b.Spec.Purpose)},
		"phase": {string(a.Status.Phase), string(b.Status.Phase)}, "desiredLock": {string(a.Status.DesiredLock), string(b.Status.DesiredLock)},
		"vgName": {a.Status.LV.VGName, b.Status.LV.VGName}, "condition type": {a.Status.Conditions[1].Type, b.Status.Conditions[1].Type},
		"condition reason": {a.Status.Conditions[1].Reason, b.Status.Conditions[1].Reason},
	} {
		if pair[0] != pair[1] || !same(pair[0], pair[1]) {
			t.Errorf("%s: %q and %q are not one shared string", name, pair[0], pair[1])
		}
	}
	if same(a.Name, b.Name) || same(a.Status.Conditions[0].Message, b.Status.Conditions[0].Message) {
		t.Errorf("distinct strings shared")
	}
	if !same(a.Status.LVUUID, a.Status.LV.LVUUID) {
		t.Errorf("status.lvUUID is a second copy of status.lv.lvUUID")
	}
	// Attachments of one node in one mode share the agent's LockApplied message.
	c, err := tr(decode(t, attachmentJSON(100)))
	if err != nil {
		t.Fatal(err)
	}
	if m := c.(*v1.VolumeAttachment).Status.Conditions[1].Message; m != a.Status.Conditions[1].Message || !same(m, a.Status.Conditions[1].Message) {
		t.Errorf("LockApplied messages of one node: %q and %q not one shared string", m, a.Status.Conditions[1].Message)
	}
	if same(a.Status.Conditions[1].Message, b.Status.Conditions[1].Message) {
		t.Errorf("LockApplied messages of two nodes shared")
	}
}

func TestTransformNodeAndPassThrough(t *testing.T) {
	tr := Transform()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", Labels: map[string]string{"a": "b"},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}},
		Status: corev1.NodeStatus{Images: []corev1.ContainerImage{{Names: []string{"registry/image:tag"}, SizeBytes: 1 << 20}},
			NodeInfo: corev1.NodeSystemInfo{BootID: "b1"}, Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}
	o, err := tr(n)
	if err != nil {
		t.Fatal(err)
	}
	got := o.(*corev1.Node)
	if got.Status.Images != nil || got.ManagedFields != nil {
		t.Errorf("images or managedFields kept")
	}
	if got.Status.NodeInfo.BootID != "b1" || got.Labels["a"] != "b" || got.Status.Conditions[0].Type != corev1.NodeReady {
		t.Errorf("content changed: %+v", got)
	}
	// A delete whose final state is unknown is passed as it is.
	d := toolscache.DeletedFinalStateUnknown{Key: "cloud/x"}
	if o, err := tr(d); err != nil || o != any(d) {
		t.Errorf("DeletedFinalStateUnknown: %v, %v", o, err)
	}
}

// TestCostPerAttachment says what each decoded attachment costs on the heap: as decoded,
// with the cache's former transform (managedFields dropped) and with Transform (the
// informer's own per-object overhead comes on top: the scale harness measures the whole,
// `hack/scale.sh`). It fails if Transform saves nothing over the former one.
func TestCostPerAttachment(t *testing.T) {
	const n = 5000
	raw := make([][]byte, n)
	for i := range raw {
		raw[i] = attachmentJSON(i)
	}
	cost := func(tr toolscache.TransformFunc) float64 {
		keep := make([]any, n)
		runtime.GC()
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		for i := range keep {
			var o any = decode(t, raw[i])
			if tr != nil {
				o, _ = tr(o)
			}
			keep[i] = o
		}
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&m1)
		runtime.KeepAlive(keep)
		runtime.KeepAlive(raw) // live until m1, or its collection would count as a saving
		return (float64(m1.HeapAlloc) - float64(m0.HeapAlloc)) / n
	}
	decoded, former, now := cost(nil), cost(cache.TransformStripManagedFields()), cost(Transform())
	t.Logf("a VolumeAttachment: decoded %.0f B; managedFields dropped %.0f B; Transform %.0f B (%.0f%% of the former)", decoded, former, now, 100*now/former)
	if now >= former {
		t.Errorf("Transform saves nothing: %.0f B → %.0f B", former, now)
	}
}
