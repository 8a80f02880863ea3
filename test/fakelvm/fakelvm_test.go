package fakelvm

import (
	"context"
	"testing"

	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
)

// The cached full report follows every metadata change and survives lock changes; the
// one-LV report answers like LVM (nil for a missing LV, an error for a missing VG).
func TestReportsFollowTheModel(t *testing.T) {
	c := New()
	c.CreateVG("vg1", map[string]int64{"/dev/sdb": 1 << 30})
	h := c.Host(1)
	c.LockstartAll("vg1", 1)
	cl := lvm.New(h)
	ctx := context.Background()
	count := func() int {
		t.Helper()
		rep, err := cl.Report(ctx, "vg1")
		if err != nil {
			t.Fatal(err)
		}
		vg, _ := rep.VG("vg1")
		return len(vg.LVs)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d LVs", n)
	}
	if err := cl.CreateLV(ctx, "vg1", "a", 8<<20, lvm.CreateOptions{Tags: []string{"t1"}, Activate: lvm.Deactivate}); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Fatalf("after lvcreate: %d LVs", n)
	}
	c.reportMu.Lock()
	cached := len(c.reports)
	c.reportMu.Unlock()
	if err := cl.Activate(ctx, "vg1", lvm.Exclusive, "a"); err != nil {
		t.Fatal(err)
	}
	c.reportMu.Lock()
	kept := len(c.reports)
	c.reportMu.Unlock()
	if cached != 1 || kept != 1 {
		t.Fatalf("an activation dropped the cached report (%d, %d)", cached, kept)
	}
	if err := cl.AddTag(ctx, "vg1", "a", "t2"); err != nil {
		t.Fatal(err)
	}
	lv, err := cl.ReportLV(ctx, "vg1", "a")
	if err != nil || lv == nil || !lv.HasTag("t2") || len(lv.Devices) != 1 || lv.Devices[0] != "/dev/sdb" {
		t.Fatalf("%+v %v", lv, err)
	}
	rep, err := cl.Report(ctx, "vg1")
	if err != nil {
		t.Fatal(err)
	}
	vg, _ := rep.VG("vg1")
	if full, _ := vg.LV("a"); !full.HasTag("t2") {
		t.Fatalf("stale report after --addtag: %+v", full)
	}
	if err := cl.Activate(ctx, "vg1", lvm.Deactivate, "a"); err != nil {
		t.Fatal(err)
	}
	if err := cl.RemoveOwnedLV(ctx, "vg1", "a", "t1"); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Fatalf("after lvremove: %d LVs", n)
	}
	if lv, err := cl.ReportLV(ctx, "vg1", "a"); lv != nil || err != nil {
		t.Fatalf("removed LV: %+v %v", lv, err)
	}
	if _, err := cl.ReportLV(ctx, "nosuchvg", "a"); lvm.KindOf(err) != lvm.KindVGNotFound {
		t.Fatalf("missing VG: %v", err)
	}
}
