package agent

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/sharedlvm/sharedlvm-operator/agent/blockdev"
	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/statusutil"
	"github.com/sharedlvm/sharedlvm-operator/metrics"
)

// WipeChunk is how much of a deleted LV one zeroing command clears; progress is reported
// between chunks.
const WipeChunk = 1 << 30

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
	if vol.Status.ExecutorNode != r.Node.Name {
		return ctrl.Result{}, nil
	}
	switch {
	case !vol.DeletionTimestamp.IsZero():
		if vol.Status.Phase == v1.VolumeDeleting {
			return r.delete(ctx, &vol)
		}
	case vol.Status.RetiredLV != nil:
		return r.removeRetired(ctx, &vol)
	case vol.Status.LVUUID == "" && vol.Spec.Source != nil:
		return r.createCopy(ctx, &vol)
	case vol.Status.LVUUID == "":
		return r.create(ctx, &vol)
	case v1.NeedsMigration(&vol):
		return r.migrate(ctx, &vol)
	case vol.Status.AllocatedSize != nil && vol.Spec.Size.Cmp(*vol.Status.AllocatedSize) > 0:
		return r.extend(ctx, &vol)
	case v1.NeedsMove(&vol):
		return r.move(ctx, &vol)
	}
	return ctrl.Result{}, nil
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

func (r *VolumeAgent) create(ctx context.Context, vol *v1.SharedVolume) (ctrl.Result, error) {
	orig := vol.DeepCopy()
	vg, err := r.vgOf(ctx, vol)
	if err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err) // the operator reports a missing VG
	}
	vgName, lvName := string(vg.Spec.VGName), vol.LVName()
	defer r.Node.LockLV(vgName + "/" + lvName)()
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
		defer r.Node.LockLV(st.LVUUID)()
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

func (r *VolumeAgent) extend(ctx context.Context, vol *v1.SharedVolume) (ctrl.Result, error) {
	orig := vol.DeepCopy()
	st := &vol.Status
	defer r.Node.LockLV(st.LVUUID)()
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

// move runs `pvmove -n LV` for each PV of the LV outside spec.pvs, online: on the exclusive
// holder, or, unattached, under an exclusive lock it takes for the move and releases after.
// Progress goes to status.progress. A move already running (the agent restarted meanwhile:
// lvmpolld carries on) is watched, not started again.
func (r *VolumeAgent) move(ctx context.Context, vol *v1.SharedVolume) (ctrl.Result, error) {
	orig := vol.DeepCopy()
	st := &vol.Status
	vgName, lvName := st.VGName, st.LVName
	defer r.Node.LockLV(st.LVUUID)()
	vgCR, err := r.vgOf(ctx, vol)
	if err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	inVG := map[string]bool{}
	for _, p := range vgCR.Spec.PVs {
		inVG[string(p)] = true
	}
	var targets []string
	for _, p := range vol.Spec.PVs {
		if !inVG[string(p)] {
			return r.fail(ctx, vol, orig, "Move", &lvm.Error{Kind: lvm.KindInvalidName,
				Err: fmt.Errorf("spec.pvs names %s, which is not a PV of VolumeGroup %s (%v): fix spec.pvs", p, vgCR.Name, vgCR.Spec.PVs)})
		}
		targets = append(targets, string(p))
	}
	// Work from LVM's placement, not from status (which a cache may show stale): a move
	// that is already done only needs recording, and must not take any lock.
	want := map[string]bool{}
	for _, p := range targets {
		want[p] = true
	}
	cur, err := r.lvOf(ctx, vgName, lvName)
	if err != nil {
		return r.fail(ctx, vol, orig, "Move", err)
	}
	var sources []string
	for _, d := range cur.Devices {
		if !want[d] && !strings.HasPrefix(d, "pvmove") {
			sources = append(sources, d)
		}
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
		for {
			pct, running, err := r.Node.LVM.PVMoveProgress(ctx, vgName, lvName)
			if err != nil {
				return r.fail(ctx, vol, orig, "Move", err)
			}
			if !running {
				break
			}
			p := vol.DeepCopy()
			vol.Status.Progress = &v1.OperationProgress{Operation: "pvmove", Percent: int32(pct), Node: r.Node.Name, StartTime: &start}
			if err := r.patch(ctx, vol, p); err != nil && !apierrors.IsConflict(err) {
				return ctrl.Result{}, err
			}
			select {
			case <-ctx.Done():
				return ctrl.Result{}, ctx.Err() // lvmpolld carries on; the next pass watches it
			case <-time.After(time.Second):
			}
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
		WithOptions(controller.Options{MaxConcurrentReconciles: 8}).
		Named("agent-volume").
		Complete(r)
}
