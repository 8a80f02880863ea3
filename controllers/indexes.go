// Package controllers holds the operator's reconcilers: the central, leader-elected brain
// that decides desired state (finalizers, executor nodes, lock modes and their order) and
// aggregates what the agents report. It never runs LVM or sanlock commands itself.
package controllers

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

// Leader election of operator replicas.
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete

// Field indexes, so that no reconciler scans every object of a kind (O(n) per event).
const (
	// IndexAttachmentVolume indexes VolumeAttachments by spec.volume.
	IndexAttachmentVolume = "spec.volume"
	// IndexAttachmentNode indexes VolumeAttachments by spec.node.
	IndexAttachmentNode = "spec.node"
	// IndexVolumeGroup indexes SharedVolumes by every VolumeGroup they involve: spec's,
	// status's (they differ during a migration) and a retired LV's.
	IndexVolumeGroup = "spec.volumeGroup"
	// IndexSource indexes SharedVolumes by spec.source.volume (the clones of a volume).
	IndexSource = "spec.source.volume"
)

// SetupIndexes registers the field indexes used by the operator and the agents.
func SetupIndexes(ctx context.Context, mgr manager.Manager) error {
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &v1.VolumeAttachment{}, IndexAttachmentVolume, func(o client.Object) []string {
		return []string{string(o.(*v1.VolumeAttachment).Spec.Volume)}
	}); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &v1.VolumeAttachment{}, IndexAttachmentNode, func(o client.Object) []string {
		return []string{string(o.(*v1.VolumeAttachment).Spec.Node)}
	}); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &v1.SharedVolume{}, IndexSource, func(o client.Object) []string {
		if src := o.(*v1.SharedVolume).Spec.Source; src != nil {
			return []string{string(src.Volume)}
		}
		return nil
	}); err != nil {
		return err
	}
	return idx.IndexField(ctx, &v1.SharedVolume{}, IndexVolumeGroup, func(o client.Object) []string {
		return involvedVGs(o.(*v1.SharedVolume))
	})
}

// involvedVGs are the VolumeGroups a volume's LVM work touches: where it should live, where
// it lives, and where a migration left its old LV.
func involvedVGs(v *v1.SharedVolume) []string {
	out := []string{string(v.Spec.VolumeGroup)}
	add := func(n string) {
		for _, o := range out {
			if o == n {
				return
			}
		}
		out = append(out, n)
	}
	if v.Status.VolumeGroup != "" {
		add(v.Status.VolumeGroup)
	}
	if v.Status.RetiredLV != nil {
		add(v.Status.RetiredLV.VolumeGroup)
	}
	return out
}

// attachmentsOf lists the attachments of one volume through the index.
func attachmentsOf(ctx context.Context, c client.Reader, namespace, volume string) ([]v1.VolumeAttachment, error) {
	var list v1.VolumeAttachmentList
	if err := c.List(ctx, &list, client.InNamespace(namespace), client.MatchingFields{IndexAttachmentVolume: volume}); err != nil {
		return nil, err
	}
	return list.Items, nil
}
