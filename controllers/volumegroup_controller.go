package controllers

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/heartbeat"
	"github.com/sharedlvm/sharedlvm-operator/internal/retry"
	"github.com/sharedlvm/sharedlvm-operator/internal/statusutil"
)

// VolumeGroupReconciler aggregates the per-node lockspace entries the agents report into
// VG-wide conditions, and flags duplicate sanlock host IDs (a data-loss hazard).
type VolumeGroupReconciler struct {
	client.Client
	Recorder recorder.EventRecorder
	// Heartbeats are the agents' liveness, overlaid on the entries.
	Heartbeats *heartbeat.Tracker
	// ClaimNamespace holds the agents' VG create claims (the heartbeat namespace); the
	// claim of a deleted VolumeGroup is removed with it.
	ClaimNamespace string
	// APIReader reads live (uncached) before a deleted VolumeGroup is released.
	APIReader client.Reader
}

// +kubebuilder:rbac:groups=sharedlvm.io,resources=volumegroups,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=sharedlvm.io,resources=volumegroups/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=sharedlvm.io,resources=volumegroups/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch

// Reconcile recomputes a VolumeGroup's aggregate status.
func (r *VolumeGroupReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	return statusutil.QuietConflicts(r.reconcile(ctx, req))
}

func (r *VolumeGroupReconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var vg v1.VolumeGroup
	if err := r.Get(ctx, req.NamespacedName, &vg); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !vg.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, &vg)
	}
	if controllerutil.AddFinalizer(&vg, v1.Finalizer) {
		if err := r.Update(ctx, &vg); err != nil {
			return ctrl.Result{}, err
		}
	}
	facts, err := r.gatherVG(ctx, &vg)
	if err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, r.writeVG(ctx, &vg, PlanVolumeGroup(facts, time.Now()))
}

// gatherVG reads what PlanVolumeGroup decides from: the other VolumeGroups (claims), the
// nodes (selected, existing) and the heartbeats.
func (r *VolumeGroupReconciler) gatherVG(ctx context.Context, vg *v1.VolumeGroup) (VGFacts, error) {
	f := VGFacts{VG: vg}
	var all v1.VolumeGroupList
	if err := r.List(ctx, &all); err != nil {
		return f, err
	}
	if f.ClaimedBy, f.Claimed = vg.ClaimConflict(all.Items); f.ClaimedBy != "" {
		return f, nil
	}
	f.Selected, f.SelectorErr = r.selectedNodes(ctx, vg)
	var nodes corev1.NodeList
	if err := r.List(ctx, &nodes); err != nil {
		return f, err
	}
	f.Existing = make(map[string]bool, len(nodes.Items))
	for _, n := range nodes.Items {
		f.Existing[n.Name] = true
	}
	live := vg.DeepCopy()
	r.Heartbeats.Overlay(live)
	f.Live = live.Status.Nodes
	return f, nil
}

// writeVG writes the plan: the entries of deleted nodes dropped (a merge patch of the
// agents' list, refused if any agent wrote the object since it was read), the conditions
// with their Events, and the operator's status fields.
func (r *VolumeGroupReconciler) writeVG(ctx context.Context, vg *v1.VolumeGroup, p VGPlan) error {
	if p.DropEntries {
		orig := vg.DeepCopy()
		vg.Status.Nodes = p.Entries
		if err := r.Status().Patch(ctx, vg, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return err
		}
	}
	orig := vg.DeepCopy()
	st := &vg.Status
	for _, c := range p.Conditions {
		if statusutil.SetCondition(&st.Conditions, vg.Generation, c.Type, c.OK, c.Reason, c.Message) && c.Event != "" {
			r.Recorder.Eventf(vg, nil, corev1.EventTypeWarning, c.Event, "CheckVolumeGroup", "%s", c.Message)
		}
	}
	st.NodesReady, st.CreateNode, st.ObservedGeneration = p.NodesReady, p.CreateNode, vg.Generation
	if equalStatus(orig.Status, vg.Status) {
		return nil
	}
	// Choosing another node to create the VG is decided from the object as read: from a
	// cache that has not seen this operator's own last choice yet, it would move the job
	// away from a node that may hold the create claim and have run vgcreate (seen in CI: the
	// VG then waited the claim's 2 minutes and its vgcreate error was lost). Such a change is
	// written only if the object is still the one read (a conflict requeues, on fresher
	// facts).
	return r.applyStatus(ctx, vg, orig.Status.CreateNode != st.CreateNode)
}

// reconcileDelete keeps a VolumeGroup while SharedVolumes live in it (as Kubernetes keeps a
// PVC in use): its LVs, leases and the volumes' state depend on it. Deleting a VolumeGroup
// never runs vgremove or lockstop: the VG and its lockspaces stay on disk and on the nodes.
// Once no volume is left, the create claim goes and the finalizer is removed.
func (r *VolumeGroupReconciler) reconcileDelete(ctx context.Context, vg *v1.VolumeGroup) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(vg, v1.Finalizer) {
		return ctrl.Result{}, nil
	}
	var vols v1.SharedVolumeList
	if err := r.List(ctx, &vols, client.MatchingFields{IndexVolumeGroup: vg.Name}); err != nil {
		return ctrl.Result{}, err
	}
	if len(vols.Items) == 0 && r.APIReader != nil {
		// Releasing is not undone: an empty cache may lag a volume created a moment ago (seen
		// in CI: the VolumeGroup went while its new volume existed). Decide on a live list.
		var live v1.SharedVolumeList
		if err := r.APIReader.List(ctx, &live); err != nil {
			return ctrl.Result{}, err
		}
		for i := range live.Items {
			if slices.Contains(involvedVGs(&live.Items[i]), vg.Name) {
				vols.Items = append(vols.Items, live.Items[i])
			}
		}
	}
	if len(vols.Items) > 0 {
		names := make([]string, 0, len(vols.Items))
		for _, v := range vols.Items {
			names = append(names, v.Namespace+"/"+v.Name)
		}
		sort.Strings(names)
		more := ""
		if len(names) > 10 {
			more = fmt.Sprintf(" and %d more", len(names)-10)
			names = names[:10]
		}
		msg := fmt.Sprintf("%d SharedVolume(s) live in this VolumeGroup (%s%s): delete or migrate them first; it is deleted once none is left (deletion never removes the VG or its LVs from disk)", len(vols.Items), strings.Join(names, ", "), more)
		if statusutil.SetCondition(&vg.Status.Conditions, vg.Generation, v1.ConditionDeletionBlocked, true, "VolumesExist", msg) {
			r.Recorder.Eventf(vg, nil, corev1.EventTypeWarning, "DeleteBlocked", "Delete", "%s", msg)
		}
		return ctrl.Result{RequeueAfter: 30 * time.Second}, r.applyStatus(ctx, vg, false)
	}
	if r.ClaimNamespace != "" {
		claim := &coordv1.Lease{}
		claim.Namespace, claim.Name = r.ClaimNamespace, v1.VGCreateClaimName(vg.Name)
		if err := r.Delete(ctx, claim); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, err
		}
	}
	controllerutil.RemoveFinalizer(vg, v1.Finalizer)
	if err := r.Update(ctx, vg); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	r.Recorder.Eventf(vg, nil, corev1.EventTypeNormal, "Deleted", "Delete", "no volume left: VolumeGroup released (VG %s stays on disk)", vg.Spec.VGName)
	return ctrl.Result{}, nil
}

// VGStatusFieldManager owns the VolumeGroup status fields the operator computes.
const VGStatusFieldManager = "sharedlvm-operator"

// applyStatus writes the operator's fields of a VG's status (observedGeneration, nodesReady,
// createNode, conditions) with server-side apply. Every agent writes its own entry of the
// same object every report cycle: an optimistic-lock patch from the cache would nearly
// always conflict on a large cluster, while an apply of fields only the operator owns needs
// no resourceVersion. A field left out (createNode once the VG exists) is removed. With
// ifUnchanged the apply carries the resourceVersion read: it is refused (Conflict) if the
// object changed since.
func (r *VolumeGroupReconciler) applyStatus(ctx context.Context, vg *v1.VolumeGroup, ifUnchanged bool) error {
	st := &vg.Status
	conds := make([]any, 0, len(st.Conditions))
	for _, c := range st.Conditions {
		conds = append(conds, map[string]any{
			"type": c.Type, "status": string(c.Status), "reason": c.Reason, "message": c.Message,
			"observedGeneration": c.ObservedGeneration, "lastTransitionTime": c.LastTransitionTime.UTC().Format(time.RFC3339),
		})
	}
	status := map[string]any{"observedGeneration": st.ObservedGeneration, "conditions": conds}
	if st.NodesReady != "" {
		status["nodesReady"] = st.NodesReady
	}
	if st.CreateNode != "" {
		status["createNode"] = st.CreateNode
	}
	u := &unstructured.Unstructured{Object: map[string]any{"status": status}}
	u.SetAPIVersion(v1.GroupVersion.String())
	u.SetKind("VolumeGroup")
	u.SetName(vg.Name)
	if ifUnchanged {
		u.SetResourceVersion(vg.ResourceVersion)
	}
	return r.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(VGStatusFieldManager), client.ForceOwnership)
}

// selectedNodes lists the names of the nodes the VG's selector picks.
func (r *VolumeGroupReconciler) selectedNodes(ctx context.Context, vg *v1.VolumeGroup) ([]string, error) {
	sel := labels.Everything()
	if vg.Spec.NodeSelector != nil {
		s, err := metav1.LabelSelectorAsSelector(vg.Spec.NodeSelector)
		if err != nil {
			return nil, err
		}
		sel = s
	}
	var nodes corev1.NodeList
	if err := r.List(ctx, &nodes, client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(nodes.Items))
	for _, n := range nodes.Items {
		names = append(names, n.Name)
	}
	sort.Strings(names)
	return names, nil
}

// SetupWithManager registers the reconciler; node changes re-evaluate every VG.
func (r *VolumeGroupReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.VolumeGroup{}).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
			return requestsFor(ctx, mgr.GetClient(), &v1.VolumeGroupList{})
		}), builder.WithPredicates(predicate.LabelChangedPredicate{})).
		// An agent starting (or coming back) may be the node to create a VG.
		Watches(&coordv1.Lease{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			r.Heartbeats.Observe(o)
			return requestsFor(ctx, mgr.GetClient(), &v1.VolumeGroupList{})
		}), builder.WithPredicates(heartbeat.Revived())).
		// A volume going away may unblock its VolumeGroup's deletion.
		Watches(&v1.SharedVolume{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			var reqs []reconcile.Request
			for _, name := range involvedVGs(o.(*v1.SharedVolume)) {
				reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: name}})
			}
			return reqs
		}), builder.WithPredicates(predicate.Funcs{
			CreateFunc: func(event.CreateEvent) bool { return false }, UpdateFunc: func(event.UpdateEvent) bool { return false },
			DeleteFunc: func(event.DeleteEvent) bool { return true }, GenericFunc: func(event.GenericEvent) bool { return false },
		})).
		// Another VolumeGroup going away may make this one the served claimant of its VG.
		Watches(&v1.VolumeGroup{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
			return requestsFor(ctx, mgr.GetClient(), &v1.VolumeGroupList{})
		}), builder.WithPredicates(predicate.Funcs{
			CreateFunc: func(event.CreateEvent) bool { return false }, UpdateFunc: func(event.UpdateEvent) bool { return false },
			DeleteFunc: func(event.DeleteEvent) bool { return true }, GenericFunc: func(event.GenericEvent) bool { return false },
		})).
		Named("volumegroup").
		WithOptions(controller.Options{RateLimiter: retry.Limiter()}).
		Complete(r)
}
