package agent

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/statusutil"
	"github.com/sharedlvm/sharedlvm-operator/metrics"
)

// Create, delete and extend: the operations on a volume's own LV.

func (r *VolumeAgent) create(ctx context.Context, vol *v1.SharedVolume) (ctrl.Result, error) {
	orig := vol.DeepCopy()
	vg, err := r.vgOf(ctx, vol)
	if err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err) // the operator reports a missing VG
	}
	vgName, lvName := string(vg.Spec.VGName), vol.LVName()
	defer r.Node.LockLV(vgName, lvName)()
	t0 := time.Now()
	lv, created, err := r.ensureLV(ctx, vol, vg, lvName, vol.Spec.Size.Value())
	if err != nil {
		return r.fail(ctx, vol, orig, "Create", err)
	}
	if created {
		metrics.ObserveOperation(metrics.OpCreate, r.Node.Name, time.Since(t0))
		r.Recorder.Eventf(vol, nil, corev1.EventTypeNormal, "Created", "Create",
			"node %s created LV %s/%s (%s, UUID %s) in %.2fs", r.Node.Name, vgName, lv.Name, quantity(lv.Size), lv.UUID, time.Since(t0).Seconds())
	}
	r.recordLV(vol, vg.Name, vgName, lv)
	statusutil.SetCondition(&vol.Status.Conditions, vol.Generation, v1.ConditionProvisioned, true, "Created",
		fmt.Sprintf("LV %s/%s exists (UUID %s)", vgName, lv.Name, lv.UUID))
	log.FromContext(ctx).Info("volume provisioned", "lv", vgName+"/"+lv.Name, "uuid", lv.UUID, "seconds", time.Since(t0).Seconds())
	return ctrl.Result{}, r.patch(ctx, vol, orig)
}

// delete wipes and removes every LV of the volume: the one status names, a migration's
// retired LV, and any LV a create, copy or migration cut short left behind (found by the
// owner tag in the VG spec names), plus a copy's temporary snapshot of its source.
func (r *VolumeAgent) delete(ctx context.Context, vol *v1.SharedVolume) (ctrl.Result, error) {
	orig := vol.DeepCopy()
	st := &vol.Status
	if c := meta.FindStatusCondition(st.Conditions, v1.ConditionProvisioned); st.LVUUID == "" && st.RetiredLV == nil &&
		c != nil && c.Status == metav1.ConditionFalse && c.Reason == v1.ReasonLVDeleted {
		// This agent's own status write of a finished delete woke it: nothing is left (no
		// create runs for a volume being deleted), and looking for leftovers again would
		// read the whole VG once more per delete.
		return ctrl.Result{}, nil
	}
	if st.LVUUID != "" {
		defer r.Node.LockLV(st.VGName, st.LVName)()
	}
	if old := st.RetiredLV; old != nil {
		if err := r.removeOwned(ctx, vol, old.VolumeGroup, old.VGName, old.LVName, old.LVUUID); err != nil {
			return r.fail(ctx, vol, orig, "Delete", err)
		}
		st.RetiredLV = nil
	}
	if st.LVUUID == "" || v1.NeedsMigration(vol) {
		if err := r.removeLeftovers(ctx, vol); err != nil {
			return r.fail(ctx, vol, orig, "Delete", err)
		}
	}
	if st.LVUUID != "" && vol.Spec.DeletionPolicy == v1.DeletionPolicyRetain && !v1.NeedsMigration(vol) {
		// Unmanage: the LV and its data stay, owned by no one.
		if err := r.release(ctx, vol); err != nil {
			return r.fail(ctx, vol, orig, "Delete", err)
		}
		kept := st.VGName + "/" + st.LVName
		st.LVUUID, st.Path, st.Progress, st.AllocatedSize, st.PVs = "", "", nil, nil, nil
		statusutil.SetCondition(&st.Conditions, vol.Generation, v1.ConditionProvisioned, false, v1.ReasonLVDeleted, fmt.Sprintf("LV %s kept with its data (deletionPolicy Retain); it no longer carries this volume's tags", kept))
		r.Recorder.Eventf(vol, nil, corev1.EventTypeNormal, "Retained", "Delete", "LV %s kept (deletionPolicy Retain)", kept)
		return ctrl.Result{}, r.patch(ctx, vol, orig)
	}
	if st.LVUUID != "" {
		if err := r.removeOwned(ctx, vol, st.VolumeGroup, st.VGName, st.LVName, st.LVUUID); err != nil {
			return r.fail(ctx, vol, orig, "Delete", err)
		}
	}
	removed := st.VGName + "/" + st.LVName
	st.LVUUID, st.Path, st.Progress, st.AllocatedSize, st.PVs = "", "", nil, nil, nil
	statusutil.SetCondition(&st.Conditions, vol.Generation, v1.ConditionProvisioned, false, v1.ReasonLVDeleted, fmt.Sprintf("LV %s removed; nothing of the volume is left on disk", removed))
	return ctrl.Result{}, r.patch(ctx, vol, orig)
}

// release removes the volume's tags from its LV (deletionPolicy Retain), after checking that
// the LV is the volume's: same UUID, owner tag present.
func (r *VolumeAgent) release(ctx context.Context, vol *v1.SharedVolume) error {
	st := &vol.Status
	tag := v1.OwnerTag(string(vol.UID))
	lv, err := r.Node.LVM.ReportLV(ctx, st.VGName, st.LVName)
	if err != nil || lv == nil {
		return err // gone already: nothing to release
	}
	if lv.UUID != st.LVUUID || !lv.HasTag(tag) {
		return nil // not this volume's LV (any more): leave it alone
	}
	for _, t := range []string{v1.TagManaged, tag} {
		if err := r.Node.LVM.RemoveTag(ctx, st.VGName, st.LVName, t); err != nil {
			return err
		}
	}
	return nil
}

// removeLeftovers removes what an interrupted create, copy or migration left: LVs with the
// volume's owner tag in the VG spec.volumeGroup names that status does not name, and the
// temporary snapshot a copy of an attached source took.
func (r *VolumeAgent) removeLeftovers(ctx context.Context, vol *v1.SharedVolume) error {
	if vol.Spec.Source != nil {
		var src v1.SharedVolume
		err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: vol.Namespace, Name: string(vol.Spec.Source.Volume)}, &src)
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		if err == nil && src.Status.VGName != "" {
			if err := r.Node.LVM.RemoveOwnedLV(ctx, src.Status.VGName, snapshotName(vol.UID), v1.TagSnapshotFor+string(vol.UID)); err != nil {
				return err
			}
		}
	}
	vg, err := r.vgOf(ctx, vol)
	if apierrors.IsNotFound(err) {
		return nil // a VG without its object is out of reach; its LVs carry the owner tag
	} else if err != nil {
		return err
	}
	vgName := string(vg.Spec.VGName)
	rep, err := r.Node.LVM.Report(ctx, vgName)
	if err != nil {
		return err
	}
	lvmVG, _ := rep.VG(vgName)
	for _, lv := range lvmVG.LVsWithTag(v1.OwnerTag(string(vol.UID))) {
		if lv.UUID == vol.Status.LVUUID {
			continue
		}
		if err := r.removeOwned(ctx, vol, vg.Name, vgName, lv.Name, lv.UUID); err != nil {
			return err
		}
	}
	return nil
}

func (r *VolumeAgent) extend(ctx context.Context, vol *v1.SharedVolume) (ctrl.Result, error) {
	orig := vol.DeepCopy()
	st := &vol.Status
	defer r.Node.LockLV(st.VGName, st.LVName)()
	t0 := time.Now()
	// The holder extends under its exclusive lock; an unheld LV is extended by LVM under a
	// transient lock. A shared holder never gets here (the operator waits with a condition).
	if err := r.Node.LVM.ExtendLV(ctx, st.VGName, st.LVName, vol.Spec.Size.Value(), false); err != nil {
		return r.fail(ctx, vol, orig, "Extend", err)
	}
	lv, err := r.lvOf(ctx, st.VGName, st.LVName)
	if err != nil {
		return r.fail(ctx, vol, orig, "Extend", err)
	}
	r.recordLV(vol, st.VolumeGroup, st.VGName, lv)
	metrics.ObserveOperation(metrics.OpExtend, r.Node.Name, time.Since(t0))
	statusutil.SetCondition(&st.Conditions, vol.Generation, v1.ConditionProvisioned, true, "Extended", fmt.Sprintf("LV %s/%s is %s", st.VGName, lv.Name, quantity(lv.Size)))
	r.Recorder.Eventf(vol, nil, corev1.EventTypeNormal, "Extended", "Extend", "node %s extended LV %s/%s to %s in %.2fs", r.Node.Name, st.VGName, lv.Name, quantity(lv.Size), time.Since(t0).Seconds())
	return ctrl.Result{}, r.patch(ctx, vol, orig)
}
