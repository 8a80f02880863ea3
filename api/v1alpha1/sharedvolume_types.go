package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// VolumeSource names what a new volume's content is copied from.
type VolumeSource struct {
	// volume is a SharedVolume in the same namespace to copy from. A Cinder snapshot is a
	// SharedVolume whose source is the snapshotted volume; a volume created from a snapshot
	// or cloned from a volume names that SharedVolume here. The copy is an independent LV
	// with its own lease (see docs/design.md §7 on why thick snapshots are not kept).
	// +required
	Volume ObjectName `json:"volume"`
}

// SharedVolumeSpec is the desired state of one LV in a shared VG.
// +kubebuilder:validation:XValidation:rule="has(self.lvName) == has(oldSelf.lvName) && (!has(self.lvName) || self.lvName == oldSelf.lvName)",message="spec.lvName is immutable: the LV keeps the name it was created with"
// +kubebuilder:validation:XValidation:rule="has(self.source) == has(oldSelf.source) && (!has(self.source) || self.source == oldSelf.source)",message="spec.source is immutable: it only says what a new volume is copied from; create a new SharedVolume to copy again"
// +kubebuilder:validation:XValidation:rule="has(self.adopt) == has(oldSelf.adopt) && (!has(self.adopt) || self.adopt == oldSelf.adopt)",message="spec.adopt is immutable: it only says that a new volume takes over an existing LV"
// +kubebuilder:validation:XValidation:rule="!has(self.adopt) || !self.adopt || (has(self.lvName) && !has(self.source))",message="spec.adopt takes over the existing LV named spec.lvName: set spec.lvName, and no spec.source"
type SharedVolumeSpec struct {
	// volumeGroup is the name of the VolumeGroup the volume should live in. Changing it
	// on an existing volume requests a migration (Cinder migrate/retype) to that VG;
	// status.volumeGroup says where the volume lives now.
	// +required
	VolumeGroup ObjectName `json:"volumeGroup"`

	// size of the volume. It may grow (an extend) but never shrink. It must be at least
	// 1Mi and a whole number of 512-byte sectors; LVM rounds it up to the VG's extent
	// size (4Mi by default), and status.allocatedSize shows the size actually allocated.
	// +required
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isInteger()",message="size must be a whole number of bytes below 8Ei, for example 10Gi"
	// +kubebuilder:validation:XValidation:rule="!quantity(string(self)).isInteger() || quantity(string(self)).compareTo(quantity('1Mi')) >= 0",message="size must be at least 1Mi, for example 1Gi"
	// +kubebuilder:validation:XValidation:rule="!quantity(string(self)).isInteger() || quantity(string(self)).asInteger() % 512 == 0",message="size must be a multiple of 512 bytes: use binary units such as 512Mi or 10Gi"
	// +kubebuilder:validation:XValidation:rule="!quantity(string(self)).isInteger() || !quantity(string(oldSelf)).isInteger() || quantity(string(self)).compareTo(quantity(string(oldSelf))) >= 0",message="size may only grow: to make a volume smaller, create a new smaller volume and copy the data"
	Size resource.Quantity `json:"size"`

	// lvName is the LV's name in the VG; it defaults to metadata.name. It is immutable.
	// +optional
	LVName LVMLVName `json:"lvName,omitempty"`

	// source, when set, creates the volume as a copy of another SharedVolume (clone,
	// snapshot, volume from snapshot). Immutable.
	// +optional
	Source *VolumeSource `json:"source,omitempty"`

	// pvs is the desired placement of the LV's extents (PV device paths of the VG). Empty
	// lets LVM choose. Changing it on an existing volume requests an online pvmove.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	PVs []DevicePath `json:"pvs,omitempty"`

	// adopt makes a new volume take over an existing LV named spec.lvName that no
	// SharedVolume owns (it carries no sharedlvm.io/uid= tag), instead of creating one: its
	// executor tags the LV as this volume's (Cinder's manage_existing). The LV's data is kept;
	// a spec.size above the LV's size extends it. Set it at creation; it is immutable.
	// +optional
	Adopt bool `json:"adopt,omitempty"`

	// deletionPolicy says what deleting the object does to the LV: Delete (the default)
	// wipes it per the VolumeGroup's wipePolicy and removes it; Retain removes only the
	// product's tags and leaves the LV and its data in the VG, owned by no one (Cinder's
	// unmanage). It may change until the object is deleted.
	// +optional
	DeletionPolicy DeletionPolicy `json:"deletionPolicy,omitempty"`

	// multiAttach allows more than one instance attachment at a time (Cinder's multiattach
	// volume type). Without it, a volume may be attached to one instance plus, during a
	// live migration, one migration-target.
	// +optional
	MultiAttach bool `json:"multiAttach,omitempty"`
}

// DeletionPolicy says what deleting a SharedVolume does to its LV.
// +kubebuilder:validation:Enum=Delete;Retain
type DeletionPolicy string

const (
	// DeletionPolicyDelete wipes and removes the LV.
	DeletionPolicyDelete DeletionPolicy = "Delete"
	// DeletionPolicyRetain keeps the LV and its data and removes only the product's tags.
	DeletionPolicyRetain DeletionPolicy = "Retain"
)

// VolumePhase is a coarse summary of a SharedVolume's state; conditions carry the detail.
// +kubebuilder:validation:Enum=Pending;Creating;Available;InUse;Moving;Migrating;Deleting;Failed
type VolumePhase string

const (
	VolumePending   VolumePhase = "Pending"
	VolumeCreating  VolumePhase = "Creating"
	VolumeAvailable VolumePhase = "Available"
	VolumeInUse     VolumePhase = "InUse"
	VolumeMoving    VolumePhase = "Moving"
	VolumeMigrating VolumePhase = "Migrating"
	VolumeDeleting  VolumePhase = "Deleting"
	VolumeFailed    VolumePhase = "Failed"
)

// LockStatus is the lock state of a volume across the cluster, as read back from sanlock
// on the holders (not as assumed from the desired state).
type LockStatus struct {
	// mode is None, Exclusive (one holder) or Shared (every holder shared).
	// +optional
	Mode LockMode `json:"mode,omitempty"`
	// holders are the nodes that hold a lease on the LV.
	// +optional
	// +listType=set
	Holders []string `json:"holders,omitempty"`
	// holderList is holders as plain text, comma-separated ("compute-0,compute-1"): what
	// kubectl's HOLDERS column prints.
	// +optional
	HolderList string `json:"holderList,omitempty"`
}

// OperationProgress reports a long-running operation (pvmove, migration copy, wipe).
type OperationProgress struct {
	// operation is what is running, for example pvmove, copy or wipe.
	Operation string `json:"operation"`
	// percent done, 0..100.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Percent int32 `json:"percent"`
	// node running the operation.
	// +optional
	Node string `json:"node,omitempty"`
	// startTime of the operation.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
}

// RetiredLV names an LV that held the volume before a migration and is being wiped.
type RetiredLV struct {
	// volumeGroup is the VolumeGroup the retired LV is in.
	VolumeGroup string `json:"volumeGroup"`
	// vgName is the LVM name of that VG.
	VGName string `json:"vgName"`
	// lvName is the retired LV's name.
	LVName string `json:"lvName"`
	// lvUUID is the retired LV's UUID; nothing removes an LV whose UUID and owner tag differ.
	LVUUID string `json:"lvUUID"`
}

// SharedVolumeStatus is the observed state of the volume.
type SharedVolumeStatus struct {
	// observedGeneration is the spec generation the status was computed from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// phase summarises the volume's state.
	// +optional
	Phase VolumePhase `json:"phase,omitempty"`
	// volumeGroup is the VolumeGroup the LV lives in now (differs from spec during a migration).
	// +optional
	VolumeGroup string `json:"volumeGroup,omitempty"`
	// vgName is the LVM name of that VG.
	// +optional
	VGName string `json:"vgName,omitempty"`
	// lvName is the LV's name.
	// +optional
	LVName string `json:"lvName,omitempty"`
	// lvUUID is the LV's UUID, which is also the name of its sanlock resource.
	// +optional
	LVUUID string `json:"lvUUID,omitempty"`
	// path is the device path on a node where the LV is active: /dev/<vg>/<lv>.
	// +optional
	Path string `json:"path,omitempty"`
	// allocatedSize is the LV's size after LVM's rounding to whole extents.
	// +optional
	AllocatedSize *resource.Quantity `json:"allocatedSize,omitempty"`
	// pvs is where the LV's extents are now.
	// +optional
	// +listType=atomic
	PVs []string `json:"pvs,omitempty"`
	// leaseOffset is the byte offset of the LV's sanlock lease in the VG's lvmlock LV (from
	// LVM's lock_args): the offset `sanlock client status` prints for the resource.
	// +optional
	LeaseOffset *int64 `json:"leaseOffset,omitempty"`
	// lock is the volume's lock mode and holders.
	// +optional
	Lock LockStatus `json:"lock,omitempty"`
	// executorNode is the node the operator assigned to run this volume's LVM work (create,
	// delete, extend) while no single node holds it exclusively.
	// +optional
	ExecutorNode string `json:"executorNode,omitempty"`
	// progress of a long operation, absent when none runs.
	// +optional
	Progress *OperationProgress `json:"progress,omitempty"`
	// retiredLV is the LV a finished migration left behind in the previous VG: recorded in
	// the same status write that switches the volume to its new LV, so that an executor
	// wipes and removes it even after a crash; absent once it is gone.
	// +optional
	RetiredLV *RetiredLV `json:"retiredLV,omitempty"`
	// conditions: Ready, Provisioned, DeletionBlocked, LockDrift.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// SharedVolume is a logical volume in a shared VG: a block device every node of the VG
// can open as /dev/VG/LV once it holds the right sanlock lock.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=sv;svol,categories=sharedlvm
// +kubebuilder:validation:XValidation:rule="!has(self.spec.source) || self.spec.source.volume != self.metadata.name",message="spec.source names this volume itself: a volume is copied from another SharedVolume"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.status) || !has(oldSelf.status.phase) || oldSelf.status.phase != 'Migrating' || self.spec.volumeGroup == oldSelf.spec.volumeGroup",message="spec.volumeGroup cannot change while a migration runs (status.phase Migrating): wait until it finishes, then request another"
// +kubebuilder:validation:XValidation:rule="has(self.spec.lvName) || (size(self.metadata.name) <= 63 && !self.metadata.name.startsWith('snapshot') && !self.metadata.name.startsWith('pvmove') && self.metadata.name != 'lvmlock')",message="metadata.name becomes the LV name when spec.lvName is unset, and LVM cannot use it (longer than 63 characters, 'lvmlock', or starting with 'snapshot'/'pvmove'): set spec.lvName"
// +kubebuilder:selectablefield:JSONPath=`.status.executorNode`
// +kubebuilder:printcolumn:name="VG",type=string,JSONPath=`.spec.volumeGroup`
// +kubebuilder:printcolumn:name="Size",type=string,JSONPath=`.spec.size`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Lock",type=string,JSONPath=`.status.lock.mode`
// +kubebuilder:printcolumn:name="Holders",type=string,JSONPath=`.status.lock.holderList`
// +kubebuilder:printcolumn:name="Progress",type=integer,JSONPath=`.status.progress.percent`,priority=1
// +kubebuilder:printcolumn:name="LV UUID",type=string,JSONPath=`.status.lvUUID`,priority=1
// +kubebuilder:printcolumn:name="Executor",type=string,JSONPath=`.status.executorNode`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type SharedVolume struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec SharedVolumeSpec `json:"spec"`
	// +optional
	Status SharedVolumeStatus `json:"status,omitempty"`
}

// LVName returns the LV name the volume uses: spec.lvName or, unset, metadata.name.
func (v *SharedVolume) LVName() string {
	if v.Spec.LVName != "" {
		return string(v.Spec.LVName)
	}
	return v.Name
}

// SharedVolumeList is a list of SharedVolumes.
// +kubebuilder:object:root=true
type SharedVolumeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SharedVolume `json:"items"`
}

func init() {
	SchemeBuilder.Register(&SharedVolume{}, &SharedVolumeList{})
}

// NeedsMove reports whether the LV has extents on PVs outside spec.pvs (a pvmove request).
func NeedsMove(v *SharedVolume) bool {
	if len(v.Spec.PVs) == 0 || len(v.Status.PVs) == 0 || NeedsMigration(v) {
		return false
	}
	want := map[string]bool{}
	for _, p := range v.Spec.PVs {
		want[string(p)] = true
	}
	for _, p := range v.Status.PVs {
		if !want[p] {
			return true
		}
	}
	return false
}

// NeedsMigration says the volume exists in a VolumeGroup other than the one its spec names:
// a migration (Cinder migrate/retype) to spec.volumeGroup is requested. spec.pvs then apply
// to the target VG.
func NeedsMigration(v *SharedVolume) bool {
	return v.Status.LVUUID != "" && v.Status.VolumeGroup != "" && string(v.Spec.VolumeGroup) != v.Status.VolumeGroup
}

// TagCopied marks an LV whose content copy (clone or migration) completed: after a crash the
// copy is not redone onto it, and a migration's source is only wiped once its target has it.
const TagCopied = "sharedlvm.io/copied"

// TagSnapshotFor + the SharedVolume UID marks a temporary snapshot taken to copy a volume
// while it stays attached; it is dropped when the copy ends.
const TagSnapshotFor = "sharedlvm.io/snapshot-for="
