package agent

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// CopyChunk is how much one dd of a clone or migration copies; progress is reported and
// cancellation honoured between chunks.
const CopyChunk = 256 << 20

// progress returns a reporter of a long operation's progress into status.progress: at most
// one write a second, best effort (a conflicting write by the operator is retried once on a
// fresh object; the operation itself never fails because its progress could not be shown).
func (r *VolumeAgent) progress(ctx context.Context, vol *v1.SharedVolume, op string, total int64) func(done int64) error {
	start := metav1.Now()
	var last time.Time
	lastPct := int32(-1)
	return func(done int64) error {
		pct := int32(done * 100 / max(total, 1))
		if pct == lastPct || (time.Since(last) < time.Second && done < total) {
			return nil
		}
		last, lastPct = time.Now(), pct
		set := func() error {
			orig := vol.DeepCopy()
			vol.Status.Progress = &v1.OperationProgress{Operation: op, Percent: pct, Node: r.Node.Name, StartTime: &start}
			return r.patch(ctx, vol, orig)
		}
		err := set()
		if apierrors.IsConflict(err) {
			if err = r.Get(ctx, client.ObjectKeyFromObject(vol), vol); err == nil {
				err = set()
			}
		}
		if err != nil {
			log.FromContext(ctx).V(1).Info("progress not recorded", "operation", op, "error", err.Error())
		}
		return ctx.Err()
	}
}

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

// ensureLV creates the volume's LV inactive (-an: nobody holds a new LV's lock) or, when an
// LV of that name exists, adopts it if it carries the volume's owner tag (created before a
// crash: never a second one) and refuses it otherwise. lvcreate comes first, with no report
// before it. lvcreate cannot print the new LV's UUID: the common case reads it from the
// metadata lvcreate committed (two small in-process reads of a PV); one `lvs` of the LV is
// the fallback (an executor that cannot read devices, a newer commit by another host, an
// adopted LV).
func (r *VolumeAgent) ensureLV(ctx context.Context, vol *v1.SharedVolume, vg *v1.VolumeGroup, lvName string, size int64) (*lvm.LV, bool, error) {
	vgName, pvs := string(vg.Spec.VGName), devicePaths(vol.Spec.PVs)
	tag := v1.OwnerTag(string(vol.UID))
	if vol.Spec.Adopt {
		lv, err := r.adoptLV(ctx, vgName, lvName, tag)
		return lv, false, err
	}
	err := r.Node.LVM.CreateLV(ctx, vgName, lvName, size, lvm.CreateOptions{
		Tags: []string{tag, v1.TagManaged}, PVs: pvs, Activate: lvm.Deactivate})
	created := err == nil
	if err != nil && lvm.KindOf(err) != lvm.KindAlreadyExists {
		return nil, false, err
	}
	var lv *lvm.LV
	if created {
		// What lvcreate just committed, read from a PV in-process: no second LVM command
		// (and no VG lock held shared against the other hosts' creates) to learn the UUID.
		var cerr error
		if lv, cerr = r.Node.LVM.CommittedLV(ctx, vgName, lvName, append(pvs, devicePaths(vg.Spec.PVs)...)); cerr != nil || lv == nil {
			log.FromContext(ctx).V(1).Info("not reading the new LV from the committed metadata; asking LVM", "lv", vgName+"/"+lvName, "reason", fmt.Sprint(cerr))
			lv = nil
		} else {
			metrics.CountCreatedLVRead(r.Node.Name, metrics.SourceCommittedMetadata)
		}
	}
	if lv == nil {
		var rerr error
		if lv, rerr = r.Node.LVM.ReportLVAfter(ctx, vgName, lvName); rerr != nil {
			return nil, false, rerr
		}
		if created {
			metrics.CountCreatedLVRead(r.Node.Name, metrics.SourceLVs)
		}
	}
	switch {
	case lv == nil:
		return nil, false, fmt.Errorf("LV %s/%s not found after lvcreate", vgName, lvName)
	case !lv.HasTag(tag):
		return nil, false, &lvm.Error{Kind: lvm.KindAlreadyExists,
			Err: fmt.Errorf("an LV named %s already exists in VG %s and is not this volume's (it lacks tag %s, has %v): set spec.lvName to another name, or remove that LV if it is garbage", lvName, vgName, tag, lv.Tags)}
	}
	return lv, created, nil
}

// adoptLV takes over an existing LV that no SharedVolume owns (spec.adopt): it tags it with
// the volume's owner tag and never creates one. An LV owned by another volume is refused.
func (r *VolumeAgent) adoptLV(ctx context.Context, vgName, lvName, tag string) (*lvm.LV, error) {
	lv, err := r.Node.LVM.ReportLV(ctx, vgName, lvName)
	if err != nil {
		return nil, err
	}
	if lv == nil {
		return nil, &lvm.Error{Kind: lvm.KindLVNotFound, Err: fmt.Errorf("spec.adopt: there is no LV %s in VG %s to take over", lvName, vgName)}
	}
	if lv.HasTag(tag) {
		return lv, nil
	}
	for _, t := range lv.Tags {
		if strings.HasPrefix(t, v1.TagOwnerUIDPrefix) {
			return nil, &lvm.Error{Kind: lvm.KindAlreadyExists,
				Err: fmt.Errorf("spec.adopt: LV %s/%s belongs to another SharedVolume (tag %s); only an LV that no SharedVolume owns can be taken over", vgName, lvName, t)}
		}
	}
	for _, t := range []string{tag, v1.TagManaged} {
		if err := r.Node.LVM.AddTag(ctx, vgName, lvName, t); err != nil {
			return nil, err
		}
	}
	return r.Node.LVM.ReportLVAfter(ctx, vgName, lvName)
}

func devicePaths(ds []v1.DevicePath) []string {
	out := make([]string, 0, len(ds))
	for _, d := range ds {
		out = append(out, string(d))
	}
	return out
}

// snapshotName is the temporary snapshot a copy of an attached volume reads from: one per
// copying volume, so that a crashed copy's snapshot is found (and dropped) again.
func snapshotName(uid types.UID) string {
	return "copy-" + strings.ReplaceAll(string(uid), "-", "")
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
	defer r.Node.LockLV(vgName + "/" + lvName)()
	defer r.Node.LockLV(src.Status.LVUUID)() // this node's attach of the source waits for the copy
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
	defer r.Node.LockLV(from.LVUUID)()
	defer r.Node.LockLV(vgName + "/" + lvName)()
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
	defer r.Node.LockLV(old.LVUUID)()
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

// removeOwned wipes and removes one LV of this volume: absent is done; one without the
// volume's owner tag (or, when uuid is given, with another UUID) is refused, never removed.
func (r *VolumeAgent) removeOwned(ctx context.Context, vol *v1.SharedVolume, vgCR, vgName, lvName, uuid string) error {
	tag := v1.OwnerTag(string(vol.UID))
	lv, err := r.Node.LVM.ReportLV(ctx, vgName, lvName)
	switch {
	case err != nil:
		return err
	case lv == nil:
		return nil // removed before a crash (or by hand)
	case !lv.HasTag(tag) || (uuid != "" && lv.UUID != uuid):
		return fmt.Errorf("LV %s/%s is not this volume's (UUID %s, tags %v): refusing to remove it", vgName, lvName, lv.UUID, lv.Tags)
	}
	policy := v1.WipeZero
	var g v1.VolumeGroup
	if err := r.Get(ctx, types.NamespacedName{Name: vgCR}, &g); err == nil && g.Spec.WipePolicy != "" {
		policy = g.Spec.WipePolicy
	} else if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	t0 := time.Now()
	if policy == v1.WipeZero {
		if err := r.wipe(ctx, vol, vgName, lv); err != nil {
			_ = r.Node.LVM.Activate(context.WithoutCancel(ctx), vgName, lvm.Deactivate, lvName)
			r.Node.Invalidate()
			return err
		}
	}
	if err := r.Node.LVM.RemoveOwnedLV(ctx, vgName, lvName, tag); err != nil {
		return err
	}
	r.Node.Invalidate()
	metrics.ObserveOperation(metrics.OpDelete, r.Node.Name, time.Since(t0))
	r.Recorder.Eventf(vol, nil, corev1.EventTypeNormal, "LVRemoved", "Delete",
		"node %s wiped (policy %s) and removed LV %s/%s in %.2fs", r.Node.Name, policy, vgName, lvName, time.Since(t0).Seconds())
	return nil
}
