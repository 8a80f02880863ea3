//go:build storage

package storage

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sharedlvm/sharedlvm-operator/internal/testbed"
)

// TestLockLVSpaceOnRealSharedLVM (#16 §4): every LV of a shared VG has a 1 MiB sanlock lease
// in the hidden lvmlock LV (256 MiB at vgcreate, the first ~66 MiB for the lockspace, VG and
// global locks). What happens when the leases fill it, measured: lvmlockd extends lvmlock
// (lvm.conf global/sanlock_lv_extend, 256 MiB by default) as long as the VG has free space.
func TestLockLVSpaceOnRealSharedLVM(t *testing.T) {
	bed := newBed(t, testbed.Config{Hosts: 1, LUNs: 1, LUNSize: 2 << 30, IOTimeout: 3})
	n := nodes(bed)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if err := n.LVM.CreateSharedVG(ctx, "vg1", []string{"/dev/vda"}, 1); err != nil {
		t.Fatal(err)
	}
	lockLV := func() int64 {
		out := run(ctx, t, n, "lvs", "-a", "--noheadings", "--units", "b", "--nosuffix", "-o", "lv_size", "vg1/lvmlock")
		v, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	start := lockLV()
	t.Logf("lvmlock at vgcreate: %d MiB", start>>20)
	grewAt := 0
	t0 := time.Now()
	for i := 1; i <= 260 && grewAt == 0; i++ {
		if _, err := n.MustRun(ctx, "lvcreate", "-y", "-an", "-Zn", "-n", fmt.Sprintf("lv%03d", i), "-L", "4m", "vg1"); err != nil {
			t.Fatalf("lvcreate %d: %v", i, err)
		}
		if i%20 == 0 || i > 180 {
			if sz := lockLV(); sz != start {
				grewAt = i
				t.Logf("lvmlock grew from %d to %d MiB at LV %d (%.1fs of creates)", start>>20, sz>>20, i, time.Since(t0).Seconds())
			}
		}
	}
	if grewAt == 0 {
		t.Fatalf("260 LVs and lvmlock did not grow (%d MiB)", lockLV()>>20)
	}
}
