package controllers

import (
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/controllers/lockrule"
)

// VolumeFacts is everything a SharedVolume's executor, phase and conditions are decided
// from, gathered once by the reconciler (docs/design.md §4).
type VolumeFacts struct {
	Vol *v1.SharedVolume
	// Atts are the volume's attachments.
	Atts []v1.VolumeAttachment
	// VG is spec.volumeGroup's VolumeGroup with heartbeats overlaid; nil when it does not exist.
	VG *v1.VolumeGroup
	// From is the VolumeGroup a migration copies from (status.volumeGroup), Old the one
	// holding the retired LV; empty when not needed or gone.
	From, Old v1.VolumeGroup
	// Src is spec.source's facts while the volume is created as a copy.
	Src *CopySourceFacts
	// CanWork says whether a node's agent restored this boot's locks; a node that did not
	// may not work (a rebooted node's entry can look fresh for a while). Read lazily.
	CanWork func(node string) bool
}

// CopySourceFacts is what the choice of a copy's executor depends on.
type CopySourceFacts struct {
	// Vol is the source volume; nil when it does not exist.
	Vol *v1.SharedVolume
	// VG is the source's VolumeGroup (heartbeats overlaid); empty when gone.
	VG v1.VolumeGroup
	// Atts are the source's attachments.
	Atts []v1.VolumeAttachment
}

// VolumeStep is one condition to set, in order, and the Event to emit when it changes the
// condition (or always, for a step with no condition).
type VolumeStep struct {
	Cond  *VolumeCondition
	Event *VolumeEvent
}

// VolumeCondition is a condition the plan sets.
type VolumeCondition struct {
	Type    string
	OK      bool
	Reason  string
	Message string
}

// VolumeEvent is an Event the plan emits.
type VolumeEvent struct {
	Type, Reason, Action, Message string
}

// VolumePlan is what the reconciler writes.
type VolumePlan struct {
	Lock     v1.LockStatus
	Executor string
	Phase    v1.VolumePhase
	Steps    []VolumeStep
	// Requeue re-checks the assignment if the executor's reports stop (node death).
	Requeue time.Duration
}

func (p *VolumePlan) warn(typ, reason, action, msg string) {
	p.Steps = append(p.Steps, VolumeStep{Cond: &VolumeCondition{Type: typ, Reason: reason, Message: msg},
		Event: &VolumeEvent{Type: corev1.EventTypeWarning, Reason: reason, Action: action, Message: msg}})
}

func (p *VolumePlan) set(typ string, ok bool, reason, msg string) {
	p.Steps = append(p.Steps, VolumeStep{Cond: &VolumeCondition{Type: typ, OK: ok, Reason: reason, Message: msg}})
}

// PlanVolume decides which node does a volume's pending LVM work (create, copy, extend,
// move, migration, removal of a retired LV), its phase and what its conditions say. It
// never assigns work it cannot justify from fresh facts: no ready node, a shared holder
// for work that needs one holder, a missing VolumeGroup or source all mean "wait and say
// why" (docs/design.md §5).
func PlanVolume(f VolumeFacts, now time.Time) VolumePlan {
	vol := f.Vol
	st := &vol.Status
	canWork := f.CanWork
	if canWork == nil {
		canWork = func(string) bool { return false }
	}
	vg := f.VG
	if vg == nil {
		vg = &v1.VolumeGroup{}
	}
	mode, holders := lockrule.Holders(nodesOf(f.Atts, nil))
	p := VolumePlan{Lock: v1.LockStatus{Mode: mode, Holders: holders, HolderList: strings.Join(holders, ",")}}

	needCreate := st.LVUUID == ""
	retiring := st.RetiredLV != nil
	needMigrate := !retiring && v1.NeedsMigration(vol)
	needExtend := !needCreate && !needMigrate && st.AllocatedSize != nil && vol.Spec.Size.Cmp(*st.AllocatedSize) > 0
	needMove := !needCreate && v1.NeedsMove(vol)
	copying := false // a create that copies spec.source
	current := st.ExecutorNode
	switch {
	case retiring:
		// The volume lives in its new LV; the old one is wiped and removed by a node of its VG.
		p.Executor = pickExecutor(&f.Old, string(vol.UID), current, canWork, now)
	case needMigrate && len(f.Atts) > 0:
		p.warn(v1.ConditionReady, "MigrationNeedsDetach", "Migrate", fmt.Sprintf("spec.volumeGroup asks to migrate the volume from %s to %s, but it is attached (%s): detach it first (Cinder migrates attached volumes through the hypervisor, onto a new volume)", st.VolumeGroup, vol.Spec.VolumeGroup, attachmentNames(f.Atts)))
	case needMigrate && f.VG == nil:
		p.warn(v1.ConditionReady, "VolumeGroupNotFound", "Migrate", fmt.Sprintf("VolumeGroup %q (the migration's target) does not exist: create it or set spec.volumeGroup back to %s", vol.Spec.VolumeGroup, st.VolumeGroup))
	case needMigrate:
		// The copy runs on a node that has started the lockspaces of both VGs.
		p.Executor = pickExecutor(vg, string(vol.UID), current, readyIn(&f.From, canWork, now), now)
		if p.Executor == "" {
			p.warn(v1.ConditionReady, "NoReadyNode", "Migrate", fmt.Sprintf("no node has started the lockspaces of both VG %s and VG %s: the migration copy needs one", f.From.Spec.VGName, vg.Spec.VGName))
		}
	case needMove && mode == lockrule.Shared:
		p.warn(v1.ConditionReady, "MoveRefusedWhileShared", "Move", fmt.Sprintf("moving the LV's extents (pvmove) needs it held exclusively by one host, and it is held shared by %v: the move runs once a single node holds it (detach the others, or wait for the live migration to finish)", holders))
	case needMove && mode == lockrule.Exclusive:
		p.Executor = holders[0] // pvmove -n runs where the exclusive lock is held
	case needMove:
		p.Executor = pickExecutor(vg, string(vol.UID), current, canWork, now)
	case f.VG == nil:
		p.warn(v1.ConditionReady, "VolumeGroupNotFound", "Provision", fmt.Sprintf("VolumeGroup %q does not exist: create it or point spec.volumeGroup at an existing one", vol.Spec.VolumeGroup))
	case (needCreate || needExtend) && notServed(vg):
		c := meta.FindStatusCondition(vg.Status.Conditions, v1.ConditionReady)
		p.warn(v1.ConditionReady, ReasonVolumeGroupConflict, "Provision", fmt.Sprintf("VolumeGroup %s is not served: %s", vg.Name, c.Message))
	case needExtend && mode == lockrule.Shared:
		p.set(v1.ConditionReady, false, "ExtendWaitsForSingleHolder",
			fmt.Sprintf("the volume is held shared by %v; it is extended once a single node holds it (detach the other attachments, or wait for the live migration to finish)", holders))
	case needCreate && vol.Spec.Source != nil:
		copying = true
		exec, reason, msg := planCopy(f, canWork, now)
		p.Executor = exec
		if reason != "" {
			p.warn(v1.ConditionReady, reason, "Copy", msg)
		}
	case needCreate || needExtend:
		if mode == lockrule.Exclusive {
			p.Executor = holders[0] // the exclusive holder does the work under its lock
		} else {
			p.Executor = pickExecutor(vg, string(vol.UID), current, canWork, now)
		}
		if p.Executor == "" {
			p.warn(v1.ConditionReady, "NoReadyNode", "Provision", fmt.Sprintf("no node has started the lockspace of VG %s (check `kubectl get svg %s`: are the agents running and does spec.nodeSelector select them?)", vg.Spec.VGName, vg.Name))
			// A node becoming able to work (its boot restore done) is no event of this
			// controller's: look again soon.
			p.Requeue = NoReadyNodeRecheck
		}
	}

	exec := p.Executor
	switch {
	case retiring:
		p.Phase = v1.VolumeMigrating
		msg := fmt.Sprintf("the volume lives in LV %s/%s; node %s is wiping and removing its old LV %s/%s", st.VGName, st.LVName, exec, st.RetiredLV.VGName, st.RetiredLV.LVName)
		if exec == "" {
			msg = fmt.Sprintf("the volume lives in LV %s/%s; its old LV %s/%s waits for a node of VolumeGroup %s to wipe and remove it", st.VGName, st.LVName, st.RetiredLV.VGName, st.RetiredLV.LVName, st.RetiredLV.VolumeGroup)
		}
		p.set(v1.ConditionReady, true, "RemovingRetiredLV", msg)
	case needMigrate && exec != "":
		p.Phase = v1.VolumeMigrating
		p.Steps = append(p.Steps, VolumeStep{
			Cond: &VolumeCondition{Type: v1.ConditionReady, Reason: "Migrating",
				Message: fmt.Sprintf("node %s is copying LV %s/%s to VolumeGroup %s; the volume switches to the copy when it completes", exec, st.VGName, st.LVName, vol.Spec.VolumeGroup)},
			Event: &VolumeEvent{Type: corev1.EventTypeNormal, Reason: "Migrating", Action: "Migrate",
				Message: fmt.Sprintf("node %s copies the volume from %s to %s", exec, st.VolumeGroup, vol.Spec.VolumeGroup)}})
	case needMigrate:
		p.Phase = inUseOr(holders)
	case needCreate && exec != "":
		p.Phase = v1.VolumeCreating
		if meta.FindStatusCondition(st.Conditions, v1.ConditionProvisioned) == nil {
			// From now on an LV may exist before status records it: deleting the volume
			// takes a cleanup pass (needsCleanupPass).
			p.set(v1.ConditionProvisioned, false, "Creating", fmt.Sprintf("node %s was asked to create the LV", exec))
		}
		msg := fmt.Sprintf("node %s is creating LV %s in VG %s", exec, vol.LVName(), vg.Spec.VGName)
		if copying {
			msg = fmt.Sprintf("node %s is creating LV %s in VG %s as a copy of volume %s", exec, vol.LVName(), vg.Spec.VGName, vol.Spec.Source.Volume)
		}
		p.set(v1.ConditionReady, false, "Creating", msg)
	case needCreate:
		if st.Phase != v1.VolumePending {
			p.Steps = append(p.Steps, VolumeStep{Event: &VolumeEvent{Type: corev1.EventTypeNormal, Reason: "Pending", Action: "Provision",
				Message: fmt.Sprintf("waiting to create LV %q in VolumeGroup %q (see the Ready condition)", vol.LVName(), vol.Spec.VolumeGroup)}})
		}
		p.Phase = v1.VolumePending
	case needMove && exec != "":
		p.Phase = v1.VolumeMoving
		p.set(v1.ConditionReady, true, "Moving", fmt.Sprintf("node %s is moving the LV's extents onto %v (pvmove, online)", exec, vol.Spec.PVs))
	default:
		p.Phase = inUseOr(holders)
		if (!needExtend && !needMove) || exec != "" {
			msg := fmt.Sprintf("LV %s/%s is %s", st.VGName, st.LVName, strings.ToLower(string(p.Phase)))
			if needExtend {
				msg = fmt.Sprintf("node %s is extending LV %s/%s to %s", exec, st.VGName, st.LVName, vol.Spec.Size.String())
			}
			p.set(v1.ConditionReady, true, string(p.Phase), msg)
		}
	}
	if (needCreate || needExtend || needMove || needMigrate || retiring) && p.Requeue == 0 {
		p.Requeue = 30 * time.Second
	}
	return p
}

// NoReadyNodeRecheck is how soon a volume whose work no node can take is looked at again.
const NoReadyNodeRecheck = 5 * time.Second

func inUseOr(holders []string) v1.VolumePhase {
	if len(holders) > 0 {
		return v1.VolumeInUse
	}
	return v1.VolumeAvailable
}

// planCopy picks the node that copies spec.source into a new volume, or says why none may
// yet (reason and message for the Ready condition). A source held exclusively is copied on
// its holder, from a temporary snapshot (the VM keeps running); an unattached one on a node
// of both VGs, under a shared lock it takes for the copy; a shared-attached one waits: a
// thick snapshot cannot exist while its origin is held shared (lvmlockd(8)), and a copy of
// a volume written on several hosts would not be a point in time.
func planCopy(f VolumeFacts, canWork func(string) bool, now time.Time) (exec, reason, msg string) {
	vol := f.Vol
	name := string(vol.Spec.Source.Volume)
	src := f.Src.Vol
	switch {
	case src == nil:
		return "", "SourceNotFound", fmt.Sprintf("spec.source names SharedVolume %q, which does not exist in namespace %s", name, vol.Namespace)
	case !src.DeletionTimestamp.IsZero():
		return "", "SourceNotFound", fmt.Sprintf("source volume %s is being deleted", name)
	case src.Status.LVUUID == "":
		return "", "SourceNotReady", fmt.Sprintf("source volume %s has no LV yet (phase %q): the copy starts once it has", name, src.Status.Phase)
	case v1.NeedsMigration(src) || src.Status.RetiredLV != nil:
		return "", "SourceNotReady", fmt.Sprintf("source volume %s is being migrated between VolumeGroups: the copy starts once it is done", name)
	case src.Status.AllocatedSize != nil && src.Status.AllocatedSize.Cmp(vol.Spec.Size) > 0:
		return "", "SourceLargerThanVolume", fmt.Sprintf("source volume %s is %s, larger than spec.size %s: a copy must be at least as large as its source", name, src.Status.AllocatedSize.String(), vol.Spec.Size.String())
	case f.VG == nil:
		return "", "VolumeGroupNotFound", fmt.Sprintf("VolumeGroup %q does not exist", vol.Spec.VolumeGroup)
	}
	vg := f.VG
	mode, holders := lockrule.Holders(nodesOf(f.Src.Atts, nil))
	both := readyIn(&f.Src.VG, canWork, now)
	switch mode {
	case lockrule.Shared:
		return "", "CopyWaitsForSingleHolder", fmt.Sprintf("source volume %s is held shared by %v: a point-in-time copy needs it unattached or held by one node (a thick snapshot cannot exist while its origin is shared); the copy starts once a single node holds it", name, holders)
	case lockrule.Exclusive:
		h := holders[0]
		if !both(h) || !readyIn(vg, func(string) bool { return true }, now)(h) {
			return "", "NoReadyNode", fmt.Sprintf("source volume %s is held by node %s, which copies it from a snapshot, but that node has not started the lockspace of VG %s", name, h, vg.Spec.VGName)
		}
		return h, "", ""
	}
	exec = pickExecutor(vg, string(vol.UID), vol.Status.ExecutorNode, both, now)
	if exec == "" {
		return "", "NoReadyNode", fmt.Sprintf("no node has started the lockspaces of both VG %s (the copy) and VG %s (its source %s)", vg.Spec.VGName, f.Src.VG.Spec.VGName, name)
	}
	return exec, "", ""
}

// notServed: the VolumeGroup conflicts with an older one (ClaimConflict) and nothing is
// done in it.
func notServed(vg *v1.VolumeGroup) bool {
	c := meta.FindStatusCondition(vg.Status.Conditions, v1.ConditionReady)
	return c != nil && c.Reason == ReasonVolumeGroupConflict
}

// readyIn narrows canWork to nodes whose entry in vg is ready (lockspace started, fresh).
func readyIn(vg *v1.VolumeGroup, canWork func(string) bool, now time.Time) func(string) bool {
	return func(name string) bool {
		for i := range vg.Status.Nodes {
			if n := &vg.Status.Nodes[i]; n.Node == name {
				return n.Ready(now) && canWork(name)
			}
		}
		return false
	}
}

func attachmentNames(atts []v1.VolumeAttachment) string {
	names := make([]string, 0, len(atts))
	for _, a := range atts {
		names = append(names, fmt.Sprintf("%s on node %s", a.Name, a.Spec.Node))
	}
	return strings.Join(names, ", ")
}

// pickExecutor keeps the current executor while it can still work on the VG, otherwise
// picks a ready node, spread by the volume's UID so that creates do not all land on one node.
func pickExecutor(vg *v1.VolumeGroup, uid, current string, canWork func(string) bool, now time.Time) string {
	var ready []string
	for i := range vg.Status.Nodes {
		n := &vg.Status.Nodes[i]
		if n.Ready(now) && canWork(n.Node) {
			if n.Node == current {
				return current
			}
			ready = append(ready, n.Node)
		}
	}
	if len(ready) == 0 {
		return ""
	}
	sort.Strings(ready)
	h := fnv.New32a()
	_, _ = h.Write([]byte(uid))
	return ready[int(h.Sum32())%len(ready)]
}

// VolumeDeleteFacts is what the deletion of a SharedVolume is decided from.
type VolumeDeleteFacts struct {
	Vol  *v1.SharedVolume
	Atts []v1.VolumeAttachment
	// Clones are the volumes whose spec.source is this one.
	Clones []v1.SharedVolume
	// VGs are the involved VolumeGroups that still exist (spec's, status's, the retired
	// LV's), heartbeats overlaid, by name.
	VGs map[string]*v1.VolumeGroup
	// CanWork: whether a node restored this boot's locks (read lazily).
	CanWork func(node string) bool
}

// VolumeDeletePlan is the deletion's next step: Done (remove the finalizer), or why it is
// blocked (DeletionBlocked's reason and message; Warn: an Event when it changes) and which
// node wipes and removes what is left.
type VolumeDeletePlan struct {
	Done            bool
	Reason, Message string
	Warn            bool
	Executor        string
	Requeue         time.Duration
}

// PlanVolumeDelete decides a deletion: never while attached (detach first) or while a copy
// from the volume runs; while the LV (or a migration's retired LV) exists, a node that has
// started every involved VG's lockspace wipes and removes it; a create that may have left
// an unrecorded LV gets one cleanup pass by a node of its VG; then the object goes. Deleting
// never removes an LV without the volume's owner tag (the agent checks).
func PlanVolumeDelete(f VolumeDeleteFacts, now time.Time) VolumeDeletePlan {
	vol, st := f.Vol, &f.Vol.Status
	if len(f.Atts) > 0 {
		names := make([]string, 0, len(f.Atts))
		for _, a := range f.Atts {
			names = append(names, fmt.Sprintf("%s (node %s)", a.Name, a.Spec.Node))
		}
		return VolumeDeletePlan{Reason: "Attached", Warn: true, // no LVM work while attached
			Message: fmt.Sprintf("volume is still attached by %v: delete those VolumeAttachments (detach) first; the volume is deleted once none is left", names)}
	}
	var copying []string
	for _, c := range f.Clones {
		if c.Status.LVUUID == "" && c.DeletionTimestamp.IsZero() && c.Status.ExecutorNode != "" {
			copying = append(copying, c.Name)
		}
	}
	if len(copying) > 0 {
		return VolumeDeletePlan{Reason: "CopyInProgress", Warn: true,
			Message: fmt.Sprintf("volumes %v are being copied from this volume: it is deleted once their copies are done", copying)}
	}
	canWork := f.CanWork
	if canWork == nil {
		canWork = func(string) bool { return false }
	}
	if st.LVUUID != "" || st.RetiredLV != nil {
		// The LV exists: an agent wipes and removes it (and a migration's leftovers: the
		// retired LV, a partial copy in the target VG), then clears status.lvUUID. It runs
		// on a node that has started every involved VG's lockspace.
		base := st.VolumeGroup
		if base == "" && st.RetiredLV != nil {
			base = st.RetiredLV.VolumeGroup
		}
		vg := &v1.VolumeGroup{}
		for name, g := range f.VGs {
			if name == base {
				vg = g
			} else {
				canWork = readyIn(g, canWork, now)
			}
		}
		p := VolumeDeletePlan{Reason: "Wiping", Executor: pickExecutor(vg, string(vol.UID), st.ExecutorNode, canWork, now)}
		p.Message = fmt.Sprintf("node %s is wiping and removing LV %s/%s", p.Executor, st.VGName, st.LVName)
		if p.Executor == "" {
			p.Message = fmt.Sprintf("waiting for a node with a started lockspace of VG %s to wipe and remove LV %s", st.VGName, st.LVName)
		}
		return p
	}
	if vg, ok := f.VGs[string(vol.Spec.VolumeGroup)]; ok && needsCleanupPass(vol) {
		// A create or copy was assigned and may have made an LV it had not recorded yet
		// (it records it only once complete): one pass of a node of the VG finds it by its
		// owner tag and removes it before the object goes.
		p := VolumeDeletePlan{Reason: "CleaningUp", Requeue: 30 * time.Second, Executor: pickExecutor(vg, string(vol.UID), st.ExecutorNode, canWork, now)}
		p.Message = fmt.Sprintf("node %s is removing whatever the interrupted create left in VG %s", p.Executor, vg.Spec.VGName)
		if p.Executor == "" {
			p.Message = fmt.Sprintf("waiting for a node of VG %s to remove whatever the interrupted create left", vg.Spec.VGName)
		}
		return p
	}
	return VolumeDeletePlan{Done: true}
}
