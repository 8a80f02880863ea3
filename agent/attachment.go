package agent

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/retry"
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
	Node     *Node
	Recorder recorder.EventRecorder
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
	f := LockFacts{Desired: st.DesiredLock, Applied: st.AppliedLock, AppliedLV: st.LVUUID, LV: st.LV}
	if f.LV == nil {
		// The operator names the LV once the volume has one: without it nothing can be held.
		// Say so, so that a deleted attachment can go.
		st.AppliedLock, st.DevicePath = v1.LockNone, ""
		return ctrl.Result{}, r.patch(ctx, &att, orig)
	}
	vg, lvName, uuid := f.LV.VGName, f.LV.LVName, f.LV.LVUUID
	// Another operation of this agent on the LV (a copy reading it from a snapshot, a
	// move, a wipe) can take minutes: wait for it without holding a worker.
	unlock, ok := r.Node.TryLockLV(vg, lvName)
	if !ok {
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	defer unlock()
	if !f.Requested() {
		sl, err := r.Node.SanlockStatus(ctx, LeaseSnapshotMaxAge)
		if err != nil {
			statusutil.SetCondition(&st.Conditions, att.Generation, v1.ConditionLockApplied, false, "SanlockUnavailable", "cannot read sanlock on node "+r.Node.Name+": "+err.Error())
			_ = r.patch(ctx, &att, orig)
			return ctrl.Result{}, err
		}
		lease := LeaseMode(sl, vg, uuid)
		f.Lease = &lease
	}
	p := PlanLock(f)
	have := p.Have
	if p.LockLost {
		r.Recorder.Eventf(&att, nil, corev1.EventTypeWarning, "LockLost", "ApplyLock",
			"node %s no longer held its %s lock on %s/%s; taking it again", r.Node.Name, st.AppliedLock, vg, lvName)
	}
	if p.Apply {
		if err := r.apply(ctx, &att, orig, p); err != nil {
			return ctrl.Result{}, err // exponential backoff, visible in the condition
		}
		have = p.Want
	}
	// Report the lease's mode (read from sanlock, or just granted by lvmlockd), not what was
	// asked.
	st.AppliedLock, st.LVUUID, st.DevicePath = fromActivation(have), uuid, ""
	if have != lvm.Deactivate {
		st.DevicePath = "/dev/" + vg + "/" + lvName
	}
	if have == p.Want {
		statusutil.SetCondition(&st.Conditions, att.Generation, v1.ConditionLockApplied, true, "Applied",
			fmt.Sprintf("node %s holds %s (granted by lvmlockd, checked against sanlock every %v)", r.Node.Name, st.AppliedLock, AttachmentResync))
	}
	if err := r.patch(ctx, &att, orig); err != nil || have == lvm.Deactivate {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: AttachmentResync}, nil
}

// apply runs the lvchange the plan asks for. lvchange returns only after lvmlockd was
// granted (or released) the sanlock lease in that mode: that is the lease's state now.
// Reading sanlock here as well would put one more command between the request and the
// status; the reconcile that the status write triggers reads sanlock afresh (the reading is
// invalidated here) and corrects the status, and takes the lock again, if they disagree.
// A refusal is written to the LockApplied condition (and evented once) and returned.
func (r *AttachmentAgent) apply(ctx context.Context, att, orig *v1.VolumeAttachment, p LockPlan) error {
	lv := att.Status.LV
	t0 := time.Now()
	err := r.Node.LVM.Activate(ctx, lv.VGName, p.Want, lv.LVName)
	r.Node.Invalidate()
	if err != nil {
		reason := lvm.KindOf(err).String()
		metrics.CountFailure(p.Op, r.Node.Name, reason)
		msg := fmt.Sprintf("node %s could not take %s lock on %s/%s: %v", r.Node.Name, fromActivation(p.Want), lv.VGName, lv.LVName, err)
		if lvm.KindOf(err) == lvm.KindLockHeldByOther {
			msg += " (sanlock refused: another host holds it; retrying until it is released)"
		}
		if statusutil.SetCondition(&att.Status.Conditions, att.Generation, v1.ConditionLockApplied, false, reason, msg) {
			r.Recorder.Eventf(att, nil, corev1.EventTypeWarning, "LockRefused", "ApplyLock", "%s", msg)
		}
		if perr := r.patch(ctx, att, orig); perr != nil {
			return perr
		}
		return err
	}
	took := time.Since(t0)
	metrics.ObserveOperation(p.Op, r.Node.Name, took)
	log.FromContext(ctx).Info("lock applied", "lv", lv.VGName+"/"+lv.LVName, "mode", fromActivation(p.Want), "seconds", took.Seconds())
	r.Recorder.Eventf(att, nil, corev1.EventTypeNormal, "LockApplied", "ApplyLock",
		"node %s now holds %s/%s %s (%.2fs)", r.Node.Name, lv.VGName, lv.LVName, fromActivation(p.Want), took.Seconds())
	return nil
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
		WithOptions(controller.Options{MaxConcurrentReconciles: 4, RateLimiter: retry.Limiter()}).
		Named("agent-attachment").
		Complete(r)
}
