package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// WipePolicy says how the LV of a deleted SharedVolume is cleared before it is removed.
// +kubebuilder:validation:Enum=Zero;None
type WipePolicy string

const (
	// WipeZero overwrites the whole LV with zeros before lvremove (Cinder's
	// volume_clear = zero): a later volume never exposes a deleted volume's data.
	WipeZero WipePolicy = "Zero"
	// WipeNone removes the LV without clearing it. Only for arrays that wipe or
	// thin-provision on their own: deleted data may reappear in a new volume otherwise.
	WipeNone WipePolicy = "None"
)

// VolumeGroupSpec is the desired state of one shared VG (`vgcreate --shared`, lock type sanlock).
// +kubebuilder:validation:XValidation:rule="self.vgName == oldSelf.vgName",message="spec.vgName is immutable: create a new VolumeGroup to use another VG"
type VolumeGroupSpec struct {
	// vgName is the LVM name of the shared VG, as seen on every node.
	// +required
	VGName LVMVGName `json:"vgName"`

	// pvs are the block devices (PVs) of the VG, as absolute paths under /dev that name the
	// same LUN on every node (for example /dev/disk/by-id/wwn-0x...).
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	PVs []DevicePath `json:"pvs"`

	// nodeSelector selects the nodes that see the LUN and run the VG's lockspace.
	// Empty selects every node that runs an agent.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// volumeTypes are the OpenStack volume types this VG serves (informational for the
	// cloud manager's scheduler; a retype between two types of one VG changes nothing on disk).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=255
	VolumeTypes []string `json:"volumeTypes,omitempty"`

	// wipePolicy says how a deleted volume's LV is cleared before removal. Zero (the
	// default) writes zeros over the whole LV; None skips it and is only safe where the
	// array wipes released space itself.
	// +optional
	// +kubebuilder:default=Zero
	WipePolicy WipePolicy `json:"wipePolicy,omitempty"`
}

// PhysicalVolumeStatus is what LVM reports about one PV of the VG.
type PhysicalVolumeStatus struct {
	// name is the device path LVM reports for the PV.
	Name string `json:"name"`
	// uuid is the PV UUID.
	// +optional
	UUID string `json:"uuid,omitempty"`
	// size of the PV.
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`
	// free space on the PV.
	// +optional
	Free *resource.Quantity `json:"free,omitempty"`
	// used space on the PV (size - free).
	// +optional
	Used *resource.Quantity `json:"used,omitempty"`
	// missing is true when LVM reports the PV as missing.
	// +optional
	Missing bool `json:"missing,omitempty"`
}

// NodeLockspaceStatus is one node's view of the VG's lockspace. Each agent owns its own
// entry (server-side apply, field manager per node), so agents never overwrite each other.
type NodeLockspaceStatus struct {
	// node is the Kubernetes Node name.
	Node string `json:"node"`
	// hostID is the sanlock host_id the node uses in this lockspace (1..2000).
	// +optional
	HostID int32 `json:"hostID,omitempty"`
	// vgFound is true when the node sees the VG on its PVs.
	VGFound bool `json:"vgFound"`
	// lockspaceStarted is true when `vgchange --lockstart` has completed on the node.
	LockspaceStarted bool `json:"lockspaceStarted"`
	// lastReport is when the agent last reported this entry.
	// +optional
	LastReport *metav1.Time `json:"lastReport,omitempty"`
	// reportIntervalSeconds is how often the agent promises to report; an entry older than
	// three intervals (at least 10 s) is stale: the node or its agent is down.
	// +optional
	ReportIntervalSeconds int32 `json:"reportIntervalSeconds,omitempty"`
	// deadHosts are the sanlock host_ids this node's sanlock declares DEAD in the lockspace:
	// their leases are released and may be taken. (FAIL is not enough: such a host may
	// still hold its leases until its watchdog fires.)
	// +optional
	// +listType=set
	DeadHosts []int32 `json:"deadHosts,omitempty"`
	// failedHosts are the sanlock host_ids this node's sanlock sees in FAIL in the lockspace
	// (their delta lease stopped being renewed, they may still hold leases), each with when
	// this node's agent first saw it so. A failed host turns DEAD, or LIVE again.
	// +optional
	// +listType=map
	// +listMapKey=hostID
	// +kubebuilder:validation:MaxItems=2000
	FailedHosts []FailedHost `json:"failedHosts,omitempty"`
	// reason is why the lockspace is not started (or what went wrong last), in CamelCase;
	// message says it for humans.
	// +optional
	Reason LockspaceReason `json:"reason,omitempty"`
	// message explains a lockspace that is not started.
	// +optional
	Message string `json:"message,omitempty"`
}

// FailedHost is a host_id in sanlock's FAIL state, as one node's sanlock sees it.
type FailedHost struct {
	// hostID is the failed host's sanlock host_id.
	HostID int32 `json:"hostID"`
	// since is when the reporting agent first saw the host in FAIL.
	Since metav1.Time `json:"since"`
}

// LockspaceReason says, in a node's lockspace entry, why the lockspace is not started or
// what the node's last VG operation ran into.
// +kubebuilder:validation:Enum=Started;Joining;VGNotFound;VGCreateFailed;WaitingForVGCreateClaim;LockstartFailed;HostIDConflict;SanlockNotAnswering;HostIDUnknown;WaitingForHostID;ReportFailed;LockFailed;VolumeGroupConflict;StorageLost
type LockspaceReason string

const (
	LockspaceStarted        LockspaceReason = "Started"
	LockspaceJoining        LockspaceReason = "Joining"
	LockspaceVGNotFound     LockspaceReason = "VGNotFound"
	LockspaceVGCreateFailed LockspaceReason = "VGCreateFailed"
	// LockspaceWaitingForVGCreateClaim: this node was chosen to create the VG, but another
	// node holds the create claim (it may be running vgcreate): only the holder creates.
	LockspaceWaitingForVGCreateClaim LockspaceReason = "WaitingForVGCreateClaim"
	LockspaceLockstartFailed         LockspaceReason = "LockstartFailed"
	LockspaceHostIDConflict          LockspaceReason = "HostIDConflict"
	LockspaceSanlockNotAnswering     LockspaceReason = "SanlockNotAnswering"
	LockspaceHostIDUnknown           LockspaceReason = "HostIDUnknown"
	// LockspaceWaitingForHostID: the operator has not allocated this node a host_id yet
	// (or the node holds several claims): no lockspace starts without exactly one.
	LockspaceWaitingForHostID LockspaceReason = "WaitingForHostID"
	LockspaceReportFailed     LockspaceReason = "ReportFailed"
	// LockspaceLockFailed: lvmlockd refuses the VG's lock on this node although sanlock may
	// hold its lockspace (lvmlockd restarted without adopting it, or lost the VG lock): the
	// node takes no new work in the VG and starts the lockspace again.
	LockspaceLockFailed LockspaceReason = "LockFailed"
	// LockspaceVolumeGroupConflict: another, older VolumeGroup claims the same VG name or
	// one of the same PVs; the agent serves only the older one.
	LockspaceVolumeGroupConflict LockspaceReason = "VolumeGroupConflict"
	// LockspaceStorageLost: the node cannot read the VG's PVs (its path to the storage is
	// lost): it takes no new work in the VG, and sanlock, unable to renew the node's lease,
	// has the VG's LVs taken offline here (lvmlockctl_kill_command) or the node reset by
	// its watchdog before other nodes may take them. The node rejoins when the path returns.
	LockspaceStorageLost LockspaceReason = "StorageLost"
)

// VolumeGroupStatus is the observed state of the shared VG.
type VolumeGroupStatus struct {
	// observedGeneration is the spec generation the status was computed from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// vgUUID is the LVM UUID of the VG.
	// +optional
	VGUUID string `json:"vgUUID,omitempty"`
	// size is the VG's total size.
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`
	// free is the VG's unallocated space.
	// +optional
	Free *resource.Quantity `json:"free,omitempty"`
	// extentSize is the VG's physical extent size; LV sizes are rounded up to it.
	// +optional
	ExtentSize *resource.Quantity `json:"extentSize,omitempty"`
	// pvCount is the number of PVs in the VG.
	// +optional
	PVCount int32 `json:"pvCount,omitempty"`
	// pvs lists each PV's size and usage.
	// +optional
	// +listType=map
	// +listMapKey=name
	PVs []PhysicalVolumeStatus `json:"pvs,omitempty"`
	// lvCount is the number of (visible) LVs in the VG.
	// +optional
	LVCount int32 `json:"lvCount,omitempty"`
	// nodes holds one lockspace entry per selected node, each written by that node's agent.
	// +optional
	// +listType=map
	// +listMapKey=node
	Nodes []NodeLockspaceStatus `json:"nodes,omitempty"`
	// createNode is the node the operator chose to create the VG (`vgcreate --shared`) when
	// no selected node sees it yet.
	// +optional
	CreateNode string `json:"createNode,omitempty"`
	// nodesReady is "started/selected" nodes, for display.
	// +optional
	NodesReady string `json:"nodesReady,omitempty"`
	// conditions: Ready, LockspaceReady, HostIDConflict.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// VolumeGroup is a shared LVM volume group on SAN storage, with a sanlock lockspace on
// every node that sees it.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=svg,categories=sharedlvm
// +kubebuilder:printcolumn:name="VG",type=string,JSONPath=`.spec.vgName`
// +kubebuilder:printcolumn:name="Size",type=string,JSONPath=`.status.size`
// +kubebuilder:printcolumn:name="Free",type=string,JSONPath=`.status.free`
// +kubebuilder:printcolumn:name="PVs",type=integer,JSONPath=`.status.pvCount`
// +kubebuilder:printcolumn:name="Nodes Ready",type=string,JSONPath=`.status.nodesReady`
// +kubebuilder:printcolumn:name="LVs",type=integer,JSONPath=`.status.lvCount`,priority=1
// +kubebuilder:printcolumn:name="Wipe",type=string,JSONPath=`.spec.wipePolicy`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VolumeGroup struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec VolumeGroupSpec `json:"spec"`
	// +optional
	Status VolumeGroupStatus `json:"status,omitempty"`
}

// VolumeGroupList is a list of VolumeGroups.
// +kubebuilder:object:root=true
type VolumeGroupList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VolumeGroup `json:"items"`
}

func init() {
	SchemeBuilder.Register(&VolumeGroup{}, &VolumeGroupList{})
}

// ClaimConflict finds the VolumeGroup that claims the same LVM VG name, or one of the same
// PVs, as vg and was created before it (by creation time, then name): the older one is
// served and vg is not, so a VG's capacity is never counted twice and no two VolumeGroups
// ever drive one LUN. It returns the older object's name and what it claims ("" when none).
// The chart's admission policy refuses such objects at creation; this is the backstop for
// objects created at the same instant, or where the policy is not installed.
func (vg *VolumeGroup) ClaimConflict(all []VolumeGroup) (other, what string) {
	older := func(o *VolumeGroup) bool {
		a, b := o.CreationTimestamp, vg.CreationTimestamp
		if !a.Equal(&b) {
			return a.Before(&b)
		}
		return o.Name < vg.Name
	}
	for i := range all {
		o := &all[i]
		if o.Name == vg.Name || !older(o) {
			continue
		}
		if o.Spec.VGName == vg.Spec.VGName {
			return o.Name, "VG name " + string(vg.Spec.VGName)
		}
		for _, p := range vg.Spec.PVs {
			for _, q := range o.Spec.PVs {
				if p == q {
					return o.Name, "PV " + string(p)
				}
			}
		}
	}
	return "", ""
}
