package agent

import "context"

// LockspaceState is a node's view of one VG's lockspace.
type LockspaceState struct {
	// Started is true when the lockspace is joined (sanlock lists it).
	Started bool
	// HostID is the sanlock host_id this node uses (from the lockspace, or lvmlocal.conf).
	HostID int32
	// Message explains a lockspace that is not started.
	Message string
}

// Storage is what the agent's reconcilers need from the node's LVM and sanlock layer.
// The production implementation runs commands on the node; tests use the same code over
// a recording or test-bed executor.
type Storage interface {
	// Lockspace reports the lockspace state of a VG on this node.
	Lockspace(ctx context.Context, vgName string) (LockspaceState, error)
}
