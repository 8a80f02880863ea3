package agent

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/retry"
	"github.com/sharedlvm/sharedlvm-operator/internal/statusutil"
	"github.com/sharedlvm/sharedlvm-operator/metrics"
)

// VolumeAgent runs the LVM work the operator assigns to this node (status.executorNode):
// create the LV tagged with the volume's UID, wipe and remove it on delete, extend it. Every
// step is idempotent: after a crash the LV is found again by its owner tag, never created
// twice, and nothing removes an LV without that tag.
type VolumeAgent struct {
	client.Client
	// APIReader reads volumes outside this agent's cache (which holds only the volumes
	// assigned to this node): a copy's source.
	APIReader client.Reader
	Node      *Node
	Recorder  recorder.EventRecorder
}

// +kubebuilder:rbac:groups=sharedlvm.io,resources=sharedvolumes,verbs=get;list;watch
// +kubebuilder:rbac:groups=sharedlvm.io,resources=sharedvolumes/status,verbs=get;patch;update

// Reconcile does this node's part of one volume.
func (r *VolumeAgent) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	return statusutil.QuietConflicts(r.reconcile(ctx, req))
}

func (r *VolumeAgent) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var vol v1.SharedVolume
	if err := r.Get(ctx, req.NamespacedName, &vol); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	switch PlanVolumeWork(&vol, r.Node.Name) {
	case WorkDelete:
		return r.delete(ctx, &vol)
	case WorkRemoveRetired:
		return r.removeRetired(ctx, &vol)
	case WorkCopy:
		return r.createCopy(ctx, &vol)
	case WorkCreate:
		return r.create(ctx, &vol)
	case WorkMigrate:
		return r.migrate(ctx, &vol)
	case WorkExtend:
		return r.extend(ctx, &vol)
	case WorkMove:
		return r.move(ctx, &vol)
	}
	return ctrl.Result{}, nil
}

// VolumeWork is the LVM work a volume asks of this node.
type VolumeWork string

const (
	WorkNone          VolumeWork = ""
	WorkDelete        VolumeWork = "Delete"
	WorkRemoveRetired VolumeWork = "RemoveRetired"
	WorkCopy          VolumeWork = "Copy"
	WorkCreate        VolumeWork = "Create"
	WorkMigrate       VolumeWork = "Migrate"
	WorkExtend        VolumeWork = "Extend"
	WorkMove          VolumeWork = "Move"
)

// PlanVolumeWork says what this node does for a volume: nothing unless the operator named
// it the executor; then, in this order, the deletion (once the operator set phase Deleting:
// never while attached), the removal of a migration's retired LV, the create (a copy when
// spec.source is set), the migration, the extend, the move.
func PlanVolumeWork(vol *v1.SharedVolume, node string) VolumeWork {
	st := &vol.Status
	switch {
	case st.ExecutorNode != node:
		return WorkNone
	case !vol.DeletionTimestamp.IsZero():
		if st.Phase == v1.VolumeDeleting {
			return WorkDelete
		}
		return WorkNone
	case st.RetiredLV != nil:
		return WorkRemoveRetired
	case st.LVUUID == "" && vol.Spec.Source != nil:
		return WorkCopy
	case st.LVUUID == "":
		return WorkCreate
	case v1.NeedsMigration(vol):
		return WorkMigrate
	case st.AllocatedSize != nil && vol.Spec.Size.Cmp(*st.AllocatedSize) > 0:
		return WorkExtend
	case v1.NeedsMove(vol):
		return WorkMove
	}
	return WorkNone
}

func (r *VolumeAgent) fail(ctx context.Context, vol, orig *v1.SharedVolume, action string, err error) (ctrl.Result, error) {
	reason := lvm.KindOf(err).String()
	if reason == "Unknown" {
		reason = action + "Failed"
	}
	metrics.CountFailure(strings.ToLower(action), r.Node.Name, reason)
	msg := fmt.Sprintf("%s on node %s failed: %v", action, r.Node.Name, err)
	if statusutil.SetCondition(&vol.Status.Conditions, vol.Generation, v1.ConditionProvisioned, vol.Status.LVUUID != "", reason, msg) {
		r.Recorder.Eventf(vol, nil, corev1.EventTypeWarning, reason, action, "%s", msg)
	}
	if perr := r.patch(ctx, vol, orig); perr != nil {
		return ctrl.Result{}, perr
	}
	switch lvm.KindOf(err) {
	case lvm.KindInvalidName, lvm.KindAlreadyExists:
		return ctrl.Result{}, nil // needs a change of spec; retrying would not help
	}
	return ctrl.Result{}, err // controller-runtime backs off exponentially
}

func (r *VolumeAgent) patch(ctx context.Context, vol, orig *v1.SharedVolume) error {
	return patchStatus(ctx, r.Client, vol, orig, func(o client.Object) any { return o.(*v1.SharedVolume).Status })
}

func (r *VolumeAgent) vgOf(ctx context.Context, vol *v1.SharedVolume) (*v1.VolumeGroup, error) {
	var vg v1.VolumeGroup
	if err := r.Get(ctx, types.NamespacedName{Name: string(vol.Spec.VolumeGroup)}, &vg); err != nil {
		return nil, err
	}
	return &vg, nil
}

// SetupWithManager registers the controller; only volumes assigned to this node matter.
func (r *VolumeAgent) SetupWithManager(mgr ctrl.Manager) error {
	mine := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.(*v1.SharedVolume).Status.ExecutorNode == r.Node.Name
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.SharedVolume{}, builder.WithPredicates(mine)).
		// Several volumes at once: a wipe or a copy takes minutes and must not hold up the
		// node's other volumes, and creates finishing together share one report (8 creates
		// per report in a burst). Metadata changes stay serialized per VG in the LVM
		// client, and one volume's work per LV lock.
		WithOptions(controller.Options{MaxConcurrentReconciles: 8, RateLimiter: retry.Limiter()}).
		Named("agent-volume").
		Complete(r)
}
