package controllers

import (
	"context"
	"fmt"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
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
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/heartbeat"
	"github.com/sharedlvm/sharedlvm-operator/internal/retry"
	"github.com/sharedlvm/sharedlvm-operator/internal/statusutil"
)

// VolumeAttachmentReconciler decides, for every attachment, which lock its node should hold
// next (status.desiredLock), following the lock rule and its ordering. The node's agent
// applies it and reports status.appliedLock; the operator only advances from what agents
// reported (the status handshake).
type VolumeAttachmentReconciler struct {
	client.Client
	Recorder recorder.EventRecorder
	// Heartbeats are the agents' liveness, overlaid on the VolumeGroups' entries.
	Heartbeats *heartbeat.Tracker
}

// +kubebuilder:rbac:groups=sharedlvm.io,resources=volumeattachments,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=sharedlvm.io,resources=volumeattachments/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=sharedlvm.io,resources=volumeattachments/finalizers,verbs=update

// Reconcile computes the desired lock of one attachment from all attachments of its volume.
func (r *VolumeAttachmentReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	return statusutil.QuietConflicts(r.reconcile(ctx, req))
}

func (r *VolumeAttachmentReconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var att v1.VolumeAttachment
	if err := r.Get(ctx, req.NamespacedName, &att); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if att.DeletionTimestamp.IsZero() && controllerutil.AddFinalizer(&att, v1.Finalizer) {
		if err := r.Update(ctx, &att); err != nil {
			return ctrl.Result{}, err
		}
	}
	facts, err := r.gather(ctx, &att)
	if err != nil {
		return ctrl.Result{}, err
	}
	plan := PlanAttachment(facts, time.Now())

	orig := att.DeepCopy()
	st := &att.Status
	st.DesiredLock, st.Phase = plan.Desired, plan.Phase
	r.condition(&att, v1.ConditionReady, plan.Reason == ReasonAttached, string(plan.Reason), plan.Message)
	// The LV the plan is about, for the node's agent (which then reads no volume).
	st.LV = nil
	if vol := facts.Vol; vol != nil && vol.Status.LVUUID != "" {
		st.LV = &v1.LVRef{VGName: vol.Status.VGName, LVName: vol.Status.LVName, LVUUID: vol.Status.LVUUID}
	}
	st.ObservedGeneration = att.Generation

	if plan.Release {
		// Released, never taken, sanlock released it (the node is DEAD), or another live
		// attachment on the same node keeps the node's lock: nothing is left to clean.
		if controllerutil.RemoveFinalizer(&att, v1.Finalizer) {
			if err := r.Update(ctx, &att); err != nil {
				return ctrl.Result{}, client.IgnoreNotFound(err)
			}
			r.Recorder.Eventf(&att, nil, corev1.EventTypeNormal, "Detached", "Detach", "node %s released volume %s", att.Spec.Node, att.Spec.Volume)
		}
		return ctrl.Result{}, nil
	}
	var res ctrl.Result
	switch plan.Reason {
	case ReasonWaitingForDeadHost, ReasonWaitingForOtherNodes, ReasonHostLostLockspace:
		// A holder's report going stale, or sanlock declaring it failed or dead, may come
		// without an event this controller watches: look again soon.
		res.RequeueAfter = 5 * time.Second
	case ReasonWaitingForAgent, ReasonNodeNotReady:
		// The node's agent may have died after the lock was planned (its heartbeat
		// expiring produces no event), or its reports may go stale: the condition should
		// then say so.
		res.RequeueAfter = 30 * time.Second
	}
	if equalStatus(orig.Status, att.Status) {
		return res, nil
	}
	if was := orig.Status.DesiredLock.OrNone(); was != st.DesiredLock.OrNone() && was != v1.LockNone {
		// A lock the node holds (or was to take) changes because of other attachments: said
		// as an Event. An attachment's first lock is not: its node's agent says it once taken
		// (LockApplied), and the operator's event recorder keeps every Event it sends for 6 to
		// 12 minutes (client-go's series cache), which at 20,000 attachments is the largest
		// share of the operator's memory after the objects (README "Performance and scale").
		r.Recorder.Eventf(&att, nil, corev1.EventTypeNormal, "LockPlanned", "PlanLock",
			"node %s should now hold volume %s %s (was %s)", att.Spec.Node, att.Spec.Volume, st.DesiredLock, orig.Status.DesiredLock.OrNone())
	}
	if plan.Reason.Warns() && readyReason(orig) != string(plan.Reason) {
		// What keeps the attachment from proceeding is said once as an Event too (the
		// condition keeps saying it).
		r.Recorder.Eventf(&att, nil, corev1.EventTypeWarning, string(plan.Reason), "PlanLock", "%s", plan.Message)
	}
	return res, r.Status().Patch(ctx, &att, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}

func readyReason(att *v1.VolumeAttachment) string {
	if c := meta.FindStatusCondition(att.Status.Conditions, v1.ConditionReady); c != nil {
		return c.Reason
	}
	return ""
}

// gather reads what the plan of one attachment needs: its siblings, its volume, the
// volume's VolumeGroup (once, with heartbeats overlaid) and each sibling node's readiness.
func (r *VolumeAttachmentReconciler) gather(ctx context.Context, att *v1.VolumeAttachment) (AttachmentFacts, error) {
	f := AttachmentFacts{Att: att, Problems: map[string]NodeProblem{}, Verdicts: map[string]v1.HostVerdict{}}
	var err error
	if f.Siblings, err = attachmentsOf(ctx, r, att.Namespace, string(att.Spec.Volume)); err != nil {
		return f, err
	}
	var vol v1.SharedVolume
	if err := r.Get(ctx, types.NamespacedName{Namespace: att.Namespace, Name: string(att.Spec.Volume)}, &vol); err != nil {
		if !apierrors.IsNotFound(err) {
			return f, err
		}
		return f, nil
	}
	f.Vol = &vol
	vgName := vol.Status.VolumeGroup
	if vgName == "" {
		vgName = string(vol.Spec.VolumeGroup)
	}
	var vg v1.VolumeGroup
	vgErr := getVG(ctx, r, r.Heartbeats, vgName, &vg)
	if vgErr != nil && !apierrors.IsNotFound(vgErr) {
		return f, vgErr
	}
	now := time.Now()
	entries := map[string]*v1.NodeLockspaceStatus{}
	if vgErr == nil {
		f.VGName = string(vg.Spec.VGName)
		f.Verdicts = vg.HostVerdicts(now)
		for i := range vg.Status.Nodes {
			entries[vg.Status.Nodes[i].Node] = &vg.Status.Nodes[i]
		}
	}
	for _, a := range f.Siblings {
		node := string(a.Spec.Node)
		if _, done := f.Problems[node]; done {
			continue
		}
		f.Problems[node] = r.nodeProblem(ctx, node, vgName, vgErr == nil, f.VGName, entries[node], now)
	}
	return f, nil
}

// nodeProblem says why a node cannot take a new lock on the VG now (NodeOK when it can).
// Missing facts fail closed: no Node, no VolumeGroup, no entry, a stale one.
func (r *VolumeAttachmentReconciler) nodeProblem(ctx context.Context, node, vgCR string, vgFound bool, vgName string, e *v1.NodeLockspaceStatus, now time.Time) NodeProblem {
	var n corev1.Node
	if err := r.Get(ctx, types.NamespacedName{Name: node}, &n); err != nil {
		if apierrors.IsNotFound(err) {
			return NodeProblem{NodeMissing, fmt.Sprintf("node %s does not exist", node)}
		}
		return NodeProblem{NodeMissing, fmt.Sprintf("node %s cannot be read: %v", node, err)}
	}
	if msg := v1.LocksRestoredProblem(&n); msg != "" {
		return NodeProblem{NodeRestoring, msg}
	}
	switch {
	case !vgFound:
		return NodeProblem{NodeVGMissing, fmt.Sprintf("VolumeGroup %q does not exist: no node can take a lock in it", vgCR)}
	case e == nil:
		return NodeProblem{NodeNoAgent, fmt.Sprintf("no sharedlvm agent reports VG %s from node %s: is the agent running there, and does the VolumeGroup's nodeSelector select the node?", vgName, node)}
	case !e.Fresh(now):
		return NodeProblem{NodeStale, fmt.Sprintf("the agent on node %s last reported at %s: the node or its agent may be down", node, e.LastReport)}
	case !e.LockspaceStarted:
		return NodeProblem{NodeLockspaceNotStarted, fmt.Sprintf("node %s has not started the lockspace of VG %s: %s", node, vgName, e.Message)}
	}
	return NodeProblem{}
}

// restoreMarkersChanged passes Node updates that change the restore label or annotation
// (or the kubelet's boot ID), not the many heartbeats.
func restoreMarkersChanged() predicate.Predicate {
	marker := func(n *corev1.Node) string {
		return n.Labels[v1.LabelLocksRestored] + "/" + n.Annotations[v1.AnnotationRestoredBootID] + "/" + n.Status.NodeInfo.BootID
	}
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return marker(e.ObjectOld.(*corev1.Node)) != marker(e.ObjectNew.(*corev1.Node))
	}}
}

// liveSibling reports whether another live attachment of the same volume is on the same node.
func liveSibling(att *v1.VolumeAttachment, siblings []v1.VolumeAttachment) bool {
	for _, a := range siblings {
		if a.Name != att.Name && a.Spec.Node == att.Spec.Node && a.DeletionTimestamp.IsZero() {
			return true
		}
	}
	return false
}

func (r *VolumeAttachmentReconciler) condition(att *v1.VolumeAttachment, typ string, ok bool, reason, msg string) {
	statusutil.SetCondition(&att.Status.Conditions, att.Generation, typ, ok, reason, msg)
}

// SetupWithManager registers the reconciler. A change to any attachment of a volume, or to
// the volume, re-plans every attachment of that volume.
func (r *VolumeAttachmentReconciler) SetupWithManager(mgr ctrl.Manager) error {
	siblings := func(ctx context.Context, namespace, volume string) []reconcile.Request {
		atts, err := attachmentsOf(ctx, mgr.GetClient(), namespace, volume)
		if err != nil {
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(atts))
		for _, a := range atts {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: a.Namespace, Name: a.Name}})
		}
		return reqs
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.VolumeAttachment{}).
		Watches(&v1.VolumeAttachment{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			a := o.(*v1.VolumeAttachment)
			return siblings(ctx, a.Namespace, string(a.Spec.Volume))
		})).
		Watches(&v1.SharedVolume{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return siblings(ctx, o.GetNamespace(), o.GetName())
		})).
		// A node starting (or losing) a lockspace changes which attachments can be planned.
		Watches(&v1.VolumeGroup{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
			return requestsFor(ctx, mgr.GetClient(), &v1.VolumeAttachmentList{})
		}), builder.WithPredicates(readyNodesChanged())).
		// A node finishing (or starting) its boot restore changes what may be planned there.
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return requestsFor(ctx, mgr.GetClient(), &v1.VolumeAttachmentList{}, client.MatchingFields{IndexAttachmentNode: o.GetName()})
		}), builder.WithPredicates(restoreMarkersChanged())).
		// A node's agent coming back (its heartbeat renewed after it expired) may unblock the
		// attachments waiting for it.
		Watches(&coordv1.Lease{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			r.Heartbeats.Observe(o)
			l := o.(*coordv1.Lease)
			if l.Spec.HolderIdentity == nil {
				return nil
			}
			return requestsFor(ctx, mgr.GetClient(), &v1.VolumeAttachmentList{}, client.MatchingFields{IndexAttachmentNode: *l.Spec.HolderIdentity})
		}), builder.WithPredicates(heartbeat.Revived())).
		Named("volumeattachment").
		WithOptions(controller.Options{RateLimiter: retry.Limiter()}).
		Complete(r)
}
