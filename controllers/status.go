package controllers

import (
	"context"
	"slices"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/heartbeat"
)

// getVG reads a VolumeGroup from the cache with the agents' heartbeats overlaid on its
// lockspace entries, so that Fresh and Ready judge liveness (an entry itself is rewritten
// only when it changes). Only the list of entries is copied (the reconcilers read a
// VolumeGroup for every volume and attachment they plan: a deep copy of one with 100 nodes
// is ~15 KiB); everything else is the cache's: read it, never write it or write it back.
func getVG(ctx context.Context, c client.Reader, hb *heartbeat.Tracker, name string, vg *v1.VolumeGroup) error {
	if err := c.Get(ctx, types.NamespacedName{Name: name}, vg, client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	vg.Status.Nodes = slices.Clone(vg.Status.Nodes)
	hb.Overlay(vg)
	return nil
}

// requestsFor lists objects from the cache and returns a reconcile request for each (a watch
// mapping); a failed list maps to nothing. Only the keys are read, so the cache's objects
// are not deep-copied (a VolumeGroup's ready nodes changing maps to every attachment).
func requestsFor(ctx context.Context, c client.Reader, list client.ObjectList, opts ...client.ListOption) []reconcile.Request {
	if err := c.List(ctx, list, append(opts, client.UnsafeDisableDeepCopy)...); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	_ = meta.EachListItem(list, func(o runtime.Object) error {
		if obj, ok := o.(client.Object); ok {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(obj)})
		}
		return nil
	})
	return reqs
}
