package agent

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/sharedlvm/sharedlvm-operator/agent/blockdev"
	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/statusutil"
	"github.com/sharedlvm/sharedlvm-operator/metrics"
)

// Copies: a volume from another (clone, snapshot) and migration into another VG.

// CopyChunk is how much one dd of a clone or migration copies; progress is reported and
// cancellation honoured between chunks.
const CopyChunk = 256 << 20

// copyData copies srcSize bytes from src to dst (both open on this node) and zeroes dst
// beyond them up to dstSize, so that a copy larger than its source never exposes what an
// earlier LV left on those extents.
func (r *VolumeAgent) copyData(ctx context.Context, vol *v1.SharedVolume, op, src, dst string, srcSize, dstSize int64) error {
	prog := r.progress(ctx, vol, op, dstSize)
	if err := blockdev.Chunks(ctx, 0, min(srcSize, dstSize), CopyChunk, func(off, n int64) error {
		if err := r.Node.Block.CopyRange(ctx, src, dst, off, n); err != nil {
			return err
		}
		return prog(off + n)
	}); err != nil {
		return err
	}
	return blockdev.Chunks(ctx, srcSize, dstSize, WipeChunk, func(off, n int64) error {
		if err := r.Node.Block.ZeroRange(ctx, dst, off, n); err != nil {
			return err
		}
		return prog(off + n)
	})
}

// openSource makes the source volume's content readable here for a copy and returns its
// device and the function that undoes that: a temporary snapshot if this node holds the
// source exclusively (its VM keeps writing to the origin; the copy is of one point in
// time), otherwise a shared lock taken for the copy (other copies may read it at the same
// time; an instance elsewhere cannot take it exclusively meanwhile: sanlock refuses).
func (r *VolumeAgent) openSource(ctx context.Context, vol, src *v1.SharedVolume) (string, func(), error) {
	vgName, lvName := src.Status.VGName, src.Status.LVName
	sl, err := r.Node.SanlockStatus(ctx, 0)
	if err != nil {
		return "", nil, err
	}
	snapTag := v1.TagSnapshotFor + string(vol.UID)
	snap := snapshotName(vol.UID)
	switch LeaseMode(sl, vgName, src.Status.LVUUID) {
	case lvm.Shared:
		return "", nil, &lvm.Error{Kind: lvm.KindRequiresExclusive, Err: fmt.Errorf("source %s/%s is held shared on this node: a point-in-time copy needs a single holder", vgName, lvName)}
	case lvm.Exclusive:
		// A snapshot left by a crashed copy holds old data: drop it and take a fresh one.
		if err := r.Node.LVM.RemoveOwnedLV(ctx, vgName, snap, snapTag); err != nil {
			return "", nil, err
		}
		var size int64
		if src.Status.AllocatedSize != nil {
			size = src.Status.AllocatedSize.Value()
		}
		// COW space as large as the origin: the snapshot cannot overflow however much the
		// VM writes during the copy.
		if err := r.Node.LVM.CreateSnapshot(ctx, vgName, lvName, snap, size, []string{snapTag, v1.TagManaged}); err != nil {
			return "", nil, err
		}
		r.Node.Invalidate()
		return "/dev/" + vgName + "/" + snap, func() {
			if err := r.Node.LVM.RemoveOwnedLV(context.WithoutCancel(ctx), vgName, snap, snapTag); err != nil {
				log.FromContext(ctx).Error(err, "dropping the copy's snapshot", "lv", vgName+"/"+snap)
			}
			r.Node.Invalidate()
		}, nil
	default:
		if err := r.Node.LVM.Activate(ctx, vgName, lvm.Shared, lvName); err != nil {
			return "", nil, err
		}
		r.Node.Invalidate()
		return "/dev/" + vgName + "/" + lvName, func() {
			_ = r.Node.LVM.Activate(context.WithoutCancel(ctx), vgName, lvm.Deactivate, lvName)
			r.Node.Invalidate()
		}, nil
	}
}

// copyInto fills target (an inactive LV of this volume in vgName) from srcDev under an
// exclusive lock taken for the copy and released after it, then tags it copied: the tag is
// what later passes (after a crash too) trust, never a status field.
func (r *VolumeAgent) copyInto(ctx context.Context, vol *v1.SharedVolume, op, srcDev string, srcSize int64, vgName string, target *lvm.LV) error {
	if err := r.Node.LVM.Activate(ctx, vgName, lvm.Exclusive, target.Name); err != nil {
		return err
	}
	r.Node.Invalidate()
	err := r.copyData(ctx, vol, op, srcDev, "/dev/"+vgName+"/"+target.Name, srcSize, target.Size)
	if derr := r.Node.LVM.Activate(context.WithoutCancel(ctx), vgName, lvm.Deactivate, target.Name); err == nil {
		err = derr
	}
	r.Node.Invalidate()
	if err != nil {
		return err
	}
	return r.Node.LVM.AddTag(ctx, vgName, target.Name, v1.TagCopied)
}

// createCopy creates a volume whose spec.source names another volume (Cinder's clone,
// snapshot, volume from snapshot): a new LV with its own lease, filled from the source and
// left unlocked, recorded in status only once the copy is complete.
func (r *VolumeAgent) createCopy(ctx context.Context, vol *v1.SharedVolume) (ctrl.Result, error) {
	orig := vol.DeepCopy()
	var src v1.SharedVolume
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: vol.Namespace, Name: string(vol.Spec.Source.Volume)}, &src); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err) // the operator reports it
	}
	if src.Status.LVUUID == "" || src.Status.AllocatedSize == nil {
		return ctrl.Result{}, nil // the operator waits for the source
	}
	vg, err := r.vgOf(ctx, vol)
	if err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	vgName, lvName := string(vg.Spec.VGName), vol.LVName()
	defer r.Node.LockLV(vgName, lvName)()
	defer r.Node.LockLV(src.Status.VGName, src.Status.LVName)() // this node's attach of the source waits for the copy
	size := max(vol.Spec.Size.Value(), src.Status.AllocatedSize.Value())
	target, created, err := r.ensureLV(ctx, vol, vg, lvName, size)
	if err != nil {
		return r.fail(ctx, vol, orig, "Copy", err)
	}
	t0 := time.Now()
	if !target.HasTag(v1.TagCopied) {
		if created {
			r.Recorder.Eventf(vol, nil, corev1.EventTypeNormal, "Created", "Copy", "node %s created LV %s/%s (UUID %s) to copy volume %s into", r.Node.Name, vgName, lvName, target.UUID, src.Name)
		}
		srcDev, closeSource, err := r.openSource(ctx, vol, &src)
		if err != nil {
			return r.fail(ctx, vol, orig, "Copy", err)
		}
		err = r.copyInto(ctx, vol, "copy", srcDev, src.Status.AllocatedSize.Value(), vgName, target)
		closeSource()
		if err != nil {
			return r.fail(ctx, vol, orig, "Copy", err)
		}
		metrics.ObserveOperation(metrics.OpCopy, r.Node.Name, time.Since(t0))
		took := time.Since(t0).Seconds()
		r.Recorder.Eventf(vol, nil, corev1.EventTypeNormal, "Copied", "Copy", "node %s copied volume %s (%s) into LV %s/%s in %.1fs (%.0f MiB/s)%s",
			r.Node.Name, src.Name, quantity(src.Status.AllocatedSize.Value()), vgName, lvName, took,
			float64(src.Status.AllocatedSize.Value())/(1<<20)/max(took, 0.001), map[bool]string{true: ", from a snapshot taken while attached", false: ""}[strings.Contains(srcDev, "/copy-")])
	}
	lv, err := r.lvOf(ctx, vgName, lvName)
	if err != nil {
		return r.fail(ctx, vol, orig, "Copy", err)
	}
	if err := r.Get(ctx, client.ObjectKeyFromObject(vol), vol); err != nil {
		return ctrl.Result{}, err
	}
	orig = vol.DeepCopy()
	r.recordLV(vol, vg.Name, vgName, lv)
	vol.Status.Progress = nil
	statusutil.SetCondition(&vol.Status.Conditions, vol.Generation, v1.ConditionProvisioned, true, "Copied",
		fmt.Sprintf("LV %s/%s (UUID %s) holds a copy of volume %s", vgName, lv.Name, lv.UUID, src.Name))
	return ctrl.Result{}, r.patch(ctx, vol, orig)
}

// migrate copies an unattached volume into a new LV in the VolumeGroup spec.volumeGroup
// names (Cinder migrate/retype), then switches status to it in the same write that records
// the old LV as retired; the old LV is wiped and removed afterwards (removeRetired). The old
// LV is held exclusively for the whole copy, so nobody writes it meanwhile.
func (r *VolumeAgent) migrate(ctx context.Context, vol *v1.SharedVolume) (ctrl.Result, error) {
	orig := vol.DeepCopy()
	st := &vol.Status
	vg, err := r.vgOf(ctx, vol)
	if err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	from := v1.RetiredLV{VolumeGroup: st.VolumeGroup, VGName: st.VGName, LVName: st.LVName, LVUUID: st.LVUUID}
	vgName, lvName := string(vg.Spec.VGName), vol.LVName()
	if vgName == from.VGName {
		return r.fail(ctx, vol, orig, "Migrate", &lvm.Error{Kind: lvm.KindInvalidName,
			Err: fmt.Errorf("VolumeGroups %s and %s are the same LVM VG %s: nothing to migrate", from.VolumeGroup, vg.Name, vgName)})
	}
	defer r.Node.LockLV(from.VGName, from.LVName)()
	defer r.Node.LockLV(vgName, lvName)()
	size := max(vol.Spec.Size.Value(), st.AllocatedSize.Value())
	target, _, err := r.ensureLV(ctx, vol, vg, lvName, size)
	if err != nil {
		return r.fail(ctx, vol, orig, "Migrate", err)
	}
	t0 := time.Now()
	if !target.HasTag(v1.TagCopied) {
		if err := r.Node.LVM.Activate(ctx, from.VGName, lvm.Exclusive, from.LVName); err != nil {
			return r.fail(ctx, vol, orig, "Migrate", err)
		}
		r.Node.Invalidate()
		err := r.copyInto(ctx, vol, "migrate", "/dev/"+from.VGName+"/"+from.LVName, st.AllocatedSize.Value(), vgName, target)
		_ = r.Node.LVM.Activate(context.WithoutCancel(ctx), from.VGName, lvm.Deactivate, from.LVName)
		r.Node.Invalidate()
		if err != nil {
			return r.fail(ctx, vol, orig, "Migrate", err)
		}
	}
	lv, err := r.lvOf(ctx, vgName, lvName)
	if err != nil {
		return r.fail(ctx, vol, orig, "Migrate", err)
	}
	if err := r.Get(ctx, client.ObjectKeyFromObject(vol), vol); err != nil {
		return ctrl.Result{}, err
	}
	if vol.Status.LVUUID != from.LVUUID || string(vol.Spec.VolumeGroup) != vg.Name {
		return ctrl.Result{Requeue: true}, nil // changed meanwhile: look again
	}
	orig = vol.DeepCopy()
	r.recordLV(vol, vg.Name, vgName, lv)
	vol.Status.RetiredLV = &from
	vol.Status.Progress = nil
	statusutil.SetCondition(&vol.Status.Conditions, vol.Generation, v1.ConditionProvisioned, true, "Migrated",
		fmt.Sprintf("LV %s/%s (UUID %s) holds the volume, copied from %s/%s", vgName, lv.Name, lv.UUID, from.VGName, from.LVName))
	if err := r.patch(ctx, vol, orig); err != nil {
		return ctrl.Result{}, err
	}
	metrics.ObserveOperation(metrics.OpMigrate, r.Node.Name, time.Since(t0))
	r.Recorder.Eventf(vol, nil, corev1.EventTypeNormal, "Migrated", "Migrate", "node %s copied the volume from %s/%s to %s/%s (UUID %s) in %.1fs; the old LV is wiped and removed next",
		r.Node.Name, from.VGName, from.LVName, vgName, lv.Name, lv.UUID, time.Since(t0).Seconds())
	return ctrl.Result{}, nil // the status change brings the next pass: removeRetired
}

// removeRetired wipes (per its VolumeGroup's wipePolicy) and removes the LV a migration
// left behind, only if it still carries this volume's owner tag and UUID.
func (r *VolumeAgent) removeRetired(ctx context.Context, vol *v1.SharedVolume) (ctrl.Result, error) {
	orig := vol.DeepCopy()
	old := *vol.Status.RetiredLV
	defer r.Node.LockLV(old.VGName, old.LVName)()
	if err := r.removeOwned(ctx, vol, old.VolumeGroup, old.VGName, old.LVName, old.LVUUID); err != nil {
		return r.fail(ctx, vol, orig, "RemoveRetired", err)
	}
	if err := r.Get(ctx, client.ObjectKeyFromObject(vol), vol); err != nil {
		return ctrl.Result{}, err
	}
	orig = vol.DeepCopy()
	vol.Status.RetiredLV, vol.Status.Progress = nil, nil
	return ctrl.Result{}, r.patch(ctx, vol, orig)
}
