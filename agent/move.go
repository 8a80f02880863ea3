package agent

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/metrics"
)

// Moves: the volume's extents between PVs of its VG (pvmove), online.

// move runs `pvmove -n LV` for each PV of the LV outside spec.pvs, online: on the exclusive
// holder, or, unattached, under an exclusive lock it takes for the move and releases after.
// Progress goes to status.progress. A move already running (the agent restarted meanwhile:
// lvmpolld carries on) is watched, not started again.
func (r *VolumeAgent) move(ctx context.Context, vol *v1.SharedVolume) (ctrl.Result, error) {
	orig := vol.DeepCopy()
	st := &vol.Status
	vgName, lvName := st.VGName, st.LVName
	defer r.Node.LockLV(vgName, lvName)()
	vgCR, err := r.vgOf(ctx, vol)
	if err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	cur, err := r.lvOf(ctx, vgName, lvName)
	if err != nil {
		return r.fail(ctx, vol, orig, "Move", err)
	}
	// Work from LVM's placement, not from status (which a cache may show stale): a move
	// that is already done only needs recording, and must not take any lock.
	targets, sources, err := PlanMove(vgCR.Name, vgCR.Spec.PVs, vol.Spec.PVs, cur.Devices)
	if err != nil {
		return r.fail(ctx, vol, orig, "Move", err)
	}
	if len(sources) == 0 && !cur.Moving() {
		r.recordLV(vol, st.VolumeGroup, vgName, cur)
		vol.Status.Progress = nil
		return ctrl.Result{}, r.patch(ctx, vol, orig)
	}
	sl, err := r.Node.SanlockStatus(ctx, 0)
	if err != nil {
		return ctrl.Result{}, err
	}
	transient := false
	switch LeaseMode(sl, vgName, st.LVUUID) {
	case lvm.Shared:
		return r.fail(ctx, vol, orig, "Move", &lvm.Error{Kind: lvm.KindRequiresExclusive, Err: fmt.Errorf("the LV is held shared here: pvmove needs it exclusive")})
	case lvm.Deactivate:
		if err := r.Node.LVM.Activate(ctx, vgName, lvm.Exclusive, lvName); err != nil {
			return r.fail(ctx, vol, orig, "Move", err)
		}
		r.Node.Invalidate()
		transient = true
	}
	release := func() {
		if transient {
			transient = false
			_ = r.Node.LVM.Activate(ctx, vgName, lvm.Deactivate, lvName)
			r.Node.Invalidate()
		}
	}
	defer release() // on every early return
	t0 := time.Now()
	start := metav1.Now()
	if len(sources) == 0 {
		sources = []string{""} // only watch the move already running
	}
	for _, src := range sources {
		if _, running, err := r.Node.LVM.PVMoveProgress(ctx, vgName, lvName); err == nil && !running && src != "" {
			if err := r.Node.LVM.StartPVMove(ctx, vgName, lvName, []string{src}, targets); err != nil {
				return r.fail(ctx, vol, orig, "Move", err)
			}
		}
		if err := r.watchPVMove(ctx, vol, &start); err != nil {
			if ctx.Err() != nil {
				return ctrl.Result{}, ctx.Err() // lvmpolld carries on; the next pass watches it
			}
			return r.fail(ctx, vol, orig, "Move", err)
		}
	}
	// Release a lock taken only for the move before saying the move is done.
	release()
	lv, err := r.lvOf(ctx, vgName, lvName)
	if err != nil {
		return r.fail(ctx, vol, orig, "Move", err)
	}
	if err := r.Get(ctx, client.ObjectKeyFromObject(vol), vol); err != nil {
		return ctrl.Result{}, err
	}
	orig = vol.DeepCopy()
	r.recordLV(vol, st.VolumeGroup, vgName, lv)
	vol.Status.Progress = nil
	metrics.ObserveOperation(metrics.OpPVMove, r.Node.Name, time.Since(t0))
	r.Recorder.Eventf(vol, nil, corev1.EventTypeNormal, "Moved", "Move", "node %s moved LV %s/%s onto %v in %.1fs (pvmove, online)", r.Node.Name, vgName, lvName, lv.Devices, time.Since(t0).Seconds())
	return ctrl.Result{}, r.patch(ctx, vol, orig)
}

// watchPVMove reports a running pvmove's progress into status.progress every second until it
// ends (or ctx does: lvmpolld carries on, and the next pass watches it).
func (r *VolumeAgent) watchPVMove(ctx context.Context, vol *v1.SharedVolume, start *metav1.Time) error {
	vgName, lvName := vol.Status.VGName, vol.Status.LVName
	for {
		pct, running, err := r.Node.LVM.PVMoveProgress(ctx, vgName, lvName)
		if err != nil || !running {
			return err
		}
		p := vol.DeepCopy()
		vol.Status.Progress = &v1.OperationProgress{Operation: "pvmove", Percent: int32(pct), Node: r.Node.Name, StartTime: start}
		if err := r.patch(ctx, vol, p); err != nil && !apierrors.IsConflict(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// PlanMove decides a move from the VG's PVs, the PVs spec.pvs asks for and the devices LVM
// shows the LV on: the targets (spec.pvs, each of which must be a PV of the VolumeGroup),
// and the sources (the LV's devices outside them, pvmove's own temporary ones aside).
// No source means nothing to move.
func PlanMove(vgCR string, vgPVs, specPVs []v1.DevicePath, devices []string) (targets, sources []string, err error) {
	inVG := map[string]bool{}
	for _, p := range vgPVs {
		inVG[string(p)] = true
	}
	want := map[string]bool{}
	for _, p := range specPVs {
		if !inVG[string(p)] {
			return nil, nil, &lvm.Error{Kind: lvm.KindInvalidName,
				Err: fmt.Errorf("spec.pvs names %s, which is not a PV of VolumeGroup %s (%v): fix spec.pvs", p, vgCR, vgPVs)}
		}
		targets = append(targets, string(p))
		want[string(p)] = true
	}
	for _, d := range devices {
		if !want[d] && !strings.HasPrefix(d, "pvmove") {
			sources = append(sources, d)
		}
	}
	return targets, sources, nil
}
