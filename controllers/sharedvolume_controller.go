package controllers

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
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
	switch {
	case apierrors.IsNotFound(vgErr):
		if setCondition(&st.Conditions, gen, v1.ConditionReady, metav1.ConditionFalse, "VolumeGroupNotFound",
			fmt.Sprintf("VolumeGroup %q does not exist: create it or point spec.volumeGroup at an existing one", vol.Spec.VolumeGroup)) {
			r.Recorder.Eventf(&vol, nil, corev1.EventTypeWarning, "VolumeGroupNotFound", "Provision",
				"VolumeGroup %q does not exist", vol.Spec.VolumeGroup)
		}
	case vgErr != nil:
		return ctrl.Result{}, vgErr
	}

	if st.LVUUID == "" {
		if st.Phase == "" {
			st.Phase = v1.VolumePending
			r.Recorder.Eventf(&vol, nil, corev1.EventTypeNormal, "Pending", "Provision",
				"waiting for a node with a started lockspace of VolumeGroup %q to create LV %q", vol.Spec.VolumeGroup, vol.LVName())
		}
		if vgErr == nil {
			setCondition(&st.Conditions, gen, v1.ConditionReady, metav1.ConditionFalse, "Provisioning",
				fmt.Sprintf("LV %q is not created yet in VolumeGroup %q", vol.LVName(), vol.Spec.VolumeGroup))
		}
		setCondition(&st.Conditions, gen, v1.ConditionProvisioned, metav1.ConditionFalse, "WaitingForExecutor",
			"no node has created the LV yet")
	}

	mode, holders := lockrule.Holders(nodesOf(atts, nil))
	st.Lock = v1.LockStatus{Mode: toLockMode(mode), Holders: holders}
	if st.LVUUID != "" && (st.Phase == v1.VolumeAvailable || st.Phase == v1.VolumeInUse) {
		st.Phase = v1.VolumeAvailable
		if len(holders) > 0 {
			st.Phase = v1.VolumeInUse
		}
	}
	st.ObservedGeneration = gen
	return ctrl.Result{}, r.patchStatus(ctx, &vol, orig)
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
		msg := fmt.Sprintf("volume is still attached by %v: delete those VolumeAttachments (detach) first; the volume is deleted once none is left", names)
		if setCondition(&vol.Status.Conditions, vol.Generation, v1.ConditionDeletionBlocked, metav1.ConditionTrue, "Attached", msg) {
			r.Recorder.Eventf(vol, nil, corev1.EventTypeWarning, "DeleteBlocked", "Delete", "%s", msg)
		}
		return ctrl.Result{}, r.patchStatus(ctx, vol, orig)
	}
	if vol.Status.LVUUID != "" {
		// The LV exists: the agent wipes and removes it and then clears status.lvUUID.
		setCondition(&vol.Status.Conditions, vol.Generation, v1.ConditionDeletionBlocked, metav1.ConditionTrue, "Wiping",
			fmt.Sprintf("waiting for LV %s/%s to be wiped and removed", vol.Status.VGName, vol.Status.LVName))
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

// SetupWithManager registers the reconciler; attachment changes re-trigger their volume.
func (r *SharedVolumeReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.SharedVolume{}).
		Watches(&v1.VolumeAttachment{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			a := o.(*v1.VolumeAttachment)
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: a.Namespace, Name: string(a.Spec.Volume)}}}
		})).
		Named("sharedvolume").
		Complete(r)
}
