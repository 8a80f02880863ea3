// Package v1alpha1 contains the sharedlvm.io/v1alpha1 API: VolumeGroup, SharedVolume and
// VolumeAttachment, the three resources through which shared-LVM storage is managed.
// +kubebuilder:object:generate=true
// +groupName=sharedlvm.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "sharedlvm.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
