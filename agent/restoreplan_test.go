package agent

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

func TestPlanLockstarts(t *testing.T) {
	now := time.Unix(10000, 0)
	fresh := metav1.NewTime(now)
	old := metav1.NewTime(now.Add(-time.Hour))
	created := metav1.NewTime(now.Add(-time.Hour))
	vg := func(name, vgName string, sel map[string]string, entries ...v1.NodeLockspaceStatus) v1.VolumeGroup {
		g := v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: created}, Spec: v1.VolumeGroupSpec{VGName: v1.LVMVGName(vgName), PVs: []v1.DevicePath{v1.DevicePath("/dev/" + name)}}}
		if sel != nil {
			g.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: sel}
		}
		g.Status.Nodes = entries
		return g
	}
	labels := map[string]string{"san": "a"}
	started := map[string]bool{"vgup": true}
	vgs := []v1.VolumeGroup{
		vg("up", "vgup", nil),
		vg("down", "vgdown", map[string]string{"san": "a"}),
		vg("elsewhere", "vgother", map[string]string{"san": "b"}),
		vg("dup", "vgdup", nil, v1.NodeLockspaceStatus{Node: "n2", HostID: 1, LastReport: &fresh, ReportIntervalSeconds: 2}),
		vg("stale-dup", "vgstale", nil, v1.NodeLockspaceStatus{Node: "n2", HostID: 1, LastReport: &old, ReportIntervalSeconds: 2}),
	}
	p := PlanLockstarts(vgs, labels, "n1", 1, func(vg string) bool { return started[vg] }, now)
	if want := []string{"vgdown", "vgstale"}; !reflect.DeepEqual(p.Start, want) {
		t.Errorf("start %v, want %v (a stale entry with the same host_id does not block)", p.Start, want)
	}
	if len(p.Skipped) != 1 || p.Skipped[0].VG != "vgdup" {
		t.Errorf("skipped %v, want vgdup (another live node reports host_id 1)", p.Skipped)
	}
	if p.Served != 4 {
		t.Errorf("served %d, want 4 (the VG selecting other nodes is not this node's)", p.Served)
	}
}

func TestPlanRestoreBatches(t *testing.T) {
	att := func(name, node, vg, lv string, desired v1.LockMode) v1.VolumeAttachment {
		a := v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.VolumeAttachmentSpec{Node: v1.ObjectName(node)},
			Status: v1.VolumeAttachmentStatus{DesiredLock: desired}}
		if lv != "" {
			a.Status.LV = &v1.LVRef{VGName: vg, LVName: lv, LVUUID: "u-" + lv}
		}
		return a
	}
	deleting := att("gone", "n1", "vg1", "d", v1.LockExclusive)
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Unix(1, 0)}
	batches, n := PlanRestoreBatches([]v1.VolumeAttachment{
		att("a", "n1", "vg1", "a", v1.LockExclusive),
		att("b", "n1", "vg1", "b", v1.LockExclusive),
		att("m1", "n1", "vg1", "m", v1.LockShared),
		att("m2", "n1", "vg1", "m", v1.LockShared), // two attachments of one LV on this node: once
		att("c", "n1", "vg2", "c", v1.LockShared),
		att("released", "n1", "vg1", "r", v1.LockNone),
		att("unset", "n1", "vg1", "u", ""),
		att("nolv", "n1", "", "", v1.LockExclusive),
		att("other", "n2", "vg1", "o", v1.LockExclusive),
		deleting,
	}, "n1")
	want := []RestoreBatch{
		{VG: "vg1", Mode: lvm.Exclusive, LVs: []string{"a", "b"}, UUIDs: map[string]string{"a": "u-a", "b": "u-b"}},
		{VG: "vg1", Mode: lvm.Shared, LVs: []string{"m"}, UUIDs: map[string]string{"m": "u-m"}},
		{VG: "vg2", Mode: lvm.Shared, LVs: []string{"c"}, UUIDs: map[string]string{"c": "u-c"}},
	}
	if !reflect.DeepEqual(batches, want) {
		t.Errorf("batches %+v, want %+v", batches, want)
	}
	if n != 5 {
		t.Errorf("count %d, want 5", n)
	}
}

func TestNotActivated(t *testing.T) {
	held := []lvm.LockdVG{{Name: "vg1", LVs: map[string]lvm.LockdMode{"ua": "ex", "ub": "un", "ud": "ex", "us": "sh"}}}
	uuids := map[string]string{"a": "ua", "b": "ub", "c": "uc", "d": "ud", "s": "us", "gone": "ug"}
	for _, tc := range []struct {
		name string
		b    RestoreBatch
		held []lvm.LockdVG
		want []string
	}{
		{"refused, unlocked and missing LVs are named", RestoreBatch{VG: "vg1", Mode: lvm.Exclusive, LVs: []string{"a", "b", "c", "d", "gone"}, UUIDs: uuids}, held, []string{"b", "c", "gone"}},
		{"all held: none", RestoreBatch{VG: "vg1", Mode: lvm.Exclusive, LVs: []string{"d", "a"}, UUIDs: uuids}, held, nil},
		{"held in the other mode: named", RestoreBatch{VG: "vg1", Mode: lvm.Shared, LVs: []string{"a", "s"}, UUIDs: uuids}, held, []string{"a"}},
		{"no UUID known: named (fail closed)", RestoreBatch{VG: "vg1", Mode: lvm.Exclusive, LVs: []string{"a"}}, held, []string{"a"}},
		{"VG not listed by lvmlockd: every LV", RestoreBatch{VG: "vg2", Mode: lvm.Exclusive, LVs: []string{"y", "x"}, UUIDs: map[string]string{"x": "ua", "y": "ud"}}, held, []string{"x", "y"}},
		{"nothing read: every LV", RestoreBatch{VG: "vg1", Mode: lvm.Exclusive, LVs: []string{"a"}, UUIDs: uuids}, nil, []string{"a"}},
	} {
		if got := NotActivated(tc.b, tc.held); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}
