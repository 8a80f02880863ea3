// Package metrics holds sharedlvm's Prometheus metrics, served with controller-runtime's on
// each process's metrics endpoint: operation durations and failures where the work runs
// (the agents), and the storage and lock state the operator sees (collected at scrape time
// from its informer cache, so a scrape costs no apiserver request).
package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/heartbeat"
)

// Operation names used in the operation metrics' "operation" label.
const (
	OpCreate  = "create"
	OpAttach  = "attach"
	OpDetach  = "detach"
	OpConvert = "convert"
	OpExtend  = "extend"
	OpPVMove  = "pvmove"
	OpCopy    = "copy"
	OpMigrate = "migrate"
	OpWipe    = "wipe"
	OpDelete  = "delete"
	OpRestore = "restore"
)

var (
	operationSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "sharedlvm_operation_duration_seconds",
		Help: "Duration of storage operations run by the node agents (the LVM/sanlock commands and their checks), by operation and node.",
		// From a lock conversion (~0.1 s) to a restore that waits for a lockspace join
		// (minutes) or a long copy.
		Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900},
	}, []string{"operation", "node"})
	operationFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sharedlvm_operation_failures_total",
		Help: "Failed storage operations by operation, node and reason (the LVM error kind, e.g. LockHeldByOtherHost).",
	}, []string{"operation", "node", "reason"})
	createdLVReads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sharedlvm_created_lv_reads_total",
		Help: "How a node learned a new LV's UUID, lease and placement after lvcreate: from the metadata lvcreate committed, read from a PV in-process (source committed-metadata), or with one lvs (source lvs: another host committed in between, or the agent cannot read the devices).",
	}, []string{"node", "source"})
	restoreSteps = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sharedlvm_restore_step_seconds",
		Help: "The last boot restore of a node, per VG and step: join (its lockspace's start, run in parallel with the other VGs') and activate (its re-activation lvchanges); and per node (vg \"\") the time until every lockspace was started (step lockspaces) and the whole restore (step total).",
	}, []string{"node", "vg", "step"})
)

// Steps of a boot restore, in sharedlvm_restore_step_seconds.
const (
	RestoreJoin     = "join"
	RestoreActivate = "activate"
	// RestoreLockspaces: from the restore's start until every lockspace is started (the
	// daemons' wait, the host_id check and the parallel joins).
	RestoreLockspaces = "lockspaces"
	RestoreTotal      = "total"
)

// ResetRestoreSteps forgets a node's previous restore's steps (a VG it no longer joined
// would keep its old time).
func ResetRestoreSteps(node string) {
	restoreSteps.DeletePartialMatch(prometheus.Labels{"node": node})
}

// SetRestoreStep records one step of a node's last boot restore.
func SetRestoreStep(node, vg, step string, d time.Duration) {
	restoreSteps.WithLabelValues(node, vg, step).Set(d.Seconds())
}

// Sources of a new LV's description, in sharedlvm_created_lv_reads_total.
const (
	SourceCommittedMetadata = "committed-metadata"
	SourceLVs               = "lvs"
)

// state is the one state collector of the process; the operator points it at its cache
// (again after an in-process restart, as tests do).
var state = &StateCollector{}

func init() {
	crmetrics.Registry.MustRegister(operationSeconds, operationFailures, createdLVReads, restoreSteps, state)
}

// CollectStateFrom makes the process's metrics endpoint report VG and lock state read from r
// (the operator's informer cache), with the agents' liveness from hb.
func CollectStateFrom(r client.Reader, hb *heartbeat.Tracker) {
	state.mu.Lock()
	defer state.mu.Unlock()
	state.reader, state.heartbeats = r, hb
}

// ObserveOperation records one successful operation's duration.
func ObserveOperation(op, node string, d time.Duration) {
	operationSeconds.WithLabelValues(op, node).Observe(d.Seconds())
}

// CountCreatedLVRead records how a node read a new LV after lvcreate.
func CountCreatedLVRead(node, source string) {
	createdLVReads.WithLabelValues(node, source).Inc()
}

// CountFailure records one failed operation.
func CountFailure(op, node, reason string) {
	operationFailures.WithLabelValues(op, node, reason).Inc()
}

var (
	vgSize = prometheus.NewDesc("sharedlvm_volumegroup_size_bytes", "Size of a shared VG, as its agents report it.", []string{"volumegroup", "vg"}, nil)
	vgFree = prometheus.NewDesc("sharedlvm_volumegroup_free_bytes", "Free space of a shared VG.", []string{"volumegroup", "vg"}, nil)
	vgLVs  = prometheus.NewDesc("sharedlvm_volumegroup_lvs", "LVs in a shared VG.", []string{"volumegroup", "vg"}, nil)
	vgUp   = prometheus.NewDesc("sharedlvm_volumegroup_lockspaces_started", "Nodes that have started the VG's sanlock lockspace and report freshly.", []string{"volumegroup", "vg"}, nil)
	locks  = prometheus.NewDesc("sharedlvm_locks_held", "Sanlock leases on LVs held by a node, by mode, as its agent reports them (granted by lvmlockd, checked against sanlock).", []string{"node", "mode"}, nil)
	phases = prometheus.NewDesc("sharedlvm_volumes", "SharedVolumes by phase.", []string{"phase"}, nil)
)

// StateCollector reports VG capacity and lock state from a (cached) reader at scrape time.
type StateCollector struct {
	mu         sync.Mutex
	reader     client.Reader
	heartbeats *heartbeat.Tracker
}

// Describe implements prometheus.Collector.
func (s *StateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{vgSize, vgFree, vgLVs, vgUp, locks, phases} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (s *StateCollector) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	r, hb := s.reader, s.heartbeats
	s.mu.Unlock()
	if r == nil {
		return // not the operator
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var vgs v1.VolumeGroupList
	if err := r.List(ctx, &vgs); err == nil {
		now := time.Now()
		for _, g := range vgs.Items {
			hb.Overlay(&g)
			labels := []string{g.Name, string(g.Spec.VGName)}
			if g.Status.Size != nil {
				ch <- prometheus.MustNewConstMetric(vgSize, prometheus.GaugeValue, float64(g.Status.Size.Value()), labels...)
			}
			if g.Status.Free != nil {
				ch <- prometheus.MustNewConstMetric(vgFree, prometheus.GaugeValue, float64(g.Status.Free.Value()), labels...)
			}
			ch <- prometheus.MustNewConstMetric(vgLVs, prometheus.GaugeValue, float64(g.Status.LVCount), labels...)
			started := 0
			for i := range g.Status.Nodes {
				if g.Status.Nodes[i].Ready(now) {
					started++
				}
			}
			ch <- prometheus.MustNewConstMetric(vgUp, prometheus.GaugeValue, float64(started), labels...)
		}
	}
	// The cloud's every attachment and volume, read only: the cache's objects themselves, not
	// deep copies (tens of MiB of garbage per scrape at 10,000 volumes).
	var atts v1.VolumeAttachmentList
	if err := r.List(ctx, &atts, client.UnsafeDisableDeepCopy); err == nil {
		type key struct{ node, mode string }
		held := map[key]map[string]bool{} // node+mode -> LV UUIDs (attachments may share one lease)
		for _, a := range atts.Items {
			m := a.Status.AppliedLock
			if m == "" || m == v1.LockNone {
				continue
			}
			k := key{string(a.Spec.Node), string(m)}
			if held[k] == nil {
				held[k] = map[string]bool{}
			}
			held[k][a.Status.LVUUID+"/"+a.Namespace+"/"+string(a.Spec.Volume)] = true
		}
		for k, lvs := range held {
			ch <- prometheus.MustNewConstMetric(locks, prometheus.GaugeValue, float64(len(lvs)), k.node, k.mode)
		}
	}
	var vols v1.SharedVolumeList
	if err := r.List(ctx, &vols, client.UnsafeDisableDeepCopy); err == nil {
		count := map[string]int{}
		for _, v := range vols.Items {
			count[string(v.Status.Phase)]++
		}
		for p, n := range count {
			if p == "" {
				p = "Unknown"
			}
			ch <- prometheus.MustNewConstMetric(phases, prometheus.GaugeValue, float64(n), p)
		}
	}
}
