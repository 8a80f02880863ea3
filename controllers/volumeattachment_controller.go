package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/controllers/lockrule"
	"github.com/sharedlvm/sharedlvm-operator/heartbeat"
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
	return quietConflicts(r.reconcile(ctx, req))
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
	siblings, err := attachmentsOf(ctx, r, att.Namespace, string(att.Spec.Volume))
	if err != nil {
		return ctrl.Result{}, err
	}
	var vol v1.SharedVolume
	volErr := r.Get(ctx, types.NamespacedName{Namespace: att.Namespace, Name: string(att.Spec.Volume)}, &vol)
	if volErr != nil && !apierrors.IsNotFound(volErr) {
		return ctrl.Result{}, volErr
	}
	volFound := volErr == nil

	orig := att.DeepCopy()
	st := &att.Status
	gen := att.Generation
	rejected := map[string]bool{}
	notReady := map[string]string{}
	dead := map[string]bool{}
	migrating := map[string]bool{}
	if volFound {
		if dead, err = r.deadNodes(ctx, &vol); err != nil {
			return ctrl.Result{}, err
		}
		rejected = rejectedByMultiAttach(&vol, siblings)
		if notReady, err = r.nodesNotReady(ctx, &vol, siblings); err != nil {
			return ctrl.Result{}, err
		}
		for _, a := range siblings {
			// A node that cannot take locks now (no agent, stale, restoring after a reboot)
			// gets no *new* attachment planned; its existing ones stay wanted, so that its
			// restore re-takes them and nobody else is planned into its place.
			_, bad := notReady[string(a.Spec.Node)]
			isNew := a.Status.DesiredLock == "" || a.Status.DesiredLock == v1.LockNone
			if (bad && isNew) || !vol.DeletionTimestamp.IsZero() {
				rejected[a.Name] = true
			}
			// A volume being copied to another VG takes no new holder: the copy holds the
			// old LV exclusively, and the LV is replaced when it ends.
			if isNew && v1.NeedsMigration(&vol) {
				rejected[a.Name], migrating[a.Name] = true, true
			}
		}
	}
	planNodes := nodesOf(siblings, rejected, dead)
	plan := lockrule.Plan(planNodes)
	desired := toLockMode(plan[string(att.Spec.Node)])

	switch {
	case !att.DeletionTimestamp.IsZero():
		st.DesiredLock = desired // lockrule releases unwanted nodes
	case !volFound:
		st.DesiredLock = v1.LockNone
		st.Phase = v1.AttachmentPending
		r.condition(&att, v1.ConditionReady, metav1.ConditionFalse, "VolumeNotFound",
			fmt.Sprintf("SharedVolume %q does not exist in namespace %s: create it, or delete this attachment", att.Spec.Volume, att.Namespace))
	case !vol.DeletionTimestamp.IsZero():
		st.DesiredLock = desired
		st.Phase = v1.AttachmentFailed
		r.condition(&att, v1.ConditionReady, metav1.ConditionFalse, "VolumeDeleting",
			fmt.Sprintf("volume %s is being deleted: it cannot be attached; delete this attachment", vol.Name))
	case notReady[string(att.Spec.Node)] != "":
		st.DesiredLock = desired
		st.Phase = v1.AttachmentPending
		r.condition(&att, v1.ConditionReady, metav1.ConditionFalse, "NodeNotReady", notReady[string(att.Spec.Node)])
	case migrating[att.Name]:
		st.DesiredLock = desired
		st.Phase = v1.AttachmentPending
		r.condition(&att, v1.ConditionReady, metav1.ConditionFalse, "VolumeMigrating",
			fmt.Sprintf("volume %s is being migrated from VolumeGroup %s to %s: it is attached once the copy has switched it to its new LV", vol.Name, vol.Status.VolumeGroup, vol.Spec.VolumeGroup))
	case rejected[att.Name]:
		st.DesiredLock = desired
		st.Phase = v1.AttachmentFailed
		r.condition(&att, v1.ConditionReady, metav1.ConditionFalse, "MultiAttachNotAllowed",
			fmt.Sprintf("volume %s is attached to an instance on another node and spec.multiAttach is false: detach it there first, use purpose migration-target for a live migration, or enable multiAttach", vol.Name))
	case vol.Status.LVUUID == "":
		st.DesiredLock = v1.LockNone
		st.Phase = v1.AttachmentPending
		r.condition(&att, v1.ConditionReady, metav1.ConditionFalse, "WaitingForVolume",
			fmt.Sprintf("volume %s has no LV yet (phase %q)", vol.Name, vol.Status.Phase))
	default:
		st.DesiredLock = desired
		applied := st.AppliedLock
		if applied == "" {
			applied = v1.LockNone
		}
		switch {
		case desired != v1.LockNone && applied == desired:
			st.Phase = v1.AttachmentAttached
			r.condition(&att, v1.ConditionReady, metav1.ConditionTrue, "Attached",
				fmt.Sprintf("node %s holds the volume %s at %s", att.Spec.Node, desired, st.DevicePath))
		case desired == v1.LockNone:
			st.Phase = v1.AttachmentPending
			reason, msg := "WaitingForOtherNodes", "waiting for other nodes to convert or release their lock before this node may take it"
			for _, n := range planNodes {
				if n.Name != string(att.Spec.Node) && n.Held != lockrule.None && strings.Contains(notReady[n.Name], "last reported") {
					reason = "WaitingForDeadHost"
					msg = fmt.Sprintf("node %s holds the lock (%s) and has stopped reporting: waiting for sanlock to declare it dead (about 8 × io_timeout + 60 s after it stopped) before this node may take the lock; the lease is never taken around sanlock", n.Name, n.Held)
				}
			}
			r.condition(&att, v1.ConditionReady, metav1.ConditionFalse, reason, msg)
		default:
			st.Phase = v1.AttachmentAttaching
			r.condition(&att, v1.ConditionReady, metav1.ConditionFalse, "WaitingForAgent",
				fmt.Sprintf("waiting for the agent on node %s to take the %s lock", att.Spec.Node, desired))
		}
	}
	// The LV the plan is about, for the node's agent (which then reads no volume).
	st.LV = nil
	if volFound && vol.Status.LVUUID != "" {
		st.LV = &v1.LVRef{VGName: vol.Status.VGName, LVName: vol.Status.LVName, LVUUID: vol.Status.LVUUID}
	}
	st.ObservedGeneration = gen

	if !att.DeletionTimestamp.IsZero() {
		st.Phase = v1.AttachmentDetaching
		if st.AppliedLock == "" || st.AppliedLock == v1.LockNone || liveSibling(&att, siblings) || dead[string(att.Spec.Node)] {
			// Released, never taken, or another live attachment on the same node keeps
			// the node's lock: this attachment has nothing left to clean.
			// The node has released its lock (or never took one): nothing is left to clean.
			if controllerutil.RemoveFinalizer(&att, v1.Finalizer) {
				if err := r.Update(ctx, &att); err != nil {
					return ctrl.Result{}, client.IgnoreNotFound(err)
				}
				r.Recorder.Eventf(&att, nil, corev1.EventTypeNormal, "Detached", "Detach", "node %s released volume %s", att.Spec.Node, att.Spec.Volume)
			}
			return ctrl.Result{}, nil
		}
	}
	var res ctrl.Result
	if notReady[string(att.Spec.Node)] != "" {
		res.RequeueAfter = 30 * time.Second // reports going stale produce no event
	}
	if cond := meta.FindStatusCondition(st.Conditions, v1.ConditionReady); cond != nil {
		switch cond.Reason {
		case "WaitingForDeadHost", "WaitingForOtherNodes":
			// A holder's report going stale, or sanlock declaring it dead, may come without
			// an event this controller watches: look again soon.
			res.RequeueAfter = 5 * time.Second
		case "WaitingForAgent":
			// The node's agent may have died after the lock was planned: its heartbeat
			// expiring produces no event, and the condition should then say so.
			res.RequeueAfter = 30 * time.Second
		}
	}
	if equalStatus(orig.Status, att.Status) {
		return res, nil
	}
	if orDefault(orig.Status.DesiredLock) != orDefault(st.DesiredLock) {
		r.Recorder.Eventf(&att, nil, corev1.EventTypeNormal, "LockPlanned", "PlanLock",
			"node %s should now hold volume %s %s (was %s)", att.Spec.Node, att.Spec.Volume, st.DesiredLock, orDefault(orig.Status.DesiredLock))
	}
	return res, r.Status().Patch(ctx, &att, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
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

// nodesNotReady returns, for the attachments' nodes that cannot take a lock on the volume's
// VG now, why: no agent report, a stale report, or a lockspace that is not started.
func (r *VolumeAttachmentReconciler) nodesNotReady(ctx context.Context, vol *v1.SharedVolume, atts []v1.VolumeAttachment) (map[string]string, error) {
	vgName := vol.Status.VolumeGroup
	if vgName == "" {
		vgName = string(vol.Spec.VolumeGroup)
	}
	var vg v1.VolumeGroup
	if err := getVG(ctx, r, r.Heartbeats, vgName, &vg); err != nil {
		if apierrors.IsNotFound(err) {
			err = nil
		}
		return map[string]string{}, err
	}
	entries := map[string]*v1.NodeLockspaceStatus{}
	for i := range vg.Status.Nodes {
		entries[vg.Status.Nodes[i].Node] = &vg.Status.Nodes[i]
	}
	now := time.Now()
	out := map[string]string{}
	for _, a := range atts {
		node := string(a.Spec.Node)
		e, ok := entries[node]
		if msg := r.restoreGate(ctx, node); msg != "" {
			out[node] = msg
			continue
		}
		switch {
		case !ok:
			out[node] = fmt.Sprintf("no sharedlvm agent reports VG %s from node %s: is the agent running there, and does the VolumeGroup's nodeSelector select the node?", vg.Spec.VGName, node)
		case !e.Fresh(now):
			out[node] = fmt.Sprintf("the agent on node %s last reported at %s: the node or its agent may be down", node, e.LastReport)
		case !e.LockspaceStarted:
			out[node] = fmt.Sprintf("node %s has not started the lockspace of VG %s: %s", node, vg.Spec.VGName, e.Message)
		}
	}
	return out, nil
}

// deadNodes returns the nodes whose locks on the volume's VG sanlock has released (DEAD).
func (r *VolumeAttachmentReconciler) deadNodes(ctx context.Context, vol *v1.SharedVolume) (map[string]bool, error) {
	name := vol.Status.VolumeGroup
	if name == "" {
		name = string(vol.Spec.VolumeGroup)
	}
	var vg v1.VolumeGroup
	if err := getVG(ctx, r, r.Heartbeats, name, &vg); err != nil {
		if apierrors.IsNotFound(err) {
			return map[string]bool{}, nil
		}
		return nil, err
	}
	return vg.DeadNodes(time.Now()), nil
}

// restoreGate says why a node may not take new locks yet: after a reboot its agent first
// restores the locks of its existing attachments (DESIGN.md §5). "" means it may.
func (r *VolumeAttachmentReconciler) restoreGate(ctx context.Context, name string) string {
	var node corev1.Node
	if err := r.Get(ctx, types.NamespacedName{Name: name}, &node); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Sprintf("node %s does not exist", name)
		}
		return err.Error()
	}
	return v1.LocksRestoredProblem(&node)
}

func (r *VolumeAttachmentReconciler) condition(att *v1.VolumeAttachment, typ string, s metav1.ConditionStatus, reason, msg string) {
	setCondition(&att.Status.Conditions, att.Generation, typ, s, reason, msg)
}

func orDefault(m v1.LockMode) v1.LockMode {
	if m == "" {
		return v1.LockNone
	}
	return m
}

// rejectedByMultiAttach returns the attachments refused because the volume is not
// multi-attach: instance attachments on a node other than the first live instance
// attachment's, and migration targets beyond the first. Copies are always allowed.
// Oldest wins, so an existing attachment is never displaced by a newer one.
func rejectedByMultiAttach(vol *v1.SharedVolume, atts []v1.VolumeAttachment) map[string]bool {
	rejected := map[string]bool{}
	if vol.Spec.MultiAttach {
		return rejected
	}
	live := make([]v1.VolumeAttachment, 0, len(atts))
	for _, a := range atts {
		if a.DeletionTimestamp.IsZero() {
			live = append(live, a)
		}
	}
	sort.Slice(live, func(i, j int) bool {
		ti, tj := live[i].CreationTimestamp, live[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return ti.Before(&tj)
		}
		return live[i].Name < live[j].Name
	})
	firstNode := map[v1.AttachmentPurpose]v1.ObjectName{}
	for _, a := range live {
		p := a.Spec.Purpose
		if p == v1.PurposeCopy {
			continue
		}
		if p == "" {
			p = v1.PurposeInstance
		}
		if n, ok := firstNode[p]; ok && n != a.Spec.Node {
			rejected[a.Name] = true
			continue
		}
		firstNode[p] = a.Spec.Node
	}
	return rejected
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
		Complete(r)
}
