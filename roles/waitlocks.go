package roles

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

// BootIDFile is where the kernel publishes the boot ID (the same inside a container).
const BootIDFile = "/proc/sys/kernel/random/boot_id"

// ReadBootID reads the current boot ID.
func ReadBootID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// WaitLocks blocks until the node's agent has recorded the lock restore for bootID, polling
// every interval, printing each change of state to out. It is the `wait-locks` role, run as
// an init container of nova-compute (or any VM launcher) so that no VM starts before its
// volumes' locks are held again after a reboot.
func WaitLocks(ctx context.Context, c client.Reader, nodeName, bootID string, timeout, interval time.Duration, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	last := ""
	for {
		var node corev1.Node
		state := ""
		if err := c.Get(ctx, client.ObjectKey{Name: nodeName}, &node); err != nil {
			state = "cannot read node: " + err.Error()
		} else if node.Annotations[v1.AnnotationRestoredBootID] == bootID && node.Labels[v1.LabelLocksRestored] == "true" {
			fmt.Fprintf(out, "wait-locks: node %s restored its locks for boot %s (waited %.1fs)\n", nodeName, bootID, time.Since(start).Seconds())
			return nil
		} else {
			state = fmt.Sprintf("restored for boot %q, label %s=%q", node.Annotations[v1.AnnotationRestoredBootID], v1.LabelLocksRestored, node.Labels[v1.LabelLocksRestored])
			for _, cond := range node.Status.Conditions {
				if cond.Type == v1.NodeConditionLocksRestored {
					state += fmt.Sprintf("; %s: %s", cond.Reason, cond.Message)
				}
			}
		}
		if state != last {
			fmt.Fprintf(out, "wait-locks: waiting for node %s to restore its locks for boot %s: %s\n", nodeName, bootID, state)
			last = state
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s has not restored its shared-LVM locks for boot %s after %v (%s): check the sharedlvm agent on the node (its logs, and the node's %s condition)",
				nodeName, bootID, timeout, last, v1.NodeConditionLocksRestored)
		case <-time.After(interval):
		}
	}
}
