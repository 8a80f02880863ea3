package agent

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// patchStatus writes obj's status if it differs from orig, with optimistic locking so that
// the operator's and the agent's writes of one status never silently overwrite each other.
func patchStatus(ctx context.Context, c client.Client, obj, orig client.Object, statusOf func(client.Object) any) error {
	if equality.Semantic.DeepEqual(statusOf(orig), statusOf(obj)) {
		return nil
	}
	return c.Status().Patch(ctx, obj, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}

func setCondition(conds *[]metav1.Condition, gen int64, typ string, ok bool, reason, msg string) bool {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	return meta.SetStatusCondition(conds, metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen})
}

// quietConflicts requeues promptly on optimistic-lock conflicts instead of logging errors.
func quietConflicts(res ctrl.Result, err error) (ctrl.Result, error) {
	if apierrors.IsConflict(err) {
		return ctrl.Result{RequeueAfter: 50 * time.Millisecond}, nil
	}
	return res, err
}
