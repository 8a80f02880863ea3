package agent

import (
	"context"
	"fmt"
	"strings"

	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
	"github.com/sharedlvm/sharedlvm-operator/agent/sanlock"
)

// NodeStorage implements Storage with the real LVM and sanlock commands run through an
// executor: the node itself in production, a test-bed VM in the storage tier.
type NodeStorage struct {
	Exec executor.Executor
}

// Lockspace reads the VG's lockspace from `sanlock client status`.
func (s *NodeStorage) Lockspace(ctx context.Context, vg string) (LockspaceState, error) {
	if err := lvm.ValidateVGName(vg); err != nil {
		return LockspaceState{}, err
	}
	res, err := s.Exec.Run(ctx, []string{"sanlock", "client", "status"})
	if err != nil {
		return LockspaceState{}, err
	}
	if res.ExitCode != 0 {
		return LockspaceState{}, fmt.Errorf("sanlock client status: exit %d: %s", res.ExitCode, strings.TrimSpace(string(res.Stderr)))
	}
	st, err := sanlock.ParseStatus(res.Stdout)
	if err != nil {
		return LockspaceState{}, err
	}
	ls, ok := st.Lockspace(vg)
	switch {
	case !ok:
		return LockspaceState{Message: fmt.Sprintf("lockspace lvm_%s is not joined on this node", vg)}, nil
	case ls.Adding:
		return LockspaceState{HostID: int32(ls.HostID), Message: "lockspace join in progress"}, nil
	case ls.Removing:
		return LockspaceState{HostID: int32(ls.HostID), Message: "lockspace is being left"}, nil
	}
	return LockspaceState{Started: true, HostID: int32(ls.HostID)}, nil
}
