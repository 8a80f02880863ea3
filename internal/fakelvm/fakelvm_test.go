package fakelvm

import (
	"context"
	"fmt"
	"testing"

	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
)

// The cached full report follows every metadata change and survives lock changes; the
// one-LV report answers like LVM (nil for a missing LV, an error for a missing VG).
func TestReportsFollowTheModel(t *testing.T) {
	c, cl := oneHost(1 << 30)
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

// oneHost is a model with VG vg1 on one PV of size bytes, and host 1 in its lockspace.
func oneHost(size int64) (*Cluster, *lvm.Client) {
	c := New()
	c.CreateVG("vg1", map[string]int64{"/dev/sdb": size})
	h := c.Host(1)
	c.LockstartAll("vg1", 1)
	return c, lvm.New(h)
}

// The agents' parse of a 10,000-LV report (each agent parses its VG's every cycle).
func BenchmarkParse10kLVReport(b *testing.B) {
	c, cl := oneHost(1 << 50)
	ctx := context.Background()
	for i := 0; i < 10000; i++ {
		tags := []string{fmt.Sprintf("sharedlvm.io/uid=0a1b2c3d-0000-4000-8000-%012d", i), "sharedlvm.io/managed"}
		if err := cl.CreateLV(ctx, "vg1", fmt.Sprintf("lv%05d", i), 8<<20, lvm.CreateOptions{Tags: tags, Activate: lvm.Deactivate}); err != nil {
			b.Fatal(err)
		}
	}
	res, _ := c.Host(1).Run(ctx, lvm.FullReportArgs("vg1"))
	b.SetBytes(int64(len(res.Stdout)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := lvm.ParseFullReport(res.Stdout); err != nil {
			b.Fatal(err)
		}
	}
}
