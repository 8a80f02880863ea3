package agent

import (
	"context"

	"k8s.io/apimachinery/pkg/api/equality"
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
