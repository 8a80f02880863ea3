package fakelvm

import (
	"context"
	"fmt"
	"testing"

	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
)

func BenchmarkParse10k(b *testing.B) {
	c := New()
	c.CreateVG("vg1", map[string]int64{"/dev/sdb": 1 << 50})
	h := c.Host(1)
	c.LockstartAll("vg1", 1)
	cl := lvm.New(h)
	ctx := context.Background()
	for i := 0; i < 10000; i++ {
		if err := cl.CreateLV(ctx, "vg1", fmt.Sprintf("lv%05d", i), 8<<20, lvm.CreateOptions{Tags: []string{"sharedlvm.io/uid=0a1b2c3d-0000-4000-8000-000000000001", "sharedlvm.io/managed"}, Activate: lvm.Deactivate}); err != nil {
			b.Fatal(err)
		}
	}
	res, _ := h.Run(ctx, lvm.FullReportArgs("vg1"))
	b.Logf("report %d bytes", len(res.Stdout))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := lvm.ParseFullReport(res.Stdout); err != nil {
			b.Fatal(err)
		}
	}
}
