package roles

import (
	"context"
	"time"

	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// waitForAPI blocks until the apiserver answers (or ctx ends). Building a manager reads the
// API (REST mappings); a process started while the apiserver is away, such as an agent
// restarting on a node that rebooted during a control-plane outage, waits and says so
// instead of exiting into the kubelet's crash-loop backoff (up to 5 minutes after the
// apiserver is back).
func waitForAPI(ctx context.Context, cfg *rest.Config, who string) error {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	logger := log.FromContext(ctx).WithName(who)
	start, lastLog := time.Now(), time.Time{}
	for {
		_, err := dc.ServerVersion()
		if err == nil {
			if !lastLog.IsZero() {
				logger.Info("apiserver reachable again", "waited", time.Since(start).Round(time.Second).String())
			}
			return nil
		}
		if time.Since(lastLog) >= 10*time.Second {
			logger.Info("waiting for the apiserver", "error", err.Error(), "waited", time.Since(start).Round(time.Second).String())
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
