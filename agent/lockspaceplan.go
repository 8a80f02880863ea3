package agent

// LockspaceFacts is what one report cycle knows about this node and a VG it serves.
type LockspaceFacts struct {
	// HostIDKnown: this node's allocated host_id was read and agrees with lvmlocal.conf;
	// SanlockAnswers: `sanlock client status` worked.
	HostIDKnown, SanlockAnswers bool
	// Started: the VG's lockspace is up in sanlock on this node (not joining or leaving).
	Started bool
	// VGFound / VGNotFound: this node's LVM report shows the VG / says it does not exist (both
	// false when the report failed).
	VGFound, VGNotFound bool
	// CreateNode: the operator chose this node to run vgcreate --shared.
	CreateNode bool
	// Conflict is another live node reporting this node's host_id in the VG ("" if none).
	Conflict string
	// HostIDMismatch: lvmlocal.conf, or the lockspace as it runs, disagrees with the host_id
	// allocated to this node.
	HostIDMismatch bool
	// Orphaned: sanlock holds the VG's lockspace but lvmlockd does not serve it (lvmlockd
	// died and its successor did not adopt it); Started is then false. OrphanUnused: this
	// cycle's report says no LV of the VG is active here, so the LV leases sanlock keeps for
	// the dead lvmlockd (if any) guard no mapping on this node, and none can be activated
	// here while lvmlockd does not serve the VG.
	Orphaned, OrphanUnused bool
	// StorageLost: the VG's LVM report failed and one of its PVs cannot be read here (the
	// node lost its path to the storage); Started is then false.
	StorageLost bool
}

// LockspaceAction is what the cycle does with the VG's lockspace.
type LockspaceAction string

const (
	// LockspaceNone: nothing to do (started, or a fact is missing: wait and say why).
	LockspaceNone LockspaceAction = ""
	// LockspaceRefuse: another live node uses this node's host_id; never join (two hosts
	// with one host_id can both write one LV), never create.
	LockspaceRefuse LockspaceAction = "Refuse"
	// LockspaceCreateVG: run vgcreate --shared (it starts the lockspace here).
	LockspaceCreateVG LockspaceAction = "CreateVG"
	// LockspaceStart: join the existing VG's lockspace (vgchange --lockstart).
	LockspaceStart LockspaceAction = "Lockstart"
	// LockspaceRejoin: leave the orphaned lockspace in sanlock, then join it again.
	LockspaceRejoin LockspaceAction = "Rejoin"
)

// PlanLockspace decides the cycle's lockspace action. It fails closed: a duplicate host_id,
// or one that disagrees with the allocated id, refuses everything; creating needs the
// operator's choice, the VG absent, the host_id allocated and sanlock answering; joining
// needs the VG visible, the host_id allocated and sanlock answering.
func PlanLockspace(f LockspaceFacts) LockspaceAction {
	switch {
	case f.Conflict != "" || f.HostIDMismatch:
		return LockspaceRefuse
	case f.StorageLost:
		// Nothing to start or create on storage this node cannot read: sanlock and the
		// kill command deal with the lockspace; the node rejoins once the PVs read again.
		return LockspaceNone
	case f.Orphaned:
		// Only when nothing here writes through it: an active LV means the node must be
		// rebooted (said on the entry), never a lockspace pulled from under its mapping.
		if f.OrphanUnused && f.HostIDKnown && f.SanlockAnswers {
			return LockspaceRejoin
		}
		return LockspaceNone
	case f.VGNotFound && f.CreateNode && f.HostIDKnown && f.SanlockAnswers:
		return LockspaceCreateVG
	case !f.Started && f.VGFound && f.HostIDKnown && f.SanlockAnswers:
		return LockspaceStart
	}
	return LockspaceNone
}
