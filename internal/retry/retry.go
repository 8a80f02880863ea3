// Package retry is the requeue policy of every controller of the operator and the agent.
package retry

import (
	"time"

	"golang.org/x/time/rate"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// MaxDelay caps the backoff of a failing reconcile. client-go's default grows to 1000 s:
// after a control-plane outage of a minute an object's next retry could come half a minute
// after the apiserver was back (seen in the chaos tier: a delete settled 21 s after a 30 s
// outage). A storage operator has few objects in error at once; retrying each within
// MaxDelay costs little and bounds recovery.
const MaxDelay = 5 * time.Second

// Limiter is client-go's default controller rate limiter with the per-item backoff capped at
// MaxDelay (the overall 10 qps / 100 burst bucket is kept).
func Limiter() workqueue.TypedRateLimiter[reconcile.Request] {
	return workqueue.NewTypedMaxOfRateLimiter(
		workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](5*time.Millisecond, MaxDelay),
		&workqueue.TypedBucketRateLimiter[reconcile.Request]{Limiter: rate.NewLimiter(rate.Limit(10), 100)},
	)
}
