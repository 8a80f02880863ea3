//go:build storage

package storage

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
	"github.com/sharedlvm/sharedlvm-operator/agent/sanlock"
	"github.com/sharedlvm/sharedlvm-operator/internal/testbed"
)

const (
	vg    = "vg1"
	owner = "sharedlvm.io/uid=6f1d0c55-1111-4a2b-9c3d-000000000001"
)

// TestSharedLVMLayer proves the command layer's lock behaviour on two hosts sharing three
// LUNs: every assertion is read from the hosts' own sanlock, lvmlockd and LVM.
func TestSharedLVMLayer(t *testing.T) {
	bed := newBed(t, testbed.Config{Hosts: 2, LUNs: 3, LUNSize: 1 << 30, IOTimeout: 3})
	tm := &timings{dir: bed.Dir}
	defer tm.report(t)
	ns := nodes(bed)
	a, b := ns[0], ns[1]
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var uuid string

	ok := t.Run("shared VG and lockspaces on both hosts", func(t *testing.T) {
		if err := tm.time("vgcreate --shared (3 PVs, starts lockspace on host1)", func() error {
			return a.LVM.CreateSharedVG(ctx, vg, []string{"/dev/vda", "/dev/vdb", "/dev/vdc"}, int32(a.ID))
		}); err != nil {
			t.Fatal(err)
		}
		var attempts int
		if err := tm.time("vgchange --lockstart on host2 (with retries)", func() (err error) {
			attempts, err = b.LVM.Lockstart(ctx, vg, int32(b.ID))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Logf("host2 lockstart needed %d attempt(s)", attempts)
		for _, n := range ns {
			st, err := n.Sanlock.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ls, found := st.Lockspace(vg)
			if !found || ls.HostID != n.ID {
				t.Fatalf("%s: lockspace %+v found=%v, want host_id %d", n.Name, ls, found, n.ID)
			}
		}
	})
	if !ok {
		t.FailNow()
	}

	ok = t.Run("LV created exclusive where created; other host refused both modes", func(t *testing.T) {
		if err := tm.time("lvcreate 256MiB with owner tag (active ex)", func() error {
			return a.LVM.CreateLV(ctx, vg, "lv1", 256<<20, lvm.CreateOptions{Tags: []string{owner, "sharedlvm.io/managed"}, PVs: []string{"/dev/vdb"}})
		}); err != nil {
			t.Fatal(err)
		}
		rep, err := b.LVM.Report(ctx, vg)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := rep.VG(vg)
		lv, found := v.LV("lv1")
		if !found || !lv.HasTag(owner) || lv.Size != 256<<20 || lv.Devices[0] != "/dev/vdb" {
			t.Fatalf("host2 sees %+v", lv)
		}
		uuid = lv.UUID
		mustLease(ctx, t, a, vg, uuid, false)
		mustNoLease(ctx, t, b, vg, uuid)
		for _, mode := range []lvm.ActivationMode{lvm.Exclusive, lvm.Shared} {
			err := tm.time("refused lvchange -a"+string(mode)+" (held ex elsewhere)", func() error { return b.LVM.Activate(ctx, vg, mode, "lv1") })
			if !errors.Is(err, lvm.ErrLockHeldByOther) {
				t.Fatalf("host2 -a%s: want ErrLockHeldByOther, got %v", mode, err)
			}
		}
		mustNoLease(ctx, t, b, vg, uuid)
	})
	if !ok {
		t.FailNow()
	}

	t.Run("a new LV read from the metadata lvcreate committed, in-process: what lvs says, or a refusal", func(t *testing.T) {
		pvs := []string{"/dev/vda", "/dev/vdb", "/dev/vdc"}
		if err := a.LVM.CreateLV(ctx, vg, "fresh", 24<<20, lvm.CreateOptions{Activate: lvm.Deactivate, Tags: []string{owner}}); err != nil {
			t.Fatal(err)
		}
		var fromMeta, fromLVs *lvm.LV
		if err := tm.time("read the committed metadata in-process (label + header, text)", func() (err error) {
			fromMeta, err = a.LVM.CommittedLV(ctx, vg, "fresh", pvs)
			return err
		}); err != nil || fromMeta == nil {
			t.Fatalf("%v %v", fromMeta, err)
		}
		if err := tm.time("lvs of that one LV", func() (err error) {
			fromLVs, err = a.LVM.ReportLV(ctx, vg, "fresh")
			return err
		}); err != nil || fromLVs == nil {
			t.Fatalf("%v %v", fromLVs, err)
		}
		if fromMeta.UUID != fromLVs.UUID || fromMeta.Size != fromLVs.Size || fromMeta.LockArgs != fromLVs.LockArgs ||
			fmt.Sprint(fromMeta.Tags) != fmt.Sprint(fromLVs.Tags) || fmt.Sprint(fromMeta.Devices) != fmt.Sprint(fromLVs.Devices) {
			t.Fatalf("metadata %+v\nlvs      %+v", fromMeta, fromLVs)
		}
		// Host2 commits next: host1 no longer vouches for the paths in the text.
		if err := b.LVM.CreateLV(ctx, vg, "fresh2", 8<<20, lvm.CreateOptions{Activate: lvm.Deactivate, Tags: []string{owner}}); err != nil {
			t.Fatal(err)
		}
		if lv, err := a.LVM.CommittedLV(ctx, vg, "fresh", pvs); !errors.Is(err, lvm.ErrForeignCommit) {
			t.Fatalf("after host2's commit: %+v %v", lv, err)
		}
		if lv, err := b.LVM.CommittedLV(ctx, vg, "fresh2", pvs); err != nil || lv == nil || lv.Size != 8<<20 {
			t.Fatalf("host2's own LV: %+v %v", lv, err)
		}
		for _, n := range []string{"fresh", "fresh2"} {
			if err := a.LVM.RemoveLV(ctx, vg, n); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("ex to sh in place, sh on the second host; lvs lies, sanlock and lvmlockd do not", func(t *testing.T) {
		if err := tm.time("lvchange -asy on the ex holder (convert in place)", func() error { return a.LVM.Activate(ctx, vg, lvm.Shared, "lv1") }); err != nil {
			t.Fatal(err)
		}
		if err := tm.time("lvchange -asy on the second host", func() error { return b.LVM.Activate(ctx, vg, lvm.Shared, "lv1") }); err != nil {
			t.Fatal(err)
		}
		mustLease(ctx, t, a, vg, uuid, true)
		mustLease(ctx, t, b, vg, uuid, true)
		if m := lockdMode(ctx, t, a, vg, uuid); m != lvm.LockdShared {
			t.Fatalf("lvmlockd on host1 says %q", m)
		}
		rep, _ := a.LVM.Report(ctx, vg)
		v, _ := rep.VG(vg)
		lv, _ := v.LV("lv1")
		t.Logf("lvs on host1 while shared: active exclusively=%v (this is why the mode is read from sanlock)", lv.ActiveExclusivelyAsReportedByLVM)
		if err := a.LVM.Activate(ctx, vg, lvm.Exclusive, "lv1"); !errors.Is(err, lvm.ErrLockHeldByOther) {
			t.Fatalf("sh→ex while another host holds sh must be refused, got %v", err)
		}
	})

	t.Run("extend: refused while shared without shupdate; with it, the other holder refreshes", func(t *testing.T) {
		err := a.LVM.ExtendLV(ctx, vg, "lv1", 288<<20, false)
		if !errors.Is(err, lvm.ErrIncompatibleMode) {
			t.Fatalf("lvextend while shared: want ErrIncompatibleMode, got %v", err)
		}
		if err := tm.time("lvextend --lockopt shupdate while shared", func() error { return a.LVM.ExtendLV(ctx, vg, "lv1", 288<<20, true) }); err != nil {
			t.Fatal(err)
		}
		if err := tm.time("lvchange --refresh on the other holder", func() error { return b.LVM.RefreshLV(ctx, vg, "lv1") }); err != nil {
			t.Fatal(err)
		}
		size := run(ctx, t, b, "blockdev", "--getsize64", "/dev/vg1/lv1")
		if size != fmt.Sprintf("%d\n", 288<<20) {
			t.Fatalf("host2 sees device size %q after refresh", size)
		}
	})

	t.Run("holder releases, the second host converts sh to ex; the first is then refused", func(t *testing.T) {
		if err := tm.time("lvchange -an (release)", func() error { return a.LVM.Activate(ctx, vg, lvm.Deactivate, "lv1") }); err != nil {
			t.Fatal(err)
		}
		mustNoLease(ctx, t, a, vg, uuid)
		if err := tm.time("lvchange -aey (convert sh→ex, sole holder)", func() error { return b.LVM.Activate(ctx, vg, lvm.Exclusive, "lv1") }); err != nil {
			t.Fatal(err)
		}
		mustLease(ctx, t, b, vg, uuid, false)
		if err := a.LVM.Activate(ctx, vg, lvm.Exclusive, "lv1"); !errors.Is(err, lvm.ErrLockHeldByOther) {
			t.Fatalf("want ErrLockHeldByOther, got %v", err)
		}
	})

	t.Run("extend and pvmove while exclusive, data intact", func(t *testing.T) {
		if err := tm.time("lvextend while exclusive", func() error { return b.LVM.ExtendLV(ctx, vg, "lv1", 320<<20, false) }); err != nil {
			t.Fatal(err)
		}
		if err := b.LVM.ExtendLV(ctx, vg, "lv1", 320<<20, false); err != nil {
			t.Fatalf("extending to the current size must be a no-op: %v", err)
		}
		run(ctx, t, b, "dd", "if=/dev/urandom", "of=/tmp/pattern", "bs=1M", "count=32")
		run(ctx, t, b, "dd", "if=/tmp/pattern", "of=/dev/vg1/lv1", "bs=1M", "oflag=direct")
		want := md5(ctx, t, b, "/tmp/pattern")

		// pvmove needs the exclusive lock on the host running it: refused on the other host.
		if err := a.LVM.StartPVMove(ctx, vg, "lv1", []string{"/dev/vdb"}, []string{"/dev/vdc"}); err == nil {
			t.Fatal("pvmove on a host without the lock must fail")
		}
		start := time.Now()
		if err := b.LVM.StartPVMove(ctx, vg, "lv1", []string{"/dev/vdb"}, []string{"/dev/vdc"}); err != nil {
			t.Fatal(err)
		}
		var seen []float64
		for {
			pct, running, err := b.LVM.PVMoveProgress(ctx, vg, "lv1")
			if err != nil {
				t.Fatal(err)
			}
			seen = append(seen, pct)
			if !running {
				break
			}
			if time.Since(start) > 5*time.Minute {
				t.Fatal("pvmove did not finish in 5 minutes")
			}
			time.Sleep(250 * time.Millisecond)
		}
		tm.add("pvmove -n lv1 (320MiB, vdb→vdc) until done", time.Since(start))
		t.Logf("progress readings: %v", seen)
		rep, err := a.LVM.Report(ctx, vg)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := rep.VG(vg)
		lv, _ := v.LV("lv1")
		if len(lv.Devices) != 1 || lv.Devices[0] != "/dev/vdc" || lv.Size != 320<<20 {
			t.Fatalf("after pvmove: %+v", lv)
		}
		run(ctx, t, b, "dd", "if=/dev/vg1/lv1", "of=/tmp/readback", "bs=1M", "count=32", "iflag=direct")
		if got := md5(ctx, t, b, "/tmp/readback"); got != want {
			t.Fatalf("data changed by pvmove: %s != %s", got, want)
		}
		mustLease(ctx, t, b, vg, uuid, false)
	})

	t.Run("batched activation of several LVs in one command", func(t *testing.T) {
		for _, name := range []string{"lv2", "lv3", "lv4"} {
			if err := a.LVM.CreateLV(ctx, vg, name, 8<<20, lvm.CreateOptions{Activate: lvm.Deactivate, Tags: []string{owner}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := tm.time("lvchange -aey of 3 LVs in one command", func() error { return a.LVM.Activate(ctx, vg, lvm.Exclusive, "lv2", "lv3", "lv4") }); err != nil {
			t.Fatal(err)
		}
		st, _ := a.Sanlock.Status(ctx)
		if len(st.Resources) != 3 {
			t.Fatalf("host1 holds %d leases, want 3: %+v", len(st.Resources), st.Resources)
		}
		if err := a.LVM.Activate(ctx, vg, lvm.Deactivate, "lv2", "lv3", "lv4"); err != nil {
			t.Fatal(err)
		}
		if err := a.LVM.RemoveOwnedLV(ctx, vg, "lv4", "sharedlvm.io/uid=someone-else"); err == nil {
			t.Fatal("removed an LV it does not own")
		}
		if err := a.LVM.RemoveOwnedLV(ctx, vg, "lv4", owner); err != nil {
			t.Fatal(err)
		}
		if err := a.LVM.RemoveOwnedLV(ctx, vg, "lv4", owner); err != nil {
			t.Fatalf("removing a gone LV must succeed: %v", err)
		}
	})

	ok = t.Run("host dies holding ex: the lease is taken only once sanlock declares it dead", func(t *testing.T) {
		mustLease(ctx, t, b, vg, uuid, false)
		killed := time.Now()
		b.Kill()
		var states []string
		lastState := sanlock.HostState("")
		var tookAt time.Duration
		for attempt := 1; ; attempt++ {
			hosts, err := a.Sanlock.Hosts(ctx)
			if err != nil {
				t.Fatal(err)
			}
			state := sanlock.HostUnknown
			for _, ls := range hosts {
				for _, h := range ls.Hosts {
					if h.ID == b.ID {
						state = h.State
					}
				}
			}
			if state != lastState {
				states = append(states, fmt.Sprintf("%s@%.0fs", state, time.Since(killed).Seconds()))
				lastState = state
			}
			err = a.LVM.Activate(ctx, vg, lvm.Exclusive, "lv1")
			if err == nil {
				tookAt = time.Since(killed)
				if state != sanlock.HostDead {
					// sanlock itself decided: it only grants once the owner's lease expired.
					t.Logf("granted while host2 was reported %s", state)
				}
				break
			}
			if !errors.Is(err, lvm.ErrLockHeldByOther) {
				t.Fatalf("attempt %d: want ErrLockHeldByOther while host2's lease lives, got %v", attempt, err)
			}
			if time.Since(killed) > 6*time.Minute {
				t.Fatalf("not taken over after 6 minutes; host2 states %v", states)
			}
			time.Sleep(2 * time.Second)
		}
		tm.add("takeover of a dead host's ex lease after kill (io_timeout 3 s)", tookAt)
		t.Logf("host1 took lv1 %.1f s after host2 was killed; host2 states seen by host1: %v", tookAt.Seconds(), states)
		if tookAt < 20*time.Second {
			t.Fatalf("took over after %v: faster than sanlock's host-dead timeout, so something bypassed it", tookAt)
		}
		mustLease(ctx, t, a, vg, uuid, false)
	})
	if !ok {
		t.FailNow()
	}

	t.Run("rebooted host: after lockstart its old leases are gone and the LV can be taken again", func(t *testing.T) {
		if err := tm.time("boot host2 again on the same LUNs", func() error { return b.Boot(ctx) }); err != nil {
			t.Fatal(err)
		}
		mustNoLease(ctx, t, b, vg, uuid)
		var attempts int
		if err := tm.time("lockstart after an unclean shutdown", func() (err error) {
			attempts, err = b.LVM.Lockstart(ctx, vg, int32(b.ID))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Logf("lockstart after reboot: %d attempt(s)", attempts)
		st, _ := b.Sanlock.Status(ctx)
		if len(st.Resources) != 0 {
			t.Fatalf("rebooted host holds leases it had before the crash: %+v", st.Resources)
		}
		if err := b.LVM.Activate(ctx, vg, lvm.Exclusive, "lv1"); !errors.Is(err, lvm.ErrLockHeldByOther) {
			t.Fatalf("host1 holds lv1 now; host2 must be refused, got %v", err)
		}
		if err := a.LVM.Activate(ctx, vg, lvm.Deactivate, "lv1"); err != nil {
			t.Fatal(err)
		}
		if err := tm.time("lvchange -aey on the rebooted host", func() error { return b.LVM.Activate(ctx, vg, lvm.Exclusive, "lv1") }); err != nil {
			t.Fatal(err)
		}
		mustLease(ctx, t, b, vg, uuid, false)
		// Lockstop is refused while LVs are active (DESIGN §7).
		if err := b.LVM.Lockstop(ctx, vg); !errors.Is(err, lvm.ErrLockspaceBusy) {
			t.Fatalf("lockstop with an active LV: want ErrLockspaceBusy, got %v", err)
		}
	})
}
