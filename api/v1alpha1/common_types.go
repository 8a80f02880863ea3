package v1alpha1

import (
	"slices"
	"sort"
	"time"
)

// Condition types shared by the three resources. Every condition carries a Reason in
// CamelCase and a Message a human can act on.
const (
	// ConditionReady summarises whether the object does what its spec asks.
	ConditionReady = "Ready"
	// ConditionProvisioned: the LV of a SharedVolume exists in its VG.
	ConditionProvisioned = "Provisioned"
	// ReasonLVDeleted (Provisioned false): the executing agent removed every LV of the
	// volume; the operator may drop the finalizer.
	ReasonLVDeleted = "Deleted"
	// ConditionLockApplied: the lock an attachment's node holds matches the desired mode.
	ConditionLockApplied = "LockApplied"
	// ConditionDeletionBlocked: a delete waits for something (for example attachments).
	ConditionDeletionBlocked = "DeletionBlocked"
	// ConditionLockspaceReady: a VolumeGroup's lockspace is started on every selected node.
	ConditionLockspaceReady = "LockspaceReady"
	// ConditionHostIDConflict: two nodes report one sanlock host_id for a VG (data-loss hazard).
	ConditionHostIDConflict = "HostIDConflict"
	// ConditionLockDrift: a lock is held that no attachment asks for, or the reverse.
	ConditionLockDrift = "LockDrift"
)

// Finalizer held by the operator on SharedVolumes and VolumeAttachments until the LVM
// side (LV, locks) has been cleaned up.
const Finalizer = "sharedlvm.io/finalizer"

// LVM tags written on every LV the product creates, so that an LV can be tied back to
// the custom resource that owns it (and nothing deletes an LV it does not own).
const (
	// TagOwnerUIDPrefix + the SharedVolume UID.
	TagOwnerUIDPrefix = "sharedlvm.io/uid="
	// TagManaged marks an LV as created by sharedlvm-operator.
	TagManaged = "sharedlvm.io/managed"
)

// LockMode is the sanlock lease mode a node holds (or should hold) on an LV.
// +kubebuilder:validation:Enum=None;Exclusive;Shared
type LockMode string

const (
	// LockNone: the LV is inactive on the node and no lease is held.
	LockNone LockMode = "None"
	// LockExclusive: `lvchange -aey`; only one node in the cluster may hold it.
	LockExclusive LockMode = "Exclusive"
	// LockShared: `lvchange -asy`; every holder of the LV holds it shared.
	LockShared LockMode = "Shared"
)

// OrNone is the mode with the zero value read as LockNone: the one place where an unset
// mode (a new object, a field not yet written) becomes "no lock".
func (m LockMode) OrNone() LockMode {
	if m == "" {
		return LockNone
	}
	return m
}

// ReportStaleAfter is how old an agent's lockspace entry may be before the operator stops
// trusting it (no executor work, no attachment planning for that node) when the entry does
// not say how often its agent reports. Agents report every 30 s by default.
const ReportStaleAfter = 2 * time.Minute

// StaleAfter is the age at which this entry is stale: three of its agent's report intervals
// (at least 10 s), or ReportStaleAfter for an entry that does not state its interval.
func (n *NodeLockspaceStatus) StaleAfter() time.Duration {
	if n.ReportIntervalSeconds <= 0 {
		return ReportStaleAfter
	}
	return StaleAfterInterval(time.Duration(n.ReportIntervalSeconds) * time.Second)
}

// StaleAfterInterval is how long a report (or an agent heartbeat) made every interval
// stays fresh: three intervals, at least 10 s.
func StaleAfterInterval(interval time.Duration) time.Duration {
	return max(3*interval, 10*time.Second)
}

// Fresh reports whether a node's entry was reported recently enough to act on.
func (n *NodeLockspaceStatus) Fresh(now time.Time) bool {
	return n.LastReport != nil && now.Sub(n.LastReport.Time) < n.StaleAfter()
}

// Ready reports whether the node can run LVM work on the VG now.
func (n *NodeLockspaceStatus) Ready(now time.Time) bool {
	return n.LockspaceStarted && n.Fresh(now)
}

// OwnerTag is the LVM tag that ties an LV to the SharedVolume with this UID.
func OwnerTag(uid string) string { return TagOwnerUIDPrefix + uid }

// Node markers written by the agent once it has restored this boot's locks (docs/design.md §6,
// node reboot): workloads such as nova-compute wait for them (`sharedlvm wait-locks`).
const (
	// LabelLocksRestored is "true" once the node's locks are restored for the current boot,
	// "false" while the agent restores them.
	LabelLocksRestored = "sharedlvm.io/locks-restored"
	// AnnotationRestoredBootID is the boot ID (/proc/sys/kernel/random/boot_id) the restore
	// was done for; it must equal the node's current boot ID to count.
	AnnotationRestoredBootID = "sharedlvm.io/locks-restored-boot-id"
	// TaintLocksNotRestored keeps VM workloads off a node until its locks are restored; set
	// it at node registration (kubelet --register-with-taints) and the agent removes it.
	TaintLocksNotRestored = "sharedlvm.io/locks-not-restored"
	// NodeConditionLocksRestored is the Node condition type the agent maintains.
	NodeConditionLocksRestored = "SharedLVMLocksRestored"
)

// +kubebuilder:object:generate=false

// HostVerdict is what the other nodes' sanlock says about one node's host_id in a VG's
// lockspace, from the fresh, started entries of the VolumeGroup.
type HostVerdict struct {
	// Node and HostID name the judged node and the host_id it uses in the lockspace.
	Node   string
	HostID int32
	// Dead: a node whose lockspace is started and whose report is fresh sees the host_id
	// DEAD, so sanlock has released (and grants to others) every lease the node held in
	// the VG, whatever the node's own agent still says.
	Dead bool
	// Failed: a live node sees the host_id FAIL (renewals stopped; its leases still hold
	// until sanlock declares it DEAD). Since is the earliest such sighting, By who saw it.
	Failed bool
	Since  time.Time
	// By is the reporting node of the verdict (the first by name).
	By string
}

// HostVerdicts judges every node of the VG whose entry names a host_id. Only a node that
// is Ready (lockspace started, report fresh) can judge another: a stale report may be from
// before the host came back. A node never judges itself.
func (vg *VolumeGroup) HostVerdicts(now time.Time) map[string]HostVerdict {
	reporters := make([]*NodeLockspaceStatus, 0, len(vg.Status.Nodes))
	for i := range vg.Status.Nodes {
		if n := &vg.Status.Nodes[i]; n.Ready(now) {
			reporters = append(reporters, n)
		}
	}
	sort.Slice(reporters, func(i, j int) bool { return reporters[i].Node < reporters[j].Node })
	out := map[string]HostVerdict{}
	for i := range vg.Status.Nodes {
		n := &vg.Status.Nodes[i]
		if n.HostID <= 0 {
			continue
		}
		v := HostVerdict{Node: n.Node, HostID: n.HostID}
		for _, r := range reporters {
			if r.Node == n.Node || (r.HostID == n.HostID && r.HostID > 0) {
				continue // a node (or its host_id twin) cannot judge itself
			}
			if slices.Contains(r.DeadHosts, n.HostID) && !v.Dead {
				v.Dead, v.By = true, r.Node
			}
			for _, f := range r.FailedHosts {
				if f.HostID == n.HostID && (!v.Failed || f.Since.Time.Before(v.Since)) {
					v.Failed, v.Since = true, f.Since.Time
					if !v.Dead {
						v.By = r.Node
					}
				}
			}
		}
		if v.Dead || v.Failed {
			out[n.Node] = v
		}
	}
	return out
}

// DeadNodes returns the nodes of a VG whose locks sanlock has released because it declared
// their host_id DEAD (HostVerdicts): their locks count as released even if their agent still
// runs and reports (a node whose storage path, sanlock or lvmlockd died keeps a live agent).
// FAIL is not enough: such a host may still write until its watchdog fires.
func (vg *VolumeGroup) DeadNodes(now time.Time) map[string]bool {
	out := map[string]bool{}
	for name, v := range vg.HostVerdicts(now) {
		if v.Dead {
			out[name] = true
		}
	}
	return out
}
