package controllers

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

func TestPlanVolume(t *testing.T) {
	now := time.Unix(10000, 0)
	fresh := metav1.NewTime(now)
	stale := metav1.NewTime(now.Add(-time.Hour))
	group := func(name string, ready ...string) *v1.VolumeGroup {
		g := &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.VolumeGroupSpec{VGName: v1.LVMVGName(name)}}
		for _, n := range ready {
			g.Status.Nodes = append(g.Status.Nodes, v1.NodeLockspaceStatus{Node: n, LockspaceStarted: true, LastReport: &fresh, ReportIntervalSeconds: 2})
		}
		return g
	}
	gi := resource.MustParse("1Gi")
	two := resource.MustParse("2Gi")
	newVol := func() *v1.SharedVolume {
		return &v1.SharedVolume{ObjectMeta: metav1.ObjectMeta{Name: "v", Namespace: "ns", UID: "uid-1"},
			Spec: v1.SharedVolumeSpec{VolumeGroup: "vg1", Size: gi}}
	}
	created := func() *v1.SharedVolume {
		v := newVol()
		v.Status = v1.SharedVolumeStatus{LVUUID: "lv-1", VolumeGroup: "vg1", VGName: "vg1", LVName: "v", AllocatedSize: &gi}
		return v
	}
	att := func(node string, applied v1.LockMode) v1.VolumeAttachment {
		return v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: "a-" + node}, Spec: v1.VolumeAttachmentSpec{Volume: "v", Node: v1.ObjectName(node)},
			Status: v1.VolumeAttachmentStatus{AppliedLock: applied}}
	}
	all := map[string]bool{"a": true, "b": true, "c": true}
	type want struct {
		exec   string
		phase  v1.VolumePhase
		ready  string // "True/Reason" or "False/Reason" of the last Ready step; "" none
		events []string
		msg    string
	}
	cases := []struct {
		name string
		f    func() VolumeFacts
		want want
	}{
		{"create: a ready node that restored its locks is chosen", func() VolumeFacts {
			return VolumeFacts{Vol: newVol(), VG: group("vg1", "a"), CanWork: works(all)}
		}, want{exec: "a", phase: v1.VolumeCreating, ready: "False/Creating"}},
		{"create: a node that has not restored its locks is never chosen", func() VolumeFacts {
			return VolumeFacts{Vol: newVol(), VG: group("vg1", "a"), CanWork: works(map[string]bool{})}
		}, want{phase: v1.VolumePending, ready: "False/NoReadyNode", events: []string{"NoReadyNode", "Pending"}}},
		{"create: a stale entry is not ready", func() VolumeFacts {
			g := group("vg1", "a")
			g.Status.Nodes[0].LastReport = &stale
			return VolumeFacts{Vol: newVol(), VG: g, CanWork: works(all)}
		}, want{phase: v1.VolumePending, ready: "False/NoReadyNode", events: []string{"NoReadyNode", "Pending"}}},
		{"create: the current executor is kept while ready", func() VolumeFacts {
			v := newVol()
			v.Status.ExecutorNode, v.Status.Phase = "b", v1.VolumeCreating
			return VolumeFacts{Vol: v, VG: group("vg1", "a", "b", "c"), CanWork: works(all)}
		}, want{exec: "b", phase: v1.VolumeCreating, ready: "False/Creating"}},
		{"no VolumeGroup", func() VolumeFacts {
			return VolumeFacts{Vol: newVol(), CanWork: works(all)}
		}, want{phase: v1.VolumePending, ready: "False/VolumeGroupNotFound", events: []string{"VolumeGroupNotFound", "Pending"}}},
		{"a VolumeGroup that is not served", func() VolumeFacts {
			g := group("vg1", "a")
			g.Status.Conditions = []metav1.Condition{{Type: v1.ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonVolumeGroupConflict, Message: "older claims it"}}
			return VolumeFacts{Vol: newVol(), VG: g, CanWork: works(all)}
		}, want{phase: v1.VolumePending, ready: "False/VolumeGroupConflict", events: []string{ReasonVolumeGroupConflict, "Pending"}, msg: "older claims it"}},
		{"created and attached exclusively: in use, held where attached", func() VolumeFacts {
			return VolumeFacts{Vol: created(), VG: group("vg1", "a"), Atts: []v1.VolumeAttachment{att("b", v1.LockExclusive)}, CanWork: works(all)}
		}, want{phase: v1.VolumeInUse, ready: "True/InUse"}},
		{"extend: the exclusive holder does it", func() VolumeFacts {
			v := created()
			v.Spec.Size = two
			return VolumeFacts{Vol: v, VG: group("vg1", "a", "b"), Atts: []v1.VolumeAttachment{att("b", v1.LockExclusive)}, CanWork: works(all)}
		}, want{exec: "b", phase: v1.VolumeInUse, ready: "True/InUse", msg: "node b is extending"}},
		{"extend: held shared, it waits for one holder", func() VolumeFacts {
			v := created()
			v.Spec.Size = two
			return VolumeFacts{Vol: v, VG: group("vg1", "a", "b"), Atts: []v1.VolumeAttachment{att("a", v1.LockShared), att("b", v1.LockShared)}, CanWork: works(all)}
		}, want{phase: v1.VolumeInUse, ready: "False/ExtendWaitsForSingleHolder"}},
		{"move: refused while shared", func() VolumeFacts {
			v := created()
			v.Spec.PVs, v.Status.PVs = []v1.DevicePath{"/dev/vdb"}, []string{"/dev/vda"}
			return VolumeFacts{Vol: v, VG: group("vg1", "a", "b"), Atts: []v1.VolumeAttachment{att("a", v1.LockShared), att("b", v1.LockShared)}, CanWork: works(all)}
		}, want{phase: v1.VolumeInUse, ready: "False/MoveRefusedWhileShared", events: []string{"MoveRefusedWhileShared"}}},
		{"move: runs on the exclusive holder", func() VolumeFacts {
			v := created()
			v.Spec.PVs, v.Status.PVs = []v1.DevicePath{"/dev/vdb"}, []string{"/dev/vda"}
			return VolumeFacts{Vol: v, VG: group("vg1", "a"), Atts: []v1.VolumeAttachment{att("c", v1.LockExclusive)}, CanWork: works(all)}
		}, want{exec: "c", phase: v1.VolumeMoving, ready: "True/Moving"}},
		{"migrate: refused while attached", func() VolumeFacts {
			v := created()
			v.Spec.VolumeGroup = "vg2"
			return VolumeFacts{Vol: v, VG: group("vg2", "a"), From: *group("vg1", "a"), Atts: []v1.VolumeAttachment{att("a", v1.LockExclusive)}, CanWork: works(all)}
		}, want{phase: v1.VolumeInUse, ready: "False/MigrationNeedsDetach", events: []string{"MigrationNeedsDetach"}}},
		{"migrate: to a VolumeGroup that does not exist", func() VolumeFacts {
			v := created()
			v.Spec.VolumeGroup = "vg2"
			return VolumeFacts{Vol: v, From: *group("vg1", "a"), CanWork: works(all)}
		}, want{phase: v1.VolumeAvailable, ready: "False/VolumeGroupNotFound", events: []string{"VolumeGroupNotFound"}}},
		{"migrate: only a node of both VGs copies", func() VolumeFacts {
			v := created()
			v.Spec.VolumeGroup = "vg2"
			return VolumeFacts{Vol: v, VG: group("vg2", "a", "b"), From: *group("vg1", "b", "c"), CanWork: works(all)}
		}, want{exec: "b", phase: v1.VolumeMigrating, ready: "False/Migrating", events: []string{"Migrating"}}},
		{"migrate: no node of both VGs", func() VolumeFacts {
			v := created()
			v.Spec.VolumeGroup = "vg2"
			return VolumeFacts{Vol: v, VG: group("vg2", "a"), From: *group("vg1", "c"), CanWork: works(all)}
		}, want{phase: v1.VolumeAvailable, ready: "False/NoReadyNode", events: []string{"NoReadyNode"}}},
		{"retired LV: a node of its old VG removes it", func() VolumeFacts {
			v := created()
			v.Spec.VolumeGroup, v.Status.VolumeGroup = "vg2", "vg2"
			v.Status.RetiredLV = &v1.RetiredLV{VolumeGroup: "vg1", VGName: "vg1", LVName: "v"}
			return VolumeFacts{Vol: v, VG: group("vg2", "a"), Old: *group("vg1", "c"), CanWork: works(all)}
		}, want{exec: "c", phase: v1.VolumeMigrating, ready: "True/RemovingRetiredLV"}},
		{"copy: source missing", func() VolumeFacts {
			v := newVol()
			v.Spec.Source = &v1.VolumeSource{Volume: "src"}
			return VolumeFacts{Vol: v, VG: group("vg1", "a"), Src: &CopySourceFacts{}, CanWork: works(all)}
		}, want{phase: v1.VolumePending, ready: "False/SourceNotFound", events: []string{"SourceNotFound", "Pending"}}},
		{"copy: source larger than the volume", func() VolumeFacts {
			v := newVol()
			v.Spec.Source = &v1.VolumeSource{Volume: "src"}
			src := created()
			src.Status.AllocatedSize = &two
			return VolumeFacts{Vol: v, VG: group("vg1", "a"), Src: &CopySourceFacts{Vol: src, VG: *group("vg1", "a")}, CanWork: works(all)}
		}, want{phase: v1.VolumePending, ready: "False/SourceLargerThanVolume", events: []string{"SourceLargerThanVolume", "Pending"}}},
		{"copy: source held shared waits", func() VolumeFacts {
			v := newVol()
			v.Spec.Source = &v1.VolumeSource{Volume: "src"}
			return VolumeFacts{Vol: v, VG: group("vg1", "a"), Src: &CopySourceFacts{Vol: created(), VG: *group("vg1", "a"),
				Atts: []v1.VolumeAttachment{att("a", v1.LockShared), att("b", v1.LockShared)}}, CanWork: works(all)}
		}, want{phase: v1.VolumePending, ready: "False/CopyWaitsForSingleHolder", events: []string{"CopyWaitsForSingleHolder", "Pending"}}},
		{"copy: source held exclusively is copied on its holder", func() VolumeFacts {
			v := newVol()
			v.Spec.Source = &v1.VolumeSource{Volume: "src"}
			return VolumeFacts{Vol: v, VG: group("vg1", "a", "b"), Src: &CopySourceFacts{Vol: created(), VG: *group("vg1", "a", "b"),
				Atts: []v1.VolumeAttachment{att("b", v1.LockExclusive)}}, CanWork: works(all)}
		}, want{exec: "b", phase: v1.VolumeCreating, ready: "False/Creating", msg: "as a copy of volume src"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := PlanVolume(c.f(), now)
			if p.Executor != c.want.exec || p.Phase != c.want.phase {
				t.Errorf("executor %q phase %q, want %q %q", p.Executor, p.Phase, c.want.exec, c.want.phase)
			}
			var ready *VolumeCondition
			var events []string
			for _, s := range p.Steps {
				if s.Cond != nil && s.Cond.Type == v1.ConditionReady {
					ready = s.Cond
				}
				if s.Event != nil {
					events = append(events, s.Event.Reason)
				}
			}
			got := ""
			if ready != nil {
				got = map[bool]string{true: "True/", false: "False/"}[ready.OK] + ready.Reason
				if ready.Message == "" {
					t.Error("Ready without a message")
				}
				if !strings.Contains(ready.Message, c.want.msg) {
					t.Errorf("Ready message %q lacks %q", ready.Message, c.want.msg)
				}
			}
			if got != c.want.ready {
				t.Errorf("Ready %s, want %s", got, c.want.ready)
			}
			if strings.Join(events, ",") != strings.Join(c.want.events, ",") {
				t.Errorf("events %v, want %v", events, c.want.events)
			}
			if p.Requeue == 0 && (p.Executor != "" || c.want.phase == v1.VolumePending) {
				t.Error("pending work without a safety requeue")
			}
		})
	}
}

func TestPlanVolumeDelete(t *testing.T) {
	now := time.Unix(10000, 0)
	fresh := metav1.NewTime(now)
	group := func(name string, ready ...string) *v1.VolumeGroup {
		g := &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.VolumeGroupSpec{VGName: v1.LVMVGName(name)}}
		for _, n := range ready {
			g.Status.Nodes = append(g.Status.Nodes, v1.NodeLockspaceStatus{Node: n, LockspaceStarted: true, LastReport: &fresh, ReportIntervalSeconds: 2})
		}
		return g
	}
	vol := func(mut func(*v1.SharedVolume)) *v1.SharedVolume {
		v := &v1.SharedVolume{ObjectMeta: metav1.ObjectMeta{Name: "v", UID: "u"}, Spec: v1.SharedVolumeSpec{VolumeGroup: "vg1"}}
		mut(v)
		return v
	}
	withLV := func(v *v1.SharedVolume) {
		v.Status.LVUUID, v.Status.VolumeGroup, v.Status.VGName, v.Status.LVName = "lv", "vg1", "vg1", "v"
	}
	all := map[string]bool{"a": true, "b": true}
	cases := []struct {
		name string
		f    VolumeDeleteFacts
		want VolumeDeletePlan
	}{
		{"attached: blocked, with an Event", VolumeDeleteFacts{Vol: vol(withLV), Atts: []v1.VolumeAttachment{{ObjectMeta: metav1.ObjectMeta{Name: "att"}}}},
			VolumeDeletePlan{Reason: "Attached", Warn: true}},
		{"a copy from it runs: blocked", VolumeDeleteFacts{Vol: vol(withLV), Clones: []v1.SharedVolume{{ObjectMeta: metav1.ObjectMeta{Name: "c"}, Status: v1.SharedVolumeStatus{ExecutorNode: "a"}}}},
			VolumeDeletePlan{Reason: "CopyInProgress", Warn: true}},
		{"a finished clone does not block", VolumeDeleteFacts{Vol: vol(func(*v1.SharedVolume) {}), Clones: []v1.SharedVolume{{Status: v1.SharedVolumeStatus{LVUUID: "x"}}}},
			VolumeDeletePlan{Done: true}},
		{"the LV exists: a ready node wipes it", VolumeDeleteFacts{Vol: vol(withLV), VGs: map[string]*v1.VolumeGroup{"vg1": group("vg1", "a")}, CanWork: works(all)},
			VolumeDeletePlan{Reason: "Wiping", Executor: "a"}},
		{"the LV exists, no node can: wait and say so", VolumeDeleteFacts{Vol: vol(withLV), VGs: map[string]*v1.VolumeGroup{"vg1": group("vg1", "a")}, CanWork: works(map[string]bool{})},
			VolumeDeletePlan{Reason: "Wiping"}},
		{"a retired LV in another VG: a node of both", VolumeDeleteFacts{Vol: vol(func(v *v1.SharedVolume) {
			withLV(v)
			v.Status.RetiredLV = &v1.RetiredLV{VolumeGroup: "vg0", VGName: "vg0", LVName: "v"}
		}), VGs: map[string]*v1.VolumeGroup{"vg1": group("vg1", "a", "b"), "vg0": group("vg0", "b")}, CanWork: works(all)},
			VolumeDeletePlan{Reason: "Wiping", Executor: "b"}},
		{"an interrupted create: one cleanup pass", VolumeDeleteFacts{Vol: vol(func(v *v1.SharedVolume) {
			v.Status.Conditions = []metav1.Condition{{Type: v1.ConditionProvisioned, Status: metav1.ConditionFalse, Reason: "Creating"}}
		}), VGs: map[string]*v1.VolumeGroup{"vg1": group("vg1", "a")}, CanWork: works(all)},
			VolumeDeletePlan{Reason: "CleaningUp", Executor: "a", Requeue: 30 * time.Second}},
		{"an interrupted create whose VG is gone: done", VolumeDeleteFacts{Vol: vol(func(v *v1.SharedVolume) {
			v.Status.Conditions = []metav1.Condition{{Type: v1.ConditionProvisioned, Status: metav1.ConditionFalse, Reason: "Creating"}}
		})}, VolumeDeletePlan{Done: true}},
		{"the agent confirmed nothing is left: done", VolumeDeleteFacts{Vol: vol(func(v *v1.SharedVolume) {
			v.Status.Conditions = []metav1.Condition{{Type: v1.ConditionProvisioned, Status: metav1.ConditionFalse, Reason: v1.ReasonLVDeleted}}
		}), VGs: map[string]*v1.VolumeGroup{"vg1": group("vg1", "a")}, CanWork: works(all)}, VolumeDeletePlan{Done: true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := PlanVolumeDelete(c.f, now)
			if !p.Done && p.Message == "" {
				t.Error("blocked without a message")
			}
			p.Message = ""
			if p != c.want {
				t.Errorf("%+v, want %+v", p, c.want)
			}
		})
	}
}

// works is a CanWork predicate from a set of nodes.
func works(m map[string]bool) func(string) bool { return func(n string) bool { return m[n] } }
