package controllers

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

// VGFacts is everything a VolumeGroup's aggregate status is decided from, gathered once by
// the reconciler (docs/design.md §4: gather, decide, write).
type VGFacts struct {
	// VG as read: its entries are the agents' own reports.
	VG *v1.VolumeGroup
	// ClaimedBy is the older VolumeGroup claiming this one's VG name or a PV ("" when none),
	// Claimed what it claims ("VG name vg1", "PV /dev/vda").
	ClaimedBy, Claimed string
	// SelectorErr: spec.nodeSelector does not parse.
	SelectorErr error
	// Selected are the nodes the selector picks, sorted.
	Selected []string
	// Existing are all nodes that exist.
	Existing map[string]bool
	// Live are the VG's entries with the agents' heartbeats overlaid: who is alive now.
	Live []v1.NodeLockspaceStatus
}

// VGCondition is one condition the plan sets; Event, when set, is the reason of a Warning
// Event emitted when the condition changes.
type VGCondition struct {
	Type    string
	OK      bool
	Reason  string
	Message string
	Event   string
}

// VGPlan is what the reconciler writes.
type VGPlan struct {
	// DropEntries: status.nodes must become Entries (entries of deleted nodes dropped: a
	// decommissioned node must not keep blocking others or look like a lockspace holder).
	DropEntries bool
	Entries     []v1.NodeLockspaceStatus
	// NodesReady ("2/3"), CreateNode (the node to run vgcreate --shared, or none) and the
	// conditions.
	NodesReady, CreateNode string
	Conditions             []VGCondition
}

// Reasons of the VolumeGroup conditions.
const (
	ReasonVolumeGroupConflict = "VolumeGroupConflict"
	ReasonInvalidNodeSelector = "InvalidNodeSelector"
	ReasonDuplicateHostID     = "DuplicateHostID"
	ReasonHostIDRefused       = "HostIDRefused"
	ReasonUniqueHostIDs       = "UniqueHostIDs"
	ReasonNoNodes             = "NoNodes"
	ReasonLockspaceNotStarted = "LockspaceNotStarted"
	ReasonStarted             = "Started"
	ReasonVGReady             = "Ready"
	ReasonNoLockspace         = "NoLockspace"
)

// PlanVolumeGroup decides a VolumeGroup's aggregate status from its facts: whether it is
// served at all (an older VolumeGroup claiming its VG or a PV wins), how many selected
// nodes started its lockspace, whether two nodes share a sanlock host_id (refuse to serve:
// both could write one LV), and, while the VG exists nowhere, which one node creates it
// (the first by name with a fresh report; none when nobody is fresh: wait, never guess).
func PlanVolumeGroup(f VGFacts, now time.Time) VGPlan {
	vg := f.VG
	if f.ClaimedBy != "" {
		msg := fmt.Sprintf("VolumeGroup %s already claims %s: this VolumeGroup is never served (its capacity would be counted twice, and two VolumeGroups must never drive one LUN); delete it, or point it at a VG and PVs of its own", f.ClaimedBy, f.Claimed)
		return VGPlan{Conditions: []VGCondition{
			{Type: v1.ConditionReady, Reason: ReasonVolumeGroupConflict, Message: msg, Event: ReasonVolumeGroupConflict},
			{Type: v1.ConditionLockspaceReady, Reason: ReasonVolumeGroupConflict, Message: msg},
		}}
	}
	if f.SelectorErr != nil {
		return VGPlan{NodesReady: vg.Status.NodesReady, CreateNode: vg.Status.CreateNode, Conditions: []VGCondition{
			{Type: v1.ConditionReady, Reason: ReasonInvalidNodeSelector, Event: ReasonInvalidNodeSelector, Message: fmt.Sprintf("spec.nodeSelector is invalid: %v", f.SelectorErr)},
		}}
	}
	var p VGPlan
	entries := vg.Status.Nodes[:0:0]
	for _, n := range vg.Status.Nodes {
		if f.Existing[n.Node] {
			entries = append(entries, n)
		}
	}
	if len(entries) != len(vg.Status.Nodes) {
		p.DropEntries, p.Entries = true, entries
	}

	started := 0
	var missing []string
	byHostID := map[int32][]string{}
	reported := map[string]v1.NodeLockspaceStatus{}
	for _, n := range entries {
		reported[n.Node] = n
		if n.HostID > 0 {
			byHostID[n.HostID] = append(byHostID[n.HostID], n.Node)
		}
	}
	for _, name := range f.Selected {
		n, ok := reported[name]
		switch {
		case !ok:
			missing = append(missing, name+" (no agent report)")
		case !n.LockspaceStarted:
			missing = append(missing, name)
		default:
			started++
		}
	}
	p.NodesReady = fmt.Sprintf("%d/%d", started, len(f.Selected))

	var conflicts []string
	for id, nodes := range byHostID {
		if len(nodes) > 1 {
			sort.Strings(nodes)
			conflicts = append(conflicts, fmt.Sprintf("host_id %d on %s", id, strings.Join(nodes, ", ")))
		}
	}
	sort.Strings(conflicts)
	// Nodes that refuse to join because their lvmlocal.conf (or a lockspace started by hand)
	// disagrees with the host_id the operator allocated them: said on the condition, but
	// they write nothing, so the VG is still created and served by the others.
	var refusing []string
	for _, n := range entries {
		if n.Reason == v1.LockspaceHostIDConflict && len(byHostID[n.HostID]) < 2 {
			refusing = append(refusing, fmt.Sprintf("node %s: %s", n.Node, n.Message))
		}
	}
	switch {
	case len(conflicts) > 0:
		p.Conditions = append(p.Conditions, VGCondition{Type: v1.ConditionHostIDConflict, OK: true, Reason: ReasonDuplicateHostID, Event: ReasonDuplicateHostID,
			Message: fmt.Sprintf("duplicate sanlock host IDs (%s): two nodes with one host_id can both write one LV; each node's lvmlocal.conf must set the host_id the operator allocated it (Leases sharedlvm-host-id-<id>)", strings.Join(append(conflicts, refusing...), "; "))})
	case len(refusing) > 0:
		p.Conditions = append(p.Conditions, VGCondition{Type: v1.ConditionHostIDConflict, OK: true, Reason: ReasonHostIDRefused, Event: ReasonHostIDRefused,
			Message: fmt.Sprintf("nodes refusing to join with a host_id other than the one allocated to them (%s)", strings.Join(refusing, "; "))})
	default:
		p.Conditions = append(p.Conditions, VGCondition{Type: v1.ConditionHostIDConflict, Reason: ReasonUniqueHostIDs, Message: "every reporting node has its own sanlock host_id"})
	}

	switch {
	case len(f.Selected) == 0:
		p.Conditions = append(p.Conditions, VGCondition{Type: v1.ConditionLockspaceReady, Reason: ReasonNoNodes, Event: ReasonNoNodes,
			Message: "no node matches spec.nodeSelector: label the nodes that see the LUN, or fix the selector"})
	case len(missing) > 0:
		sort.Strings(missing)
		p.Conditions = append(p.Conditions, VGCondition{Type: v1.ConditionLockspaceReady, Reason: ReasonLockspaceNotStarted,
			Message: fmt.Sprintf("lockspace of VG %s not started on %s", vg.Spec.VGName, strings.Join(missing, ", "))})
	default:
		p.Conditions = append(p.Conditions, VGCondition{Type: v1.ConditionLockspaceReady, OK: true, Reason: ReasonStarted,
			Message: fmt.Sprintf("lockspace started on all %d selected nodes", len(f.Selected))})
	}

	// Creation: when no selected node sees the VG and it was never reported, one node (the
	// one already chosen if still fresh, else the first by name with a fresh report) runs
	// vgcreate --shared on spec.pvs.
	if vg.Status.VGUUID == "" && len(conflicts) == 0 {
		live := map[string]v1.NodeLockspaceStatus{}
		for _, n := range f.Live {
			if f.Existing[n.Node] {
				live[n.Node] = n
			}
		}
		seen, fresh := false, []string{}
		for _, name := range f.Selected {
			if n, ok := live[name]; ok {
				seen = seen || n.VGFound || n.LockspaceStarted
				if n.Fresh(now) && canCreate(n.Reason) {
					fresh = append(fresh, name)
				}
			}
		}
		if !seen && len(fresh) > 0 {
			p.CreateNode = fresh[0]
			// The node already chosen keeps the job while it is fresh: it may hold the create
			// claim, and a newcomer would only wait for the claim to expire (the claim's TTL,
			// 2 min) and then run vgcreate a second time.
			if slices.Contains(fresh, vg.Status.CreateNode) {
				p.CreateNode = vg.Status.CreateNode
			}
		}
	}

	ready := VGCondition{Type: v1.ConditionReady, OK: started > 0 && len(conflicts) == 0, Reason: ReasonVGReady,
		Message: fmt.Sprintf("%d node(s) can serve volumes of VG %s", started, vg.Spec.VGName)}
	switch {
	case len(conflicts) > 0:
		ready.Reason, ready.Message = ReasonDuplicateHostID, "refusing to serve volumes until host IDs are unique"
	case started == 0:
		ready.Reason, ready.Message = ReasonNoLockspace, "no node has started the VG's lockspace yet"
		// What the creating node ran into (LVM's own message) says more than "no lockspace".
		for _, n := range entries {
			if n.Reason == v1.LockspaceVGCreateFailed || (n.Reason == v1.LockspaceWaitingForVGCreateClaim && vg.Status.VGUUID == "") {
				ready.Reason, ready.Message = string(n.Reason), fmt.Sprintf("node %s: %s", n.Node, n.Message)
				break
			}
		}
	}
	p.Conditions = append(p.Conditions, ready)
	return p
}

// canCreate: a node whose entry says it has no usable host_id (not allocated, unreadable, or
// disagreeing with lvmlocal.conf) refuses vgcreate; choosing it would leave the VG uncreated
// for as long as it stays fresh (seen in CI: the node that lost its lvmlocal.conf id was
// chosen).
func canCreate(r v1.LockspaceReason) bool {
	switch r {
	case v1.LockspaceHostIDConflict, v1.LockspaceWaitingForHostID, v1.LockspaceHostIDUnknown:
		return false
	}
	return true
}
