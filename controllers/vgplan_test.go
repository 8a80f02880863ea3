package controllers

import (
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

func blocked(e v1.NodeLockspaceStatus) v1.NodeLockspaceStatus {
	e.Reason, e.Message = v1.LockspaceHostIDConflict, "lvmlocal.conf sets local/host_id = 1"
	return e
}

func TestPlanVolumeGroup(t *testing.T) {
	now := time.Unix(10000, 0)
	at := func(ago time.Duration) *metav1.Time { t := metav1.NewTime(now.Add(-ago)); return &t }
	entry := func(node string, id int32, started bool, ago time.Duration) v1.NodeLockspaceStatus {
		return v1.NodeLockspaceStatus{Node: node, HostID: id, LockspaceStarted: started, VGFound: started, LastReport: at(ago), ReportIntervalSeconds: 2}
	}
	vg := func(uuid string, entries ...v1.NodeLockspaceStatus) *v1.VolumeGroup {
		return &v1.VolumeGroup{Spec: v1.VolumeGroupSpec{VGName: "vg1"}, Status: v1.VolumeGroupStatus{VGUUID: uuid, Nodes: entries, NodesReady: "1/1", CreateNode: "old"}}
	}
	exist := map[string]bool{"a": true, "b": true, "c": true}
	type want struct {
		nodesReady, createNode string
		drop                   []string          // the entries kept, when entries are dropped
		conds                  map[string]string // type -> "True/Reason" or "False/Reason"
		events                 []string
		msg                    map[string]string // type -> substring of the message
	}
	cases := []struct {
		name  string
		facts VGFacts
		want  want
	}{
		{"an older VolumeGroup claims the VG: never served, said once with an Event",
			VGFacts{VG: vg(""), ClaimedBy: "older", Claimed: "PV /dev/vda"},
			want{conds: map[string]string{v1.ConditionReady: "False/VolumeGroupConflict", v1.ConditionLockspaceReady: "False/VolumeGroupConflict"},
				events: []string{ReasonVolumeGroupConflict}, msg: map[string]string{v1.ConditionReady: "VolumeGroup older already claims PV /dev/vda"}}},
		{"an invalid selector: says so, keeps what it showed",
			VGFacts{VG: vg("u"), SelectorErr: errors.New("bad")},
			want{nodesReady: "1/1", createNode: "old", conds: map[string]string{v1.ConditionReady: "False/InvalidNodeSelector"}, events: []string{"InvalidNodeSelector"}}},
		{"no node selected",
			VGFacts{VG: vg("u"), Existing: exist},
			want{nodesReady: "0/0", conds: map[string]string{v1.ConditionLockspaceReady: "False/NoNodes", v1.ConditionReady: "False/NoLockspace", v1.ConditionHostIDConflict: "False/UniqueHostIDs"}, events: []string{"NoNodes"}}},
		{"two nodes started: ready, nothing to create",
			VGFacts{VG: vg("u", entry("a", 1, true, 0), entry("b", 2, true, 0)), Selected: []string{"a", "b"}, Existing: exist,
				Live: []v1.NodeLockspaceStatus{entry("a", 1, true, 0), entry("b", 2, true, 0)}},
			want{nodesReady: "2/2", conds: map[string]string{v1.ConditionLockspaceReady: "True/Started", v1.ConditionReady: "True/Ready"}}},
		{"one node not started, one never reported",
			VGFacts{VG: vg("u", entry("a", 1, true, 0), entry("b", 2, false, 0)), Selected: []string{"a", "b", "c"}, Existing: exist},
			want{nodesReady: "1/3", conds: map[string]string{v1.ConditionLockspaceReady: "False/LockspaceNotStarted", v1.ConditionReady: "True/Ready"},
				msg: map[string]string{v1.ConditionLockspaceReady: "not started on b, c (no agent report)"}}},
		{"two nodes with one host_id: refuse to serve, Event, and create nothing",
			VGFacts{VG: vg("", entry("a", 1, false, 0), entry("b", 1, false, 0)), Selected: []string{"a", "b"}, Existing: exist,
				Live: []v1.NodeLockspaceStatus{entry("a", 1, false, 0), entry("b", 1, false, 0)}},
			want{nodesReady: "0/2", conds: map[string]string{v1.ConditionHostIDConflict: "True/DuplicateHostID", v1.ConditionReady: "False/DuplicateHostID"},
				events: []string{ReasonDuplicateHostID}, msg: map[string]string{v1.ConditionHostIDConflict: "host_id 1 on a, b"}}},
		{"the entry of a deleted node goes, and with it the duplicate host_id",
			VGFacts{VG: vg("u", entry("a", 1, true, 0), entry("gone", 1, true, 0)), Selected: []string{"a"}, Existing: exist},
			want{nodesReady: "1/1", drop: []string{"a"}, conds: map[string]string{v1.ConditionHostIDConflict: "False/UniqueHostIDs", v1.ConditionReady: "True/Ready"}}},
		{"VG nowhere: the first fresh node by name creates it (a is stale)",
			VGFacts{VG: vg("", entry("a", 1, false, time.Minute), entry("b", 2, false, 0)), Selected: []string{"a", "b"}, Existing: exist,
				Live: []v1.NodeLockspaceStatus{entry("a", 1, false, time.Minute), entry("b", 2, false, 0)}},
			want{nodesReady: "0/2", createNode: "b", conds: map[string]string{v1.ConditionReady: "False/NoLockspace"}}},
		{"the node already chosen keeps the job while fresh (it may hold the create claim)",
			VGFacts{VG: &v1.VolumeGroup{Status: v1.VolumeGroupStatus{CreateNode: "b", Nodes: []v1.NodeLockspaceStatus{entry("a", 1, false, 0), entry("b", 2, false, 0)}}},
				Selected: []string{"a", "b"}, Existing: exist, Live: []v1.NodeLockspaceStatus{entry("a", 1, false, 0), entry("b", 2, false, 0)}},
			want{nodesReady: "0/2", createNode: "b", conds: map[string]string{v1.ConditionReady: "False/NoLockspace"}}},
		{"the node chosen went stale: the next fresh one takes over",
			VGFacts{VG: &v1.VolumeGroup{Status: v1.VolumeGroupStatus{CreateNode: "b", Nodes: []v1.NodeLockspaceStatus{entry("a", 1, false, 0), entry("b", 2, false, time.Minute)}}},
				Selected: []string{"a", "b"}, Existing: exist, Live: []v1.NodeLockspaceStatus{entry("a", 1, false, 0), entry("b", 2, false, time.Minute)}},
			want{nodesReady: "0/2", createNode: "a", conds: map[string]string{v1.ConditionReady: "False/NoLockspace"}}},
		{"the node chosen has no usable host_id (lvmlocal.conf disagrees): the next fresh one takes over",
			VGFacts{VG: &v1.VolumeGroup{Status: v1.VolumeGroupStatus{CreateNode: "a", Nodes: []v1.NodeLockspaceStatus{blocked(entry("a", 2, false, 0)), entry("b", 1, false, 0)}}},
				Selected: []string{"a", "b"}, Existing: exist, Live: []v1.NodeLockspaceStatus{blocked(entry("a", 2, false, 0)), entry("b", 1, false, 0)}},
			want{nodesReady: "0/2", createNode: "b", conds: map[string]string{v1.ConditionReady: "False/NoLockspace", v1.ConditionHostIDConflict: "True/HostIDRefused"},
				events: []string{ReasonHostIDRefused}, msg: map[string]string{v1.ConditionHostIDConflict: "node a: lvmlocal.conf sets local/host_id = 1"}}},
		{"VG nowhere and nobody fresh: wait, never guess",
			VGFacts{VG: vg("", entry("a", 1, false, time.Minute)), Selected: []string{"a"}, Existing: exist,
				Live: []v1.NodeLockspaceStatus{entry("a", 1, false, time.Minute)}},
			want{nodesReady: "0/1", conds: map[string]string{v1.ConditionReady: "False/NoLockspace"}}},
		{"a heartbeat newer than the entry makes its node fresh",
			VGFacts{VG: vg("", entry("a", 1, false, time.Minute)), Selected: []string{"a"}, Existing: exist,
				Live: []v1.NodeLockspaceStatus{entry("a", 1, false, 0)}},
			want{nodesReady: "0/1", createNode: "a", conds: map[string]string{v1.ConditionReady: "False/NoLockspace"}}},
		{"a node already sees the VG: nobody creates it",
			VGFacts{VG: vg("", v1.NodeLockspaceStatus{Node: "a", HostID: 1, VGFound: true, LastReport: at(0)}), Selected: []string{"a"}, Existing: exist,
				Live: []v1.NodeLockspaceStatus{{Node: "a", HostID: 1, VGFound: true, LastReport: at(0)}}},
			want{nodesReady: "0/1", conds: map[string]string{v1.ConditionReady: "False/NoLockspace"}}},
		{"vgcreate failed: Ready shows LVM's own words",
			VGFacts{VG: vg("", v1.NodeLockspaceStatus{Node: "a", HostID: 1, LastReport: at(0), Reason: v1.LockspaceVGCreateFailed, Message: "vgcreate --shared vg1 failed: PV in use"}),
				Selected: []string{"a"}, Existing: exist, Live: []v1.NodeLockspaceStatus{{Node: "a", HostID: 1, LastReport: at(0)}}},
			want{nodesReady: "0/1", createNode: "a", conds: map[string]string{v1.ConditionReady: "False/VGCreateFailed"},
				msg: map[string]string{v1.ConditionReady: "node a: vgcreate --shared vg1 failed: PV in use"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := PlanVolumeGroup(c.facts, now)
			if p.NodesReady != c.want.nodesReady || p.CreateNode != c.want.createNode {
				t.Errorf("nodesReady %q createNode %q, want %q %q", p.NodesReady, p.CreateNode, c.want.nodesReady, c.want.createNode)
			}
			if (c.want.drop != nil) != p.DropEntries {
				t.Errorf("DropEntries %v", p.DropEntries)
			}
			if c.want.drop != nil {
				var kept []string
				for _, e := range p.Entries {
					kept = append(kept, e.Node)
				}
				if strings.Join(kept, ",") != strings.Join(c.want.drop, ",") {
					t.Errorf("kept %v, want %v", kept, c.want.drop)
				}
			}
			got := map[string]VGCondition{}
			var events []string
			for _, cond := range p.Conditions {
				got[cond.Type] = cond
				if cond.Event != "" {
					events = append(events, cond.Event)
				}
				if cond.Reason == "" || cond.Message == "" {
					t.Errorf("condition %s without reason or message", cond.Type)
				}
			}
			for typ, w := range c.want.conds {
				cond, ok := got[typ]
				status := map[bool]string{true: "True", false: "False"}[cond.OK]
				if !ok || status+"/"+cond.Reason != w {
					t.Errorf("%s: %s/%s, want %s", typ, status, cond.Reason, w)
				}
			}
			for typ, sub := range c.want.msg {
				if !strings.Contains(got[typ].Message, sub) {
					t.Errorf("%s message %q lacks %q", typ, got[typ].Message, sub)
				}
			}
			if strings.Join(events, ",") != strings.Join(c.want.events, ",") {
				t.Errorf("events %v, want %v", events, c.want.events)
			}
		})
	}
}
