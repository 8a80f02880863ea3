package controllers

import (
	"context"
	"strconv"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/heartbeat"
	"github.com/sharedlvm/sharedlvm-operator/internal/retry"
)

// DefaultHostIDReleaseGrace: a node without a Node object keeps its host_id until its
// heartbeat has not been renewed for this long (a node being re-registered, or an agent
// down for an upgrade, must not lose the id its lockspaces run with).
const DefaultHostIDReleaseGrace = 10 * time.Minute

// hostIDResync bounds how late a release is noticed (a heartbeat's expiry is no event).
const hostIDResync = time.Minute

// HostIDReconciler allocates each node's sanlock host_id (PlanHostIDs): one pass over all
// nodes per event, under the operator's leader election.
type HostIDReconciler struct {
	Client client.Client
	// APIReader lists the claims live: the allocation must see every claim made so far.
	APIReader client.Reader
	// Namespace holds the heartbeats and the claims.
	Namespace    string
	ReleaseGrace time.Duration
	Now          func() time.Time
}

var hostIDKey = reconcile.Request{NamespacedName: types.NamespacedName{Name: "host-ids"}}

func (r *HostIDReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Reconcile gathers heartbeats, claims and Nodes, plans, and writes the claims.
func (r *HostIDReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	logger := log.FromContext(ctx)
	var beats coordv1.LeaseList
	if err := r.Client.List(ctx, &beats, client.InNamespace(r.Namespace), client.MatchingLabelsSelector{Selector: heartbeat.Selector()}); err != nil {
		return reconcile.Result{}, err
	}
	var claimList coordv1.LeaseList
	if err := r.APIReader.List(ctx, &claimList, client.InNamespace(r.Namespace), client.MatchingLabels{v1.LabelHostIDClaim: "true"}); err != nil {
		return reconcile.Result{}, err
	}
	facts := HostIDFacts{}
	renewed := map[string]time.Time{}
	for i := range beats.Items {
		node, beat, ok := heartbeat.FromLease(&beats.Items[i])
		if !ok {
			continue
		}
		renewed[node] = beat.Renewed
		n := HostIDNode{Name: node}
		if s, said := beats.Items[i].Annotations[v1.AnnotationLocalHostID]; said {
			n.Said = true
			if id, err := strconv.Atoi(s); err == nil && id >= 1 && id <= v1.MaxHostID {
				n.Local = int32(id)
			}
		}
		facts.Nodes = append(facts.Nodes, n)
	}
	byID := map[int32]coordv1.Lease{}
	for _, l := range claimList.Items {
		id, ok := v1.HostIDFromClaimName(l.Name)
		if !ok || ptr.Deref(l.Spec.HolderIdentity, "") == "" {
			continue
		}
		byID[id] = l
		facts.Claims = append(facts.Claims, HostIDClaim{ID: id, Node: *l.Spec.HolderIdentity, Created: l.CreationTimestamp.Time})
	}
	grace := r.ReleaseGrace
	if grace <= 0 {
		grace = DefaultHostIDReleaseGrace
	}
	var readErr error
	facts.Gone = func(node string) bool {
		if t, ok := renewed[node]; ok && r.now().Sub(t) < grace {
			return false
		}
		var n corev1.Node
		err := r.Client.Get(ctx, client.ObjectKey{Name: node}, &n)
		if err != nil && !apierrors.IsNotFound(err) && readErr == nil {
			readErr = err
		}
		return apierrors.IsNotFound(err) // fails closed: a read error keeps the claim
	}
	plan := PlanHostIDs(facts)
	if readErr != nil {
		return reconcile.Result{}, readErr
	}
	for _, c := range plan.Release {
		l := byID[c.ID]
		err := r.Client.Delete(ctx, &l, client.Preconditions{UID: &l.UID, ResourceVersion: &l.ResourceVersion})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return reconcile.Result{}, err
		}
		logger.Info("host_id released", "hostID", c.ID, "node", c.Node)
	}
	retry := false
	for _, c := range plan.Create {
		now := metav1.NewMicroTime(r.now())
		l := coordv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: v1.HostIDClaimName(c.ID), Labels: map[string]string{v1.LabelHostIDClaim: "true"}},
			Spec:       coordv1.LeaseSpec{HolderIdentity: ptr.To(c.Node), AcquireTime: &now, RenewTime: &now},
		}
		switch err := r.Client.Create(ctx, &l); {
		case apierrors.IsAlreadyExists(err):
			retry = true // another allocator took it first: plan again with it counted
		case err != nil:
			return reconcile.Result{}, err
		default:
			logger.Info("host_id allocated", "hostID", c.ID, "node", c.Node)
		}
	}
	for _, n := range plan.Exhausted {
		logger.Info("no free sanlock host_id for node: every id 1..2000 is claimed", "node", n)
	}
	if retry {
		return reconcile.Result{RequeueAfter: 100 * time.Millisecond}, nil
	}
	return reconcile.Result{RequeueAfter: hostIDResync}, nil
}

// SetupWithManager runs one pass when an agent appears or says its local id, when a node
// comes back or is deleted, and every hostIDResync.
func (r *HostIDReconciler) SetupWithManager(mgr ctrl.Manager) error {
	one := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{hostIDKey}
	})
	revived := heartbeat.Revived()
	return ctrl.NewControllerManagedBy(mgr).
		Named("hostid").
		Watches(&coordv1.Lease{}, one, builder.WithPredicates(predicate.Funcs{
			CreateFunc: revived.Create,
			UpdateFunc: func(e event.UpdateEvent) bool {
				return revived.Update(e) ||
					e.ObjectOld.GetAnnotations()[v1.AnnotationLocalHostID] != e.ObjectNew.GetAnnotations()[v1.AnnotationLocalHostID]
			},
			DeleteFunc:  func(event.DeleteEvent) bool { return true },
			GenericFunc: func(event.GenericEvent) bool { return false },
		})).
		Watches(&corev1.Node{}, one, builder.WithPredicates(predicate.Funcs{
			CreateFunc: func(event.CreateEvent) bool { return false }, UpdateFunc: func(event.UpdateEvent) bool { return false },
			DeleteFunc: func(event.DeleteEvent) bool { return true }, GenericFunc: func(event.GenericEvent) bool { return false },
		})).
		WithOptions(controller.Options{RateLimiter: retry.Limiter()}).
		Complete(r)
}
