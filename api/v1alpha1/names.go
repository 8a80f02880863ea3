package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// LVMVGName is a VG name LVM accepts: letters, digits and + _ . -, not starting with a
// hyphen, not "." or "..", at most 63 characters (the VG name is part of every device-mapper
// name, which is limited to 127 bytes).
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:XValidation:rule="self.matches('^[a-zA-Z0-9+_.-]+$')",message="VG names may only contain letters, digits and + _ . -: rename it with those characters only"
// +kubebuilder:validation:XValidation:rule="!self.startsWith('-')",message="VG names must not start with '-': LVM would read it as an option; choose a name starting with a letter or digit"
// +kubebuilder:validation:XValidation:rule="self != '.' && self != '..'",message="'.' and '..' are not valid VG names: choose a real name such as vg-ssd"
type LVMVGName string

// LVMLVName is an LV name LVM accepts: the VG rules plus LVM's reserved names ("snapshot*",
// "pvmove*", internal suffixes such as "_tmeta") and "lvmlock", the hidden LV of a shared VG.
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:XValidation:rule="self.matches('^[a-zA-Z0-9+_.-]+$')",message="LV names may only contain letters, digits and + _ . -: rename it with those characters only"
// +kubebuilder:validation:XValidation:rule="!self.startsWith('-')",message="LV names must not start with '-': LVM would read it as an option; choose a name starting with a letter or digit"
// +kubebuilder:validation:XValidation:rule="self != '.' && self != '..'",message="'.' and '..' are not valid LV names: choose a real name such as volume-<id>"
// +kubebuilder:validation:XValidation:rule="!self.startsWith('snapshot') && !self.startsWith('pvmove')",message="LV names starting with 'snapshot' or 'pvmove' are reserved by LVM: use a prefix such as volume-"
// +kubebuilder:validation:XValidation:rule="self != 'lvmlock'",message="'lvmlock' is the hidden lock LV of every shared VG: choose another LV name"
// +kubebuilder:validation:XValidation:rule="!['_cdata','_cmeta','_corig','_iorig','_mimage','_mlog','_pmspare','_rimage','_rmeta','_tdata','_tmeta','_vdata','_vorigin','_wcorig'].exists(s, self.contains(s))",message="LV names must not contain LVM's internal suffixes (_cdata, _cmeta, _corig, _iorig, _mimage, _mlog, _pmspare, _rimage, _rmeta, _tdata, _tmeta, _vdata, _vorigin, _wcorig): rename it without them"
type LVMLVName string

// DevicePath is an absolute path to a block device under /dev.
// +kubebuilder:validation:MaxLength=4096
// +kubebuilder:validation:XValidation:rule="self.startsWith('/dev/') && size(self) > 5",message="a PV must be an absolute device path under /dev, for example /dev/disk/by-id/wwn-0x600..."
// +kubebuilder:validation:XValidation:rule="!self.matches('(^|/)[.][.]?(/|$)') && !self.contains('//')",message="a PV path must be normalised (no '.', '..' or '//' components): write the device's canonical path"
type DevicePath string

// ObjectName is a Kubernetes object name (DNS subdomain).
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=253
// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="must be the name of a Kubernetes object: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
type ObjectName string

// VGCreateClaimPrefix starts the name of the coordination Lease that makes one node, and
// only one, the creator of a VolumeGroup's VG (the agents' create claim, in the heartbeat
// namespace): two pvcreate/vgcreate racing on one LUN is how shared storage gets corrupted.
const VGCreateClaimPrefix = "sharedlvm-vgcreate-"

// VGCreateClaimName is the create claim's Lease name for a VolumeGroup (a digest when the
// name would be too long).
func VGCreateClaimName(vg string) string {
	if name := VGCreateClaimPrefix + vg; len(name) <= 253 {
		return name
	}
	sum := sha256.Sum256([]byte(vg))
	return VGCreateClaimPrefix + hex.EncodeToString(sum[:16])
}

// Host ID claims (docs/design.md §7): sanlock's host_id must be unique among the hosts of a
// lockspace, so the operator allocates each node one (1..MaxHostID) as a coordination Lease
// named HostIDClaimName(id) in the heartbeat namespace, holderIdentity the node. Creating a
// Lease of a given name is atomic, so two nodes can never hold one id; the claim outlives
// reboots and agent restarts and is released only once the node is gone.
const (
	// HostIDClaimPrefix starts every host_id claim's name.
	HostIDClaimPrefix = "sharedlvm-host-id-"
	// LabelHostIDClaim marks the claims (value "true") so that they can be listed.
	LabelHostIDClaim = "sharedlvm.io/host-id-claim"
	// AnnotationLocalHostID, on an agent's heartbeat Lease, is the host_id set in the node's
	// lvmlocal.conf ("none" when it sets none): the id the node keeps if it is free. The
	// operator allocates nothing to a node before it says.
	AnnotationLocalHostID = "sharedlvm.io/local-host-id"
	// LocalHostIDNone is AnnotationLocalHostID's value for a node without local/host_id.
	LocalHostIDNone = "none"
	// MaxHostID is sanlock's largest host_id (lvmlockd's lockspaces have 2000 host slots).
	MaxHostID = 2000
)

// HostIDClaimName is the name of the claim of one host_id.
func HostIDClaimName(id int32) string { return fmt.Sprintf("%s%d", HostIDClaimPrefix, id) }

// HostIDFromClaimName parses a claim's name; ok is false for any other name.
func HostIDFromClaimName(name string) (int32, bool) {
	s, found := strings.CutPrefix(name, HostIDClaimPrefix)
	if !found {
		return 0, false
	}
	id, err := strconv.Atoi(s)
	if err != nil || id < 1 || id > MaxHostID || strconv.Itoa(id) != s {
		return 0, false
	}
	return int32(id), true
}
