package controllers

import (
	"sort"

	"k8s.io/apimachinery/pkg/api/equality"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/controllers/lockrule"
)

// stronger orders lock modes by what they exclude, so a node with two attachments reports
// the strongest lock either one saw (the rule must never understate what a node holds).
func stronger(a, b lockrule.Mode) lockrule.Mode {
	rank := map[lockrule.Mode]int{lockrule.None: 0, lockrule.Shared: 1, lockrule.Exclusive: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// nodesOf folds a volume's attachments into one lockrule.Node per node: wanted if any live
// attachment is there, holding the strongest lock any attachment there reports.
// A node in released died: sanlock released its leases, so it holds nothing any more.
func nodesOf(atts []v1.VolumeAttachment, rejected map[string]bool, released ...map[string]bool) []lockrule.Node {
	byNode := map[string]*lockrule.Node{}
	var order []string
	for i := range atts {
		a := &atts[i]
		name := string(a.Spec.Node)
		n, ok := byNode[name]
		if !ok {
			n = &lockrule.Node{Name: name}
			byNode[name] = n
			order = append(order, name)
		}
		n.Wanted = n.Wanted || (a.DeletionTimestamp.IsZero() && !rejected[a.Name])
		if len(released) == 0 || !released[0][name] {
			n.Held = stronger(n.Held, a.Status.AppliedLock.OrNone())
		}
	}
	sort.Strings(order)
	out := make([]lockrule.Node, 0, len(order))
	for _, name := range order {
		out = append(out, *byNode[name])
	}
	return out
}

func equalStatus(a, b any) bool { return equality.Semantic.DeepEqual(a, b) }
