package agent

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/statusutil"
	"github.com/sharedlvm/sharedlvm-operator/metrics"
)

// AttachmentResync is how often an applied attachment is checked against sanlock, so that a
// lock lost behind the agent's back is noticed and taken again.
const AttachmentResync = 30 * time.Second

// LeaseSnapshotMaxAge is how old a `sanlock client status` reading may be when a held
// attachment is resynced: each VG report cycle reads sanlock afresh, and the resyncs in
// between reuse that reading, so an agent's sanlock calls per cycle do not grow with the
// number of LVs it holds (1.5 periods: report cycles are jittered). A lost lease is still
// noticed within two resync periods.
const LeaseSnapshotMaxAge = AttachmentResync * 3 / 2

// AttachmentAgent applies, for each VolumeAttachment of this node, the lock the operator
// wants (status.desiredLock), and reports the lock it then holds (status.appliedLock, as
// lvmlockd granted it and as sanlock shows it on the check that follows) with the device
// path. It never decides a mode itself: the operator orders transitions across nodes
// through this handshake.
type AttachmentAgent struct {
	client.Client
	// APIReader reads the attachment's volume: the agent's cache holds only the volumes
	// assigned to this node.
	APIReader client.Reader
	Node      *Node
	Recorder  recorder.EventRecorder
	// Restored, if set, gates lock changes until the node's boot restore has run (it
	// re-activates everything in batches; one-by-one activation would only race it).
	Restored func() bool
}

// +kubebuilder:rbac:groups=sharedlvm.io,resources=volumeattachments,verbs=get;list;watch
// +kubebuilder:rbac:groups=sharedlvm.io,resources=volumeattachments/status,verbs=get;patch;update

func toActivation(m v1.LockMode) lvm.ActivationMode {
	switch m {
	case v1.LockExclusive:
		return lvm.Exclusive
	case v1.LockShared:
		return lvm.Shared
	}
	return lvm.Deactivate
}

func fromActivation(m lvm.ActivationMode) v1.LockMode {
	switch m {
	case lvm.Exclusive:
		return v1.LockExclusive
	case lvm.Shared:
		return v1.LockShared
	}
	return v1.LockNone
}

// Reconcile applies one attachment's desired lock.
func (r *AttachmentAgent) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	return statusutil.QuietConflicts(r.reconcile(ctx, req))
}

func (r *AttachmentAgent) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var att v1.VolumeAttachment
	if err := r.Get(ctx, req.NamespacedName, &att); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if string(att.Spec.Node) != r.Node.Name {
		return ctrl.Result{}, nil
	}
	if r.Restored != nil && !r.Restored() {
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	orig := att.DeepCopy()
	st := &att.Status
	// The operator names the LV in the attachment's status; an attachment written before
	// it did (an older operator) is resolved through the volume.
	var vol v1.SharedVolume
	var err error
	if lv := st.LV; lv != nil {
		vol.Status.VGName, vol.Status.LVName, vol.Status.LVUUID = lv.VGName, lv.LVName, lv.LVUUID
	} else if st.DesiredLock.OrNone() != v1.LockNone || st.AppliedLock.OrNone() != v1.LockNone {
		err = r.APIReader.Get(ctx, types.NamespacedName{Namespace: att.Namespace, Name: string(att.Spec.Volume)}, &vol)
		if err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
	}
	if err != nil || vol.Status.LVUUID == "" {
		// No LV: nothing can be held. Say so, so that a deleted attachment can go.
		if st.AppliedLock != v1.LockNone {
			st.AppliedLock, st.DevicePath = v1.LockNone, ""
		}
		return ctrl.Result{}, r.patch(ctx, &att, orig)
	}
	vg, lvName, uuid := vol.Status.VGName, vol.Status.LVName, vol.Status.LVUUID
	want := toActivation(st.DesiredLock)

	// Another operation of this agent on the LV (a copy reading it from a snapshot, a
	// move, a wipe) can take minutes: wait for it without holding a worker.
	unlock, ok := r.Node.TryLockLV(uuid)
	if !ok {
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	defer unlock()
	// A change the operator asks for (desired differs from what was applied) is applied at
	// once: lvchange is idempotent, and the reconcile that the status write triggers checks
	// the lease against sanlock. Only a resync (nothing asked) reads sanlock first, and then
	// a reading a few seconds old will
	// do: this node's own lock changes invalidate it, so it is never older than another
	// host's doing, and resyncing every held attachment costs one sanlock call per node,
	// not one per LV.
	requested := st.AppliedLock.OrNone() != st.DesiredLock.OrNone() ||
		(st.AppliedLock.OrNone() != v1.LockNone && st.LVUUID != uuid) // applied to another LV
	have := toActivation(st.AppliedLock)
	if !requested {
		sl, err := r.Node.SanlockStatus(ctx, LeaseSnapshotMaxAge)
		if err != nil {
			statusutil.SetCondition(&st.Conditions, att.Generation, v1.ConditionLockApplied, false, "SanlockUnavailable", "cannot read sanlock on node "+r.Node.Name+": "+err.Error())
			_ = r.patch(ctx, &att, orig)
			return ctrl.Result{}, err
		}
		have = LeaseMode(sl, vg, uuid)
	}
	if requested || have != want {
		if !requested && have == lvm.Deactivate && want != lvm.Deactivate {
			r.Recorder.Eventf(&att, nil, corev1.EventTypeWarning, "LockLost", "ApplyLock",
				"node %s no longer held its %s lock on %s/%s; taking it again", r.Node.Name, st.AppliedLock, vg, lvName)
		}
		t0 := time.Now()
		op := metrics.OpConvert
		switch {
		case have == lvm.Deactivate:
			op = metrics.OpAttach
		case want == lvm.Deactivate:
			op = metrics.OpDetach
		}
		err := r.Node.LVM.Activate(ctx, vg, want, lvName)
		r.Node.Invalidate()
		if err != nil {
			reason := lvm.KindOf(err).String()
			metrics.CountFailure(op, r.Node.Name, reason)
			msg := fmt.Sprintf("node %s could not take %s lock on %s/%s: %v", r.Node.Name, fromActivation(want), vg, lvName, err)
			if lvm.KindOf(err) == lvm.KindLockHeldByOther {
				msg += " (sanlock refused: another host holds it; retrying until it is released)"
			}
			if statusutil.SetCondition(&st.Conditions, att.Generation, v1.ConditionLockApplied, false, reason, msg) {
				r.Recorder.Eventf(&att, nil, corev1.EventTypeWarning, "LockRefused", "ApplyLock", "%s", msg)
			}
			if perr := r.patch(ctx, &att, orig); perr != nil {
				return ctrl.Result{}, perr
			}
			return ctrl.Result{}, err // exponential backoff, visible in the condition
		}
		metrics.ObserveOperation(op, r.Node.Name, time.Since(t0))
		log.FromContext(ctx).Info("lock applied", "lv", vg+"/"+lvName, "mode", fromActivation(want), "seconds", time.Since(t0).Seconds())
		r.Recorder.Eventf(&att, nil, corev1.EventTypeNormal, "LockApplied", "ApplyLock",
			"node %s now holds %s/%s %s (%.2fs)", r.Node.Name, vg, lvName, fromActivation(want), time.Since(t0).Seconds())
		// lvchange returned only after lvmlockd was granted (or released) the sanlock lease
		// in this mode: that is the lease's state now. Reading sanlock here as well would
		// put one more command between the request and the status; instead the reconcile
		// that this status write triggers reads sanlock afresh (the reading was invalidated
		// above) and corrects the status and takes the lock again if the two disagree.
		have = want
	}
	// Report the lease's mode (read from sanlock, or just granted by lvmlockd), not what was
	// asked.
	st.AppliedLock = fromActivation(have)
	st.LVUUID = uuid
	st.DevicePath = ""
	if have != lvm.Deactivate {
		st.DevicePath = "/dev/" + vg + "/" + lvName
	}
	if have == want {
		statusutil.SetCondition(&st.Conditions, att.Generation, v1.ConditionLockApplied, true, "Applied",
			fmt.Sprintf("node %s holds %s (granted by lvmlockd, checked against sanlock every %v)", r.Node.Name, st.AppliedLock, AttachmentResync))
	}
	if err := r.patch(ctx, &att, orig); err != nil {
		return ctrl.Result{}, err
	}
	if have == lvm.Deactivate {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{RequeueAfter: AttachmentResync}, nil
}

func (r *AttachmentAgent) patch(ctx context.Context, att, orig *v1.VolumeAttachment) error {
	return patchStatus(ctx, r.Client, att, orig, func(o client.Object) any { return o.(*v1.VolumeAttachment).Status })
}

// SetupWithManager registers the controller. The cache holds only this node's attachments.
// A volume's change that matters here (its LV created, released for a delete) reaches this
// node as a change of the attachment's status by the operator, which watches volumes; a
// periodic resync of held locks catches the rest.
func (r *AttachmentAgent) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.VolumeAttachment{}).
		// Different LVs in parallel (lvchange of distinct LVs does not conflict); one LV's
		// changes stay serialized by the per-LV lock.
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Named("agent-attachment").
		Complete(r)
}
