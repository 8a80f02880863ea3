package roles

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
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

// WaitLocks blocks until the node's agent has recorded the lock restore for bootID, printing
// each change of state to out. It is the `wait-locks` role, run as an init container of
// nova-compute (or any VM launcher) so that no VM starts before its volumes' locks are held
// again after a reboot. It reads the Node, then watches it (one object, by field selector),
// so it returns as soon as the agent's record lands; when the watch is refused (a binding
// without `watch` on nodes) or ends, it reads the Node again after retry: a poll every retry
// at worst.
func WaitLocks(ctx context.Context, c client.WithWatch, nodeName, bootID string, timeout, retry time.Duration, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	last := ""
	say := func(state string) {
		if state != last {
			fmt.Fprintf(out, "wait-locks: waiting for node %s to restore its locks for boot %s: %s\n", nodeName, bootID, state)
			last = state
		}
	}
	// restored says whether node records the restore for bootID, and says its state if not.
	restored := func(node *corev1.Node) bool {
		if node.Annotations[v1.AnnotationRestoredBootID] == bootID && node.Labels[v1.LabelLocksRestored] == "true" {
			fmt.Fprintf(out, "wait-locks: node %s restored its locks for boot %s (waited %.1fs)\n", nodeName, bootID, time.Since(start).Seconds())
			return true
		}
		state := fmt.Sprintf("restored for boot %q, label %s=%q", node.Annotations[v1.AnnotationRestoredBootID], v1.LabelLocksRestored, node.Labels[v1.LabelLocksRestored])
		for _, cond := range node.Status.Conditions {
			if cond.Type == v1.NodeConditionLocksRestored {
				state += fmt.Sprintf("; %s: %s", cond.Reason, cond.Message)
			}
		}
		say(state)
		return false
	}
	for {
		var node corev1.Node
		if err := c.Get(ctx, client.ObjectKey{Name: nodeName}, &node); err != nil {
			say("cannot read node: " + err.Error())
		} else if restored(&node) {
			return nil
		} else if done, err := watchRestored(ctx, c, nodeName, node.ResourceVersion, restored); done {
			return nil
		} else if err != nil && ctx.Err() == nil {
			say("cannot watch node (reading it again every " + retry.String() + "): " + err.Error())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s has not restored its shared-LVM locks for boot %s after %v (%s): check the sharedlvm agent on the node (its logs, and the node's %s condition)",
				nodeName, bootID, timeout, last, v1.NodeConditionLocksRestored)
		case <-time.After(retry):
		}
	}
}

// watchRestored watches the one Node from resourceVersion until restored says yes (true),
// the watch ends (false, nil: read again) or cannot start (false, the error).
func watchRestored(ctx context.Context, c client.WithWatch, nodeName, resourceVersion string, restored func(*corev1.Node) bool) (bool, error) {
	w, err := c.Watch(ctx, &corev1.NodeList{}, &client.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", nodeName),
		Raw:           &metav1.ListOptions{ResourceVersion: resourceVersion},
	})
	if err != nil {
		return false, err
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		if node, ok := ev.Object.(*corev1.Node); ok && (ev.Type == watch.Added || ev.Type == watch.Modified) && restored(node) {
			return true, nil
		}
	}
	return false, nil
}
