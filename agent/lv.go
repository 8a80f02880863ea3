package agent

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/sharedlvm/sharedlvm-operator/agent/blockdev"
	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/metrics"
)

// The LV primitives every volume operation builds on: find, record, create or adopt an LV
// tagged with its volume, wipe and remove only what the volume owns, report progress.

// WipeChunk is how much of a deleted LV one zeroing command clears; progress is reported
// between chunks.
const WipeChunk = 1 << 30

// lvOf reports one LV of the volume, which must exist.
func (r *VolumeAgent) lvOf(ctx context.Context, vgName, lvName string) (*lvm.LV, error) {
	lv, err := r.Node.LVM.ReportLV(ctx, vgName, lvName)
	if err == nil && lv == nil {
		err = &lvm.Error{Kind: lvm.KindLVNotFound, Err: fmt.Errorf("LV %s/%s vanished", vgName, lvName)}
	}
	return lv, err
}

func (r *VolumeAgent) recordLV(vol *v1.SharedVolume, vgCR, vgName string, lv *lvm.LV) {
	st := &vol.Status
	st.VolumeGroup, st.VGName, st.LVName, st.LVUUID = vgCR, vgName, lv.Name, lv.UUID
	st.Path = "/dev/" + vgName + "/" + lv.Name
	st.LeaseOffset = nil
	if _, off, ok := strings.Cut(lv.LockArgs, ":"); ok { // sanlock: "1.0.0:<offset>"
		if n, err := strconv.ParseInt(off, 10, 64); err == nil {
			st.LeaseOffset = &n
		}
	}
	size := resource.NewQuantity(lv.Size, resource.BinarySI)
	st.AllocatedSize = size
	st.PVs = nil
	for _, d := range lv.Devices {
		st.PVs = append(st.PVs, d)
	}
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

// wipe zeroes the whole LV (Cinder's volume_clear = zero) with the exclusive lock held,
// chunk by chunk, reporting progress. `blkdiscard --zeroout` lets the array offload it
// (WRITE SAME/ZEROES) where it can.
func (r *VolumeAgent) wipe(ctx context.Context, vol *v1.SharedVolume, vgName string, lv *lvm.LV) error {
	if err := r.Node.LVM.Activate(ctx, vgName, lvm.Exclusive, lv.Name); err != nil {
		return err
	}
	r.Node.Invalidate()
	dev := "/dev/" + vgName + "/" + lv.Name
	prog := r.progress(ctx, vol, "wipe", lv.Size)
	if err := blockdev.Chunks(ctx, 0, lv.Size, WipeChunk, func(off, n int64) error {
		if err := r.Node.Block.ZeroRange(ctx, dev, off, n); err != nil {
			return err
		}
		return prog(off + n)
	}); err != nil {
		return err
	}
	err := r.Node.LVM.Activate(ctx, vgName, lvm.Deactivate, lv.Name)
	r.Node.Invalidate()
	return err
}

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
