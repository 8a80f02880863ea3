package lvm

import (
	"reflect"
	"testing"
)

func TestPlanLeave(t *testing.T) {
	// From the captured lvmlockctl outputs (VERSIONS): one ex lock; ex, sh and un locks.
	ex := ParseLockdInfo(fixture(t, "lvmlockctl-exclusive.out"))
	mixed := ParseLockdInfo(fixture(t, "lvmlockctl-mixed.out"))
	idle := []LockdVG{{Name: "vg2", LVs: map[string]LockdMode{"a": LockdUnlocked}}, {Name: "vg3", LVs: map[string]LockdMode{}}}
	for _, tc := range []struct {
		name  string
		held  []LockdVG
		leave []string
		keep  []string
	}{
		{"nothing started", nil, nil, nil},
		{"idle lockspaces (unlocked LVs only) are left", idle, []string{"vg2", "vg3"}, nil},
		{"an exclusive lock keeps its lockspace", ex, nil, []string{"vg1"}},
		{"shared and exclusive locks keep it; idle ones beside it go", append(append([]LockdVG{}, mixed...), idle...), []string{"vg2", "vg3"}, []string{"vg1"}},
	} {
		leave, keep := PlanLeave(tc.held)
		var kept []string
		for _, k := range keep {
			kept = append(kept, k.VG)
		}
		if !reflect.DeepEqual(leave, tc.leave) || !reflect.DeepEqual(kept, tc.keep) {
			t.Errorf("%s: leave %v keep %v, want %v %v", tc.name, leave, keep, tc.leave, tc.keep)
		}
	}
	_, keep := PlanLeave(mixed)
	if len(keep) != 1 || keep[0].Why != "3 LV lock(s) held here: their LVs are active; the next join waits for the old lease to expire" {
		t.Errorf("mixed: %+v", keep)
	}
}
