package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
	"github.com/sharedlvm/sharedlvm-operator/agent/sanlock"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/heartbeat"
	"github.com/sharedlvm/sharedlvm-operator/metrics"
)

// Restorer runs once when the agent starts: after a node reboot it restores the node's locks
// before VMs and nova-compute start. It waits for sanlock and lvmlockd, starts the lockspaces
// of the node's VGs (with the retry real hosts need), re-activates every live attachment of
// the node with its desired lock, batched per VG and mode (one lvchange for many LVs), and
// then records the restore on the Node for the current boot ID (label, annotation,
// condition) and removes the startup taint. Until then attachments to the node wait.
type Restorer struct {
	Client   client.Client
	Reader   client.Reader
	Node     *Node
	Recorder recorder.EventRecorder
	// DaemonWait bounds the wait for sanlock/lvmlockd per attempt cycle (default 5 min).
	DaemonWait time.Duration
	// HeartbeatNamespace holds the agents' heartbeat Leases.
	HeartbeatNamespace string
	// HostIDs is this node's allocated host_id: without it the restore waits (and says so
	// on the Node's condition) rather than start a lockspace with a guessed id.
	HostIDs *HostIDs

	done atomic.Bool
	// released: the restore leaves the node's LVM to the report cycle: while the daemons are
	// awaited, after the re-activations, and between attempts. False (the zero value) from
	// the agent's start until the first attempt knows whether a restore is needed, and from
	// the daemons answering until the re-activations end.
	released atomic.Bool
	// attemptStart: when the running attempt started (unix ns), for restoreYieldMax.
	attemptStart atomic.Int64
}

// restoreYieldMax bounds how long the report cycle yields to one restore attempt: an attempt
// joins (20 s to 3 min after an unclean shutdown) and re-activates (seconds); one that runs
// longer is stuck on something the VolumeGroups should say (a daemon hung, a lockspace
// orphaned meanwhile), so the report cycle runs again, contention or not.
const restoreYieldMax = 4 * time.Minute

// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch;patch;update
// +kubebuilder:rbac:groups="",resources=nodes/status,verbs=get;patch;update

// Restored reports whether this boot's restore is complete.
func (r *Restorer) Restored() bool { return r.done.Load() }

// Restoring reports whether a restore attempt runs (or the first has not yet decided whether
// one is needed). Meanwhile the restore owns the node's LVM: the VolumeGroup agent runs no
// report and no lockstart of its own (its first cycle's `lvm fullreport` of each VG took the
// VG lock through the lvmlockd thread the restore's lvchange waits on; README "Performance
// and scale"). Between failed attempts, while sanlock or lvmlockd does not answer, once the
// re-activations ended and after restoreYieldMax of one attempt, it is false, so that the
// report cycle says on the VolumeGroups what this node sees.
func (r *Restorer) Restoring() bool {
	if r.done.Load() || r.released.Load() {
		return false
	}
	start := r.attemptStart.Load()
	return start == 0 || time.Since(time.Unix(0, start)) < restoreYieldMax
}

// NeedLeaderElection is false: every node's agent restores its own node.
func (r *Restorer) NeedLeaderElection() bool { return false }

// Start implements manager.Runnable; it retries until the restore succeeds or ctx ends.
func (r *Restorer) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("restore")
	backoff := time.Second
	for {
		r.attemptStart.Store(time.Now().UnixNano())
		r.released.Store(false)
		err := r.restore(ctx)
		r.released.Store(true)
		if err == nil {
			r.done.Store(true)
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		logger.Info("restore not complete, retrying", "error", err.Error(), "in", backoff.String())
		_ = r.setNodeCondition(ctx, false, "Restoring", err.Error())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
		if _, waitingForID := err.(*HostIDProblem); waitingForID {
			backoff = time.Second // the operator allocates within a second of the heartbeat
		}
	}
}

// BootID reads the node's boot ID through the executor (the host's, not the container's view
// of anything else: the kernel has one).
func (n *Node) BootID(ctx context.Context) (string, error) {
	res, err := n.exec.Run(ctx, []string{"cat", "/proc/sys/kernel/random/boot_id"})
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(res.Stdout))
	if res.ExitCode != 0 || id == "" {
		return "", fmt.Errorf("reading boot_id: exit %d: %s", res.ExitCode, res.Stderr)
	}
	return id, nil
}

func (r *Restorer) restore(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("restore")
	t0 := time.Now()
	bootID, err := r.Node.BootID(ctx)
	if err != nil {
		return err
	}
	var node corev1.Node
	if err := r.Reader.Get(ctx, types.NamespacedName{Name: r.Node.Name}, &node); err != nil {
		return err
	}
	if node.Annotations[v1.AnnotationRestoredBootID] == bootID {
		// The agent restarted, the node did not: the locks are still held.
		logger.Info("locks already restored for this boot", "bootID", bootID)
		return r.markRestored(ctx, bootID, "agent restarted; locks of this boot were already restored")
	}
	// The joins' facts are read, and the node is marked restoring, while the daemons are
	// awaited: each is time before the joins (on a freshly booted guest the reads took as
	// long as the daemons' start). The marking is waited for before the attempt ends.
	factsRead := make(chan lockstartFacts, 1)
	go func() { factsRead <- r.readLockstartFacts(ctx) }()
	marked := make(chan struct{})
	go func() {
		defer close(marked)
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error { return r.markRestoring(ctx) }); err != nil {
			// Not fatal: wait-locks compares boot IDs, and the restore goes on.
			logger.Error(err, "marking the node as restoring (label, startup taint)")
		}
	}()
	defer func() { <-marked }()

	// 1. sanlock and lvmlockd must answer.
	st, err := r.waitDaemons(ctx)
	if err != nil {
		return err
	}
	daemonsAt := time.Since(t0)
	facts := <-factsRead
	if facts.err != nil || time.Since(facts.at) > lockstartFactsMaxAge {
		// Read again: the daemons took long (the host_id claim is read right before the
		// joins), or the early read failed.
		facts = r.readLockstartFacts(ctx)
	}
	if facts.err != nil {
		return facts.err
	}

	// 2. Lockspaces of the VGs that select this node, joined in parallel (lvmlockd and
	// sanlock run one thread per lockspace: k VGs cost about one join, not k).
	served, joins, joinsAt, err := r.startLockspaces(ctx, &node, st, facts, t0)
	if err != nil {
		return err
	}
	r.Node.Invalidate()
	lockspacesAt := time.Since(t0)

	// 3. Re-activate this node's live attachments with their desired lock: one lvchange per
	// VG and mode, the VGs in parallel.
	var atts v1.VolumeAttachmentList
	if err := r.Reader.List(ctx, &atts); err != nil {
		return err
	}
	batches, count := PlanRestoreBatches(atts.Items, r.Node.Name)
	failed, activations, err := r.activate(ctx, batches)
	r.Node.Invalidate()
	r.released.Store(true) // what is left are API writes
	if err != nil {
		return err
	}
	msg := fmt.Sprintf("boot %s: daemons up after %.1fs, joins from %.1fs, lockspaces of %d VG(s) after %.1fs, %d attachment(s) re-activated in %d batch(es), done in %.1fs",
		bootID, daemonsAt.Seconds(), joinsAt.Seconds(), served, lockspacesAt.Seconds(), count-len(failed), len(batches), time.Since(t0).Seconds())
	if len(joins)+len(activations) > 0 {
		msg += fmt.Sprintf(" (joins: %s; re-activations: %s)", timings(joins), timings(activations))
	}
	if len(failed) > 0 {
		msg += fmt.Sprintf("; %d could not be re-activated (see their attachments): %s", len(failed), strings.Join(failed, "; "))
		r.Recorder.Eventf(&node, nil, corev1.EventTypeWarning, "RestoreConflicts", "RestoreLocks", "%s", msg)
	}
	metrics.ObserveOperation(metrics.OpRestore, r.Node.Name, time.Since(t0))
	metrics.ResetRestoreSteps(r.Node.Name)
	for vg, d := range joins {
		metrics.SetRestoreStep(r.Node.Name, vg, metrics.RestoreJoin, d)
	}
	for vg, d := range activations {
		metrics.SetRestoreStep(r.Node.Name, vg, metrics.RestoreActivate, d)
	}
	metrics.SetRestoreStep(r.Node.Name, "", metrics.RestoreLockspaces, lockspacesAt)
	metrics.SetRestoreStep(r.Node.Name, "", metrics.RestoreTotal, time.Since(t0))
	logger.Info("locks restored", "bootID", bootID, "attachments", count, "batches", len(batches), "seconds", time.Since(t0).Seconds())
	r.Recorder.Eventf(&node, nil, corev1.EventTypeNormal, "LocksRestored", "RestoreLocks", "%s", msg)
	<-marked // the restoring mark is never written after the restored one
	return r.markRestored(ctx, bootID, msg)
}

// lockstartFactsMaxAge bounds how old the facts the joins are planned from may be when the
// joins start: read while the daemons are awaited, they are read again if that took longer.
const lockstartFactsMaxAge = 5 * time.Second

// lockstartFacts is what the boot's joins are planned from, read directly (the caches may
// not run yet): the VolumeGroups with the heartbeats overlaid and this node's host_id (its
// claim, agreeing with LVM's configuration), read when at says.
type lockstartFacts struct {
	vgs    []v1.VolumeGroup
	hostID int32
	at     time.Time
	err    error
}

// readLockstartFacts reads the joins' facts. The reads are independent (the API, the
// host_id claim and LVM's configuration) and run at once.
func (r *Restorer) readLockstartFacts(ctx context.Context) lockstartFacts {
	f := lockstartFacts{at: time.Now()}
	var (
		vgs              v1.VolumeGroupList
		hb               *heartbeat.Tracker
		listErr          error
		hostIDErr, hbErr error
		reads            sync.WaitGroup
	)
	reads.Add(2)
	go func() {
		defer reads.Done()
		if listErr = r.Reader.List(ctx, &vgs); listErr == nil {
			hb, hbErr = heartbeat.List(ctx, r.Reader, r.HeartbeatNamespace)
		}
	}()
	go func() { defer reads.Done(); f.hostID, hostIDErr = r.HostIDs.Check(ctx, true) }()
	reads.Wait()
	for _, err := range []error{listErr, hostIDErr, hbErr} {
		if err != nil {
			f.err = err
			return f
		}
	}
	for i := range vgs.Items {
		hb.Overlay(&vgs.Items[i])
	}
	f.vgs = vgs.Items
	return f
}

// startLockspaces starts, in parallel, the lockspaces PlanLockstarts picks for this node and
// returns how many VolumeGroups the node serves, how long each join took and when (since t0)
// the joins started. st is sanlock's status as the daemons' wait last read it.
func (r *Restorer) startLockspaces(ctx context.Context, node *corev1.Node, st *sanlock.Status, facts lockstartFacts, t0 time.Time) (int, map[string]time.Duration, time.Duration, error) {
	hostID := facts.hostID
	plan := PlanLockstarts(facts.vgs, node.Labels, r.Node.Name, hostID, func(vg string) bool { _, ok := st.Lockspace(vg); return ok }, time.Now())
	for _, d := range plan.Skipped {
		// The report cycle says so on the VG and with an Event; nothing to restore there.
		log.FromContext(ctx).Info("not starting lockspace", "vg", d.VG, "why", d.Why)
	}
	joinsAt := time.Since(t0)
	type join struct {
		took time.Duration
		err  error
	}
	results := perVG(plan.Start, func(name string) join {
		t0 := time.Now()
		_, err := r.Node.LVM.Lockstart(ctx, name, hostID)
		return join{time.Since(t0), err}
	})
	var errs []error
	joins := map[string]time.Duration{}
	for _, name := range plan.Start {
		switch j := results[name]; {
		case j.err == nil:
			joins[name] = j.took
		case lvm.KindOf(j.err) == lvm.KindVGNotFound:
			// this node does not see that VG's LUN (yet): nothing to restore there
		default:
			errs = append(errs, fmt.Errorf("lockstart %s: %w", name, j.err))
		}
	}
	if len(errs) > 0 {
		return 0, nil, 0, errors.Join(errs...)
	}
	return plan.Served, joins, joinsAt, nil
}

// perVG runs f for each VG at once and waits for all: lvmlockd runs one thread per
// lockspace and sanlock one per lockspace's leases, so the VGs' joins and re-activations
// need not queue behind each other.
func perVG[T any](vgs []string, f func(vg string) T) map[string]T {
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		out = make(map[string]T, len(vgs))
	)
	for _, vg := range vgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := f(vg)
			mu.Lock()
			defer mu.Unlock()
			out[vg] = v
		}()
	}
	wg.Wait()
	return out
}

// activate runs the restore's batches, the VGs in parallel (each lockspace has its own
// lvmlockd thread; on the bed the leases were still taken one after another, README
// "Performance and scale"), the modes of one VG one after another. A batch that fails is not
// retried LV by LV: lvchange went on past the LVs it could not lock, so the locks held
// afterwards, read from lvmlockd, name them (NotActivated); those are tried once more in one
// command. It returns those LVs ("vg/lv: why"), how long each VG's lvchanges took, and an
// error only when what happened cannot be read (the restore retries).
func (r *Restorer) activate(ctx context.Context, batches []RestoreBatch) ([]string, map[string]time.Duration, error) {
	byVG := map[string][]RestoreBatch{}
	for _, b := range batches {
		byVG[b.VG] = append(byVG[b.VG], b)
	}
	type activation struct {
		notActive []string
		took      time.Duration
		err       error
	}
	vgs := slices.Sorted(maps.Keys(byVG))
	results := perVG(vgs, func(vg string) activation {
		t0 := time.Now()
		var notActive []string
		for _, b := range byVG[vg] {
			// Twice at most: the LVs the first lvchange did not get are tried once more in
			// one command (a transient refusal, e.g. sanlock failing a VG lock under load,
			// passes; a lease another host holds does not), then named.
			var err error
			for attempt := 1; attempt <= 2 && len(b.LVs) > 0; attempt++ {
				if err = r.Node.LVM.Activate(ctx, b.VG, b.Mode, b.LVs...); err == nil {
					break
				}
				held, rerr := r.Node.LVM.LockdInfo(ctx)
				if rerr != nil {
					return activation{err: fmt.Errorf("lvchange -a%s of %d LV(s) in %s failed (%v), and reading lvmlockd's locks too: %w", b.Mode, len(b.LVs), vg, err, rerr)}
				}
				b.LVs = NotActivated(b, held)
			}
			if err == nil {
				continue
			}
			for _, lv := range b.LVs {
				notActive = append(notActive, fmt.Sprintf("%s/%s: %s", vg, lv, lvm.WhyNotActivated(err, vg, lv)))
			}
		}
		return activation{notActive: notActive, took: time.Since(t0)}
	})
	var (
		failed []string
		errs   []error
		took   = map[string]time.Duration{}
	)
	for _, vg := range vgs {
		a := results[vg]
		if a.err != nil {
			errs = append(errs, a.err)
			continue
		}
		took[vg] = a.took
		failed = append(failed, a.notActive...)
	}
	sort.Strings(failed)
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	return failed, took, nil
}

// timings renders per-VG durations sorted by VG: "vg1 97.0s, vg2 96.1s".
func timings(d map[string]time.Duration) string {
	if len(d) == 0 {
		return "none"
	}
	names := make([]string, 0, len(d))
	for n := range d {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %.1fs", n, d[n].Seconds())
	}
	return strings.Join(parts, ", ")
}

func uniq(in []string) []string {
	sort.Strings(in)
	out := in[:0]
	for i, s := range in {
		if i == 0 || s != in[i-1] {
			out = append(out, s)
		}
	}
	return out
}

// waitDaemons returns once sanlock and lvmlockd both answer, with sanlock's status then.
func (r *Restorer) waitDaemons(ctx context.Context) (*sanlock.Status, error) {
	limit := r.DaemonWait
	if limit <= 0 {
		limit = 5 * time.Minute
	}
	deadline := time.Now().Add(limit)
	var lastErr error
	for time.Now().Before(deadline) {
		// The two at once: each is a command through the node's executor.
		var (
			st         *sanlock.Status
			err1, err2 error
			both       sync.WaitGroup
		)
		both.Add(1)
		go func() { defer both.Done(); st, err1 = r.Node.Sanlock.Status(ctx) }()
		_, err2 = r.Node.LVM.LockdInfo(ctx)
		both.Wait()
		if err1 == nil && err2 == nil {
			r.released.Store(false)
			return st, nil
		}
		// While the daemons do not answer, the report cycle says so on the VolumeGroups
		// (there is no LVM to leave to the restore yet).
		r.released.Store(true)
		lastErr = fmt.Errorf("sanlock: %v; lvmlockd: %v", err1, err2)
		_ = r.setNodeCondition(ctx, false, "WaitingForLockDaemons", "waiting for sanlock and lvmlockd to answer: "+lastErr.Error())
		// Polled closely: right after a boot the daemons answer within a second or two, and
		// each poll is two short commands; a coarse poll would add its wait to the restore.
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("sanlock/lvmlockd not answering after %v: %w", limit, lastErr)
}

func (r *Restorer) markRestoring(ctx context.Context) error {
	var node corev1.Node
	if err := r.Reader.Get(ctx, types.NamespacedName{Name: r.Node.Name}, &node); err != nil {
		return err
	}
	orig := node.DeepCopy()
	if node.Labels == nil {
		node.Labels = map[string]string{}
	}
	node.Labels[v1.LabelLocksRestored] = "false"
	// The kubelet sets the startup taint only when it registers the Node: after a reboot of
	// a node that exists it does not, so the agent puts it back until this boot's restore.
	if v1.StartupTaint(&node) == nil {
		node.Spec.Taints = append(node.Spec.Taints, corev1.Taint{Key: v1.TaintLocksNotRestored, Effect: corev1.TaintEffectNoSchedule})
	}
	if err := r.Client.Patch(ctx, &node, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return err
	}
	return r.setNodeCondition(ctx, false, "Restoring", "restoring this boot's locks")
}

func (r *Restorer) markRestored(ctx context.Context, bootID, msg string) error {
	// The condition first: whoever sees the restored mark (wait-locks, watching the Node,
	// returns on it) then reads the restore's message too, not the "restoring" one.
	if err := r.setNodeCondition(ctx, true, "Restored", msg); err != nil {
		return err
	}
	var node corev1.Node
	if err := r.Reader.Get(ctx, types.NamespacedName{Name: r.Node.Name}, &node); err != nil {
		return err
	}
	orig := node.DeepCopy()
	if node.Labels == nil {
		node.Labels = map[string]string{}
	}
	if node.Annotations == nil {
		node.Annotations = map[string]string{}
	}
	node.Labels[v1.LabelLocksRestored] = "true"
	node.Annotations[v1.AnnotationRestoredBootID] = bootID
	var taints []corev1.Taint
	for _, t := range node.Spec.Taints {
		if t.Key != v1.TaintLocksNotRestored {
			taints = append(taints, t)
		}
	}
	node.Spec.Taints = taints
	return r.Client.Patch(ctx, &node, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}

func (r *Restorer) setNodeCondition(ctx context.Context, ok bool, reason, msg string) error {
	var node corev1.Node
	if err := r.Reader.Get(ctx, types.NamespacedName{Name: r.Node.Name}, &node); err != nil {
		return err
	}
	orig := node.DeepCopy()
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
	}
	now := metav1.Now()
	found := false
	for i := range node.Status.Conditions {
		c := &node.Status.Conditions[i]
		if c.Type != v1.NodeConditionLocksRestored {
			continue
		}
		found = true
		if c.Status != status {
			c.LastTransitionTime = now
		}
		c.Status, c.Reason, c.Message, c.LastHeartbeatTime = status, reason, msg, now
	}
	if !found {
		node.Status.Conditions = append(node.Status.Conditions, corev1.NodeCondition{
			Type: v1.NodeConditionLocksRestored, Status: status, Reason: reason, Message: msg,
			LastHeartbeatTime: now, LastTransitionTime: now,
		})
	}
	// Strategic merge: node conditions merge by type, so kubelet's own are left alone.
	return r.Client.Status().Patch(ctx, &node, client.StrategicMergeFrom(orig))
}
