package agent

import (
	"sort"
	"time"

	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

// LockstartPlan is which lockspaces a boot's restore starts, and which it leaves and why.
type LockstartPlan struct {
	// Start are the LVM VG names whose lockspace to start, sorted.
	Start []string
	// Skipped are the served VGs not started, with why (already started is not listed).
	Skipped []SkippedVG
	// Served counts the VolumeGroups that select this node (and are not claimed by an
	// older one).
	Served int
}

// SkippedVG is a lockspace the restore does not start.
type SkippedVG struct{ VG, Why string }

// PlanLockstarts decides, for a boot's restore, which VolumeGroups' lockspaces this node
// starts: those whose selector picks it, that an older VolumeGroup does not claim, not
// started yet, and never one where another live node reports this node's host_id (two
// hosts with one host_id can both write one LV: refuse). vgs carry the heartbeats.
func PlanLockstarts(vgs []v1.VolumeGroup, labels map[string]string, node string, hostID int32, started func(vg string) bool, now time.Time) LockstartPlan {
	var p LockstartPlan
	for i := range vgs {
		vg := &vgs[i]
		if ok, _ := selects(vg.Spec.NodeSelector, labels); !ok {
			continue
		}
		if other, _ := vg.ClaimConflict(vgs); other != "" {
			continue
		}
		p.Served++
		name := string(vg.Spec.VGName)
		if started(name) {
			continue
		}
		if other := conflictingNode(vg, node, hostID, now); other != "" {
			p.Skipped = append(p.Skipped, SkippedVG{name, "duplicate host_id: node " + other + " uses it"})
			continue
		}
		p.Start = append(p.Start, name)
	}
	sort.Strings(p.Start)
	return p
}

// RestoreBatch is one lvchange of a boot's restore: LVs of one VG in one mode.
type RestoreBatch struct {
	VG   string
	Mode lvm.ActivationMode
	LVs  []string
	// UUIDs maps each LV's name to its UUID (lvmlockd names LV locks by UUID).
	UUIDs map[string]string
}

// PlanRestoreBatches groups this node's live attachments that want a lock into one batch
// per VG and mode (sorted; each LV once), so that restoring N attachments costs a few
// commands, not N. An attachment whose status names no LV holds nothing to restore. It
// returns the batches and how many attachments they restore.
func PlanRestoreBatches(atts []v1.VolumeAttachment, node string) ([]RestoreBatch, int) {
	type key struct {
		vg   string
		mode lvm.ActivationMode
	}
	byKey := map[key][]string{}
	uuids := map[key]map[string]string{}
	count := 0
	for _, a := range atts {
		if string(a.Spec.Node) != node || !a.DeletionTimestamp.IsZero() || a.Status.LV == nil {
			continue
		}
		mode := toActivation(a.Status.DesiredLock)
		if mode == lvm.Deactivate {
			continue
		}
		k := key{a.Status.LV.VGName, mode}
		byKey[k] = append(byKey[k], a.Status.LV.LVName)
		if uuids[k] == nil {
			uuids[k] = map[string]string{}
		}
		uuids[k][a.Status.LV.LVName] = a.Status.LV.LVUUID
		count++
	}
	out := make([]RestoreBatch, 0, len(byKey))
	for k, lvs := range byKey {
		out = append(out, RestoreBatch{VG: k.vg, Mode: k.mode, LVs: uniq(lvs), UUIDs: uuids[k]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VG+string(out[i].Mode) < out[j].VG+string(out[j].Mode) })
	return out, count
}

// NotActivated returns the LVs of a batch whose lock this host does not hold in the batch's
// mode, read from lvmlockd (`lvmlockctl --info`) after the batch's lvchange failed, sorted:
// those lvchange could not lock (another host holds them) or could not find. lvchange goes on
// past an LV it cannot lock, so one read after the batch names every such LV at once, instead
// of one lvchange per LV. An LV with no known UUID, or a VG lvmlockd does not list, counts as
// not activated (fail closed: its attachment agent applies it again).
func NotActivated(b RestoreBatch, held []lvm.LockdVG) []string {
	want := lvm.LockdExclusive
	if b.Mode == lvm.Shared {
		want = lvm.LockdShared
	}
	var locks map[string]lvm.LockdMode
	for _, vg := range held {
		if vg.Name == b.VG {
			locks = vg.LVs
		}
	}
	var out []string
	for _, name := range b.LVs {
		if uuid := b.UUIDs[name]; uuid == "" || locks[uuid] != want {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}
