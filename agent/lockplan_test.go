package agent

import (
	"os"
	"testing"

	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
	"github.com/sharedlvm/sharedlvm-operator/agent/sanlock"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/metrics"
)

func TestPlanLock(t *testing.T) {
	lv := &v1.LVRef{VGName: "vg1", LVName: "volume-1", LVUUID: "uuid-1"}
	mode := func(m lvm.ActivationMode) *lvm.ActivationMode { return &m }
	cases := []struct {
		name string
		f    LockFacts
		want LockPlan
	}{
		{"new attachment asked exclusive: attach",
			LockFacts{Desired: v1.LockExclusive, LV: lv},
			LockPlan{Want: lvm.Exclusive, Have: lvm.Deactivate, Apply: true, Op: metrics.OpAttach}},
		{"live migration: ex -> sh converts in place",
			LockFacts{Desired: v1.LockShared, Applied: v1.LockExclusive, AppliedLV: "uuid-1", LV: lv},
			LockPlan{Want: lvm.Shared, Have: lvm.Exclusive, Apply: true, Op: metrics.OpConvert}},
		{"detach: release",
			LockFacts{Desired: v1.LockNone, Applied: v1.LockShared, AppliedLV: "uuid-1", LV: lv},
			LockPlan{Want: lvm.Deactivate, Have: lvm.Shared, Apply: true, Op: metrics.OpDetach}},
		{"resync, sanlock agrees: nothing to do",
			LockFacts{Desired: v1.LockExclusive, Applied: v1.LockExclusive, AppliedLV: "uuid-1", LV: lv, Lease: mode(lvm.Exclusive)},
			LockPlan{Want: lvm.Exclusive, Have: lvm.Exclusive, Op: metrics.OpConvert}},
		{"resync, the lease is gone: warn and take it again",
			LockFacts{Desired: v1.LockExclusive, Applied: v1.LockExclusive, AppliedLV: "uuid-1", LV: lv, Lease: mode(lvm.Deactivate)},
			LockPlan{Want: lvm.Exclusive, Have: lvm.Deactivate, Apply: true, LockLost: true, Op: metrics.OpAttach}},
		{"resync, sanlock shows shared where exclusive is wanted: convert, no loss",
			LockFacts{Desired: v1.LockExclusive, Applied: v1.LockExclusive, AppliedLV: "uuid-1", LV: lv, Lease: mode(lvm.Shared)},
			LockPlan{Want: lvm.Exclusive, Have: lvm.Shared, Apply: true, Op: metrics.OpConvert}},
		{"resync of a released attachment that sanlock still shows held: release it",
			LockFacts{Desired: v1.LockNone, Applied: v1.LockNone, LV: lv, Lease: mode(lvm.Shared)},
			LockPlan{Want: lvm.Deactivate, Have: lvm.Shared, Apply: true, Op: metrics.OpDetach}},
		{"the lock was applied to an older LV (the volume migrated): requested again on the new one",
			LockFacts{Desired: v1.LockExclusive, Applied: v1.LockExclusive, AppliedLV: "uuid-old", LV: lv, Lease: mode(lvm.Exclusive)},
			LockPlan{Want: lvm.Exclusive, Have: lvm.Exclusive, Apply: true, Op: metrics.OpConvert}},
		{"unset modes read as None: nothing requested, nothing held",
			LockFacts{LV: lv, Lease: mode(lvm.Deactivate)},
			LockPlan{Want: lvm.Deactivate, Have: lvm.Deactivate, Op: metrics.OpAttach}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := PlanLock(c.f); got != c.want {
				t.Errorf("PlanLock = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestActivationModesRoundTrip(t *testing.T) {
	for _, m := range []v1.LockMode{v1.LockNone, v1.LockExclusive, v1.LockShared} {
		if got := fromActivation(toActivation(m)); got != m {
			t.Errorf("%s -> %s -> %s", m, toActivation(m), got)
		}
	}
	if toActivation("") != lvm.Deactivate {
		t.Error("an unset mode must deactivate")
	}
}

// LeaseMode reads the lease from sanlock's own output (captured on the bed, see
// sanlock/testdata/VERSIONS): a shared lease, an exclusive one, none.
func TestLeaseModeFromSanlock(t *testing.T) {
	out, err := os.ReadFile("sanlock/testdata/status-mixed.out")
	if err != nil {
		t.Fatal(err)
	}
	st, err := sanlock.ParseStatus(out)
	if err != nil {
		t.Fatal(err)
	}
	for uuid, want := range map[string]lvm.ActivationMode{
		"pZCvfd-yDdU-dFyc-MeRG-HAFq-jnZT-bjhPPk": lvm.Exclusive,
		"NqDjSW-H34f-tXBL-05Mf-A0az-g7c1-UJgkGG": lvm.Shared,
		"nothing-held-here":                      lvm.Deactivate,
	} {
		if got := LeaseMode(st, "vg1", uuid); got != want {
			t.Errorf("%s: %s, want %s", uuid, got, want)
		}
	}
}
