package agent

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
	"github.com/sharedlvm/sharedlvm-operator/agent/sanlock"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/heartbeat"
	"github.com/sharedlvm/sharedlvm-operator/internal/retry"
	"github.com/sharedlvm/sharedlvm-operator/internal/statusutil"
)

// DefaultReportInterval is how often an agent refreshes its view of each VG.
const DefaultReportInterval = 30 * time.Second

// VGReportFieldManager owns the VG-wide status fields. Every agent uses the same manager
// name, and only the current reporter node applies with it, so a change of reporter never
// drops fields.
const VGReportFieldManager = "sharedlvm-agent-vgreport"

// VolumeGroupAgent keeps this node's side of every VolumeGroup that selects it: it starts the
// lockspace (refusing when another node uses the same sanlock host_id), creates the VG when
// the operator assigns it, reports its own status.nodes entry with server-side apply (field
// manager sharedlvm-agent/<node>) when it changes, writes the VG-wide report when it is the
// reporter, and
// finds and repairs lock drift: a lease held here that no attachment asks for.
// Each cycle costs one `sanlock client status` and one `lvm fullreport`, whatever the
// number of LVs.
type VolumeGroupAgent struct {
	client.Client
	// APIReader finds the volume of a drifted lease (rare): the cache holds only the
	// volumes assigned to this node.
	APIReader      client.Reader
	Node           *Node
	Recorder       recorder.EventRecorder
	ReportInterval time.Duration
	Now            func() time.Time
	// Heartbeats are the agents' liveness (this one's included, renewed by a
	// heartbeat.Renewer), overlaid on the entries when judging other nodes' freshness.
	Heartbeats *heartbeat.Tracker
	// Claim makes this node the one creator of a VG (nil: this agent never runs vgcreate).
	Claim *VGCreateClaim
	// HostIDs is this node's allocated sanlock host_id (nil: no lockspace is ever started).
	HostIDs *HostIDs
	// Restoring, if set, says the node's boot restore runs: the cycle then waits (no LVM
	// report, no lockstart), as the restore's lockstarts and lvchanges own the node's LVM.
	Restoring func() bool

	failMu        sync.Mutex
	failSince     map[string]map[int32]metav1.Time // by VG name, host_id: first seen FAIL
	lastCreateErr map[string]string                // by VolumeGroup: the last vgcreate failure evented
	orphanSince   map[string]time.Time             // by VG name: lvmlockd first seen not serving its lockspace
	killChecked   map[string]bool                  // by VG name: looked for LVs a kill left, and found none
}

// restoringRecheck: how often a report cycle looks whether the node's restore has ended.
const restoringRecheck = 500 * time.Millisecond

// orphanGrace: how long lvmlockd must be seen not serving a lockspace sanlock holds before the
// agent repairs it (a restarted lvmlockd adopts within a second).
const orphanGrace = 3 * time.Second

// orphanLeaveTimeout bounds `sanlock client rem_lockspace` of an orphaned lockspace (it
// releases the host's delta lease: one renewal's I/O, seconds).
const orphanLeaveTimeout = time.Minute

// EntryRefreshCycles: an unchanged entry is rewritten only every this many report cycles
// (its lastReport then says the content was confirmed); liveness in between is the node's
// heartbeat Lease. Rewriting every entry every cycle made the one VolumeGroup object an
// O(nodes²) hotspot.
const EntryRefreshCycles = 10

// +kubebuilder:rbac:groups=sharedlvm.io,resources=volumegroups,verbs=get;list;watch
// +kubebuilder:rbac:groups=sharedlvm.io,resources=volumegroups/status,verbs=get;patch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update

// FieldManager is the server-side-apply field manager of this node's entry.
func (r *VolumeGroupAgent) FieldManager() string { return "sharedlvm-agent/" + r.Node.Name }

func (r *VolumeGroupAgent) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// intervalSeconds is the report interval an entry carries (whole seconds, at least 1).
func (r *VolumeGroupAgent) intervalSeconds() int32 {
	return int32(max(1, r.interval().Round(time.Second)/time.Second))
}

func (r *VolumeGroupAgent) interval() time.Duration {
	if r.ReportInterval > 0 {
		return r.ReportInterval
	}
	return DefaultReportInterval
}

// Reconcile runs one report cycle for one VG: observe (host_id, sanlock, one LVM report),
// decide what to do with the lockspace (PlanLockspace), do it, write this node's entry,
// then the VG-wide report and the drift repair.
func (r *VolumeGroupAgent) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if r.Restoring != nil && r.Restoring() {
		// Looked at again soon: the restore takes one join and one lvchange per VG and mode.
		return ctrl.Result{RequeueAfter: restoringRecheck}, nil
	}
	var vg v1.VolumeGroup
	if err := r.Get(ctx, req.NamespacedName, &vg); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	serve, err := r.serves(ctx, &vg)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !serve {
		// Not this node's to serve: an older VolumeGroup claims the same VG or PVs (the
		// operator says so on the object), or the selector leaves this node out. No
		// lockstart, no vgcreate, no entry. Looked at again every cycle: the older object
		// may go.
		for i := range vg.Status.Nodes {
			if vg.Status.Nodes[i].Node == r.Node.Name {
				return ctrl.Result{RequeueAfter: heartbeat.Spread(r.interval())}, r.applyEntry(ctx, vg.Name, nil)
			}
		}
		return ctrl.Result{RequeueAfter: heartbeat.Spread(r.interval())}, nil
	}
	c := r.observe(ctx, &vg)
	// Other nodes' liveness, for the host_id check and the reporter choice: the entries
	// with the heartbeats overlaid (a copy; vg itself is compared with this node's entry).
	live := vg.DeepCopy()
	r.Heartbeats.Overlay(live)
	c.facts.Conflict = conflictingNode(live, r.Node.Name, c.entry.HostID, r.now())
	switch PlanLockspace(c.facts) {
	case LockspaceCreateVG:
		r.createVG(ctx, &vg, c)
	case LockspaceRefuse:
		if c.facts.Conflict != "" {
			c.note(v1.LockspaceHostIDConflict, fmt.Sprintf("sanlock host_id %d is also used by node %s: refusing to start the lockspace (two nodes with one host_id can both write one LV)", c.entry.HostID, c.facts.Conflict))
		}
		if !c.facts.Started {
			r.Recorder.Eventf(&vg, nil, corev1.EventTypeWarning, "DuplicateHostID", "Lockstart", "node %s: %s", r.Node.Name, c.entry.Message)
		}
	case LockspaceStart:
		r.lockstart(ctx, &vg, c)
	case LockspaceRejoin:
		r.rejoin(ctx, &vg, c)
	}
	c.finish(ctx, r)
	r.storageEvents(&vg, &c.entry)
	if err := r.applyEntryIfChanged(ctx, &vg, &c.entry); err != nil {
		// Every node writes its entry into the one VolumeGroup object: after a power loss
		// of the whole cluster they all do so at once. Retrying at once (exponential
		// backoff from milliseconds, in lockstep) makes the herd worse; a random delay of up
		// to a few seconds spreads it.
		log.FromContext(ctx).Info("report not written, retrying", "error", err.Error())
		return ctrl.Result{RequeueAfter: heartbeat.Jitter(2 * time.Second)}, nil
	}
	if c.facts.Started && c.lvmVG != nil {
		if r.isReporter(live, c.entry.LastReport.Time) {
			if err := r.applyVGReport(ctx, vg.Name, c.lvmVG); err != nil {
				return ctrl.Result{}, err
			}
		}
		if c.sanlock != nil {
			r.repairDrift(ctx, string(vg.Spec.VGName), c.sanlock, c.lvmVG)
		}
	}
	return ctrl.Result{RequeueAfter: heartbeat.Spread(r.interval())}, nil
}

// serves: the VolumeGroup's selector picks this node and no older VolumeGroup claims its VG
// or PVs. An invalid selector serves nothing (the operator reports it on the VG).
func (r *VolumeGroupAgent) serves(ctx context.Context, vg *v1.VolumeGroup) (bool, error) {
	var node corev1.Node
	if err := r.Get(ctx, types.NamespacedName{Name: r.Node.Name}, &node); err != nil {
		return false, err
	}
	if selected, err := selects(vg.Spec.NodeSelector, node.Labels); err != nil || !selected {
		return false, nil
	}
	var all v1.VolumeGroupList
	if err := r.List(ctx, &all); err != nil {
		return false, err
	}
	other, _ := vg.ClaimConflict(all.Items)
	return other == "", nil
}

// cycle is what one report cycle observed and is building: the facts the lockspace decision
// reads, this node's entry, and what later steps use (the sanlock reading, the VG's report).
type cycle struct {
	vg      string // the LVM VG name
	facts   LockspaceFacts
	entry   v1.NodeLockspaceStatus
	sanlock *sanlock.Status
	lvmVG   *lvm.VG
	// unreadable says which spec PV could not be read, when the node never had the VG
	// (a node that does not see the LUN, or a wrong path): said with VGNotFound.
	unreadable string
}

// note records the first problem met: it says why the lockspace is not started (or what
// went wrong).
func (c *cycle) note(reason v1.LockspaceReason, msg string) {
	if c.entry.Reason == "" {
		c.entry.Reason, c.entry.Message = reason, msg
	}
}

// observe reads this node's host_id, sanlock (fresh, and kept for the attachment resyncs of
// this cycle) and one LVM report of the VG.
func (r *VolumeGroupAgent) observe(ctx context.Context, vg *v1.VolumeGroup) *cycle {
	vgName := string(vg.Spec.VGName)
	c := &cycle{vg: vgName, entry: v1.NodeLockspaceStatus{Node: r.Node.Name}}
	hostID, hidErr := r.HostIDs.Check(ctx, false)
	c.entry.HostID = hostID
	c.facts.HostIDKnown = hidErr == nil
	if p, ok := hidErr.(*HostIDProblem); ok {
		c.facts.HostIDMismatch = p.Reason == v1.LockspaceHostIDConflict
		c.note(p.Reason, p.Message)
	}
	st, slErr := r.Node.SanlockStatus(ctx, 0)
	c.sanlock, c.facts.SanlockAnswers = st, slErr == nil
	if slErr != nil {
		c.note(v1.LockspaceSanlockNotAnswering, "sanlock not answering: "+slErr.Error())
	}
	if st != nil {
		if ls, ok := st.Lockspace(vgName); ok && !ls.Adding && !ls.Removing {
			c.facts.Started = true
			if hostID > 0 && int32(ls.HostID) != hostID {
				c.facts.HostIDMismatch = true
				c.note(v1.LockspaceHostIDConflict, fmt.Sprintf("lockspace lvm_%s runs here as host_id %d, but the host_id allocated to node %s is %d: it was started outside the agent; stop it (vgchange --lockstop %s, with its LVs inactive) so that the agent starts it with the allocated id", vgName, ls.HostID, r.Node.Name, hostID, vgName))
			}
			c.entry.HostID = int32(ls.HostID)
		}
	}
	report, repErr := r.Node.LVM.Report(ctx, vgName)
	c.facts.CreateNode = vg.Status.CreateNode == r.Node.Name
	if c.facts.Started {
		r.checkOrphaned(ctx, c, report)
	}
	switch {
	case repErr == nil:
		c.lvmVG, c.facts.VGFound = report.VG(vgName)
	case lvm.KindOf(repErr) == lvm.KindVGNotFound:
		c.facts.VGNotFound = true
	case lvm.KindOf(repErr) == lvm.KindLockspaceNotStarted:
		// lvmlockd cannot lock the VG here, whatever sanlock says of the lockspace (seen in
		// the chaos tier after lvmlockd was killed and restarted): not started for this
		// node's work, so nothing new is placed here, and started again (a lockstart of a
		// lockspace sanlock still holds re-attaches lvmlockd to it).
		c.facts.VGFound, c.facts.Started = true, false
		c.note(v1.LockspaceLockFailed, fmt.Sprintf("lvmlockd cannot lock VG %s on this node (%v): starting its lockspace again; run lvmlockd with --adopt 1 so that a restarted lvmlockd keeps its lockspaces", vgName, repErr))
	default:
		c.note(v1.LockspaceReportFailed, "LVM report failed: "+repErr.Error())
	}
	if repErr != nil {
		r.checkStorage(ctx, vg, c, repErr)
	}
	return c
}

// storageEvents says it when this node loses its path to the VG's storage, and when it
// reads the VG's PVs again (from the entry it last wrote).
func (r *VolumeGroupAgent) storageEvents(vg *v1.VolumeGroup, e *v1.NodeLockspaceStatus) {
	var prev v1.LockspaceReason
	for _, n := range vg.Status.Nodes {
		if n.Node == r.Node.Name {
			prev = n.Reason
		}
	}
	switch {
	case e.Reason == v1.LockspaceStorageLost && prev != v1.LockspaceStorageLost:
		r.Recorder.Eventf(vg, nil, corev1.EventTypeWarning, string(v1.LockspaceStorageLost), "Report", "node %s: %s", r.Node.Name, e.Message)
	case prev == v1.LockspaceStorageLost && e.Reason != v1.LockspaceStorageLost:
		r.Recorder.Eventf(vg, nil, corev1.EventTypeNormal, "StorageBack", "Report", "node %s reads the PVs of VG %s again (lockspace: %s)", r.Node.Name, vg.Spec.VGName, e.Reason)
	}
}

// checkStorage: the VG's report failed; can this node still read the VG's PVs? A node that
// lost its path to the LUN sees the VG as missing (measured: lvs says "Volume group not
// found" within seconds), but the VG is not gone: the node is cut off from it, and what
// follows is sanlock's business (its lease renewals fail; after 8 × io_timeout it runs
// lvmlockctl --kill, and lvm.conf's lvmlockctl_kill_command takes the VG's LVs offline, or
// the watchdog resets the node).
func (r *VolumeGroupAgent) checkStorage(ctx context.Context, vg *v1.VolumeGroup, c *cycle, repErr error) {
	pvs := make([]string, 0, len(vg.Spec.PVs))
	for _, p := range vg.Spec.PVs {
		pvs = append(pvs, string(p))
	}
	pv, err := r.Node.ProbeDevices(ctx, pvs)
	if err == nil {
		return
	}
	held := ""
	if c.sanlock != nil {
		if _, ok := c.sanlock.Lockspace(c.vg); ok {
			held = " sanlock still holds the node's lockspace lvm_" + c.vg + " but cannot renew its lease there:"
		}
	}
	// Lost, or never had? Only a node that had the VG (its lockspace runs, or its last entry
	// saw the VG) lost its path; another one does not see the LUN (or spec.pvs names a
	// path it does not have): that is VGNotFound, with what the read said.
	had := held != ""
	for _, n := range vg.Status.Nodes {
		if n.Node == r.Node.Name && (n.VGFound || n.LockspaceStarted || n.Reason == v1.LockspaceStorageLost) {
			had = true
		}
	}
	if !had {
		c.unreadable = fmt.Sprintf("PV %s: %v", pv, err)
		return
	}
	c.facts.StorageLost, c.facts.Started, c.facts.VGNotFound = true, false, false
	r.setKillSuspect(c.vg, true) // once back, look for LVs the kill took offline
	// The most important thing to say of the node: it replaces what the report said.
	c.entry.Reason = v1.LockspaceStorageLost
	c.entry.Message = fmt.Sprintf("PV %s of VG %s cannot be read on this node (%v): the node lost its path to the VG's storage.%s once its lease is 8 × io_timeout old, sanlock runs lvmlockctl --kill, and lvm.conf's lvmlockctl_kill_command (sharedlvm kill-vg) takes the VG's LVs offline here, or else the watchdog resets the node; other nodes may take its volumes once their sanlock declares it DEAD (8 × io_timeout + 60 s after its last renewal). The node takes no new work in the VG, and rejoins when the path returns.",
		pv, c.vg, err, held)
	log.FromContext(ctx).Info("storage lost", "vg", c.vg, "pv", pv, "read", err.Error(), "report", repErr.Error())
}

// checkOrphaned: sanlock holds the VG's lockspace; does lvmlockd still serve it? A
// successor of a dead lvmlockd that did not adopt it knows nothing of the VG, and every LVM
// command that locks the VG fails here while reports (read without the lock) still work
// (seen in the chaos tier). The node is then not started in the VG.
func (r *VolumeGroupAgent) checkOrphaned(ctx context.Context, c *cycle, report *lvm.Report) {
	// One reading per report cycle serves every VG of the node (their reconciles run
	// together); a lock or lockspace change since invalidates it.
	info, err := r.Node.LockdInfo(ctx, min(time.Second, r.interval()/2))
	if err != nil {
		return // lvmlockd not answering: the next command says so
	}
	for _, v := range info {
		if v.Name == c.vg {
			r.failMu.Lock()
			delete(r.orphanSince, c.vg)
			r.failMu.Unlock()
			return
		}
	}
	c.facts.Started, c.facts.Orphaned = false, true
	// Act only on a state seen for a while: a just restarted lvmlockd may still be adopting.
	r.failMu.Lock()
	if r.orphanSince == nil {
		r.orphanSince = map[string]time.Time{}
	}
	since, seen := r.orphanSince[c.vg]
	if !seen {
		r.orphanSince[c.vg] = time.Now()
	}
	r.failMu.Unlock()
	if !seen || time.Since(since) < orphanGrace {
		c.note(v1.LockspaceLockFailed, fmt.Sprintf("sanlock holds lockspace lvm_%s but lvmlockd does not serve it: checking again before acting", c.vg))
		return
	}
	leases := 0
	for _, res := range c.sanlock.Resources {
		if res.Lockspace != "lvm_"+c.vg {
			continue
		}
		if res.Name == "VGLK" || res.Name == "GLLK" {
			// The metadata lock of a command that died with lvmlockd (held, it stops every
			// host from changing the VG: "VG vg1 lock failed: held by other host"). sanlock
			// 3.8's `release -O 1` refuses it (-16, measured); leaving the lockspace with its
			// USED_BY_ORPHANS flag cleared drops it (RemoveOrphanLockspace).
			continue
		}
		leases++
	}
	var active []string
	known := false // which LVs are active here is known only from this cycle's report
	if report != nil {
		if g, ok := report.VG(c.vg); ok {
			known = true
			for _, lv := range g.LVs {
				if lv.Name != "lvmlock" && lv.ActiveLocally {
					active = append(active, lv.Name)
				}
			}
		}
	}
	// An LV lease guards writes through the LV's mapping on this node. With no LV of the VG
	// active here there is none to guard, and none can appear while lvmlockd does not serve
	// the VG (activation needs the LV's lock from it): leaving the lockspace then drops the
	// dead lvmlockd's leases (an lvchange or lvcreate it was running) without a reboot, and
	// the node's attachments take their locks again through lvmlockd once rejoined.
	c.facts.OrphanUnused = known && len(active) == 0
	msg := fmt.Sprintf("sanlock holds lockspace lvm_%s but lvmlockd does not serve it (lvmlockd was restarted without adopting it; run it with --adopt 1)", c.vg)
	switch {
	case !known:
		msg += ": the VG's report did not say which LVs are active here, so the agent leaves the lockspace alone and looks again"
	case c.facts.OrphanUnused && leases > 0:
		msg += fmt.Sprintf(": no LV of the VG is active here, so the %d LV lease(s) sanlock keeps for the dead lvmlockd guard nothing; the agent leaves the lockspace and joins it again", leases)
	case c.facts.OrphanUnused:
		msg += ": no lease is held and no LV is active here, so the agent leaves the lockspace and joins it again"
	default:
		msg += fmt.Sprintf(": %d lease(s) held, active LVs %v: they are no longer guarded by lvmlockd here; reboot the node (the agent never pulls a lockspace from under an active LV; once none is active here it leaves and joins again by itself)", leases, active)
	}
	c.note(v1.LockspaceLockFailed, msg)
}

// sayBefore writes this node's entry, stamped now, before a step that takes long (a join, a
// lockspace removal), so that the entry neither keeps the last cycle's message nor goes stale
// meanwhile. Best effort: the cycle's own write follows.
func (r *VolumeGroupAgent) sayBefore(ctx context.Context, vg *v1.VolumeGroup, e v1.NodeLockspaceStatus) {
	now := metav1.NewTime(r.now())
	e.LastReport = &now
	e.ReportIntervalSeconds = r.intervalSeconds()
	_ = r.applyEntryIfChanged(ctx, vg, &e)
}

// rejoin leaves the orphaned lockspace in sanlock and joins it again.
func (r *VolumeGroupAgent) rejoin(ctx context.Context, vg *v1.VolumeGroup, c *cycle) {
	ls, ok := c.sanlock.Lockspace(c.vg)
	if !ok {
		return
	}
	r.Recorder.Eventf(vg, nil, corev1.EventTypeWarning, "LockspaceOrphaned", "Lockstart", "node %s: %s", r.Node.Name, c.entry.Message)
	// Said before it is done (the entry must not keep the last cycle's message while sanlock
	// works), and bounded: a removal that does not end is said, and tried again next cycle.
	leaving := c.entry
	leaving.Message += ": leaving it now"
	r.sayBefore(ctx, vg, leaving)
	rctx, cancel := context.WithTimeout(ctx, orphanLeaveTimeout)
	defer cancel()
	t0 := time.Now()
	err := r.Node.Sanlock.RemoveOrphanLockspace(rctx, ls)
	r.Node.Invalidate()
	if err != nil {
		// A removal already under way (an earlier cycle's, cut by its bound) ends once the
		// flag is cleared, and this one then fails: what counts is that sanlock left it.
		if st, serr := r.Node.SanlockStatus(ctx, 0); serr == nil {
			if _, still := st.Lockspace(c.vg); !still {
				err = nil
			}
		}
	}
	if err != nil {
		c.entry.Message += fmt.Sprintf("; leaving it failed after %.1fs: %v", time.Since(t0).Seconds(), err)
		r.Recorder.Eventf(vg, nil, corev1.EventTypeWarning, "LockspaceOrphaned", "Lockstart", "node %s: leaving the orphaned lockspace lvm_%s failed after %.1fs: %v", r.Node.Name, c.vg, time.Since(t0).Seconds(), err)
		return
	}
	log.FromContext(ctx).Info("orphaned lockspace left", "vg", c.vg, "seconds", time.Since(t0).Seconds())
	r.lockstart(ctx, vg, c)
}

// createVG runs vgcreate --shared (which starts the lockspace on this node) under the
// create claim; LVM's refusal becomes the entry's reason.
func (r *VolumeGroupAgent) createVG(ctx context.Context, vg *v1.VolumeGroup, c *cycle) {
	report, reason, msg := r.CreateVG(ctx, vg)
	if report == nil {
		c.note(reason, msg)
		return
	}
	vgName := string(vg.Spec.VGName)
	c.facts.VGNotFound, c.facts.Started = false, true
	c.lvmVG, c.facts.VGFound = report.VG(vgName)
}

// lockstart joins the VG's lockspace (20 s to minutes), saying so in the entry first so that
// it does not go stale meanwhile.
func (r *VolumeGroupAgent) lockstart(ctx context.Context, vg *v1.VolumeGroup, c *cycle) {
	vgName := string(vg.Spec.VGName)
	joining := c.entry
	joining.Reason, joining.Message = v1.LockspaceJoining, "starting the lockspace (sanlock join: 20 s to 3 min)"
	r.sayBefore(ctx, vg, joining)
	hostID, err := r.HostIDs.Check(ctx, true) // the fence: the claim as it is now
	if err != nil {
		c.facts.HostIDKnown = false
		p, _ := err.(*HostIDProblem)
		if p == nil {
			p = &HostIDProblem{v1.LockspaceWaitingForHostID, err.Error()}
		}
		c.note(p.Reason, p.Message)
		return
	}
	c.entry.HostID = hostID
	t0 := time.Now()
	attempts, err := r.Node.LVM.Lockstart(ctx, vgName, hostID)
	r.Node.Invalidate()
	if err != nil {
		c.note(v1.LockspaceLockstartFailed, fmt.Sprintf("lockstart failed after %d attempt(s): %v", attempts, err))
		r.Recorder.Eventf(vg, nil, corev1.EventTypeWarning, "LockstartFailed", "Lockstart", "node %s: %v", r.Node.Name, err)
		return
	}
	if c.entry.Reason == v1.LockspaceLockFailed {
		// Started again after lvmlockd refused the VG's lock: only a report that reads
		// the VG under its lock again says the node can work in it.
		report, err := r.Node.LVM.Report(ctx, vgName)
		if err != nil {
			c.entry.Message += fmt.Sprintf("; lockstart done, but the VG is still refused: %v (reboot the node if it persists)", err)
			return
		}
		c.lvmVG, _ = report.VG(vgName)
		c.entry.Reason, c.entry.Message = "", ""
		r.Recorder.Eventf(vg, nil, corev1.EventTypeNormal, "LockRecovered", "Lockstart", "node %s: lvmlockd locks VG %s again after its lockspace was started again", r.Node.Name, vgName)
	}
	c.facts.Started = true
	log.FromContext(ctx).Info("lockspace started", "vg", vgName, "attempts", attempts, "seconds", time.Since(t0).Seconds())
	r.Recorder.Eventf(vg, nil, corev1.EventTypeNormal, "LockspaceStarted", "Lockstart",
		"node %s joined lockspace lvm_%s as host_id %d in %.1fs (%d attempt(s))", r.Node.Name, vgName, c.entry.HostID, time.Since(t0).Seconds(), attempts)
}

// finish completes the entry: the VG's visibility, the lockspace state, the peers sanlock
// sees failed (they may still hold leases) or dead (their leases are released; one more
// command per cycle, whatever the number of LVs), and when it was made.
func (c *cycle) finish(ctx context.Context, r *VolumeGroupAgent) {
	if c.facts.VGNotFound {
		msg := fmt.Sprintf("VG %s is not visible on this node's devices", c.vg)
		if c.unreadable != "" {
			msg += " (" + c.unreadable + ")"
		}
		c.note(v1.LockspaceVGNotFound, msg)
	}
	c.entry.VGFound = c.facts.VGFound
	c.entry.LockspaceStarted = c.facts.Started
	if c.facts.Started {
		if c.entry.Reason == "" {
			c.entry.Reason = v1.LockspaceStarted
		}
		if hosts, err := r.Node.Sanlock.Hosts(ctx); err == nil {
			c.entry.DeadHosts, c.entry.FailedHosts = r.hostStates(c.vg, hosts)
		}
	}
	now := metav1.NewTime(r.now())
	c.entry.LastReport = &now
	c.entry.ReportIntervalSeconds = r.intervalSeconds()
}

// hostStates picks, from `sanlock client gets -h 1`, the host_ids of the VG's lockspace that
// sanlock declares DEAD and those it sees FAIL, the latter with when this agent first saw
// each fail (remembered across cycles while the host stays FAIL).
func (r *VolumeGroupAgent) hostStates(vgName string, hosts []sanlock.LockspaceHosts) (dead []int32, failed []v1.FailedHost) {
	r.failMu.Lock()
	defer r.failMu.Unlock()
	if r.failSince == nil {
		r.failSince = map[string]map[int32]metav1.Time{}
	}
	seen := map[int32]metav1.Time{}
	for _, ls := range hosts {
		if ls.Lockspace.Name != "lvm_"+vgName {
			continue
		}
		for _, h := range ls.Hosts {
			switch h.State {
			case sanlock.HostDead:
				dead = append(dead, int32(h.ID))
			case sanlock.HostFail:
				since, ok := r.failSince[vgName][int32(h.ID)]
				if !ok {
					since = metav1.NewTime(r.now().Truncate(time.Second))
				}
				seen[int32(h.ID)] = since
				failed = append(failed, v1.FailedHost{HostID: int32(h.ID), Since: since})
			}
		}
	}
	r.failSince[vgName] = seen
	return dead, failed
}

// CreateVG runs `vgcreate --shared` for the VolumeGroup exactly once across the cluster:
// under its create claim (VGCreateClaim), after checking that the VG did not appear in the
// meantime, fenced right before the command, and renewed while it runs. It returns the VG's
// report once created, or why not (the VG's condition shows it with LVM's own message).
func (r *VolumeGroupAgent) CreateVG(ctx context.Context, vg *v1.VolumeGroup) (*lvm.Report, v1.LockspaceReason, string) {
	name := string(vg.Spec.VGName)
	if r.Claim == nil {
		return nil, v1.LockspaceVGCreateFailed, "this agent has no create claim configured: it never runs vgcreate"
	}
	held, err := r.Claim.Acquire(ctx, vg.Name)
	if err != nil {
		var h *ClaimHeldError
		if errors.As(err, &h) {
			return nil, v1.LockspaceWaitingForVGCreateClaim, fmt.Sprintf("chosen to create VG %s, but %v", name, h)
		}
		return nil, v1.LockspaceWaitingForVGCreateClaim, fmt.Sprintf("chosen to create VG %s, but the create claim could not be taken: %v", name, err)
	}
	// A previous holder may have created it after this cycle's report.
	if rep, err := r.Node.LVM.Report(ctx, name); err == nil {
		if _, ok := rep.VG(name); ok {
			return rep, "", ""
		}
	}
	hostID, err := r.HostIDs.Check(ctx, true)
	if err != nil {
		if p, ok := err.(*HostIDProblem); ok {
			return nil, p.Reason, p.Message
		}
		return nil, v1.LockspaceWaitingForHostID, err.Error()
	}
	if err := r.Claim.Fence(ctx, held); err != nil {
		return nil, v1.LockspaceWaitingForVGCreateClaim, fmt.Sprintf("chosen to create VG %s, but the fencing check before vgcreate failed: %v", name, err)
	}
	pvs := make([]string, 0, len(vg.Spec.PVs))
	for _, p := range vg.Spec.PVs {
		pvs = append(pvs, string(p))
	}
	t0 := time.Now()
	stop := make(chan struct{})
	go r.Claim.KeepRenewed(ctx, vg.Name, stop)
	err = r.Node.LVM.CreateSharedVG(ctx, name, pvs, hostID)
	close(stop)
	if err != nil {
		msg := fmt.Sprintf("vgcreate --shared %s on %v failed: %v", name, pvs, err)
		r.failMu.Lock()
		repeated := r.lastCreateErr[vg.Name] == msg
		if r.lastCreateErr == nil {
			r.lastCreateErr = map[string]string{}
		}
		r.lastCreateErr[vg.Name] = msg
		r.failMu.Unlock()
		if !repeated {
			r.Recorder.Eventf(vg, nil, corev1.EventTypeWarning, "VGCreateFailed", "CreateVG", "node %s: %s", r.Node.Name, msg)
		}
		return nil, v1.LockspaceVGCreateFailed, msg
	}
	r.Recorder.Eventf(vg, nil, corev1.EventTypeNormal, "VGCreated", "CreateVG",
		"node %s created shared VG %s on %v in %.1fs", r.Node.Name, name, pvs, time.Since(t0).Seconds())
	rep, err := r.Node.LVM.Report(ctx, name)
	if err != nil {
		return nil, v1.LockspaceReportFailed, "VG created, but its report failed: " + err.Error()
	}
	return rep, "", ""
}

// applyEntryIfChanged writes this node's entry when it differs from the one in the (cached)
// VolumeGroup other than by lastReport, or when that one is EntryRefreshCycles old.
func (r *VolumeGroupAgent) applyEntryIfChanged(ctx context.Context, vg *v1.VolumeGroup, e *v1.NodeLockspaceStatus) error {
	for i := range vg.Status.Nodes {
		cur := &vg.Status.Nodes[i]
		if cur.Node != e.Node {
			continue
		}
		if cur.LastReport != nil && e.LastReport != nil && e.LastReport.Sub(cur.LastReport.Time) < EntryRefreshCycles*r.interval() && sameEntry(cur, e) {
			return nil
		}
		break
	}
	return r.applyEntry(ctx, vg.Name, e)
}

// sameEntry compares two entries but for lastReport.
func sameEntry(a, b *v1.NodeLockspaceStatus) bool {
	x, y := *a, *b
	x.LastReport, y.LastReport = nil, nil
	return equality.Semantic.DeepEqual(x, y)
}

// conflictingNode returns another node whose fresh entry in the VG reports hostID, or "":
// two nodes with one sanlock host_id can both write one LV, so neither the report cycle nor
// the boot restore starts a lockspace then.
func conflictingNode(vg *v1.VolumeGroup, self string, hostID int32, now time.Time) string {
	if hostID <= 0 {
		return ""
	}
	for i := range vg.Status.Nodes {
		n := &vg.Status.Nodes[i]
		if n.Node != self && n.HostID == hostID && n.Fresh(now) {
			return n.Node
		}
	}
	return ""
}

// isReporter: the VG-wide report comes from one node, the first (by name) of the nodes whose
// lockspace is started and whose report is fresh, so no operator decision is needed and a
// dead reporter is replaced once its entry goes stale.
// vg must have the heartbeats overlaid.
func (r *VolumeGroupAgent) isReporter(vg *v1.VolumeGroup, now time.Time) bool {
	var ready []string
	for i := range vg.Status.Nodes {
		n := &vg.Status.Nodes[i]
		if n.Node != r.Node.Name && n.Ready(now) {
			ready = append(ready, n.Node)
		}
	}
	ready = append(ready, r.Node.Name)
	sort.Strings(ready)
	return ready[0] == r.Node.Name
}

func (r *VolumeGroupAgent) applyEntry(ctx context.Context, vgName string, e *v1.NodeLockspaceStatus) error {
	nodes := []any{}
	if e != nil {
		m := map[string]any{"node": e.Node, "vgFound": e.VGFound, "lockspaceStarted": e.LockspaceStarted}
		if e.HostID > 0 {
			m["hostID"] = int64(e.HostID)
		}
		if e.LastReport != nil {
			m["lastReport"] = e.LastReport.UTC().Format(time.RFC3339)
		}
		if e.ReportIntervalSeconds > 0 {
			m["reportIntervalSeconds"] = int64(e.ReportIntervalSeconds)
		}
		if e.Message != "" {
			m["message"] = e.Message
		}
		if e.Reason != "" {
			m["reason"] = string(e.Reason)
		}
		if len(e.FailedHosts) > 0 {
			hosts := make([]any, 0, len(e.FailedHosts))
			for _, h := range e.FailedHosts {
				hosts = append(hosts, map[string]any{"hostID": int64(h.HostID), "since": h.Since.UTC().Format(time.RFC3339)})
			}
			m["failedHosts"] = hosts
		}
		if len(e.DeadHosts) > 0 {
			ids := make([]any, 0, len(e.DeadHosts))
			for _, id := range e.DeadHosts {
				ids = append(ids, int64(id))
			}
			m["deadHosts"] = ids
		}
		nodes = append(nodes, m)
	}
	u := vgApplyObject(vgName)
	if err := unstructured.SetNestedSlice(u.Object, nodes, "status", "nodes"); err != nil {
		return err
	}
	return r.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(r.FieldManager()), client.ForceOwnership)
}

func quantity(bytes int64) string { return resource.NewQuantity(bytes, resource.BinarySI).String() }

func (r *VolumeGroupAgent) applyVGReport(ctx context.Context, vgName string, vg *lvm.VG) error {
	pvs := make([]any, 0, len(vg.PVs))
	for _, p := range vg.PVs {
		pv := map[string]any{"name": p.Name, "uuid": p.UUID, "size": quantity(p.Size), "free": quantity(p.Free), "used": quantity(p.Used)}
		if p.Missing {
			pv["missing"] = true
		}
		pvs = append(pvs, pv)
	}
	u := vgApplyObject(vgName)
	u.Object["status"] = map[string]any{
		"vgUUID": vg.UUID, "size": quantity(vg.Size), "free": quantity(vg.Free), "extentSize": quantity(vg.ExtentSize),
		"pvCount": int64(vg.PVCount), "lvCount": int64(vg.LVCount), "pvs": pvs,
	}
	return r.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(VGReportFieldManager), client.ForceOwnership)
}

func vgApplyObject(name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(v1.GroupVersion.String())
	u.SetKind("VolumeGroup")
	u.SetName(name)
	return u
}

// repairDrift finds leases this node holds on managed LVs of the VG that no attachment on this
// node asks for, reports them on the volume and releases them when safe: only LVs carrying
// the product's tag, never one another operation on this node is changing right now.
func (r *VolumeGroupAgent) repairDrift(ctx context.Context, vgName string, st *sanlock.Status, vg *lvm.VG) {
	logger := log.FromContext(ctx)
	var atts v1.VolumeAttachmentList
	if err := r.List(ctx, &atts); err != nil {
		return
	}
	wanted := map[string]bool{} // LV UUIDs attached to this node
	for _, a := range atts.Items {
		if string(a.Spec.Node) == r.Node.Name && a.Status.LVUUID != "" {
			wanted[a.Status.LVUUID] = true
		}
	}
	r.repairKilled(ctx, vgName, st, vg)
	for _, res := range st.Resources {
		if res.Lockspace != "lvm_"+vgName || wanted[res.Name] {
			continue
		}
		var lv *lvm.LV
		for i := range vg.LVs {
			if vg.LVs[i].UUID == res.Name {
				lv = &vg.LVs[i]
			}
		}
		if lv == nil || !lv.HasTag(v1.TagManaged) {
			continue // not ours to touch
		}
		vol, err := r.volumeByUUID(ctx, res.Name)
		if err != nil {
			logger.Info("drift check skipped: cannot list volumes", "error", err.Error())
			return // when unsure, never release
		}
		if vol != nil && r.attachedHere(ctx, vol) {
			continue // an attachment exists but has not recorded the UUID yet
		}
		unlock, ok := r.Node.TryLockLV(vgName, lv.Name)
		if !ok {
			continue // an operation of this agent holds it on purpose (create, wipe, extend)
		}
		err = r.Node.LVM.Activate(ctx, vgName, lvm.Deactivate, lv.Name)
		r.Node.Invalidate()
		unlock()
		msg := fmt.Sprintf("node %s held a lock on LV %s/%s with no attachment", r.Node.Name, vgName, lv.Name)
		if res.Orphan {
			// lvmlockd died holding it and its successor did not adopt it (seen in the
			// chaos tier): neither lvchange nor sanlock 3.8's orphan release (-16, measured)
			// frees it while the lockspace runs; the lease still guards the LV, and keeps
			// every host from activating it until this node's lockspace is restarted.
			err = fmt.Errorf("the lease is an orphan lvmlockd did not adopt: it keeps LV %s/%s from every host until node %s is rebooted (or its LVs of VG %s are deactivated and its lockspace restarted)", vgName, lv.Name, r.Node.Name, vgName)
		}
		if err != nil {
			msg += "; releasing it failed: " + err.Error()
		} else {
			msg += "; released it"
		}
		logger.Info("lock drift", "lv", lv.Name, "released", err == nil, "message", msg)
		if vol != nil {
			r.Recorder.Eventf(vol, nil, corev1.EventTypeWarning, "LockDrift", "RepairDrift", "%s", msg)
			orig := vol.DeepCopy()
			reason := "Repaired"
			if err != nil {
				reason = "ReleaseFailed"
			}
			// True while the drift persists (the release failed); False once repaired, with
			// what was found, so `kubectl describe` shows it.
			statusutil.SetCondition(&vol.Status.Conditions, vol.Generation, v1.ConditionLockDrift, err != nil, reason,
				msg+" at "+time.Now().UTC().Format(time.RFC3339))
			_ = patchStatus(ctx, r.Client, vol, orig, func(o client.Object) any { return o.(*v1.SharedVolume).Status })
		}
	}
}

// repairKilled repairs what a kill left on this node: when it lost its path to the VG's
// storage, lvmlockctl --kill's command (sharedlvm kill-vg) replaced the tables of the VG's
// LVs with the error target and lvmlockd dropped their locks; other nodes may hold them
// now. Once the lockspace is back, each such LV (managed, with a lock of its own, its device
// still the error target) is: reloaded from its metadata (lvchange --refresh) when this
// node holds its lease again (an attachment here took it back: the device works again);
// else deactivated (nothing here may use it without the lease; an attachment still here
// activates it again with its lock). It looks (one dmsetup command) in the first cycle of
// the agent, after a StorageLost, and whenever a managed LV is active here without a lease.
func (r *VolumeGroupAgent) repairKilled(ctx context.Context, vgName string, st *sanlock.Status, vg *lvm.VG) {
	var cands []*lvm.LV
	leaseless := false
	for i := range vg.LVs {
		lv := &vg.LVs[i]
		// Only LVs with a lock of their own (not snapshots, which the origin's lock covers).
		if !lv.ActiveLocally || lv.Name == lvm.LockLVName || !lv.HasTag(v1.TagManaged) || lv.LockArgs == "" || lv.Origin != "" {
			continue
		}
		if _, held := st.Lease(vgName, lv.UUID); !held {
			leaseless = true
		}
		cands = append(cands, lv)
	}
	if !r.killSuspect(vgName) && !leaseless {
		return
	}
	offline, err := r.Node.LVM.OfflineDevices(ctx)
	if err != nil {
		r.setKillSuspect(vgName, false) // cannot tell here; looked at again after a StorageLost
		return
	}
	found := false
	for _, lv := range cands {
		if !offline[lvm.DMName(vgName, lv.Name)] {
			continue
		}
		found = true
		unlock, ok := r.Node.TryLockLV(vgName, lv.Name)
		if !ok {
			continue // an operation of this agent is changing it: next cycle
		}
		_, held := st.Lease(vgName, lv.UUID)
		what := "deactivated it"
		if held {
			what = "reloaded its device from the LV's metadata (lvchange --refresh): it works again"
			err = r.Node.LVM.RefreshLV(ctx, vgName, lv.Name)
		} else {
			err = r.Node.LVM.Activate(ctx, vgName, lvm.Deactivate, lv.Name)
		}
		r.Node.Invalidate()
		unlock()
		msg := fmt.Sprintf("node %s had LV %s/%s taken offline by the kill after it lost its storage path (error target), lease held here: %v", r.Node.Name, vgName, lv.Name, held)
		typ, reason := corev1.EventTypeNormal, "KilledLVRepaired"
		if err != nil {
			msg += "; repairing it failed: " + err.Error()
			if !held {
				msg += " (in use? the instance must release the device: stop it, then start it again)"
			}
			typ, reason = corev1.EventTypeWarning, "KilledLVRepairFailed"
		} else {
			msg += "; " + what
		}
		log.FromContext(ctx).Info("killed LV", "lv", lv.Name, "leaseHeld", held, "repaired", err == nil, "message", msg)
		if vol, verr := r.volumeByUUID(ctx, lv.UUID); verr == nil && vol != nil {
			r.Recorder.Eventf(vol, nil, typ, reason, "RepairDrift", "%s", msg)
		}
	}
	if !found {
		r.setKillSuspect(vgName, false)
	}
}

// killSuspect: this agent has not looked for LVs a kill left in the VG since it started,
// or since the node last lost its path to the VG's storage.
func (r *VolumeGroupAgent) killSuspect(vg string) bool {
	r.failMu.Lock()
	defer r.failMu.Unlock()
	cleared, ok := r.killChecked[vg]
	return !ok || !cleared
}

func (r *VolumeGroupAgent) setKillSuspect(vg string, suspect bool) {
	r.failMu.Lock()
	defer r.failMu.Unlock()
	if r.killChecked == nil {
		r.killChecked = map[string]bool{}
	}
	r.killChecked[vg] = !suspect
}

// volumeByUUID finds a volume by its LV UUID. It lists every volume from the API, which is
// acceptable only because it runs on drift, an exception.
func (r *VolumeGroupAgent) volumeByUUID(ctx context.Context, uuid string) (*v1.SharedVolume, error) {
	var vols v1.SharedVolumeList
	if err := r.APIReader.List(ctx, &vols); err != nil {
		return nil, err
	}
	for i := range vols.Items {
		if vols.Items[i].Status.LVUUID == uuid {
			return &vols.Items[i], nil
		}
	}
	return nil, nil
}

func (r *VolumeGroupAgent) attachedHere(ctx context.Context, vol *v1.SharedVolume) bool {
	var atts v1.VolumeAttachmentList
	if err := r.List(ctx, &atts, client.InNamespace(vol.Namespace)); err != nil {
		return true // when unsure, do not release
	}
	for _, a := range atts.Items {
		if string(a.Spec.Volume) == vol.Name && string(a.Spec.Node) == r.Node.Name {
			return true
		}
	}
	return false
}

func selects(sel *metav1.LabelSelector, nodeLabels map[string]string) (bool, error) {
	if sel == nil {
		return true, nil
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false, err
	}
	return s.Matches(labels.Set(nodeLabels)), nil
}

// SetupWithManager registers the controller. Only spec changes, the create assignment and
// the periodic requeue trigger a cycle: reacting to every status write would answer each
// agent's report with one of our own.
func (r *VolumeGroupAgent) SetupWithManager(mgr ctrl.Manager) error {
	createAssigned := predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*v1.VolumeGroup), e.ObjectNew.(*v1.VolumeGroup)
		return o.Status.CreateNode != n.Status.CreateNode
	}}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.VolumeGroup{}, builder.WithPredicates(predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, createAssigned))).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4, RateLimiter: retry.Limiter()}).
		Named("agent-volumegroup").
		Complete(r)
}
