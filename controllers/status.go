package controllers

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/heartbeat"
)

// setCondition sets a condition and reports whether anything changed, so callers can skip
// status writes that would only bump lastTransitionTime-free noise.
func setCondition(conds *[]metav1.Condition, generation int64, typ string, status metav1.ConditionStatus, reason, msg string) bool {
	return meta.SetStatusCondition(conds, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: generation,
	})
}

func boolStatus(b bool) metav1.ConditionStatus {
	if b {
		return metav1.ConditionTrue
	}
	return metav1.ConditionFalse
}

// quietConflicts turns an optimistic-lock conflict (someone wrote the object since we read
// it) into a prompt requeue: the next pass reads the new version. Logging it as an error
// would only be noise; every other error goes to controller-runtime's backoff.
func quietConflicts(res ctrl.Result, err error) (ctrl.Result, error) {
	if apierrors.IsConflict(err) {
		return ctrl.Result{RequeueAfter: 50 * time.Millisecond}, nil
	}
	return res, err
}

// getVG reads a VolumeGroup from the cache with the agents' heartbeats overlaid on its
// lockspace entries, so that Fresh and Ready judge liveness (an entry itself is rewritten
// only when it changes). The copy is for reading: never write its entries back.
func getVG(ctx context.Context, c client.Reader, hb *heartbeat.Tracker, name string, vg *v1.VolumeGroup) error {
	if err := c.Get(ctx, types.NamespacedName{Name: name}, vg); err != nil {
		return err
	}
	hb.Overlay(vg)
	return nil
}

// requestsFor lists objects from the cache and returns a reconcile request for each (a watch
// mapping); a failed list maps to nothing.
func requestsFor(ctx context.Context, c client.Reader, list client.ObjectList, opts ...client.ListOption) []reconcile.Request {
	if err := c.List(ctx, list, opts...); err != nil {
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
