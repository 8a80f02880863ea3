package heartbeat

import (
	"strings"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/event"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

func lease(node string, renewed time.Time, dur int32) *coordv1.Lease {
	t := metav1.NewMicroTime(renewed)
	return &coordv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: DefaultNamespace, Name: LeaseName(node), Labels: map[string]string{Label: LabelValue}},
		Spec:       coordv1.LeaseSpec{HolderIdentity: ptr.To(node), RenewTime: &t, LeaseDurationSeconds: ptr.To(dur)},
	}
}

func TestLeaseName(t *testing.T) {
	if got := LeaseName("compute-0"); got != "sharedlvm-agent-compute-0" {
		t.Fatalf("LeaseName = %q", got)
	}
	long := strings.Repeat("a", 250)
	if got := LeaseName(long); len(got) > 253 || !strings.HasPrefix(got, LeasePrefix) || got == LeaseName(long+"b") {
		t.Fatalf("long node name gives %q", got)
	}
}

// An entry written long ago is judged by the node's heartbeat; one without a heartbeat, or
// with an older one, by itself.
func TestOverlay(t *testing.T) {
	now := time.Now()
	old := metav1.NewTime(now.Add(-5 * time.Minute))
	vg := &v1.VolumeGroup{Status: v1.VolumeGroupStatus{Nodes: []v1.NodeLockspaceStatus{
		{Node: "alive", LockspaceStarted: true, LastReport: &old, ReportIntervalSeconds: 30},
		{Node: "silent", LockspaceStarted: true, LastReport: &old, ReportIntervalSeconds: 30},
		{Node: "dead", LockspaceStarted: true, LastReport: &old, ReportIntervalSeconds: 30},
	}}}
	tr := NewTracker()
	tr.Observe(lease("alive", now.Add(-20*time.Second), 90))
	tr.Observe(lease("dead", now.Add(-2*time.Minute), 90))
	tr.Overlay(vg)
	got := map[string]bool{}
	for _, n := range vg.Status.Nodes {
		got[n.Node] = n.Ready(now)
	}
	if !got["alive"] || got["silent"] || got["dead"] {
		t.Fatalf("ready after overlay: %v", got)
	}
	var nilTracker *Tracker
	nilTracker.Overlay(vg) // no heartbeats known: nothing changes, no panic
	nilTracker.Observe(lease("x", now, 90))
}

func TestRevived(t *testing.T) {
	p := Revived()
	now := time.Now()
	if !p.Create(event.CreateEvent{Object: lease("n", now, 90)}) {
		t.Error("a new heartbeat must pass")
	}
	if p.Update(event.UpdateEvent{ObjectOld: lease("n", now.Add(-30*time.Second), 90), ObjectNew: lease("n", now, 90)}) {
		t.Error("a routine renewal must not pass")
	}
	if !p.Update(event.UpdateEvent{ObjectOld: lease("n", now.Add(-5*time.Minute), 90), ObjectNew: lease("n", now, 90)}) {
		t.Error("a renewal after expiry must pass")
	}
	other := lease("n", now.Add(-5*time.Minute), 90)
	other.Labels = nil
	if p.Update(event.UpdateEvent{ObjectOld: other, ObjectNew: other}) {
		t.Error("another component's Lease must not pass")
	}
}
