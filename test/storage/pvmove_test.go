//go:build storage

package storage

import (
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/testbed"
)

// TestPVMoveOnRealSharedLVM: changing spec.pvs moves the LV's extents online with pvmove on
// the exclusive holder while it stays attached, reports progress, refuses while shared, and
// moves an unattached volume under a lock taken for the move only; data verified after.
func TestPVMoveOnRealSharedLVM(t *testing.T) {
	bed := newBed(t, testbed.Config{Hosts: 2, LUNs: 2, LUNSize: 1 << 30, IOTimeout: 3})
	tm := &timings{dir: bed.Dir}
	defer tm.report(t)
	cl := startCluster(t, bed)
	a, b := cl.nodes[0], cl.nodes[1]
	ctx := cl.ctx
	cl.createVG("/dev/vda", "/dev/vdb")

	vol := cl.createVolume("moved", "256Mi", true)
	if err := cl.c.Get(ctx, client.ObjectKeyFromObject(vol), vol); err != nil {
		t.Fatal(err)
	}
	setPVs := func(pv v1.DevicePath) {
		t.Helper()
		// The operator writes the volume's status meanwhile: re-read on conflict.
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := cl.c.Get(ctx, client.ObjectKeyFromObject(vol), vol); err != nil {
				return err
			}
			vol.Spec.PVs = []v1.DevicePath{pv}
			return cl.c.Update(ctx, vol)
		}); err != nil {
			t.Fatal(err)
		}
	}
	placedOn := func(pv string) func() error {
		return func() error {
			if err := cl.c.Get(ctx, client.ObjectKeyFromObject(vol), vol); err != nil {
				return err
			}
			if len(vol.Status.PVs) != 1 || vol.Status.PVs[0] != pv || vol.Status.Progress != nil {
				return fmt.Errorf("pvs %v progress %+v phase %s", vol.Status.PVs, vol.Status.Progress, vol.Status.Phase)
			}
			return nil
		}
	}
	cl.wait("available", time.Minute, cl.available(vol))
	// Start on vda, whatever LVM chose.
	setPVs("/dev/vda")
	cl.wait("on vda", 2*time.Minute, placedOn("/dev/vda"))

	// Attached exclusive on host1, with data.
	cl.attach("moved-host1", "moved", "host1", v1.PurposeInstance)
	cl.wait("on host1", time.Minute, cl.attached("moved-host1", v1.LockExclusive))
	run(ctx, t, a, "dd", "if=/dev/urandom", "of=/tmp/pattern", "bs=1M", "count=64")
	run(ctx, t, a, "dd", "if=/tmp/pattern", "of=/dev/vg1/moved", "bs=1M", "oflag=direct")
	want := md5(ctx, t, a, "/tmp/pattern")

	start := time.Now()
	setPVs("/dev/vdb")
	var seen []int32
	cl.wait("moved to vdb on the holder", 3*time.Minute, func() error {
		if err := placedOn("/dev/vdb")(); err != nil {
			if vol.Status.Progress != nil && (len(seen) == 0 || seen[len(seen)-1] != vol.Status.Progress.Percent) {
				seen = append(seen, vol.Status.Progress.Percent)
			}
			return err
		}
		return nil
	})
	tm.add("pvmove 256Mi on the exclusive holder (spec.pvs change → placed)", time.Since(start))
	t.Logf("progress seen in status: %v", seen)
	mustLease(ctx, t, a, vg, vol.Status.LVUUID, false)
	run(ctx, t, a, "dd", "if=/dev/vg1/moved", "of=/tmp/read", "bs=1M", "count=64", "iflag=direct")
	if got := md5(ctx, t, a, "/tmp/read"); got != want {
		t.Fatalf("data changed by the move: %s != %s", got, want)
	}

	// Shared by two hosts: refused with a condition.
	cl.attach("moved-host2", "moved", "host2", v1.PurposeInstance)
	cl.wait("shared", time.Minute, cl.attached("moved-host2", v1.LockShared))
	setPVs("/dev/vda")
	cl.wait("refused while shared", time.Minute, func() error {
		if err := cl.c.Get(ctx, client.ObjectKeyFromObject(vol), vol); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(vol.Status.Conditions, v1.ConditionReady); c == nil || c.Reason != "MoveRefusedWhileShared" {
			return fmt.Errorf("conditions %+v", vol.Status.Conditions)
		}
		return nil
	})
	if vol.Status.PVs[0] != "/dev/vdb" {
		t.Fatalf("moved while shared: %v", vol.Status.PVs)
	}

	// Unattached: the executor takes the lock for the move and releases it.
	for _, name := range []string{"moved-host1", "moved-host2"} {
		att := &v1.VolumeAttachment{}
		att.Namespace, att.Name = "cloud", name
		if err := cl.c.Delete(ctx, att); err != nil {
			t.Fatal(err)
		}
		cl.wait("detached", time.Minute, cl.goneFn(att))
	}
	start = time.Now()
	cl.wait("moved back to vda, unattached", 3*time.Minute, placedOn("/dev/vda"))
	tm.add("pvmove 256Mi unattached (lock taken for the move, released)", time.Since(start))
	for _, n := range cl.nodes {
		mustNoLease(ctx, t, n, vg, vol.Status.LVUUID)
	}
	run(ctx, t, b, "lvchange", "-aey", "vg1/moved")
	run(ctx, t, b, "dd", "if=/dev/vg1/moved", "of=/tmp/read", "bs=1M", "count=64", "iflag=direct")
	if got := md5(ctx, t, b, "/tmp/read"); got != want {
		t.Fatalf("data changed by the unattached move: %s != %s", got, want)
	}
	run(ctx, t, b, "lvchange", "-an", "vg1/moved")
}
