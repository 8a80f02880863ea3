// Package roles builds the roles of the sharedlvm binary (operator, agent, wait-locks)
// so that main.go, the local run harness and the tests start exactly the
// same managers.
package roles

import (
	"context"
	"fmt"
	"os"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/controllers"
	"github.com/sharedlvm/sharedlvm-operator/heartbeat"
	"github.com/sharedlvm/sharedlvm-operator/internal/cachetrim"
	"github.com/sharedlvm/sharedlvm-operator/metrics"
)

// Scheme knows the core types and sharedlvm.io/v1alpha1.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(v1.AddToScheme(s))
	return s
}

// OperatorOptions configures the operator's manager.
type OperatorOptions struct {
	MetricsAddr             string
	ProbeAddr               string
	LeaderElection          bool
	LeaderElectionNamespace string
	// LeaseDuration, RenewDeadline and RetryPeriod tune leader election (0: controller-
	// runtime's 15 s, 10 s and 2 s). A leader that dies without releasing the lease is
	// replaced after at most LeaseDuration + RetryPeriod.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// QPS and Burst limit the operator's requests to the apiserver (client-side); 0 means
	// DefaultOperatorQPS / DefaultOperatorBurst.
	QPS   float32
	Burst int
	// HeartbeatNamespace holds the agents' heartbeat Leases ("" means
	// heartbeat.DefaultNamespace); the agents must use the same.
	HeartbeatNamespace string
	// PprofAddr serves Go's /debug/pprof (the scale harness reads the heap from it); ""
	// disables it.
	PprofAddr string
}

// The operator writes a few status updates per volume operation for every volume of the
// cloud: client-go's default of 5 requests/s (or controller-runtime's 20) would be its
// bottleneck, as the scale harness showed.
const (
	DefaultOperatorQPS   = 100
	DefaultOperatorBurst = 200
	DefaultAgentQPS      = 20
	DefaultAgentBurst    = 40
)

// withRateLimits returns a copy of cfg with the given client-side limits (defaults for 0).
func withRateLimits(cfg *rest.Config, qps float32, burst int, defQPS float32, defBurst int) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = qps, burst
	if cfg.QPS <= 0 {
		cfg.QPS = defQPS
	}
	if cfg.Burst <= 0 {
		cfg.Burst = defBurst
	}
	return cfg
}

// DefaultNamespace is where leader election and events go when not told otherwise.
func DefaultNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	return "sharedlvm-system"
}

// NewOperator builds the operator's manager with indexes, the three reconcilers, health
// and readiness probes and the metrics endpoint.
func NewOperator(ctx context.Context, cfg *rest.Config, o OperatorOptions) (manager.Manager, error) {
	cfg = withRateLimits(cfg, o.QPS, o.Burst, DefaultOperatorQPS, DefaultOperatorBurst)
	if err := waitForAPI(ctx, cfg, "operator"); err != nil {
		return nil, err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  Scheme(),
		Metrics:                 metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress:  o.ProbeAddr,
		PprofBindAddress:        o.PprofAddr,
		LeaderElection:          o.LeaderElection,
		LeaderElectionID:        "sharedlvm-operator.sharedlvm.io",
		LeaderElectionNamespace: o.LeaderElectionNamespace,
		// Leaving promptly on SIGTERM hands leadership over without waiting for the lease
		// to expire; safe because every reconcile is idempotent.
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 nonZero(o.LeaseDuration),
		RenewDeadline:                 nonZero(o.RenewDeadline),
		RetryPeriod:                   nonZero(o.RetryPeriod),
		// Tests restart the operator inside one process (crash safety); names stay unique
		// within a manager, which is what the metric labels need.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		// Of the Leases, only the agents' heartbeats (leader election has its own client).
		Cache: cache.Options{
			ByObject: map[client.Object]cache.ByObject{
				&coordv1.Lease{}: heartbeat.CacheOptions(heartbeatNamespace(o.HeartbeatNamespace)),
			},
			// The cache holds every volume and attachment of the cloud: what each one costs
			// is most of the operator's memory (internal/cachetrim: no managedFields, no
			// last-applied copy, repeated strings shared).
			DefaultTransform: cachetrim.Transform(),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}
	if err := controllers.SetupIndexes(ctx, mgr); err != nil {
		return nil, fmt.Errorf("indexes: %w", err)
	}
	hb := heartbeat.NewTracker()
	if err := hb.Register(ctx, mgr.GetCache()); err != nil {
		return nil, fmt.Errorf("heartbeats: %w", err)
	}
	rec := mgr.GetEventRecorder("sharedlvm-operator")
	if err := (&controllers.VolumeGroupReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: rec, Heartbeats: hb, ClaimNamespace: heartbeatNamespace(o.HeartbeatNamespace)}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if err := (&controllers.SharedVolumeReconciler{Client: mgr.GetClient(), Recorder: rec, Heartbeats: hb}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if err := (&controllers.VolumeAttachmentReconciler{Client: mgr.GetClient(), Recorder: rec, Heartbeats: hb}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if err := (&controllers.HostIDReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Namespace: heartbeatNamespace(o.HeartbeatNamespace)}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return nil, err
	}
	metrics.CollectStateFrom(mgr.GetCache(), hb)
	return mgr, nil
}

func heartbeatNamespace(ns string) string {
	if ns == "" {
		return heartbeat.DefaultNamespace
	}
	return ns
}

func nonZero(d time.Duration) *time.Duration {
	if d <= 0 {
		return nil
	}
	return &d
}
