package lvm

import (
	"context"
	"fmt"
	"sort"
)

// KeptLockspace is a lockspace a planned shutdown does not leave, and why.
type KeptLockspace struct {
	VG, Why string
}

// PlanLeave decides which lockspaces a node leaves before a planned shutdown, from
// lvmlockd's view (`lvmlockctl --info`): those in which this host holds no LV lock. A
// lockspace with an LV lock (ex or sh) is kept: its LV is active here, and leaving would
// drop its lease under it (LVM refuses too). A node left this way joins again without
// waiting for its old delta lease to expire (after an unclean shutdown sanlock makes the
// same host_id wait ~8 × io_timeout + 60 s). Sorted by VG.
func PlanLeave(held []LockdVG) (leave []string, keep []KeptLockspace) {
	for _, vg := range held {
		locks := 0
		for _, m := range vg.LVs {
			if m == LockdExclusive || m == LockdShared {
				locks++
			}
		}
		if locks > 0 {
			keep = append(keep, KeptLockspace{vg.Name, fmt.Sprintf("%d LV lock(s) held here: their LVs are active; the next join waits for the old lease to expire", locks)})
			continue
		}
		leave = append(leave, vg.Name)
	}
	sort.Strings(leave)
	sort.Slice(keep, func(i, j int) bool { return keep[i].VG < keep[j].VG })
	return leave, keep
}

// LeaveIdleLockspaces is a node's planned-shutdown step (`sharedlvm leave-lockspaces`, run
// by the host's shutdown once its VMs are stopped): it leaves every lockspace in which this
// host holds no LV lock (PlanLeave), one `vgchange --lockstop` each, and keeps the others.
// A lockstop LVM refuses (an LV became active meanwhile) is kept with LVM's reason. It never
// deactivates anything.
func (c *Client) LeaveIdleLockspaces(ctx context.Context) (left []string, kept []KeptLockspace, err error) {
	held, err := c.LockdInfo(ctx)
	if err != nil {
		return nil, nil, err
	}
	leave, kept := PlanLeave(held)
	for _, vg := range leave {
		if err := c.Lockstop(ctx, vg); err != nil {
			kept = append(kept, KeptLockspace{vg, "vgchange --lockstop refused: " + err.Error()})
			continue
		}
		left = append(left, vg)
	}
	sort.Slice(kept, func(i, j int) bool { return kept[i].VG < kept[j].VG })
	return left, kept, nil
}
