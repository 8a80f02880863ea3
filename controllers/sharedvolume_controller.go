package controllers

import (
	"context"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	corev1 "k8s.io/api/core/v1"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/controllers/lockrule"
)

// SharedVolumeReconciler owns a SharedVolume's finalizer, phase and aggregated lock status.
type SharedVolumeReconciler struct {
	client.Client
	Recorder recorder.EventRecorder
}

// +kubebuilder:rbac:groups=sharedlvm.io,resources=sharedvolumes,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=sharedlvm.io,resources=sharedvolumes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=sharedlvm.io,resources=sharedvolumes/finalizers,verbs=update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile moves one SharedVolume towards its spec.
func (r *SharedVolumeReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	return quietConflicts(r.reconcile(ctx, req))
}

func (r *SharedVolumeReconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
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
		logger.V(1).Info("added finalizer")
	}

	orig := vol.DeepCopy()
	st := &vol.Status
	gen := vol.Generation

	var vg v1.VolumeGroup
	vgErr := r.Get(ctx, types.NamespacedName{Name: string(vol.Spec.VolumeGroup)}, &vg)
	if vgErr != nil && !apierrors.IsNotFound(vgErr) {
		return ctrl.Result{}, vgErr
	}
	vgFound := vgErr == nil
	nodes := nodesOf(atts, nil)
	mode, holders := lockrule.Holders(nodes)
	st.Lock = v1.LockStatus{Mode: toLockMode(mode), Holders: holders}

	needCreate := st.LVUUID == ""
	needExtend := !needCreate && st.AllocatedSize != nil && vol.Spec.Size.Cmp(*st.AllocatedSize) > 0
	needMove := !needCreate && v1.NeedsMove(&vol)
	st.ExecutorNode = ""
	switch {
	case needMove && mode == lockrule.Shared:
		msg := fmt.Sprintf("moving the LV's extents (pvmove) needs it held exclusively by one host, and it is held shared by %v: the move runs once a single node holds it (detach the others, or wait for the live migration to finish)", holders)
		if setCondition(&st.Conditions, gen, v1.ConditionReady, metav1.ConditionFalse, "MoveRefusedWhileShared", msg) {
			r.Recorder.Eventf(&vol, nil, corev1.EventTypeWarning, "MoveRefusedWhileShared", "Move", "%s", msg)
		}
	case needMove && mode == lockrule.Exclusive:
		st.ExecutorNode = holders[0] // pvmove -n runs where the exclusive lock is held
	case needMove:
		st.ExecutorNode = pickExecutor(&vg, string(vol.UID), orig.Status.ExecutorNode, r.nodeCanWork(ctx))
	case !vgFound:
		if setCondition(&st.Conditions, gen, v1.ConditionReady, metav1.ConditionFalse, "VolumeGroupNotFound",
			fmt.Sprintf("VolumeGroup %q does not exist: create it or point spec.volumeGroup at an existing one", vol.Spec.VolumeGroup)) {
			r.Recorder.Eventf(&vol, nil, corev1.EventTypeWarning, "VolumeGroupNotFound", "Provision",
				"VolumeGroup %q does not exist", vol.Spec.VolumeGroup)
		}
	case needExtend && mode == lockrule.Shared:
		setCondition(&st.Conditions, gen, v1.ConditionReady, metav1.ConditionFalse, "ExtendWaitsForSingleHolder",
			fmt.Sprintf("the volume is held shared by %v; it is extended once a single node holds it (detach the other attachments, or wait for the live migration to finish)", holders))
	case needCreate || needExtend:
		if mode == lockrule.Exclusive {
			st.ExecutorNode = holders[0] // the exclusive holder does the work under its lock
		} else {
			st.ExecutorNode = pickExecutor(&vg, string(vol.UID), orig.Status.ExecutorNode, r.nodeCanWork(ctx))
		}
		if st.ExecutorNode == "" {
			msg := fmt.Sprintf("no node has started the lockspace of VG %s (check `kubectl get svg %s`: are the agents running and does spec.nodeSelector select them?)", vg.Spec.VGName, vg.Name)
			if setCondition(&st.Conditions, gen, v1.ConditionReady, metav1.ConditionFalse, "NoReadyNode", msg) {
				r.Recorder.Eventf(&vol, nil, corev1.EventTypeWarning, "NoReadyNode", "Provision", "%s", msg)
			}
		}
	}

	switch {
	case needCreate && st.ExecutorNode != "":
		st.Phase = v1.VolumeCreating
		setCondition(&st.Conditions, gen, v1.ConditionReady, metav1.ConditionFalse, "Creating",
			fmt.Sprintf("node %s is creating LV %s in VG %s", st.ExecutorNode, vol.LVName(), vg.Spec.VGName))
	case needCreate:
		if st.Phase != v1.VolumePending {
			r.Recorder.Eventf(&vol, nil, corev1.EventTypeNormal, "Pending", "Provision",
				"waiting for a node with a started lockspace of VolumeGroup %q to create LV %q", vol.Spec.VolumeGroup, vol.LVName())
		}
		st.Phase = v1.VolumePending
	case needMove && st.ExecutorNode != "":
		st.Phase = v1.VolumeMoving
		setCondition(&st.Conditions, gen, v1.ConditionReady, metav1.ConditionTrue, "Moving",
			fmt.Sprintf("node %s is moving the LV's extents onto %v (pvmove, online)", st.ExecutorNode, vol.Spec.PVs))
	default:
		st.Phase = v1.VolumeAvailable
		if len(holders) > 0 {
			st.Phase = v1.VolumeInUse
		}
		if (!needExtend && !needMove) || st.ExecutorNode != "" {
			msg := fmt.Sprintf("LV %s/%s is %s", st.VGName, st.LVName, strings.ToLower(string(st.Phase)))
			if needExtend {
				msg = fmt.Sprintf("node %s is extending LV %s/%s to %s", st.ExecutorNode, st.VGName, st.LVName, vol.Spec.Size.String())
			}
			setCondition(&st.Conditions, gen, v1.ConditionReady, metav1.ConditionTrue, string(st.Phase), msg)
		}
	}
	st.ObservedGeneration = gen
	var res ctrl.Result
	if needCreate || needExtend || needMove {
		// Safety net: re-check the assignment if the executor's reports stop (node death).
		res.RequeueAfter = 30 * time.Second
	}
	return res, r.patchStatus(ctx, &vol, orig)
}

// nodeCanWork rejects nodes whose agent has not restored this boot's locks (a rebooted
// node's VG entry can look fresh for a while after it went down).
func (r *SharedVolumeReconciler) nodeCanWork(ctx context.Context) func(string) bool {
	return func(name string) bool {
		var node corev1.Node
		if err := r.Get(ctx, types.NamespacedName{Name: name}, &node); err != nil {
			return false
		}
		return v1.LocksRestoredProblem(&node) == ""
	}
}

// pickExecutor keeps the current executor while it can still work on the VG, otherwise
// picks a ready node, spread by the volume's UID so that creates do not all land on one node.
func pickExecutor(vg *v1.VolumeGroup, uid, current string, canWork func(string) bool) string {
	now := time.Now()
	var ready []string
	for i := range vg.Status.Nodes {
		n := &vg.Status.Nodes[i]
		if n.Ready(now) && canWork(n.Node) {
			if n.Node == current {
				return current
			}
			ready = append(ready, n.Node)
		}
	}
	if len(ready) == 0 {
		return ""
	}
	sort.Strings(ready)
	h := fnv.New32a()
	_, _ = h.Write([]byte(uid))
	return ready[int(h.Sum32())%len(ready)]
}

func (r *SharedVolumeReconciler) reconcileDelete(ctx context.Context, vol *v1.SharedVolume, atts []v1.VolumeAttachment) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(vol, v1.Finalizer) {
		return ctrl.Result{}, nil
	}
	orig := vol.DeepCopy()
	vol.Status.Phase = v1.VolumeDeleting
	if len(atts) > 0 {
		names := make([]string, 0, len(atts))
		for _, a := range atts {
			names = append(names, fmt.Sprintf("%s (node %s)", a.Name, a.Spec.Node))
		}
		vol.Status.ExecutorNode = "" // no LVM work while attached
		msg := fmt.Sprintf("volume is still attached by %v: delete those VolumeAttachments (detach) first; the volume is deleted once none is left", names)
		if setCondition(&vol.Status.Conditions, vol.Generation, v1.ConditionDeletionBlocked, metav1.ConditionTrue, "Attached", msg) {
			r.Recorder.Eventf(vol, nil, corev1.EventTypeWarning, "DeleteBlocked", "Delete", "%s", msg)
		}
		return ctrl.Result{}, r.patchStatus(ctx, vol, orig)
	}
	if vol.Status.LVUUID != "" {
		// The LV exists: an agent wipes and removes it, then clears status.lvUUID.
		var vg v1.VolumeGroup
		if err := r.Get(ctx, types.NamespacedName{Name: vol.Status.VolumeGroup}, &vg); err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
		vol.Status.ExecutorNode = pickExecutor(&vg, string(vol.UID), orig.Status.ExecutorNode, r.nodeCanWork(ctx))
		msg := fmt.Sprintf("node %s is wiping and removing LV %s/%s", vol.Status.ExecutorNode, vol.Status.VGName, vol.Status.LVName)
		if vol.Status.ExecutorNode == "" {
			msg = fmt.Sprintf("waiting for a node with a started lockspace of VG %s to wipe and remove LV %s", vol.Status.VGName, vol.Status.LVName)
		}
		setCondition(&vol.Status.Conditions, vol.Generation, v1.ConditionDeletionBlocked, metav1.ConditionTrue, "Wiping", msg)
		return ctrl.Result{}, r.patchStatus(ctx, vol, orig)
	}
	controllerutil.RemoveFinalizer(vol, v1.Finalizer)
	if err := r.Update(ctx, vol); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	r.Recorder.Eventf(vol, nil, corev1.EventTypeNormal, "Deleted", "Delete", "volume deleted")
	return ctrl.Result{}, nil
}

func (r *SharedVolumeReconciler) patchStatus(ctx context.Context, vol, orig *v1.SharedVolume) error {
	if equalStatus(orig.Status, vol.Status) {
		return nil
	}
	return r.Status().Patch(ctx, vol, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}

// volumesOfVG maps a VolumeGroup to the volumes placed in it.
func (r *SharedVolumeReconciler) volumesOfVG(ctx context.Context, o client.Object) []reconcile.Request {
	var vols v1.SharedVolumeList
	if err := r.List(ctx, &vols, client.MatchingFields{IndexVolumeGroup: o.GetName()}); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(vols.Items))
	for _, v := range vols.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&v)})
	}
	return reqs
}

// readyNodesChanged passes VolumeGroup updates that change which nodes have a started
// lockspace or which hosts sanlock declares dead: agents report every 30 s, and most reports
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
		Named("sharedvolume").
		Complete(r)
}
