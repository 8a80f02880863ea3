package agent

import (
	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/metrics"
)

// LockFacts is what applying one attachment's lock on this node is decided from.
type LockFacts struct {
	// Desired is the lock the operator asks for, Applied the one last reported, AppliedLV
	// the LV (UUID) it was reported on.
	Desired, Applied v1.LockMode
	AppliedLV        string
	// LV is the LV the operator names (nil: the volume has no LV).
	LV *v1.LVRef
	// Lease is this node's lease on the LV as sanlock shows it; read only for a resync
	// (nothing requested), nil otherwise.
	Lease *lvm.ActivationMode
}

// Requested: the operator asks for a change (desired differs from applied, or the applied
// lock is on another LV). A change is applied at once (lvchange is idempotent, and the
// reconcile its status write triggers checks the lease against sanlock); only a resync
// reads sanlock first, and then a reading a few seconds old will do: this node's own lock
// changes invalidate it, and resyncing every held attachment costs one sanlock call per
// node, not one per LV.
func (f LockFacts) Requested() bool {
	return f.Applied.OrNone() != f.Desired.OrNone() ||
		(f.Applied.OrNone() != v1.LockNone && f.LV != nil && f.AppliedLV != f.LV.LVUUID)
}

// LockPlan is one step of the attachment's lock handshake on this node.
type LockPlan struct {
	// Want is the activation the operator's desired lock means; Have the lease now (from
	// sanlock on a resync, else what was last reported).
	Want, Have lvm.ActivationMode
	// Apply: run lvchange to Want. Op names it for the metrics (attach, detach, convert).
	Apply bool
	Op    string
	// LockLost: a resync found the lease gone while the operator still wants it (taken
	// away behind the agent's back): warn, and take it again.
	LockLost bool
}

// PlanLock decides the step: apply when a change is requested or when sanlock disagrees
// with what is wanted; never decide a mode (the operator orders transitions across nodes).
func PlanLock(f LockFacts) LockPlan {
	p := LockPlan{Want: toActivation(f.Desired), Have: toActivation(f.Applied)}
	requested := f.Requested()
	if !requested && f.Lease != nil {
		p.Have = *f.Lease
	}
	p.Apply = requested || p.Have != p.Want
	p.LockLost = !requested && p.Have == lvm.Deactivate && p.Want != lvm.Deactivate
	switch {
	case p.Have == lvm.Deactivate:
		p.Op = metrics.OpAttach
	case p.Want == lvm.Deactivate:
		p.Op = metrics.OpDetach
	default:
		p.Op = metrics.OpConvert
	}
	return p
}
