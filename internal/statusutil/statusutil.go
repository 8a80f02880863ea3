// Package statusutil holds the status-writing helpers the operator's and the agent's
// reconcilers share: one way to set a condition, one way to treat write conflicts.
package statusutil

import (
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
)

// SetCondition sets condition typ to True (ok) or False with a reason and a message, for the
// object's generation, and reports whether anything changed (callers emit an Event or write
// the status only then). lastTransitionTime moves only when the status flips.
func SetCondition(conds *[]metav1.Condition, generation int64, typ string, ok bool, reason, msg string) bool {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	return meta.SetStatusCondition(conds, metav1.Condition{
		Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: generation,
	})
}

// QuietConflicts turns an optimistic-lock conflict (someone wrote the object since it was
// read) into a prompt requeue: the next pass reads the new version. Logging it as an error
// would only be noise; every other error goes to controller-runtime's backoff.
func QuietConflicts(res ctrl.Result, err error) (ctrl.Result, error) {
	if apierrors.IsConflict(err) {
		return ctrl.Result{RequeueAfter: 50 * time.Millisecond}, nil
	}
	return res, err
}
