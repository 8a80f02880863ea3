package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	corev1 "k8s.io/api/core/v1"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/heartbeat"
	"github.com/sharedlvm/sharedlvm-operator/internal/retry"
	"github.com/sharedlvm/sharedlvm-operator/internal/statusutil"
)

// SharedVolumeReconciler owns a SharedVolume's finalizer, phase and aggregated lock status.
type SharedVolumeReconciler struct {
	client.Client
	Recorder recorder.EventRecorder
	// Heartbeats are the agents' liveness, overlaid on the VolumeGroups' entries.
	Heartbeats *heartbeat.Tracker
}

// +kubebuilder:rbac:groups=sharedlvm.io,resources=sharedvolumes,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=sharedlvm.io,resources=sharedvolumes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=sharedlvm.io,resources=sharedvolumes/finalizers,verbs=update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile moves one SharedVolume towards its spec.
func (r *SharedVolumeReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	return statusutil.QuietConflicts(r.reconcile(ctx, req))
}

func (r *SharedVolumeReconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var vol v1.SharedVolume
	if err := r.Get(ctx, req.NamespacedName, &vol); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	atts, err := attachmentsOf(ctx, r, vol.Namespace, vol.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !vol.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, &vol, atts)
	}
	if controllerutil.AddFinalizer(&vol, v1.Finalizer) {
		if err := r.Update(ctx, &vol); err != nil {
			return ctrl.Result{}, err
		}
		log.FromContext(ctx).V(1).Info("added finalizer")
	}
	facts, err := r.gatherVolume(ctx, &vol, atts)
	if err != nil {
		return ctrl.Result{}, err
	}
	plan := PlanVolume(facts, time.Now())
	return ctrl.Result{RequeueAfter: plan.Requeue}, r.writeVolume(ctx, &vol, plan)
}

// gatherVolume reads what PlanVolume decides from: the VolumeGroups involved (heartbeats
// overlaid), a copy's source, and which of their nodes restored this boot's locks.
func (r *SharedVolumeReconciler) gatherVolume(ctx context.Context, vol *v1.SharedVolume, atts []v1.VolumeAttachment) (VolumeFacts, error) {
	f := VolumeFacts{Vol: vol, Atts: atts}
	// getOpt reads a VolumeGroup; a missing one reads as empty.
	getOpt := func(name string, into *v1.VolumeGroup) (bool, error) {
		err := getVG(ctx, r, r.Heartbeats, name, into)
		if apierrors.IsNotFound(err) {
			*into = v1.VolumeGroup{}
			return false, nil
		}
		return err == nil, err
	}
	var vg v1.VolumeGroup
	if found, err := getOpt(string(vol.Spec.VolumeGroup), &vg); err != nil {
		return f, err
	} else if found {
		f.VG = &vg
	}
	st := &vol.Status
	switch {
	case st.RetiredLV != nil:
		if _, err := getOpt(st.RetiredLV.VolumeGroup, &f.Old); err != nil {
			return f, err
		}
	case v1.NeedsMigration(vol):
		if _, err := getOpt(st.VolumeGroup, &f.From); err != nil {
			return f, err
		}
	case st.LVUUID == "" && vol.Spec.Source != nil:
		f.Src = &CopySourceFacts{}
		var src v1.SharedVolume
		err := r.Get(ctx, types.NamespacedName{Namespace: vol.Namespace, Name: string(vol.Spec.Source.Volume)}, &src)
		if client.IgnoreNotFound(err) != nil {
			return f, err
		}
		if err == nil {
			f.Src.Vol = &src
			if _, err := getOpt(src.Status.VolumeGroup, &f.Src.VG); err != nil {
				return f, err
			}
			if f.Src.Atts, err = attachmentsOf(ctx, r, src.Namespace, src.Name); err != nil {
				return f, err
			}
		}
	}
	f.CanWork = r.canWork(ctx)
	return f, nil
}

func srcVG(s *CopySourceFacts) *v1.VolumeGroup {
	if s == nil {
		return &v1.VolumeGroup{}
	}
	return &s.VG
}

// writeVolume writes the plan: lock, executor, phase, the conditions in order with their
// Events, observedGeneration.
func (r *SharedVolumeReconciler) writeVolume(ctx context.Context, vol *v1.SharedVolume, p VolumePlan) error {
	orig := vol.DeepCopy()
	st := &vol.Status
	st.Lock, st.ExecutorNode, st.Phase = p.Lock, p.Executor, p.Phase
	for _, s := range p.Steps {
		changed := true
		if c := s.Cond; c != nil {
			changed = statusutil.SetCondition(&st.Conditions, vol.Generation, c.Type, c.OK, c.Reason, c.Message)
		}
		if e := s.Event; e != nil && changed {
			r.Recorder.Eventf(vol, nil, e.Type, e.Reason, e.Action, "%s", e.Message)
		}
	}
	st.ObservedGeneration = vol.Generation
	return r.patchStatus(ctx, vol, orig)
}

// nodeCanWork rejects nodes whose agent has not restored this boot's locks (a rebooted
// node's VG entry can look fresh for a while after it went down).
func (r *SharedVolumeReconciler) nodeCanWork(ctx context.Context, name string) bool {
	var node corev1.Node
	if err := r.Get(ctx, types.NamespacedName{Name: name}, &node); err != nil {
		return false
	}
	return v1.LocksRestoredProblem(&node) == ""
}

// canWork is nodeCanWork as a predicate for one reconcile, each node read at most once and
// only when the plan asks (a settled volume reads no Node at all).
func (r *SharedVolumeReconciler) canWork(ctx context.Context) func(string) bool {
	seen := map[string]bool{}
	return func(name string) bool {
		ok, done := seen[name]
		if !done {
			ok = r.nodeCanWork(ctx, name)
			seen[name] = ok
		}
		return ok
	}
}

func (r *SharedVolumeReconciler) reconcileDelete(ctx context.Context, vol *v1.SharedVolume, atts []v1.VolumeAttachment) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(vol, v1.Finalizer) {
		return ctrl.Result{}, nil
	}
	f, err := r.gatherDelete(ctx, vol, atts)
	if err != nil {
		return ctrl.Result{}, err
	}
	p := PlanVolumeDelete(f, time.Now())
	if p.Done {
		controllerutil.RemoveFinalizer(vol, v1.Finalizer)
		if err := r.Update(ctx, vol); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
		r.Recorder.Eventf(vol, nil, corev1.EventTypeNormal, "Deleted", "Delete", "volume deleted")
		return ctrl.Result{}, nil
	}
	orig := vol.DeepCopy()
	vol.Status.Phase, vol.Status.ExecutorNode = v1.VolumeDeleting, p.Executor
	if statusutil.SetCondition(&vol.Status.Conditions, vol.Generation, v1.ConditionDeletionBlocked, true, p.Reason, p.Message) && p.Warn {
		r.Recorder.Eventf(vol, nil, corev1.EventTypeWarning, "DeleteBlocked", "Delete", "%s", p.Message)
	}
	return ctrl.Result{RequeueAfter: p.Requeue}, r.patchStatus(ctx, vol, orig)
}

// gatherDelete reads what PlanVolumeDelete decides from: the clones being copied from the
// volume, the VolumeGroups involved (heartbeats overlaid) and which of their nodes restored
// this boot's locks.
func (r *SharedVolumeReconciler) gatherDelete(ctx context.Context, vol *v1.SharedVolume, atts []v1.VolumeAttachment) (VolumeDeleteFacts, error) {
	f := VolumeDeleteFacts{Vol: vol, Atts: atts, VGs: map[string]*v1.VolumeGroup{}, CanWork: r.canWork(ctx)}
	if len(atts) > 0 {
		return f, nil
	}
	var clones v1.SharedVolumeList
	if err := r.List(ctx, &clones, client.InNamespace(vol.Namespace), client.MatchingFields{IndexSource: vol.Name}); err != nil {
		return f, err
	}
	f.Clones = clones.Items
	for _, name := range involvedVGs(vol) {
		var g v1.VolumeGroup
		if err := getVG(ctx, r, r.Heartbeats, name, &g); err != nil {
			if apierrors.IsNotFound(err) {
				continue // gone with its LVs: nothing to clean there
			}
			return f, err
		}
		f.VGs[name] = &g
	}
	return f, nil
}

// needsCleanupPass says whether a volume being deleted without a recorded LV may still have
// one on disk: a create was assigned to a node (phase Creating when deletion began), and no
// agent has since confirmed that nothing is left (Provisioned reason Deleted). The operator
// sets Provisioned (reason Creating) when it first assigns a create; agents overwrite it.
func needsCleanupPass(vol *v1.SharedVolume) bool {
	c := meta.FindStatusCondition(vol.Status.Conditions, v1.ConditionProvisioned)
	return vol.Status.LVUUID == "" && c != nil && c.Reason != v1.ReasonLVDeleted
}

func (r *SharedVolumeReconciler) patchStatus(ctx context.Context, vol, orig *v1.SharedVolume) error {
	if equalStatus(orig.Status, vol.Status) {
		return nil
	}
	return r.Status().Patch(ctx, vol, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}

// volumesOfVG maps a VolumeGroup to the volumes placed in it.
func (r *SharedVolumeReconciler) volumesOfVG(ctx context.Context, o client.Object) []reconcile.Request {
	return requestsFor(ctx, r, &v1.SharedVolumeList{}, client.MatchingFields{IndexVolumeGroup: o.GetName()})
}

// copyRelatives maps a volume to the volumes copied from it and to the one it is copied from.
func (r *SharedVolumeReconciler) copyRelatives(ctx context.Context, o client.Object) []reconcile.Request {
	vol := o.(*v1.SharedVolume)
	var reqs []reconcile.Request
	if vol.Spec.Source != nil {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: vol.Namespace, Name: string(vol.Spec.Source.Volume)}})
	}
	var clones v1.SharedVolumeList
	if err := r.List(ctx, &clones, client.InNamespace(vol.Namespace), client.MatchingFields{IndexSource: vol.Name}); err != nil {
		return reqs
	}
	for _, c := range clones.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&c)})
	}
	return reqs
}

// readyNodesChanged passes VolumeGroup updates that change which nodes have a started
// lockspace, which hosts sanlock declares failed or dead, or deletion: agents report every 30 s, and most reports
// change nothing that matters here.
func readyNodesChanged() predicate.Predicate {
	set := func(vg *v1.VolumeGroup) string {
		var names []string
		for _, n := range vg.Status.Nodes {
			if n.LockspaceStarted {
				names = append(names, n.Node)
			}
			for _, id := range n.DeadHosts {
				names = append(names, fmt.Sprintf("dead:%d", id))
			}
			for _, h := range n.FailedHosts {
				names = append(names, fmt.Sprintf("fail:%d", h.HostID))
			}
		}
		if vg.DeletionTimestamp != nil {
			names = append(names, "deleting")
		}
		sort.Strings(names)
		return strings.Join(names, ",")
	}
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return set(e.ObjectOld.(*v1.VolumeGroup)) != set(e.ObjectNew.(*v1.VolumeGroup))
	}}
}

// SetupWithManager registers the reconciler; attachment changes re-trigger their volume.
func (r *SharedVolumeReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.SharedVolume{}).
		Watches(&v1.VolumeAttachment{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			a := o.(*v1.VolumeAttachment)
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: a.Namespace, Name: string(a.Spec.Volume)}}}
		})).
		Watches(&v1.VolumeGroup{}, handler.EnqueueRequestsFromMapFunc(r.volumesOfVG), builder.WithPredicates(readyNodesChanged())).
		// A source's lock or LV changing re-plans its clones; a clone's copy finishing
		// unblocks its source's deletion.
		Watches(&v1.SharedVolume{}, handler.EnqueueRequestsFromMapFunc(r.copyRelatives)).
		Named("sharedvolume").
		WithOptions(controller.Options{RateLimiter: retry.Limiter()}).
		Complete(r)
}
