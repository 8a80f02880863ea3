package roles

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/sharedlvm/sharedlvm-operator/agent"
	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/heartbeat"
	"github.com/sharedlvm/sharedlvm-operator/internal/cachetrim"
)

// AgentOptions configures one node's agent.
type AgentOptions struct {
	NodeName    string
	MetricsAddr string
	ProbeAddr   string
	// Executor runs this node's LVM and sanlock commands.
	Executor       executor.Executor
	ReportInterval time.Duration
	// QPS and Burst limit the agent's requests; 0 means DefaultAgentQPS / DefaultAgentBurst.
	QPS   float32
	Burst int
	// HeartbeatNamespace holds the agents' heartbeat Leases ("" means
	// heartbeat.DefaultNamespace); the operator must use the same.
	HeartbeatNamespace string
}

// NewAgent builds a node agent's manager. Its cache holds only this node's Node object and
// this node's VolumeAttachments (a selectable field on spec.node), so that an agent's
// memory and watch traffic do not grow with the size of the cluster.
func NewAgent(ctx context.Context, cfg *rest.Config, o AgentOptions) (manager.Manager, error) {
	if o.NodeName == "" {
		return nil, errors.New("agent: node name is empty: set NODE_NAME (downward API spec.nodeName) or --node-name")
	}
	if o.Executor == nil {
		return nil, errors.New("agent: no command executor")
	}
	cfg = withRateLimits(cfg, o.QPS, o.Burst, DefaultAgentQPS, DefaultAgentBurst)
	if err := waitForAPI(ctx, cfg, "agent"); err != nil {
		return nil, err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 Scheme(),
		Metrics:                metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress: o.ProbeAddr,
		// The local harness and the scale tests run several agents in one process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		Cache: cache.Options{DefaultTransform: cachetrim.Transform(), ByObject: map[client.Object]cache.ByObject{
			&corev1.Node{}:         {Field: fields.OneTermEqualSelector("metadata.name", o.NodeName)},
			&v1.VolumeAttachment{}: {Field: fields.OneTermEqualSelector("spec.node", o.NodeName)},
			// Only the volumes this node works on (a selectable field): an agent's memory and
			// watch traffic stay constant as the cluster's volume count grows. Other volumes
			// (an attachment's, a copy's source) are read from the API when needed.
			&v1.SharedVolume{}: {Field: fields.OneTermEqualSelector("status.executorNode", o.NodeName)},
			// The agents' heartbeats (small; other nodes' liveness decides the VG reporter
			// and duplicate host_id checks).
			&coordv1.Lease{}: heartbeat.CacheOptions(heartbeatNamespace(o.HeartbeatNamespace)),
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}
	node := agent.NewNode(o.NodeName, o.Executor)
	rec := mgr.GetEventRecorder("sharedlvm-agent")
	hbNS := heartbeatNamespace(o.HeartbeatNamespace)
	hb := heartbeat.NewTracker()
	if err := hb.Register(ctx, mgr.GetCache()); err != nil {
		return nil, fmt.Errorf("heartbeats: %w", err)
	}
	interval := o.ReportInterval
	if interval <= 0 {
		interval = agent.DefaultReportInterval
	}
	hostIDs := &agent.HostIDs{Reader: mgr.GetAPIReader(), Namespace: hbNS, Node: node}
	if err := mgr.Add(&heartbeat.Renewer{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Namespace: hbNS, Node: o.NodeName, Interval: interval, Annotate: hostIDs.Annotations}); err != nil {
		return nil, err
	}
	restorer := &agent.Restorer{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Node: node, Recorder: rec, HeartbeatNamespace: hbNS, HostIDs: hostIDs}
	if err := mgr.Add(restorer); err != nil {
		return nil, err
	}
	if err := (&agent.VolumeGroupAgent{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Node: node, Recorder: rec, ReportInterval: o.ReportInterval, Heartbeats: hb,
		Claim:   &agent.VGCreateClaim{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Namespace: hbNS, Node: o.NodeName},
		HostIDs: hostIDs, Restoring: restorer.Restoring}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if err := (&agent.VolumeAgent{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Node: node, Recorder: rec}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if err := (&agent.AttachmentAgent{Client: mgr.GetClient(), Node: node, Recorder: rec, Restored: restorer.Restored}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, err
	}
	// Ready only once this boot's locks are restored (docs/design.md §6, node reboot).
	if err := mgr.AddReadyzCheck("locks-restored", func(_ *http.Request) error {
		if !restorer.Restored() {
			return errors.New("restoring this boot's locks")
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return mgr, nil
}
