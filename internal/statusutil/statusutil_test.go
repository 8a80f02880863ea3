package statusutil

import (
	"errors"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ctrl "sigs.k8s.io/controller-runtime"
)

func TestSetCondition(t *testing.T) {
	var conds []metav1.Condition
	if !SetCondition(&conds, 1, "Ready", false, "Waiting", "why") {
		t.Fatal("a new condition is a change")
	}
	if SetCondition(&conds, 1, "Ready", false, "Waiting", "why") {
		t.Fatal("the same condition again is no change")
	}
	first := conds[0].LastTransitionTime
	if !SetCondition(&conds, 2, "Ready", false, "Waiting", "why") || conds[0].ObservedGeneration != 2 {
		t.Fatal("a new generation is a change")
	}
	if conds[0].LastTransitionTime != first {
		t.Fatal("lastTransitionTime moved without a status flip")
	}
	if !SetCondition(&conds, 2, "Ready", true, "Ready", "ok") || conds[0].Status != metav1.ConditionTrue {
		t.Fatalf("flip to True: %+v", conds[0])
	}
}

func TestQuietConflicts(t *testing.T) {
	conflict := apierrors.NewConflict(schema.GroupResource{Resource: "sharedvolumes"}, "v", errors.New("changed"))
	res, err := QuietConflicts(ctrl.Result{}, conflict)
	if err != nil || res.RequeueAfter != 50*time.Millisecond {
		t.Fatalf("conflict: %v %v", res, err)
	}
	other := errors.New("boom")
	if _, err := QuietConflicts(ctrl.Result{}, other); err != other {
		t.Fatalf("other errors pass through: %v", err)
	}
}
