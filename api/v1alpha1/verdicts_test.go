package v1alpha1

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestHostVerdicts(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	fresh := metav1.NewTime(now.Add(-time.Second))
	stale := metav1.NewTime(now.Add(-time.Hour))
	since := metav1.NewTime(now.Add(-time.Minute))
	entry := func(node string, id int32, started bool, last metav1.Time, dead []int32, failed ...int32) NodeLockspaceStatus {
		e := NodeLockspaceStatus{Node: node, HostID: id, LockspaceStarted: started, LastReport: &last, ReportIntervalSeconds: 2, DeadHosts: dead}
		for _, f := range failed {
			e.FailedHosts = append(e.FailedHosts, FailedHost{HostID: f, Since: since})
		}
		return e
	}
	cases := []struct {
		name  string
		nodes []NodeLockspaceStatus
		want  map[string]string // node -> "dead by X" / "failed by X"
	}{
		{"all live", []NodeLockspaceStatus{entry("a", 1, true, fresh, nil), entry("b", 2, true, fresh, nil)}, map[string]string{}},
		// #14 item 1: a's agent still reports (fresh, lockspace not started): DEAD counts.
		{"dead while its agent reports", []NodeLockspaceStatus{entry("a", 1, false, fresh, nil), entry("b", 2, true, fresh, []int32{1})}, map[string]string{"a": "dead by b"}},
		{"dead and stale", []NodeLockspaceStatus{entry("a", 1, true, stale, nil), entry("b", 2, true, fresh, []int32{1})}, map[string]string{"a": "dead by b"}},
		{"FAIL is not dead", []NodeLockspaceStatus{entry("a", 1, false, fresh, nil), entry("b", 2, true, fresh, nil, 1)}, map[string]string{"a": "failed by b"}},
		{"a stale reporter judges nobody", []NodeLockspaceStatus{entry("a", 1, true, fresh, nil), entry("b", 2, true, stale, []int32{1})}, map[string]string{}},
		{"a reporter without lockspace judges nobody", []NodeLockspaceStatus{entry("a", 1, true, fresh, nil), entry("b", 2, false, fresh, []int32{1})}, map[string]string{}},
		{"no host_id, no verdict", []NodeLockspaceStatus{entry("a", 0, true, fresh, nil), entry("b", 2, true, fresh, []int32{0})}, map[string]string{}},
		{"a node never judges itself (nor its host_id twin)", []NodeLockspaceStatus{entry("a", 1, true, fresh, []int32{1}), entry("c", 1, true, fresh, []int32{1})}, map[string]string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vg := &VolumeGroup{Status: VolumeGroupStatus{Nodes: tc.nodes}}
			got := vg.HostVerdicts(now)
			if len(got) != len(tc.want) {
				t.Fatalf("verdicts %+v, want %v", got, tc.want)
			}
			for node, w := range tc.want {
				v := got[node]
				s := "failed by " + v.By
				if v.Dead {
					s = "dead by " + v.By
				}
				if s != w {
					t.Errorf("%s: %s, want %s", node, s, w)
				}
				if v.Failed && !v.Since.Equal(since.Time) {
					t.Errorf("%s: since %v", node, v.Since)
				}
			}
			dead := vg.DeadNodes(now)
			for node, w := range tc.want {
				if dead[node] != (w[:4] == "dead") {
					t.Errorf("DeadNodes %v disagrees for %s", dead, node)
				}
			}
		})
	}
}

func TestClaimConflict(t *testing.T) {
	at := func(min int) metav1.Time { return metav1.NewTime(time.Date(2026, 12, 2, 10, min, 0, 0, time.UTC)) }
	vg := func(name, vgName string, created metav1.Time, pvs ...DevicePath) VolumeGroup {
		return VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: created}, Spec: VolumeGroupSpec{VGName: LVMVGName(vgName), PVs: pvs}}
	}
	all := []VolumeGroup{
		vg("cinder", "cinder-volumes", at(0), "/dev/vda"),
		vg("dup-name", "cinder-volumes", at(1), "/dev/vdz"),
		vg("dup-pv", "other", at(2), "/dev/vdy", "/dev/vda"),
		vg("own", "own", at(3), "/dev/vdc"),
		vg("a-same-instant", "twin", at(4), "/dev/vdd"),
		vg("b-same-instant", "twin", at(4), "/dev/vde"),
	}
	want := map[string]string{
		"cinder": "", "own": "", "a-same-instant": "",
		"dup-name":       "cinder: VG name cinder-volumes",
		"dup-pv":         "cinder: PV /dev/vda",
		"b-same-instant": "a-same-instant: VG name twin",
	}
	for i := range all {
		other, what := all[i].ClaimConflict(all)
		got := ""
		if other != "" {
			got = other + ": " + what
		}
		if got != want[all[i].Name] {
			t.Errorf("%s: %q, want %q", all[i].Name, got, want[all[i].Name])
		}
	}
}
