package v1alpha1

import "time"

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

// Node markers written by the agent once it has restored this boot's locks (DESIGN.md §5,
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

// DeadNodes returns the nodes of a VG whose locks sanlock has released because they died:
// nodes whose own reports went stale and whose host_id a node with a fresh report sees as
// DEAD. Only then may their locks be treated as gone; a node that merely stopped reporting
// may still hold its leases.
func (vg *VolumeGroup) DeadNodes(now time.Time) map[string]bool {
	dead := map[int32]bool{}
	for i := range vg.Status.Nodes {
		n := &vg.Status.Nodes[i]
		if n.Ready(now) {
			for _, id := range n.DeadHosts {
				dead[id] = true
			}
		}
	}
	out := map[string]bool{}
	for i := range vg.Status.Nodes {
		n := &vg.Status.Nodes[i]
		if !n.Fresh(now) && n.HostID > 0 && dead[n.HostID] {
			out[n.Node] = true
		}
	}
	return out
}
