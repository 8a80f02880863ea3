// Package heartbeat is how agents say they are alive: one coordination.k8s.io/v1 Lease per
// node, renewed every report interval, as the kubelet does with its own Lease.
//
// Before it, each agent rewrote its entry in every VolumeGroup's status once per cycle just
// to refresh lastReport. That is one object written by all N agents every interval and
// received by all N of them (its size, its field managers and the admission policy's check
// of its entries all grow with N): O(N²) apiserver work per interval, which a 100-node
// scale run turned into a write hotspot. Now an entry is written only when it changes (and
// refreshed rarely), and liveness is a small per-node object. Readers overlay the
// heartbeats on the entries (Tracker.Overlay) before judging freshness.
package heartbeat

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

const (
	// DefaultNamespace holds the heartbeat Leases: the namespace Kubernetes keeps for node
	// heartbeats (every apiserver creates it).
	DefaultNamespace = "kube-node-lease"
	// Label marks the Leases of sharedlvm agents (value "agent"): caches select on it.
	Label = "sharedlvm.io/heartbeat"
	// LabelValue is Label's value.
	LabelValue = "agent"
	// LeasePrefix starts every heartbeat Lease's name.
	LeasePrefix = "sharedlvm-agent-"
)

// LeaseName is the name of a node's heartbeat Lease. A node name too long to be prefixed is
// replaced by a digest (holderIdentity still names the node).
func LeaseName(node string) string {
	if name := LeasePrefix + node; len(name) <= 253 {
		return name
	}
	sum := sha256.Sum256([]byte(node))
	return LeasePrefix + hex.EncodeToString(sum[:16])
}

// Selector selects heartbeat Leases.
func Selector() labels.Selector { return labels.SelectorFromSet(labels.Set{Label: LabelValue}) }

// CacheOptions restricts a manager's Lease cache to the heartbeats.
func CacheOptions(namespace string) cache.ByObject {
	return cache.ByObject{Namespaces: map[string]cache.Config{namespace: {}}, Label: Selector()}
}

// Renewer renews one node's heartbeat Lease every Interval (jittered by ±10 %, so that
// nodes started together do not write in step). It is a manager Runnable; it needs no
// leader election.
type Renewer struct {
	Client client.Client
	// Reader reads the Lease when the last written copy is missing or stale (the API
	// reader: the cache may not hold a Lease this node wrote without the label).
	Reader    client.Reader
	Namespace string
	Node      string
	// Interval is the agent's report interval; the Lease lasts three of them (at least 10 s),
	// the staleness rule of v1alpha1.NodeLockspaceStatus.
	Interval time.Duration
	Now      func() time.Time
	// Annotate, when set, returns annotations the Lease carries (nil: keep those it has):
	// the node's lvmlocal.conf host_id, which host_id allocation waits for.
	Annotate func(context.Context) map[string]string

	last *coordv1.Lease
}

// NeedLeaderElection: every agent renews its own heartbeat.
func (r *Renewer) NeedLeaderElection() bool { return false }

// Start renews until ctx ends. A failed renewal is retried after a short random delay and
// logged; it never stops the agent (its entries simply go stale, which is the truth).
func (r *Renewer) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithValues("lease", r.Namespace+"/"+LeaseName(r.Node))
	for {
		next := Spread(r.Interval)
		if err := r.Renew(ctx); err != nil {
			logger.Info("heartbeat not renewed, retrying", "error", err.Error())
			next = 500*time.Millisecond + Jitter(2*time.Second)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(next):
		}
	}
}

func (r *Renewer) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Renew writes the Lease once: an update of the copy it last wrote (no read), or a read and
// a create/update when it has none or the write conflicted.
func (r *Renewer) Renew(ctx context.Context) error {
	now := metav1.NewMicroTime(r.now())
	dur := int32(v1.StaleAfterInterval(r.Interval) / time.Second)
	var ann map[string]string
	if r.Annotate != nil {
		ann = r.Annotate(ctx)
	}
	set := func(l *coordv1.Lease) {
		l.Labels = map[string]string{Label: LabelValue}
		for k, v := range ann {
			if l.Annotations == nil {
				l.Annotations = map[string]string{}
			}
			l.Annotations[k] = v
		}
		l.Spec.HolderIdentity = ptr.To(r.Node)
		l.Spec.LeaseDurationSeconds = ptr.To(dur)
		l.Spec.RenewTime = &now
	}
	if r.last != nil {
		l := r.last.DeepCopy()
		set(l)
		err := r.Client.Update(ctx, l)
		if err == nil {
			r.last = l
			return nil
		}
		if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			return err
		}
		r.last = nil
	}
	reader := r.Reader
	if reader == nil {
		reader = r.Client
	}
	var l coordv1.Lease
	err := reader.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: LeaseName(r.Node)}, &l)
	switch {
	case apierrors.IsNotFound(err):
		l = coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: LeaseName(r.Node)}}
		set(&l)
		l.Spec.AcquireTime = &now
		if err := r.Client.Create(ctx, &l); err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		set(&l)
		if err := r.Client.Update(ctx, &l); err != nil {
			return err
		}
	}
	r.last = &l
	return nil
}

// Spread returns interval ±10 %: periodic writers started together (all agents after a
// power loss of the cluster) do not stay in step.
func Spread(interval time.Duration) time.Duration {
	return interval*9/10 + Jitter(interval/5)
}

// Jitter returns a random duration in [0, d).
func Jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d)))
}

// Revived passes the heartbeat events after which a node may be able to work again: a new
// Lease, or a renewal of one that had expired. Routine renewals do not pass.
func Revived() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { return e.Object.GetLabels()[Label] == LabelValue },
		UpdateFunc: func(e event.UpdateEvent) bool {
			old, ok := e.ObjectOld.(*coordv1.Lease)
			if !ok || old.Labels[Label] != LabelValue {
				return false
			}
			_, b, ok := FromLease(old)
			return !ok || time.Since(b.Renewed) > b.Duration
		},
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

// Beat is one node's last heartbeat.
type Beat struct {
	Renewed  time.Time
	Duration time.Duration
}

// Tracker keeps the last heartbeat of every node from a Lease informer, for O(1) lookups in
// reconcilers (no list per reconcile).
type Tracker struct {
	mu    sync.RWMutex
	beats map[string]Beat // by node
	names map[string]string
	// reg is the informer handler's registration: until it has seen the initial list, a
	// reader would find no heartbeat at all and judge every agent down (a controller can
	// start before its informer's handlers have caught up: seen when a new leader
	// reconciled a volume at once and left it Pending with NoReadyNode).
	reg    toolscache.ResourceEventHandlerRegistration
	synced atomic.Bool
}

// TrackerSyncTimeout bounds how long a reader waits for the tracker's initial list.
const TrackerSyncTimeout = 30 * time.Second

// waitSynced blocks until the tracker holds the informer's initial list (at most
// TrackerSyncTimeout; a tracker fed by Set or List is synced).
func (t *Tracker) waitSynced() {
	if t.synced.Load() {
		return
	}
	t.mu.RLock()
	reg := t.reg
	t.mu.RUnlock()
	if reg == nil {
		return
	}
	deadline := time.Now().Add(TrackerSyncTimeout)
	for !reg.HasSynced() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if reg.HasSynced() {
		t.synced.Store(true)
	}
}

// NewTracker returns an empty tracker; Register feeds it.
func NewTracker() *Tracker { return &Tracker{beats: map[string]Beat{}, names: map[string]string{}} }

// Register adds the tracker to the cache's Lease informer (whose cache options should select
// the heartbeats: CacheOptions).
func (t *Tracker) Register(ctx context.Context, c cache.Cache) error {
	inf, err := c.GetInformer(ctx, &coordv1.Lease{})
	if err != nil {
		return err
	}
	reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { t.Observe(o) },
		UpdateFunc: func(_, o any) { t.Observe(o) },
		DeleteFunc: func(o any) {
			if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			if l, ok := o.(*coordv1.Lease); ok {
				t.mu.Lock()
				if node, ok := t.names[l.Namespace+"/"+l.Name]; ok {
					delete(t.beats, node)
					delete(t.names, l.Namespace+"/"+l.Name)
				}
				t.mu.Unlock()
			}
		},
	})
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.reg = reg
	t.mu.Unlock()
	return nil
}

// Observe records the heartbeat of a Lease object (the informer does; so do watch handlers,
// which may run before the tracker's own handler).
func (t *Tracker) Observe(o any) {
	if t == nil {
		return
	}
	l, ok := o.(*coordv1.Lease)
	if !ok || l.Labels[Label] != LabelValue {
		return
	}
	node, beat, ok := FromLease(l)
	if !ok {
		return
	}
	t.Set(node, beat)
	t.mu.Lock()
	t.names[l.Namespace+"/"+l.Name] = node
	t.mu.Unlock()
}

// FromLease reads a heartbeat Lease.
func FromLease(l *coordv1.Lease) (string, Beat, bool) {
	if l.Spec.HolderIdentity == nil || l.Spec.RenewTime == nil {
		return "", Beat{}, false
	}
	b := Beat{Renewed: l.Spec.RenewTime.Time}
	if l.Spec.LeaseDurationSeconds != nil {
		b.Duration = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	return *l.Spec.HolderIdentity, b, true
}

// Set records a node's heartbeat (tests, and readers that listed the Leases themselves).
func (t *Tracker) Set(node string, b Beat) {
	if t == nil {
		return
	}
	t.mu.Lock()
	if old, ok := t.beats[node]; !ok || b.Renewed.After(old.Renewed) {
		t.beats[node] = b
	}
	t.mu.Unlock()
}

// Get returns a node's last heartbeat.
func (t *Tracker) Get(node string) (Beat, bool) {
	if t == nil {
		return Beat{}, false
	}
	t.waitSynced()
	t.mu.RLock()
	defer t.mu.RUnlock()
	b, ok := t.beats[node]
	return b, ok
}

// Overlay sets each lockspace entry of vg to its node's heartbeat when that is newer than
// the entry's own lastReport, so that the entry's Fresh and Ready rules judge the agent's
// liveness. vg's list of entries must be an in-memory copy, not a cache's (never write it
// back); only the entries' lastReport and reportIntervalSeconds change. A nil tracker
// changes nothing.
func (t *Tracker) Overlay(vg *v1.VolumeGroup) {
	if t == nil || vg == nil {
		return
	}
	var times []metav1.Time // one allocation for the entries' new lastReports
	for i := range vg.Status.Nodes {
		n := &vg.Status.Nodes[i]
		b, ok := t.Get(n.Node)
		if !ok || (n.LastReport != nil && !b.Renewed.After(n.LastReport.Time)) {
			continue
		}
		if times == nil {
			times = make([]metav1.Time, 0, len(vg.Status.Nodes)-i)
		}
		times = append(times, metav1.NewTime(b.Renewed))
		n.LastReport = &times[len(times)-1]
		if b.Duration > 0 {
			n.ReportIntervalSeconds = int32(max(1, b.Duration/3/time.Second))
		}
	}
}

// List reads the heartbeats straight from the API (a reader with no informer, e.g. the boot
// restore before the caches run, or the kubectl plugin) into a tracker.
func List(ctx context.Context, r client.Reader, namespace string) (*Tracker, error) {
	var leases coordv1.LeaseList
	if err := r.List(ctx, &leases, client.InNamespace(namespace), client.MatchingLabelsSelector{Selector: Selector()}); err != nil {
		return nil, err
	}
	t := NewTracker()
	for i := range leases.Items {
		if node, b, ok := FromLease(&leases.Items[i]); ok {
			t.Set(node, b)
		}
	}
	return t, nil
}
