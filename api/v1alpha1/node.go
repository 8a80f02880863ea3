package v1alpha1

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// LocksRestoredProblem says why a node's locks are not restored for its current boot, or ""
// when they are. The current boot is the kubelet's Node.status.nodeInfo.bootID; without one
// (no kubelet report yet) the agent's label alone decides.
func LocksRestoredProblem(node *corev1.Node) string {
	restoredFor := node.Annotations[AnnotationRestoredBootID]
	switch {
	case node.Labels[LabelLocksRestored] != "true":
		return fmt.Sprintf("node %s has not restored its shared-LVM locks yet (label %s is %q): its agent restores them at start, before new attachments", node.Name, LabelLocksRestored, node.Labels[LabelLocksRestored])
	case node.Status.NodeInfo.BootID != "" && restoredFor != node.Status.NodeInfo.BootID:
		return fmt.Sprintf("node %s rebooted (boot %s) and its agent has not restored this boot's locks yet (last restore: boot %q)", node.Name, node.Status.NodeInfo.BootID, restoredFor)
	}
	return ""
}

// StartupTaint is the node's TaintLocksNotRestored, or nil.
func StartupTaint(node *corev1.Node) *corev1.Taint {
	for i := range node.Spec.Taints {
		if node.Spec.Taints[i].Key == TaintLocksNotRestored {
			return &node.Spec.Taints[i]
		}
	}
	return nil
}
