package controllers

import (
	"fmt"
	"sort"
	"strings"
	"time"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/controllers/lockrule"
)

// AttachReason is the reason of an attachment's Ready condition. The operator chooses
// requeues and Events from it, never from a message.
type AttachReason string

const (
	ReasonAttached              AttachReason = "Attached"
	ReasonVolumeNotFound        AttachReason = "VolumeNotFound"
	ReasonVolumeDeleting        AttachReason = "VolumeDeleting"
	ReasonNodeNotReady          AttachReason = "NodeNotReady"
	ReasonVolumeMigrating       AttachReason = "VolumeMigrating"
	ReasonMultiAttachNotAllowed AttachReason = "MultiAttachNotAllowed"
	ReasonWaitingForVolume      AttachReason = "WaitingForVolume"
	ReasonWaitingForOtherNodes  AttachReason = "WaitingForOtherNodes"
	ReasonWaitingForDeadHost    AttachReason = "WaitingForDeadHost"
	ReasonWaitingForAgent       AttachReason = "WaitingForAgent"
	// ReasonHostLostLockspace: sanlock on another node declared this attachment's node DEAD
	// in the VG's lockspace; every lease it held there is released.
	ReasonHostLostLockspace AttachReason = "HostLostLockspace"
)

// Warns: the reason is a refusal or a fault the user should hear of (an Event when the
// attachment's Ready condition turns to it), not a step of normal progress.
func (r AttachReason) Warns() bool {
	switch r {
	case ReasonVolumeNotFound, ReasonVolumeDeleting, ReasonNodeNotReady, ReasonMultiAttachNotAllowed, ReasonWaitingForDeadHost, ReasonHostLostLockspace:
		return true
	}
	return false
}

// NodeProblemKind says why a node cannot take a new lock on a volume's VG now.
type NodeProblemKind int

const (
	NodeOK NodeProblemKind = iota
	// NodeMissing: no Node object of that name.
	NodeMissing
	// NodeRestoring: the node has not restored this boot's locks yet.
	NodeRestoring
	// NodeVGMissing: the volume's VolumeGroup does not exist (fail closed: nobody can be
	// judged ready in a VG nobody reports).
	NodeVGMissing
	// NodeNoAgent: no agent entry for the node in the VG.
	NodeNoAgent
	// NodeStale: the node's agent stopped reporting (no heartbeat).
	NodeStale
	// NodeLockspaceNotStarted: the agent reports, but the lockspace is not started.
	NodeLockspaceNotStarted
)

// NodeProblem is why one node cannot take new locks, with the message to show.
type NodeProblem struct {
	Kind    NodeProblemKind
	Message string
}

// AttachmentFacts is what the plan of one attachment needs, gathered once by the reconciler.
type AttachmentFacts struct {
	Att      *v1.VolumeAttachment
	Siblings []v1.VolumeAttachment // every attachment of the volume, Att included
	// Vol is the attachment's volume; nil when it does not exist.
	Vol *v1.SharedVolume
	// VGName is the LVM name of the volume's VG, for messages.
	VGName string
	// Problems holds, per node of the siblings, why it cannot take a new lock now.
	Problems map[string]NodeProblem
	// Verdicts are the VG's sanlock verdicts on its nodes (VolumeGroup.HostVerdicts).
	Verdicts map[string]v1.HostVerdict
}

// AttachmentPlan is what the operator writes for one attachment.
type AttachmentPlan struct {
	Desired v1.LockMode
	Phase   v1.AttachmentPhase
	Reason  AttachReason
	Message string
	// Release: the attachment is being deleted and its node holds nothing any more (or
	// another live attachment there keeps the lock, or sanlock released it): drop the
	// finalizer.
	Release bool
}

// PlanAttachment decides one attachment's desired lock, phase and condition from the facts.
// It is pure: no client, no clock but now.
func PlanAttachment(f AttachmentFacts, now time.Time) AttachmentPlan {
	att := f.Att
	node := string(att.Spec.Node)
	dead := map[string]bool{}
	for n, v := range f.Verdicts {
		if v.Dead {
			dead[n] = true
		}
	}
	rejected, migrating := map[string]bool{}, false
	if f.Vol != nil {
		rejected = rejectedByMultiAttach(f.Vol, f.Siblings)
		for _, a := range f.Siblings {
			// A node that cannot take locks now (no agent, stale, restoring after a reboot,
			// no VG) gets no *new* attachment planned; its existing ones stay wanted, so
			// that its restore re-takes them and nobody else is planned into its place.
			p := f.Problems[string(a.Spec.Node)]
			isNew := a.Status.DesiredLock.OrNone() == v1.LockNone
			if (p.Kind != NodeOK && isNew) || !f.Vol.DeletionTimestamp.IsZero() {
				rejected[a.Name] = true
			}
			// A volume being copied to another VG takes no new holder: the copy holds the
			// old LV exclusively, and the LV is replaced when it ends.
			if isNew && v1.NeedsMigration(f.Vol) {
				rejected[a.Name] = true
				migrating = migrating || a.Name == att.Name
			}
		}
	} else {
		for _, a := range f.Siblings {
			rejected[a.Name] = true // no volume: nobody is planned a lock
		}
	}
	planNodes := nodesOf(f.Siblings, rejected, dead)
	desired := lockrule.Plan(planNodes)[node]

	out := AttachmentPlan{Desired: desired}
	set := func(phase v1.AttachmentPhase, reason AttachReason, msg string) {
		out.Phase, out.Reason, out.Message = phase, reason, msg
	}
	vol := f.Vol
	problem := f.Problems[node]
	verdict, lost := f.Verdicts[node]
	lost = lost && verdict.Dead
	switch {
	case vol == nil:
		out.Desired = v1.LockNone
		set(v1.AttachmentPending, ReasonVolumeNotFound,
			fmt.Sprintf("SharedVolume %q does not exist in namespace %s: create it, or delete this attachment", att.Spec.Volume, att.Namespace))
	case !vol.DeletionTimestamp.IsZero():
		set(v1.AttachmentFailed, ReasonVolumeDeleting,
			fmt.Sprintf("volume %s is being deleted: it cannot be attached; delete this attachment", vol.Name))
	case lost:
		set(v1.AttachmentPending, ReasonHostLostLockspace,
			fmt.Sprintf("node %s (host_id %d) lost its lockspace of VG %s: sanlock on %s declares host_id %d DEAD, so every lease the node held there is released (its watchdog has reset it, or its lockspace was stopped); the node takes the lock again once its lockspace is back and nothing else holds it",
				node, verdict.HostID, f.VGName, verdict.By, verdict.HostID))
	case problem.Kind != NodeOK:
		set(v1.AttachmentPending, ReasonNodeNotReady, problem.Message)
	case migrating:
		set(v1.AttachmentPending, ReasonVolumeMigrating,
			fmt.Sprintf("volume %s is being migrated from VolumeGroup %s to %s: it is attached once the copy has switched it to its new LV", vol.Name, vol.Status.VolumeGroup, vol.Spec.VolumeGroup))
	case rejected[att.Name]:
		set(v1.AttachmentFailed, ReasonMultiAttachNotAllowed,
			fmt.Sprintf("volume %s is attached to an instance on another node and spec.multiAttach is false: detach it there first, use purpose migration-target for a live migration, or enable multiAttach (this attachment proceeds by itself once the other one is gone)", vol.Name))
	case vol.Status.LVUUID == "":
		out.Desired = v1.LockNone
		set(v1.AttachmentPending, ReasonWaitingForVolume, fmt.Sprintf("volume %s has no LV yet (phase %q)", vol.Name, vol.Status.Phase))
	default:
		applied := att.Status.AppliedLock.OrNone()
		switch {
		case desired != v1.LockNone && applied == desired:
			set(v1.AttachmentAttached, ReasonAttached, fmt.Sprintf("node %s holds the volume %s at %s", node, desired, att.Status.DevicePath))
		case desired == v1.LockNone:
			reason, msg := waitingFor(node, planNodes, f)
			set(v1.AttachmentPending, reason, msg)
		default:
			set(v1.AttachmentAttaching, ReasonWaitingForAgent, fmt.Sprintf("waiting for the agent on node %s to take the %s lock", node, desired))
		}
	}
	if !att.DeletionTimestamp.IsZero() {
		out.Desired = desired // the lock rule releases unwanted nodes
		out.Phase = v1.AttachmentDetaching
		out.Release = att.Status.AppliedLock.OrNone() == v1.LockNone || liveSibling(att, f.Siblings) || dead[node]
	}
	return out
}

// waitingFor says what a wanted node with no lock planned yet waits for: the other nodes
// that hold a lock it must not share yet, and for each what is known of it. A holder whose
// host sanlock sees FAIL, or whose agent stopped reporting, is waited for until sanlock
// declares it DEAD: its lease is never taken around sanlock.
func waitingFor(self string, nodes []lockrule.Node, f AttachmentFacts) (AttachReason, string) {
	reason := ReasonWaitingForOtherNodes
	var parts []string
	for _, n := range nodes {
		if n.Name == self || n.Held.OrNone() == lockrule.None {
			continue
		}
		v := f.Verdicts[n.Name]
		switch {
		case v.Failed:
			reason = ReasonWaitingForDeadHost
			parts = append(parts, fmt.Sprintf("%s (host_id %d) holds the lease (%s); sanlock on %s reports it FAIL since %s: waiting for sanlock to declare it DEAD (8 × io_timeout + 60 s after its last renewal) before this node may take the lock; the lease is never taken around sanlock",
				n.Name, v.HostID, n.Held, v.By, v.Since.UTC().Format(time.RFC3339)))
		case f.Problems[n.Name].Kind == NodeStale:
			reason = ReasonWaitingForDeadHost
			parts = append(parts, fmt.Sprintf("%s holds the lock (%s) and has stopped reporting: waiting for sanlock to declare it dead (about 8 × io_timeout + 60 s after it stopped) before this node may take the lock; the lease is never taken around sanlock", n.Name, n.Held))
		case f.Problems[n.Name].Kind != NodeOK:
			parts = append(parts, fmt.Sprintf("%s holds the lock (%s) and cannot change it now (%s)", n.Name, n.Held, f.Problems[n.Name].Message))
		default:
			parts = append(parts, fmt.Sprintf("%s holds the lock (%s) and is asked to convert or release it", n.Name, n.Held))
		}
	}
	if len(parts) == 0 {
		return reason, "waiting for other nodes to convert or release their lock before this node may take it"
	}
	sort.Strings(parts)
	return reason, "waiting before this node may take the lock: " + strings.Join(parts, "; ")
}

// rejectedByMultiAttach returns the attachments refused because the volume is not
// multi-attach. The oldest live non-copy attachment is the instance's, whatever its purpose:
// once a live migration's source attachment is gone, the remaining migration-target is
// the instance, and the next migration needs no edit. Other attachments on its node are
// fine; on another node, the first migration-target is the live migration's destination,
// and any other instance or migration-target attachment is refused. Copies are always
// allowed. Oldest wins, so an existing attachment is never displaced by a newer one, and a
// refused one proceeds by itself once what refused it is gone.
func rejectedByMultiAttach(vol *v1.SharedVolume, atts []v1.VolumeAttachment) map[string]bool {
	rejected := map[string]bool{}
	if vol.Spec.MultiAttach {
		return rejected
	}
	live := make([]v1.VolumeAttachment, 0, len(atts))
	for _, a := range atts {
		if a.DeletionTimestamp.IsZero() && a.Spec.Purpose != v1.PurposeCopy {
			live = append(live, a)
		}
	}
	sort.Slice(live, func(i, j int) bool {
		ti, tj := live[i].CreationTimestamp, live[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return ti.Before(&tj)
		}
		return live[i].Name < live[j].Name
	})
	var instance, target v1.ObjectName
	for i, a := range live {
		switch {
		case i == 0:
			instance = a.Spec.Node
		case a.Spec.Node == instance:
		case a.Spec.Purpose == v1.PurposeMigrationTarget && (target == "" || target == a.Spec.Node):
			target = a.Spec.Node
		default:
			rejected[a.Name] = true
		}
	}
	return rejected
}
