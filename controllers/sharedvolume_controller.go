package controllers

import (
	"context"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	corev1 "k8s.io/api/core/v1"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/controllers/lockrule"
	"github.com/sharedlvm/sharedlvm-operator/heartbeat"
	"github.com/sharedlvm/sharedlvm-operator/internal/statusutil"
)

// SharedVolumeReconciler owns a SharedVolume's finalizer, phase and aggregated lock status.
type SharedVolumeReconciler struct {
	client.Client
	Recorder recorder.EventRecorder
	// Heartbeats are the agents' liveness, overlaid on the VolumeGroups' entries.
	Heartbeats *heartbeat.Tracker
}

// +kubebuilder:rbac:groups=sharedlvm.io,resources=sharedvolumes,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=sharedlvm.io,resources=sharedvolumes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=sharedlvm.io,resources=sharedvolumes/finalizers,verbs=update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile moves one SharedVolume towards its spec.
func (r *SharedVolumeReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	return statusutil.QuietConflicts(r.reconcile(ctx, req))
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
	vgErr := getVG(ctx, r, r.Heartbeats, string(vol.Spec.VolumeGroup), &vg)
	if vgErr != nil && !apierrors.IsNotFound(vgErr) {
		return ctrl.Result{}, vgErr
	}
	vgFound := vgErr == nil
	nodes := nodesOf(atts, nil)
	mode, holders := lockrule.Holders(nodes)
	st.Lock = v1.LockStatus{Mode: mode, Holders: holders, HolderList: strings.Join(holders, ",")}

	needCreate := st.LVUUID == ""
	retiring := st.RetiredLV != nil
	needMigrate := !retiring && v1.NeedsMigration(&vol)
	needExtend := !needCreate && !needMigrate && st.AllocatedSize != nil && vol.Spec.Size.Cmp(*st.AllocatedSize) > 0
	needMove := !needCreate && v1.NeedsMove(&vol)
	copying := false // a create that copies spec.source
	st.ExecutorNode = ""
	canWork := r.nodeCanWork(ctx)
	switch {
	case retiring:
		// The volume lives in its new LV; the old one is wiped and removed by a node of its VG.
		var old v1.VolumeGroup
		if err := getVG(ctx, r, r.Heartbeats, st.RetiredLV.VolumeGroup, &old); err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
		st.ExecutorNode = pickExecutor(&old, string(vol.UID), orig.Status.ExecutorNode, canWork)
	case needMigrate && len(atts) > 0:
		msg := fmt.Sprintf("spec.volumeGroup asks to migrate the volume from %s to %s, but it is attached (%s): detach it first (Cinder migrates attached volumes through the hypervisor, onto a new volume)", st.VolumeGroup, vol.Spec.VolumeGroup, attachmentNames(atts))
		if statusutil.SetCondition(&st.Conditions, gen, v1.ConditionReady, false, "MigrationNeedsDetach", msg) {
			r.Recorder.Eventf(&vol, nil, corev1.EventTypeWarning, "MigrationNeedsDetach", "Migrate", "%s", msg)
		}
	case needMigrate && !vgFound:
		if statusutil.SetCondition(&st.Conditions, gen, v1.ConditionReady, false, "VolumeGroupNotFound",
			fmt.Sprintf("VolumeGroup %q (the migration's target) does not exist: create it or set spec.volumeGroup back to %s", vol.Spec.VolumeGroup, st.VolumeGroup)) {
			r.Recorder.Eventf(&vol, nil, corev1.EventTypeWarning, "VolumeGroupNotFound", "Migrate", "VolumeGroup %q does not exist", vol.Spec.VolumeGroup)
		}
	case needMigrate:
		// The copy runs on a node that has started the lockspaces of both VGs.
		var from v1.VolumeGroup
		if err := getVG(ctx, r, r.Heartbeats, st.VolumeGroup, &from); err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
		st.ExecutorNode = pickExecutor(&vg, string(vol.UID), orig.Status.ExecutorNode, readyIn(&from, canWork))
		if st.ExecutorNode == "" {
			msg := fmt.Sprintf("no node has started the lockspaces of both VG %s and VG %s: the migration copy needs one", from.Spec.VGName, vg.Spec.VGName)
			if statusutil.SetCondition(&st.Conditions, gen, v1.ConditionReady, false, "NoReadyNode", msg) {
				r.Recorder.Eventf(&vol, nil, corev1.EventTypeWarning, "NoReadyNode", "Migrate", "%s", msg)
			}
		}
	case needMove && mode == lockrule.Shared:
		msg := fmt.Sprintf("moving the LV's extents (pvmove) needs it held exclusively by one host, and it is held shared by %v: the move runs once a single node holds it (detach the others, or wait for the live migration to finish)", holders)
		if statusutil.SetCondition(&st.Conditions, gen, v1.ConditionReady, false, "MoveRefusedWhileShared", msg) {
			r.Recorder.Eventf(&vol, nil, corev1.EventTypeWarning, "MoveRefusedWhileShared", "Move", "%s", msg)
		}
	case needMove && mode == lockrule.Exclusive:
		st.ExecutorNode = holders[0] // pvmove -n runs where the exclusive lock is held
	case needMove:
		st.ExecutorNode = pickExecutor(&vg, string(vol.UID), orig.Status.ExecutorNode, canWork)
	case !vgFound:
		if statusutil.SetCondition(&st.Conditions, gen, v1.ConditionReady, false, "VolumeGroupNotFound",
			fmt.Sprintf("VolumeGroup %q does not exist: create it or point spec.volumeGroup at an existing one", vol.Spec.VolumeGroup)) {
			r.Recorder.Eventf(&vol, nil, corev1.EventTypeWarning, "VolumeGroupNotFound", "Provision",
				"VolumeGroup %q does not exist", vol.Spec.VolumeGroup)
		}
	case (needCreate || needExtend) && notServed(&vg):
		c := meta.FindStatusCondition(vg.Status.Conditions, v1.ConditionReady)
		msg := fmt.Sprintf("VolumeGroup %s is not served: %s", vg.Name, c.Message)
		if statusutil.SetCondition(&st.Conditions, gen, v1.ConditionReady, false, ReasonVolumeGroupConflict, msg) {
			r.Recorder.Eventf(&vol, nil, corev1.EventTypeWarning, ReasonVolumeGroupConflict, "Provision", "%s", msg)
		}
	case needExtend && mode == lockrule.Shared:
		statusutil.SetCondition(&st.Conditions, gen, v1.ConditionReady, false, "ExtendWaitsForSingleHolder",
			fmt.Sprintf("the volume is held shared by %v; it is extended once a single node holds it (detach the other attachments, or wait for the live migration to finish)", holders))
	case needCreate && vol.Spec.Source != nil:
		copying = true
		exec, reason, msg, err := r.copyExecutor(ctx, &vol, &vg, orig.Status.ExecutorNode, canWork)
		if err != nil {
			return ctrl.Result{}, err
		}
		st.ExecutorNode = exec
		if reason != "" && statusutil.SetCondition(&st.Conditions, gen, v1.ConditionReady, false, reason, msg) {
			r.Recorder.Eventf(&vol, nil, corev1.EventTypeWarning, reason, "Copy", "%s", msg)
		}
	case needCreate || needExtend:
		if mode == lockrule.Exclusive {
			st.ExecutorNode = holders[0] // the exclusive holder does the work under its lock
		} else {
			st.ExecutorNode = pickExecutor(&vg, string(vol.UID), orig.Status.ExecutorNode, canWork)
		}
		if st.ExecutorNode == "" {
			msg := fmt.Sprintf("no node has started the lockspace of VG %s (check `kubectl get svg %s`: are the agents running and does spec.nodeSelector select them?)", vg.Spec.VGName, vg.Name)
			if statusutil.SetCondition(&st.Conditions, gen, v1.ConditionReady, false, "NoReadyNode", msg) {
				r.Recorder.Eventf(&vol, nil, corev1.EventTypeWarning, "NoReadyNode", "Provision", "%s", msg)
			}
		}
	}

	switch {
	case retiring:
		st.Phase = v1.VolumeMigrating
		msg := fmt.Sprintf("the volume lives in LV %s/%s; node %s is wiping and removing its old LV %s/%s", st.VGName, st.LVName, st.ExecutorNode, st.RetiredLV.VGName, st.RetiredLV.LVName)
		if st.ExecutorNode == "" {
			msg = fmt.Sprintf("the volume lives in LV %s/%s; its old LV %s/%s waits for a node of VolumeGroup %s to wipe and remove it", st.VGName, st.LVName, st.RetiredLV.VGName, st.RetiredLV.LVName, st.RetiredLV.VolumeGroup)
		}
		statusutil.SetCondition(&st.Conditions, gen, v1.ConditionReady, true, "RemovingRetiredLV", msg)
	case needMigrate && st.ExecutorNode != "":
		st.Phase = v1.VolumeMigrating
		if statusutil.SetCondition(&st.Conditions, gen, v1.ConditionReady, false, "Migrating",
			fmt.Sprintf("node %s is copying LV %s/%s to VolumeGroup %s; the volume switches to the copy when it completes", st.ExecutorNode, st.VGName, st.LVName, vol.Spec.VolumeGroup)) {
			r.Recorder.Eventf(&vol, nil, corev1.EventTypeNormal, "Migrating", "Migrate", "node %s copies the volume from %s to %s", st.ExecutorNode, st.VolumeGroup, vol.Spec.VolumeGroup)
		}
	case needMigrate:
		st.Phase = v1.VolumeAvailable
		if len(holders) > 0 {
			st.Phase = v1.VolumeInUse
		}
	case needCreate && st.ExecutorNode != "":
		st.Phase = v1.VolumeCreating
		if meta.FindStatusCondition(st.Conditions, v1.ConditionProvisioned) == nil {
			// From now on an LV may exist before status records it: deleting the volume
			// takes a cleanup pass (needsCleanupPass).
			statusutil.SetCondition(&st.Conditions, gen, v1.ConditionProvisioned, false, "Creating",
				fmt.Sprintf("node %s was asked to create the LV", st.ExecutorNode))
		}
		msg := fmt.Sprintf("node %s is creating LV %s in VG %s", st.ExecutorNode, vol.LVName(), vg.Spec.VGName)
		if copying {
			msg = fmt.Sprintf("node %s is creating LV %s in VG %s as a copy of volume %s", st.ExecutorNode, vol.LVName(), vg.Spec.VGName, vol.Spec.Source.Volume)
		}
		statusutil.SetCondition(&st.Conditions, gen, v1.ConditionReady, false, "Creating", msg)
	case needCreate:
		if st.Phase != v1.VolumePending {
			r.Recorder.Eventf(&vol, nil, corev1.EventTypeNormal, "Pending", "Provision",
				"waiting to create LV %q in VolumeGroup %q (see the Ready condition)", vol.LVName(), vol.Spec.VolumeGroup)
		}
		st.Phase = v1.VolumePending
	case needMove && st.ExecutorNode != "":
		st.Phase = v1.VolumeMoving
		statusutil.SetCondition(&st.Conditions, gen, v1.ConditionReady, true, "Moving",
			fmt.Sprintf("node %s is moving the LV's extents onto %v (pvmove, online)", st.ExecutorNode, vol.Spec.PVs))
	default:
		st.Phase = v1.VolumeAvailable
		if len(holders) > 0 {
			st.Phase = v1.VolumeInUse
		}
		if (!needExtend && !needMove) || st.ExecutorNode != "" {
			msg := fmt.Sprintf("LV %s/%s is %s", st.VGName, st.LVName, strings.ToLower(string(st.Phase)))
			if needExtend {
				msg = fmt.Sprintf("node %s is extending LV %s/%s to %s", st.ExecutorNode, st.VGName, st.LVName, vol.Spec.Size.String())
			}
			statusutil.SetCondition(&st.Conditions, gen, v1.ConditionReady, true, string(st.Phase), msg)
		}
	}
	st.ObservedGeneration = gen
	var res ctrl.Result
	if needCreate || needExtend || needMove || needMigrate || retiring {
		// Safety net: re-check the assignment if the executor's reports stop (node death).
		res.RequeueAfter = 30 * time.Second
	}
	return res, r.patchStatus(ctx, &vol, orig)
}

// copyExecutor picks the node that copies spec.source into a new volume, or says why none
// may yet (reason and message for the Ready condition). A source held exclusively is copied
// on its holder, from a temporary snapshot (the VM keeps running); an unattached one on a
// node of both VGs, under a shared lock it takes for the copy; a shared-attached one waits:
// a thick snapshot cannot exist while its origin is held shared (lvmlockd(8)), and a copy
// of a volume written on several hosts would not be a point in time.
func (r *SharedVolumeReconciler) copyExecutor(ctx context.Context, vol *v1.SharedVolume, vg *v1.VolumeGroup, current string, canWork func(string) bool) (exec, reason, msg string, err error) {
	name := string(vol.Spec.Source.Volume)
	var src v1.SharedVolume
	if err := r.Get(ctx, types.NamespacedName{Namespace: vol.Namespace, Name: name}, &src); err != nil {
		if apierrors.IsNotFound(err) {
			return "", "SourceNotFound", fmt.Sprintf("spec.source names SharedVolume %q, which does not exist in namespace %s", name, vol.Namespace), nil
		}
		return "", "", "", err
	}
	switch {
	case !src.DeletionTimestamp.IsZero():
		return "", "SourceNotFound", fmt.Sprintf("source volume %s is being deleted", name), nil
	case src.Status.LVUUID == "":
		return "", "SourceNotReady", fmt.Sprintf("source volume %s has no LV yet (phase %q): the copy starts once it has", name, src.Status.Phase), nil
	case v1.NeedsMigration(&src) || src.Status.RetiredLV != nil:
		return "", "SourceNotReady", fmt.Sprintf("source volume %s is being migrated between VolumeGroups: the copy starts once it is done", name), nil
	case src.Status.AllocatedSize != nil && src.Status.AllocatedSize.Cmp(vol.Spec.Size) > 0:
		return "", "SourceLargerThanVolume", fmt.Sprintf("source volume %s is %s, larger than spec.size %s: a copy must be at least as large as its source", name, src.Status.AllocatedSize.String(), vol.Spec.Size.String()), nil
	}
	if vg.Name == "" {
		return "", "VolumeGroupNotFound", fmt.Sprintf("VolumeGroup %q does not exist", vol.Spec.VolumeGroup), nil
	}
	var srcVG v1.VolumeGroup
	if err := getVG(ctx, r, r.Heartbeats, src.Status.VolumeGroup, &srcVG); err != nil && !apierrors.IsNotFound(err) {
		return "", "", "", err
	}
	srcAtts, err := attachmentsOf(ctx, r, src.Namespace, src.Name)
	if err != nil {
		return "", "", "", err
	}
	mode, holders := lockrule.Holders(nodesOf(srcAtts, nil))
	both := readyIn(&srcVG, canWork)
	switch mode {
	case lockrule.Shared:
		return "", "CopyWaitsForSingleHolder", fmt.Sprintf("source volume %s is held shared by %v: a point-in-time copy needs it unattached or held by one node (a thick snapshot cannot exist while its origin is shared); the copy starts once a single node holds it", name, holders), nil
	case lockrule.Exclusive:
		h := holders[0]
		if !both(h) || !readyIn(vg, func(string) bool { return true })(h) {
			return "", "NoReadyNode", fmt.Sprintf("source volume %s is held by node %s, which copies it from a snapshot, but that node has not started the lockspace of VG %s", name, h, vg.Spec.VGName), nil
		}
		return h, "", "", nil
	}
	exec = pickExecutor(vg, string(vol.UID), current, both)
	if exec == "" {
		return "", "NoReadyNode", fmt.Sprintf("no node has started the lockspaces of both VG %s (the copy) and VG %s (its source %s)", vg.Spec.VGName, srcVG.Spec.VGName, name), nil
	}
	return exec, "", "", nil
}

// notServed: the VolumeGroup conflicts with an older one (ClaimConflict) and nothing is
// done in it.
func notServed(vg *v1.VolumeGroup) bool {
	c := meta.FindStatusCondition(vg.Status.Conditions, v1.ConditionReady)
	return c != nil && c.Reason == ReasonVolumeGroupConflict
}

// readyIn narrows canWork to nodes whose entry in vg is ready (lockspace started, fresh).
func readyIn(vg *v1.VolumeGroup, canWork func(string) bool) func(string) bool {
	now := time.Now()
	return func(name string) bool {
		for i := range vg.Status.Nodes {
			if n := &vg.Status.Nodes[i]; n.Node == name {
				return n.Ready(now) && canWork(name)
			}
		}
		return false
	}
}

func attachmentNames(atts []v1.VolumeAttachment) string {
	names := make([]string, 0, len(atts))
	for _, a := range atts {
		names = append(names, fmt.Sprintf("%s on node %s", a.Name, a.Spec.Node))
	}
	return strings.Join(names, ", ")
}

// nodeCanWork rejects nodes whose agent has not restored this boot's locks (a rebooted
// node's VG entry can look fresh for a while after it went down).
func (r *SharedVolumeReconciler) nodeCanWork(ctx context.Context) func(string) bool {
	return func(name string) bool {
		var node corev1.Node
		if err := r.Get(ctx, types.NamespacedName{Name: name}, &node); err != nil {
			return false
		}
		return v1.LocksRestoredProblem(&node) == ""
	}
}

// pickExecutor keeps the current executor while it can still work on the VG, otherwise
// picks a ready node, spread by the volume's UID so that creates do not all land on one node.
func pickExecutor(vg *v1.VolumeGroup, uid, current string, canWork func(string) bool) string {
	now := time.Now()
	var ready []string
	for i := range vg.Status.Nodes {
		n := &vg.Status.Nodes[i]
		if n.Ready(now) && canWork(n.Node) {
			if n.Node == current {
				return current
			}
			ready = append(ready, n.Node)
		}
	}
	if len(ready) == 0 {
		return ""
	}
	sort.Strings(ready)
	h := fnv.New32a()
	_, _ = h.Write([]byte(uid))
	return ready[int(h.Sum32())%len(ready)]
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
		vol.Status.ExecutorNode = "" // no LVM work while attached
		msg := fmt.Sprintf("volume is still attached by %v: delete those VolumeAttachments (detach) first; the volume is deleted once none is left", names)
		if statusutil.SetCondition(&vol.Status.Conditions, vol.Generation, v1.ConditionDeletionBlocked, true, "Attached", msg) {
			r.Recorder.Eventf(vol, nil, corev1.EventTypeWarning, "DeleteBlocked", "Delete", "%s", msg)
		}
		return ctrl.Result{}, r.patchStatus(ctx, vol, orig)
	}
	var clones v1.SharedVolumeList
	if err := r.List(ctx, &clones, client.InNamespace(vol.Namespace), client.MatchingFields{IndexSource: vol.Name}); err != nil {
		return ctrl.Result{}, err
	}
	var copying []string
	for _, c := range clones.Items {
		if c.Status.LVUUID == "" && c.DeletionTimestamp.IsZero() && c.Status.ExecutorNode != "" {
			copying = append(copying, c.Name)
		}
	}
	if len(copying) > 0 {
		vol.Status.ExecutorNode = ""
		msg := fmt.Sprintf("volumes %v are being copied from this volume: it is deleted once their copies are done", copying)
		if statusutil.SetCondition(&vol.Status.Conditions, vol.Generation, v1.ConditionDeletionBlocked, true, "CopyInProgress", msg) {
			r.Recorder.Eventf(vol, nil, corev1.EventTypeWarning, "DeleteBlocked", "Delete", "%s", msg)
		}
		return ctrl.Result{}, r.patchStatus(ctx, vol, orig)
	}
	if vol.Status.LVUUID != "" || vol.Status.RetiredLV != nil {
		// The LV exists: an agent wipes and removes it (and a migration's leftovers: the
		// retired LV, a partial copy in the target VG), then clears status.lvUUID. It runs
		// on a node that has started every involved VG's lockspace.
		canWork := r.nodeCanWork(ctx)
		base := vol.Status.VolumeGroup
		if base == "" && vol.Status.RetiredLV != nil {
			base = vol.Status.RetiredLV.VolumeGroup
		}
		var vg v1.VolumeGroup
		for _, name := range involvedVGs(vol) {
			var g v1.VolumeGroup
			if err := getVG(ctx, r, r.Heartbeats, name, &g); err != nil {
				if apierrors.IsNotFound(err) {
					continue // gone with its LVs: nothing to clean there
				}
				return ctrl.Result{}, err
			}
			if name == base {
				vg = g
			} else {
				canWork = readyIn(&g, canWork)
			}
		}
		vol.Status.ExecutorNode = pickExecutor(&vg, string(vol.UID), orig.Status.ExecutorNode, canWork)
		msg := fmt.Sprintf("node %s is wiping and removing LV %s/%s", vol.Status.ExecutorNode, vol.Status.VGName, vol.Status.LVName)
		if vol.Status.ExecutorNode == "" {
			msg = fmt.Sprintf("waiting for a node with a started lockspace of VG %s to wipe and remove LV %s", vol.Status.VGName, vol.Status.LVName)
		}
		statusutil.SetCondition(&vol.Status.Conditions, vol.Generation, v1.ConditionDeletionBlocked, true, "Wiping", msg)
		return ctrl.Result{}, r.patchStatus(ctx, vol, orig)
	}
	if needsCleanupPass(orig) {
		// A create or copy was assigned and may have made an LV it had not recorded yet
		// (it records it only once complete): one pass of a node of the VG finds it by its
		// owner tag and removes it before the object goes.
		var vg v1.VolumeGroup
		err := getVG(ctx, r, r.Heartbeats, string(vol.Spec.VolumeGroup), &vg)
		if err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
		if err == nil {
			current := orig.Status.ExecutorNode
			vol.Status.ExecutorNode = pickExecutor(&vg, string(vol.UID), current, r.nodeCanWork(ctx))
			msg := fmt.Sprintf("node %s is removing whatever the interrupted create left in VG %s", vol.Status.ExecutorNode, vg.Spec.VGName)
			if vol.Status.ExecutorNode == "" {
				msg = fmt.Sprintf("waiting for a node of VG %s to remove whatever the interrupted create left", vg.Spec.VGName)
			}
			statusutil.SetCondition(&vol.Status.Conditions, vol.Generation, v1.ConditionDeletionBlocked, true, "CleaningUp", msg)
			return ctrl.Result{RequeueAfter: 30 * time.Second}, r.patchStatus(ctx, vol, orig)
		}
	}
	controllerutil.RemoveFinalizer(vol, v1.Finalizer)
	if err := r.Update(ctx, vol); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	r.Recorder.Eventf(vol, nil, corev1.EventTypeNormal, "Deleted", "Delete", "volume deleted")
	return ctrl.Result{}, nil
}

// needsCleanupPass says whether a volume being deleted without a recorded LV may still have
// one on disk: a create was assigned to a node (phase Creating when deletion began), and no
// agent has since confirmed that nothing is left (Provisioned reason Deleted). The operator
// sets Provisioned (reason Creating) when it first assigns a create; agents overwrite it.
func needsCleanupPass(vol *v1.SharedVolume) bool {
	c := meta.FindStatusCondition(vol.Status.Conditions, v1.ConditionProvisioned)
	return vol.Status.LVUUID == "" && c != nil && c.Reason != v1.ReasonLVDeleted
}

func (r *SharedVolumeReconciler) patchStatus(ctx context.Context, vol, orig *v1.SharedVolume) error {
	if equalStatus(orig.Status, vol.Status) {
		return nil
	}
	return r.Status().Patch(ctx, vol, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}

// volumesOfVG maps a VolumeGroup to the volumes placed in it.
func (r *SharedVolumeReconciler) volumesOfVG(ctx context.Context, o client.Object) []reconcile.Request {
	return requestsFor(ctx, r, &v1.SharedVolumeList{}, client.MatchingFields{IndexVolumeGroup: o.GetName()})
}

// copyRelatives maps a volume to the volumes copied from it and to the one it is copied from.
func (r *SharedVolumeReconciler) copyRelatives(ctx context.Context, o client.Object) []reconcile.Request {
	vol := o.(*v1.SharedVolume)
	var reqs []reconcile.Request
	if vol.Spec.Source != nil {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: vol.Namespace, Name: string(vol.Spec.Source.Volume)}})
	}
	var clones v1.SharedVolumeList
	if err := r.List(ctx, &clones, client.InNamespace(vol.Namespace), client.MatchingFields{IndexSource: vol.Name}); err != nil {
		return reqs
	}
	for _, c := range clones.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&c)})
	}
	return reqs
}

// readyNodesChanged passes VolumeGroup updates that change which nodes have a started
// lockspace, which hosts sanlock declares failed or dead, or deletion: agents report every 30 s, and most reports
// change nothing that matters here.
func readyNodesChanged() predicate.Predicate {
	set := func(vg *v1.VolumeGroup) string {
		var names []string
		for _, n := range vg.Status.Nodes {
			if n.LockspaceStarted {
				names = append(names, n.Node)
			}
			for _, id := range n.DeadHosts {
				names = append(names, fmt.Sprintf("dead:%d", id))
			}
			for _, h := range n.FailedHosts {
				names = append(names, fmt.Sprintf("fail:%d", h.HostID))
			}
		}
		if vg.DeletionTimestamp != nil {
			names = append(names, "deleting")
		}
		sort.Strings(names)
		return strings.Join(names, ",")
	}
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return set(e.ObjectOld.(*v1.VolumeGroup)) != set(e.ObjectNew.(*v1.VolumeGroup))
	}}
}

// SetupWithManager registers the reconciler; attachment changes re-trigger their volume.
func (r *SharedVolumeReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.SharedVolume{}).
		Watches(&v1.VolumeAttachment{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			a := o.(*v1.VolumeAttachment)
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: a.Namespace, Name: string(a.Spec.Volume)}}}
		})).
		Watches(&v1.VolumeGroup{}, handler.EnqueueRequestsFromMapFunc(r.volumesOfVG), builder.WithPredicates(readyNodesChanged())).
		// A source's lock or LV changing re-plans its clones; a clone's copy finishing
		// unblocks its source's deletion.
		Watches(&v1.SharedVolume{}, handler.EnqueueRequestsFromMapFunc(r.copyRelatives)).
		Named("sharedvolume").
		Complete(r)
}
