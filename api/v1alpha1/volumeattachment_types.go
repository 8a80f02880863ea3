package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AttachmentPurpose says why a node uses a volume. Every purpose takes part in the lock
// rule the same way; the purpose tells admins and the operator what to expect.
// +kubebuilder:validation:Enum=instance;copy;migration-target
type AttachmentPurpose string

const (
	// PurposeInstance: a VM on the node uses the volume.
	PurposeInstance AttachmentPurpose = "instance"
	// PurposeCopy: the node copies data to or from the volume (image<->volume, retype) and
	// detaches afterwards, releasing its lock.
	PurposeCopy AttachmentPurpose = "copy"
	// PurposeMigrationTarget: the destination of a live migration; both nodes hold the
	// volume shared until the source attachment goes.
	PurposeMigrationTarget AttachmentPurpose = "migration-target"
)

// AttachmentPhase summarises an attachment's state.
// +kubebuilder:validation:Enum=Pending;Attaching;Attached;Detaching;Failed
type AttachmentPhase string

const (
	AttachmentPending   AttachmentPhase = "Pending"
	AttachmentAttaching AttachmentPhase = "Attaching"
	AttachmentAttached  AttachmentPhase = "Attached"
	AttachmentDetaching AttachmentPhase = "Detaching"
	AttachmentFailed    AttachmentPhase = "Failed"
)

// VolumeAttachmentSpec says that a node uses a volume.
type VolumeAttachmentSpec struct {
	// volume is the SharedVolume (same namespace) to attach. Immutable.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.volume is immutable: delete this attachment and create a new one for the other volume"
	Volume ObjectName `json:"volume"`

	// node is the Kubernetes Node that uses the volume. Immutable.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.node is immutable: to move a volume, create an attachment on the new node (live migration) or delete this one first (cold migration)"
	Node ObjectName `json:"node"`

	// purpose is instance (a VM uses it), copy (short-lived data copy) or migration-target
	// (the destination of a live migration).
	// +optional
	// +kubebuilder:default=instance
	Purpose AttachmentPurpose `json:"purpose,omitempty"`

	// readOnly asks for read-only use on the node. The lock mode still follows the lock rule.
	// +optional
	ReadOnly bool `json:"readOnly,omitempty"`
}

// VolumeAttachmentStatus is written by the operator (desired lock) and by the node's
// agent (applied lock, device path).
type VolumeAttachmentStatus struct {
	// observedGeneration is the spec generation the status was computed from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// phase summarises the attachment's state.
	// +optional
	Phase AttachmentPhase `json:"phase,omitempty"`
	// desiredLock is the lock mode the operator wants the node to hold now.
	// +optional
	DesiredLock LockMode `json:"desiredLock,omitempty"`
	// lv is the LV the desired lock is on, written by the operator with desiredLock from
	// the volume's status, so that the node's agent needs nothing but its attachments.
	// +optional
	LV *LVRef `json:"lv,omitempty"`
	// appliedLock is the lock mode the node holds: the mode lvmlockd granted the node's
	// agent, checked against `sanlock client status` right after and on every resync.
	// +optional
	AppliedLock LockMode `json:"appliedLock,omitempty"`
	// devicePath is the path to open on the node once attached, /dev/<vg>/<lv>.
	// +optional
	DevicePath string `json:"devicePath,omitempty"`
	// lvUUID of the attached LV (its sanlock resource name).
	// +optional
	LVUUID string `json:"lvUUID,omitempty"`
	// conditions: Ready, LockApplied.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// LVRef identifies an LV: VG and LV names, and the LV UUID (its sanlock resource name).
type LVRef struct {
	VGName string `json:"vgName"`
	LVName string `json:"lvName"`
	LVUUID string `json:"lvUUID"`
}

// VolumeAttachment says that a node uses a SharedVolume; from all attachments of a
// volume the operator derives which lock each node holds (docs/design.md §2).
// kubectl: `kubectl get volumeattachments.sharedlvm.io` or `kubectl get sva`
// (plain "volumeattachments" resolves to storage.k8s.io).
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=sva,categories=sharedlvm
// +kubebuilder:selectablefield:JSONPath=`.spec.node`
// +kubebuilder:selectablefield:JSONPath=`.spec.volume`
// +kubebuilder:printcolumn:name="Volume",type=string,JSONPath=`.spec.volume`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.node`
// +kubebuilder:printcolumn:name="Purpose",type=string,JSONPath=`.spec.purpose`,priority=1
// +kubebuilder:printcolumn:name="Lock",type=string,JSONPath=`.status.appliedLock`
// +kubebuilder:printcolumn:name="Desired",type=string,JSONPath=`.status.desiredLock`,priority=1
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Device",type=string,JSONPath=`.status.devicePath`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VolumeAttachment struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec VolumeAttachmentSpec `json:"spec"`
	// +optional
	Status VolumeAttachmentStatus `json:"status,omitempty"`
}

// VolumeAttachmentList is a list of VolumeAttachments.
// +kubebuilder:object:root=true
type VolumeAttachmentList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VolumeAttachment `json:"items"`
}

func init() {
	SchemeBuilder.Register(&VolumeAttachment{}, &VolumeAttachmentList{})
}
