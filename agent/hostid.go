package agent

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"

	coordv1 "k8s.io/api/coordination/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

// HostIDs is this node's side of host_id allocation (docs/design.md §7): the operator
// allocates each node a sanlock host_id as a claim Lease; the agent reads its claim, starts
// every lockspace with it, and refuses to start any while the node's lvmlocal.conf sets a
// different id (LVM commands run by hand on the host would join with that one).
type HostIDs struct {
	// Reader reads the claims live (the agent's cache holds none).
	Reader    client.Reader
	Namespace string
	Node      *Node

	mu      sync.Mutex
	claimed int32
}

// HostIDProblem says why no lockspace may start with this node's host_id now.
type HostIDProblem struct {
	Reason  v1.LockspaceReason
	Message string
}

func (p *HostIDProblem) Error() string { return p.Message }

// Annotations is what the node's heartbeat says of its lvmlocal.conf host_id (nil until it
// could be read): the operator allocates nothing to the node before.
func (h *HostIDs) Annotations(ctx context.Context) map[string]string {
	local, err := h.Node.LocalHostID(ctx)
	switch {
	case err != nil:
		return nil
	case local == 0:
		return map[string]string{v1.AnnotationLocalHostID: v1.LocalHostIDNone}
	}
	return map[string]string{v1.AnnotationLocalHostID: strconv.Itoa(int(local))}
}

// Check returns the host_id this node starts lockspaces with: its claim (read live when live,
// else the one last read), agreeing with lvmlocal.conf. The id is returned with a
// HostIDConflict problem too (the entry shows it). Read live right before every lockstart
// and vgcreate; a claim once found is sticky (it is released only when the node is gone).
func (h *HostIDs) Check(ctx context.Context, live bool) (int32, error) {
	if h == nil {
		return 0, &HostIDProblem{v1.LockspaceWaitingForHostID, "this agent has no host_id source configured: it starts no lockspace"}
	}
	claimed, err := h.claim(ctx, live)
	if err != nil {
		return 0, err
	}
	local, err := h.Node.LocalHostID(ctx)
	if err != nil {
		return claimed, &HostIDProblem{v1.LockspaceHostIDUnknown, "cannot read local/host_id from LVM's configuration: " + err.Error()}
	}
	if local == 0 || local == claimed {
		return claimed, nil
	}
	h.Node.ForgetLocalHostID() // read again next time: the administrator may fix it
	msg := fmt.Sprintf("/etc/lvm/lvmlocal.conf sets local/host_id = %d, but the host_id allocated to node %s is %d", local, h.Node.Name, claimed)
	if holder := h.holder(ctx, local); holder != "" && holder != h.Node.Name {
		msg += fmt.Sprintf(", and %d is node %s's", local, holder)
	}
	msg += fmt.Sprintf(": set local/host_id = %d there. No lockspace starts on this node until they agree (LVM commands run by hand would join as host_id %d)", claimed, local)
	return claimed, &HostIDProblem{v1.LockspaceHostIDConflict, msg}
}

// Claimed returns the last claim read (0 if none).
func (h *HostIDs) Claimed() int32 {
	if h == nil {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.claimed
}

func (h *HostIDs) claim(ctx context.Context, live bool) (int32, error) {
	if id := h.Claimed(); id > 0 && !live {
		return id, nil
	}
	var list coordv1.LeaseList
	if err := h.Reader.List(ctx, &list, client.InNamespace(h.Namespace), client.MatchingLabels{v1.LabelHostIDClaim: "true"}); err != nil {
		return 0, &HostIDProblem{v1.LockspaceWaitingForHostID, "cannot read this node's host_id claim: " + err.Error()}
	}
	var mine []int32
	for _, l := range list.Items {
		if id, ok := v1.HostIDFromClaimName(l.Name); ok && ptr.Deref(l.Spec.HolderIdentity, "") == h.Node.Name {
			mine = append(mine, id)
		}
	}
	slices.Sort(mine)
	var id int32
	if len(mine) == 1 {
		id = mine[0]
	}
	h.mu.Lock()
	h.claimed = id
	h.mu.Unlock()
	switch len(mine) {
	case 0:
		return 0, &HostIDProblem{v1.LockspaceWaitingForHostID, fmt.Sprintf("waiting for the operator to allocate node %s a sanlock host_id (no Lease %s<id> in namespace %s names it)", h.Node.Name, v1.HostIDClaimPrefix, h.Namespace)}
	case 1:
		return id, nil
	}
	return 0, &HostIDProblem{v1.LockspaceWaitingForHostID, fmt.Sprintf("node %s holds several host_id claims %v: waiting for the operator to keep one", h.Node.Name, mine)}
}

func (h *HostIDs) holder(ctx context.Context, id int32) string {
	var l coordv1.Lease
	if err := h.Reader.Get(ctx, client.ObjectKey{Namespace: h.Namespace, Name: v1.HostIDClaimName(id)}, &l); err != nil {
		return ""
	}
	return ptr.Deref(l.Spec.HolderIdentity, "")
}
