package agent

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

// DefaultReportInterval is how often an agent refreshes its lockspace entry of each VG.
const DefaultReportInterval = 30 * time.Second

// VolumeGroupReporter keeps this node's entry of status.nodes current in every VolumeGroup
// whose nodeSelector selects the node. It writes with server-side apply under a field
// manager of its own (sharedlvm-agent/<node>), so that agents never overwrite each other's
// entries and the operator's writes never drop them.
type VolumeGroupReporter struct {
	client.Client
	NodeName       string
	Storage        Storage
	ReportInterval time.Duration
	// Now is the clock (tests pin it); nil means time.Now.
	Now func() time.Time
}

// +kubebuilder:rbac:groups=sharedlvm.io,resources=volumegroups,verbs=get;list;watch
// +kubebuilder:rbac:groups=sharedlvm.io,resources=volumegroups/status,verbs=get;patch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch

// FieldManager is the server-side-apply field manager of this node's agent.
func (r *VolumeGroupReporter) FieldManager() string { return "sharedlvm-agent/" + r.NodeName }

// Reconcile refreshes this node's entry of one VolumeGroup.
func (r *VolumeGroupReporter) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	var vg v1.VolumeGroup
	if err := r.Get(ctx, req.NamespacedName, &vg); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	var node corev1.Node
	if err := r.Get(ctx, types.NamespacedName{Name: r.NodeName}, &node); err != nil {
		return ctrl.Result{}, err
	}
	selected, err := selects(vg.Spec.NodeSelector, node.Labels)
	if err != nil {
		return ctrl.Result{}, nil // the operator reports an invalid selector on the VG
	}
	if !selected {
		// Apply an empty entry set: server-side apply drops the entry this manager owned.
		return ctrl.Result{}, r.apply(ctx, vg.Name, nil)
	}
	state, err := r.Storage.Lockspace(ctx, string(vg.Spec.VGName))
	if err != nil {
		state = LockspaceState{Message: err.Error()}
		logger.Info("lockspace status unavailable", "vg", vg.Spec.VGName, "error", err.Error())
	}
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	entry := map[string]any{
		"node":             r.NodeName,
		"lockspaceStarted": state.Started,
		"lastReport":       metav1.NewTime(now()).UTC().Format(time.RFC3339),
	}
	if state.HostID > 0 {
		entry["hostID"] = int64(state.HostID)
	}
	if state.Message != "" {
		entry["message"] = state.Message
	}
	if err := r.apply(ctx, vg.Name, entry); err != nil {
		return ctrl.Result{}, err
	}
	interval := r.ReportInterval
	if interval <= 0 {
		interval = DefaultReportInterval
	}
	return ctrl.Result{RequeueAfter: interval}, nil
}

func (r *VolumeGroupReporter) apply(ctx context.Context, vgName string, entry map[string]any) error {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(v1.GroupVersion.String())
	u.SetKind("VolumeGroup")
	u.SetName(vgName)
	nodes := []any{}
	if entry != nil {
		nodes = append(nodes, entry)
	}
	if err := unstructured.SetNestedSlice(u.Object, nodes, "status", "nodes"); err != nil {
		return err
	}
	return r.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u),
		client.FieldOwner(r.FieldManager()), client.ForceOwnership)
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

// SetupWithManager registers the reporter.
func (r *VolumeGroupReporter) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		// Only spec changes and the periodic requeue trigger a report: reacting to status
		// updates would answer every other agent's report with one of our own.
		For(&v1.VolumeGroup{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Named("agent-volumegroup").
		Complete(r)
}
