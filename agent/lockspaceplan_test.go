package agent

import "testing"

func TestPlanLockspace(t *testing.T) {
	ok := LockspaceFacts{HostIDKnown: true, SanlockAnswers: true}
	with := func(mut func(*LockspaceFacts)) LockspaceFacts { f := ok; mut(&f); return f }
	cases := []struct {
		name string
		f    LockspaceFacts
		want LockspaceAction
	}{
		{"VG visible, lockspace down: join", with(func(f *LockspaceFacts) { f.VGFound = true }), LockspaceStart},
		{"already started: nothing", with(func(f *LockspaceFacts) { f.VGFound, f.Started = true, true }), LockspaceNone},
		{"duplicate host_id: refuse to join", with(func(f *LockspaceFacts) { f.VGFound, f.Conflict = true, "n2" }), LockspaceRefuse},
		{"duplicate host_id while started: still refused (said on the entry)", with(func(f *LockspaceFacts) { f.VGFound, f.Started, f.Conflict = true, true, "n2" }), LockspaceRefuse},
		{"duplicate host_id on the create node: never create", with(func(f *LockspaceFacts) { f.VGNotFound, f.CreateNode, f.Conflict = true, true, "n2" }), LockspaceRefuse},
		{"VG absent, chosen to create: create", with(func(f *LockspaceFacts) { f.VGNotFound, f.CreateNode = true, true }), LockspaceCreateVG},
		{"VG absent, not chosen: wait", with(func(f *LockspaceFacts) { f.VGNotFound = true }), LockspaceNone},
		{"VG absent, chosen, sanlock silent: wait", with(func(f *LockspaceFacts) { f.VGNotFound, f.CreateNode, f.SanlockAnswers = true, true, false }), LockspaceNone},
		{"host_id unknown: never join", with(func(f *LockspaceFacts) { f.VGFound, f.HostIDKnown = true, false }), LockspaceNone},
		{"no host_id allocated, chosen to create: wait", with(func(f *LockspaceFacts) { f.VGNotFound, f.CreateNode, f.HostIDKnown = true, true, false }), LockspaceNone},
		{"lvmlocal.conf disagrees with the allocated host_id: refuse to join", with(func(f *LockspaceFacts) { f.VGFound, f.HostIDMismatch = true, true }), LockspaceRefuse},
		{"lvmlocal.conf disagrees, chosen to create: never create", with(func(f *LockspaceFacts) { f.VGNotFound, f.CreateNode, f.HostIDMismatch = true, true, true }), LockspaceRefuse},
		{"storage lost on the create node: never vgcreate on what it cannot read", with(func(f *LockspaceFacts) { f.StorageLost, f.CreateNode = true, true }), LockspaceNone},
		{"storage lost with the VG seen before: no lockstart", with(func(f *LockspaceFacts) { f.StorageLost, f.VGFound = true, true }), LockspaceNone},
		{"storage lost and a duplicate host_id: still refused", with(func(f *LockspaceFacts) { f.StorageLost, f.Conflict = true, "n2" }), LockspaceRefuse},
		{"orphaned lockspace, no LV active here: leave and join again", with(func(f *LockspaceFacts) { f.VGFound, f.Orphaned, f.OrphanUnused = true, true, true }), LockspaceRejoin},
		{"orphaned lockspace with an LV active here (or not known): never pulled from under it", with(func(f *LockspaceFacts) { f.VGFound, f.Orphaned = true, true }), LockspaceNone},
		{"orphaned lockspace, no LV active here, host_id unknown: wait", with(func(f *LockspaceFacts) {
			f.VGFound, f.Orphaned, f.OrphanUnused, f.HostIDKnown = true, true, true, false
		}), LockspaceNone},
		{"sanlock silent: never join", with(func(f *LockspaceFacts) { f.VGFound, f.SanlockAnswers = true, false }), LockspaceNone},
		{"report failed (neither found nor absent): wait", ok, LockspaceNone},
	}
	for _, c := range cases {
		if got := PlanLockspace(c.f); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}
