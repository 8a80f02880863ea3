// Package controllers holds the operator's reconcilers: the central, leader-elected brain
// that decides desired state (finalizers, executor nodes, lock modes and their order) and
// aggregates what the agents report. It never runs LVM or sanlock commands itself.
package controllers

import (
	"context"
	"fmt"

	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

// Leader election of operator replicas.
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete

// Field indexes, so that no reconciler scans every object of a kind (O(n) per event).
const (
	// IndexAttachmentVolume indexes VolumeAttachments by spec.volume, within their namespace
	// (a volume is named in its attachment's namespace).
	IndexAttachmentVolume = "spec.volume"
	// IndexAttachmentNode indexes VolumeAttachments by spec.node, across namespaces.
	IndexAttachmentNode = "spec.node"
	// IndexVolumeGroup indexes SharedVolumes by every VolumeGroup they involve: spec's,
	// status's (they differ during a migration) and a retired LV's; across namespaces
	// (VolumeGroups are cluster-scoped).
	IndexVolumeGroup = "spec.volumeGroup"
	// IndexSource indexes SharedVolumes by spec.source.volume (the clones of a volume),
	// within their namespace.
	IndexSource = "spec.source.volume"
)

// indexScope says which lookups an index answers: client.List with client.InNamespace
// (namespaced) or without (all namespaces).
type indexScope bool

const (
	inNamespace    indexScope = true
	allNamespaces  indexScope = false
	indexPrefix               = "field:"           // controller-runtime's index name for a field
	allNamespaceNS            = "__all_namespaces" // and its namespace for a list across namespaces
)

// indexField registers a field index that answers lookups of one scope only. The cache's
// IndexField keys every object twice, under its namespace and under all namespaces, and
// each of the operator's lookups uses one of the two: at 20,000 attachments the unused
// halves were ~3.5 MiB of the operator's live heap (README "Performance and scale"). The keys
// are the ones controller-runtime's cache reader looks up for client.MatchingFields
// (pkg/cache/internal: "field:<field>", "<namespace>/<value>" or "__all_namespaces/<value>");
// the "field indexes" spec (controllers/indexes_test.go) lists through each index, so a
// change of that layout fails the tests.
func indexField(ctx context.Context, c cache.Cache, obj client.Object, field string, scope indexScope, values func(client.Object) []string) error {
	inf, err := c.GetInformer(ctx, obj, cache.BlockUntilSynced(false))
	if err != nil {
		return err
	}
	return inf.AddIndexers(toolscache.Indexers{indexPrefix + field: func(raw any) ([]string, error) {
		o, ok := raw.(client.Object)
		if !ok {
			return nil, fmt.Errorf("index %s: object of type %T is not an Object", field, raw)
		}
		ns := allNamespaceNS
		if scope == inNamespace && o.GetNamespace() != "" {
			ns = o.GetNamespace()
		}
		vals := values(o)
		for i, v := range vals {
			vals[i] = ns + "/" + v
		}
		return vals, nil
	}})
}

// SetupIndexes registers the field indexes used by the operator.
func SetupIndexes(ctx context.Context, mgr manager.Manager) error {
	c := mgr.GetCache()
	if err := indexField(ctx, c, &v1.VolumeAttachment{}, IndexAttachmentVolume, inNamespace, func(o client.Object) []string {
		return []string{string(o.(*v1.VolumeAttachment).Spec.Volume)}
	}); err != nil {
		return err
	}
	if err := indexField(ctx, c, &v1.VolumeAttachment{}, IndexAttachmentNode, allNamespaces, func(o client.Object) []string {
		return []string{string(o.(*v1.VolumeAttachment).Spec.Node)}
	}); err != nil {
		return err
	}
	if err := indexField(ctx, c, &v1.SharedVolume{}, IndexSource, inNamespace, func(o client.Object) []string {
		if src := o.(*v1.SharedVolume).Spec.Source; src != nil {
			return []string{string(src.Volume)}
		}
		return nil
	}); err != nil {
		return err
	}
	return indexField(ctx, c, &v1.SharedVolume{}, IndexVolumeGroup, allNamespaces, func(o client.Object) []string {
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
