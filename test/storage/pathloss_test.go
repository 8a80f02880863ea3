//go:build storage

package storage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/testbed"
)

// storageLostBound is how soon after the path goes the node's VolumeGroup entry must say
// StorageLost: a few report cycles (2 s here) plus a probe read's timeout (10 s).
const storageLostBound = 30 * time.Second

// TestPathLossOnRealSharedLVM (#16 §4): one host loses its path to the LUN (the error
// target loaded under its PV, a device-mapper device standing for the SAN path) while it
// holds a volume exclusively and writes to it. Shown from the hosts themselves and from the
// API: what sanlock and lvmlockd do on that host (lease renewals fail; sanlock runs
// lvmlockctl --kill, which runs the product's kill-vg from lvm.conf, which takes the LVs
// offline; lvmlockd drops the VG's locks), what the agent reports (the node's VG entry
// StorageLost with an Event, its attachment NodeNotReady with an Event), that the other
// host is given the volume (Nova's evacuate) only once its own sanlock declares the host
// DEAD, and that the host rejoins when the path returns: lockspace back, the LV the kill
// left deactivated, the volume attachable there again, data intact.
func TestPathLossOnRealSharedLVM(t *testing.T) {
	bed := newBed(t, testbed.Config{Hosts: 2, LUNs: 1, LUNSize: 1 << 30, IOTimeout: 3, DMPaths: true, KillCommand: true})
	tm := &timings{dir: bed.Dir}
	defer tm.report(t)
	cl := startCluster(t, bed)
	a, b := cl.nodes[0], cl.nodes[1]
	ctx := cl.ctx
	cl.createVG(v1.DevicePath(bed.PV(0)))

	vol := cl.createVolume("stranded", "64Mi", false)
	cl.wait("available", time.Minute, cl.available(vol))
	uuid := vol.Status.LVUUID
	cl.attach("stranded-host1", "stranded", a.Name, v1.PurposeInstance)
	cl.wait("on host1", time.Minute, cl.attached("stranded-host1", v1.LockExclusive))
	mustLease(ctx, t, a, vg, uuid, false)
	hostID := hostIDOf(ctx, t, a)
	dev := "/dev/" + vg + "/stranded"
	run(ctx, t, a, "dd", "if=/dev/urandom", "of=/tmp/pattern", "bs=1M", "count=16")
	run(ctx, t, a, "dd", "if=/tmp/pattern", "of="+dev, "bs=1M", "oflag=direct")
	want := md5(ctx, t, a, "/tmp/pattern")
	// #16 §3 on the bed: the agent restarted (a DaemonSet rolling update) while a writer
	// runs on the volume: no I/O error, the lease held throughout, no lvchange.
	{
		ctxW, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		var n int
		go func() {
			for i := 0; ctxW.Err() == nil; i++ {
				r, err := a.Run(ctxW, []string{"dd", "if=/dev/zero", "of=" + dev, "bs=1M", "count=1", fmt.Sprintf("seek=%d", 16+i%48), "oflag=direct"})
				if ctxW.Err() != nil {
					break
				}
				if err != nil || r.ExitCode != 0 {
					done <- fmt.Errorf("write %d: %v exit %d: %s", i, err, r.ExitCode, r.Stderr)
					return
				}
				n++
			}
			done <- nil
		}()
		var calls atomic.Int32
		a.Trace(func(argv []string, _, _ time.Duration) {
			if argv[0] == "lvchange" {
				calls.Add(1)
			}
		})
		restarted := time.Now()
		cl.agents[a.Name]()
		time.Sleep(2 * time.Second)
		cl.startAgent(a)
		cl.wait("host1's agent reporting again", time.Minute, func() error {
			var g v1.VolumeGroup
			if err := cl.c.Get(ctx, client.ObjectKey{Name: "cinder"}, &g); err != nil {
				return err
			}
			for _, e := range g.Status.Nodes {
				if e.Node == a.Name && e.LastReport != nil && e.LastReport.After(restarted) && e.LockspaceStarted {
					return nil
				}
			}
			return fmt.Errorf("no report from host1 since the restart")
		})
		time.Sleep(3 * time.Second)
		stop()
		if err := <-done; err != nil {
			t.Fatalf("the writer saw an error across the agent restart: %v", err)
		}
		a.Trace(nil)
		mustLease(ctx, t, a, vg, uuid, false)
		if c := calls.Load(); c != 0 {
			t.Fatalf("the restarted agent ran %d lvchange(s)", c)
		}
		t.Logf("agent restart with a writer: %d writes over %.1fs, no I/O error, lease held, no lvchange", n, time.Since(restarted).Seconds())
		tm.add("agent restarted with a writer on its volume (no I/O error, lease held): restart → reporting again", time.Since(restarted))
	}
	run(ctx, t, a, "dd", "if=/tmp/pattern", "of="+dev, "bs=1M", "oflag=direct")

	// The kill command's input, from the real dmsetup (the parser's fixture).
	info := run(ctx, t, a, lvm.DMInfoArgs...)
	_ = os.WriteFile(filepath.Join(bed.Dir, "dmsetup-info.out"), []byte(info), 0o644)
	t.Logf("dmsetup info on host1:\n%s", info)

	// A writer on host1, as a VM would be (1 MiB direct writes past the pattern).
	lost := time.Now()
	var mu sync.Mutex
	var writerErrAt time.Duration
	var writerErr string
	writerCtx, stopWriter := context.WithCancel(ctx)
	defer stopWriter()
	writes := 0
	go func() {
		for i := 0; writerCtx.Err() == nil; i++ {
			r, err := a.Run(writerCtx, []string{"dd", "if=/dev/zero", "of=" + dev, "bs=1M", "count=1", fmt.Sprintf("seek=%d", 16+i%48), "oflag=direct"})
			if err != nil || r.ExitCode != 0 {
				mu.Lock()
				writerErrAt, writerErr = time.Since(lost), fmt.Sprintf("%v exit %d: %s", err, r.ExitCode, strings.TrimSpace(string(r.Stderr)))
				mu.Unlock()
				return
			}
			mu.Lock()
			writes++
			mu.Unlock()
		}
	}()
	time.Sleep(3 * time.Second)

	mu.Lock()
	lost = time.Now()
	before := writes
	mu.Unlock()
	if err := a.FailPath(ctx, 0); err != nil {
		t.Fatal(err)
	}
	t.Logf("path lost on host1 (%d writes done before)", before)
	at := func() float64 { return time.Since(lost).Seconds() }

	// Both hosts' daemons, every second, until the end: host2 must never hold the lease
	// before its sanlock declares host1 DEAD.
	var seen verdicts // host2's sanlock on host1
	var killAt time.Duration
	var violation string
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		for watchCtx.Err() == nil {
			if r, err := a.Run(watchCtx, []string{"dmsetup", "table", lvm.DMName(vg, "stranded")}); err == nil && strings.Contains(string(r.Stdout), " error") {
				mu.Lock()
				if killAt == 0 {
					killAt = time.Since(lost)
				}
				mu.Unlock()
			}
			seen.observe(watchCtx, b, hostID, lost)
			if st, err := b.Sanlock.Status(watchCtx); err == nil {
				if _, held := st.Lease(vg, uuid); held {
					_, dead := seen.get()
					mu.Lock()
					if dead == 0 && violation == "" {
						violation = fmt.Sprintf("host2 holds the lease %.1fs after the path loss, before its sanlock declared host1 DEAD", time.Since(lost).Seconds())
					}
					mu.Unlock()
				}
			}
			time.Sleep(time.Second)
		}
	}()

	// The agent says it: the node's VG entry, an Event on the VolumeGroup, the attachment.
	var entryMsg string
	tm.add("path lost → node's VG entry StorageLost", cl.wait("host1's entry says StorageLost", storageLostBound, func() error {
		var g v1.VolumeGroup
		if err := cl.c.Get(ctx, client.ObjectKey{Name: "cinder"}, &g); err != nil {
			return err
		}
		for _, n := range g.Status.Nodes {
			if n.Node == a.Name {
				if n.Reason != v1.LockspaceStorageLost || n.LockspaceStarted {
					return fmt.Errorf("entry %s started=%v: %s", n.Reason, n.LockspaceStarted, n.Message)
				}
				entryMsg = n.Message
				return nil
			}
		}
		return fmt.Errorf("no entry for host1")
	}))
	t.Logf("%.1fs host1's VG entry: StorageLost: %s", at(), entryMsg)
	var attMsg string
	cl.wait("host1's attachment says so", storageLostBound, func() error {
		var att v1.VolumeAttachment
		if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "cloud", Name: "stranded-host1"}, &att); err != nil {
			return err
		}
		c := meta.FindStatusCondition(att.Status.Conditions, v1.ConditionReady)
		if c == nil || c.Reason != "NodeNotReady" || !strings.Contains(c.Message, "lost its path") {
			return fmt.Errorf("condition %+v", c)
		}
		attMsg = c.Message
		return nil
	})
	t.Logf("%.1fs host1's attachment: NodeNotReady: %s", at(), attMsg)
	cl.wait("StorageLost Event on the VolumeGroup", 10*time.Second, eventFn(cl, "cinder", "StorageLost"))
	cl.wait("NodeNotReady Event on host1's attachment", 10*time.Second, eventFn(cl, "stranded-host1", "NodeNotReady"))

	// sanlock runs the kill: the LV's device on host1 gets the error target.
	cl.wait("host1's LV taken offline by the kill command", 90*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if killAt == 0 {
			return fmt.Errorf("%s still has its table", lvm.DMName(vg, "stranded"))
		}
		return nil
	})
	mu.Lock()
	t.Logf("writer on host1: %d writes before, first error %.1fs after the path loss: %s", before, writerErrAt.Seconds(), writerErr)
	t.Logf("kill command took host1's LV offline %.1fs after the path loss", killAt.Seconds())
	tm.add("path lost → writer's first I/O error on the host", writerErrAt)
	tm.add("path lost → LVs offline on the host (sanlock → lvmlockctl --kill → sharedlvm kill-vg)", killAt)
	mu.Unlock()
	if writerErr == "" {
		t.Fatalf("the writer on host1 saw no error")
	}

	// Nova evacuates the instance: the attachment on host1 goes, one on host2 comes.
	old := &v1.VolumeAttachment{}
	old.Namespace, old.Name = "cloud", "stranded-host1"
	if err := cl.c.Delete(ctx, old); err != nil {
		t.Fatal(err)
	}
	cl.attach("stranded-host2", "stranded", b.Name, v1.PurposeInstance)
	cl.wait("attached on host2", 6*time.Minute, cl.attached("stranded-host2", v1.LockExclusive))
	took := time.Since(lost)
	seen.waitDead(30 * time.Second)
	fa, da := seen.get()
	mu.Lock()
	v := violation
	mu.Unlock()
	t.Logf("host2's sanlock: host_id %d FAIL at %.1fs, DEAD at %.1fs; takeover on host2 at %.1fs", hostID, fa.Seconds(), da.Seconds(), took.Seconds())
	tm.add(fmt.Sprintf("path lost → volume on the other host (its sanlock: FAIL at %.0f s, DEAD at %.0f s)", fa.Seconds(), da.Seconds()), took)
	if v != "" {
		t.Fatal(v)
	}
	if da == 0 || took < da-watchSlack {
		t.Fatalf("lock moved %v after the path loss, sanlock's DEAD seen at %v: sooner than sanlock released it", took, da)
	}
	mustLease(ctx, t, b, vg, uuid, false)
	run(ctx, t, b, "dd", "if="+dev, "of=/tmp/read", "bs=1M", "count=16", "iflag=direct")
	if got := md5(ctx, t, b, "/tmp/read"); got != want {
		t.Fatalf("data read on host2 %s, written %s", got, want)
	}

	// The path comes back: host1 rejoins by itself, and the LV the kill left behind goes.
	if err := a.RestorePath(ctx, 0); err != nil {
		t.Fatal(err)
	}
	tm.add("path back → host1 in the lockspace again (2/2)", cl.wait("host1 rejoins", 5*time.Minute, func() error {
		var g v1.VolumeGroup
		if err := cl.c.Get(ctx, client.ObjectKey{Name: "cinder"}, &g); err != nil {
			return err
		}
		if g.Status.NodesReady != "2/2" {
			return fmt.Errorf("nodesReady %s: %+v", g.Status.NodesReady, g.Status.Nodes)
		}
		return nil
	}))
	cl.wait("StorageBack Event", 10*time.Second, eventFn(cl, "cinder", "StorageBack"))
	cl.wait("the killed LV deactivated on host1", time.Minute, func() error {
		r, err := a.Run(ctx, []string{"dmsetup", "info", lvm.DMName(vg, "stranded")})
		if err != nil {
			return err
		}
		if r.ExitCode == 0 {
			return fmt.Errorf("%s still exists on host1", lvm.DMName(vg, "stranded"))
		}
		return nil
	})
	cl.wait("old attachment finalized", time.Minute, cl.goneFn(old))
	mustNoLease(ctx, t, a, vg, uuid)
	stopWatch()
	<-watching

	// The volume goes back to host1 (cold migration), data intact.
	start := time.Now()
	cl.detach("stranded-host2")
	cl.attach("stranded-host1b", "stranded", a.Name, v1.PurposeInstance)
	cl.wait("back on host1", time.Minute, cl.attached("stranded-host1b", v1.LockExclusive))
	tm.add("volume back on host1 after the path returned (detach host2 + attach host1)", time.Since(start))
	mustLease(ctx, t, a, vg, uuid, false)
	run(ctx, t, a, "dd", "if="+dev, "of=/tmp/read", "bs=1M", "count=16", "iflag=direct")
	if got := md5(ctx, t, a, "/tmp/read"); got != want {
		t.Fatalf("data read back on host1 %s, written %s", got, want)
	}

	// Again, but nobody moves the volume: the path returns after the kill, with the
	// attachment still on host1. The agent brings the device back (the kill left the error
	// target in it): host1 holds the lease again and reads the data through the LV.
	lost2 := time.Now()
	if err := a.FailPath(ctx, 0); err != nil {
		t.Fatal(err)
	}
	cl.wait("the kill takes host1's LV offline again", 90*time.Second, func() error {
		r, err := a.Run(ctx, []string{"dmsetup", "table", lvm.DMName(vg, "stranded")})
		if err != nil || !strings.Contains(string(r.Stdout), " error") {
			return fmt.Errorf("table %q (%v)", r.Stdout, err)
		}
		return nil
	})
	// The repair's input, from the real dmsetup (the parser's fixture).
	offline := run(ctx, t, a, lvm.OfflineArgs...)
	_ = os.WriteFile(filepath.Join(bed.Dir, "dmsetup-table-error.out"), []byte(offline), 0o644)
	t.Logf("dmsetup table --target error on host1 after the kill:\n%s", offline)
	if !lvm.ParseOffline([]byte(offline))[lvm.DMName(vg, "stranded")] {
		t.Fatalf("ParseOffline does not name %s in %q", lvm.DMName(vg, "stranded"), offline)
	}
	killed2 := time.Since(lost2)
	back2 := time.Now()
	if err := a.RestorePath(ctx, 0); err != nil {
		t.Fatal(err)
	}
	cl.wait("host1 serves the attachment again with a working device", 5*time.Minute, func() error {
		var g v1.VolumeGroup
		if err := cl.c.Get(ctx, client.ObjectKey{Name: "cinder"}, &g); err != nil {
			return err
		}
		if g.Status.NodesReady != "2/2" {
			return fmt.Errorf("nodesReady %s", g.Status.NodesReady)
		}
		if err := cl.attached("stranded-host1b", v1.LockExclusive)(); err != nil {
			return err
		}
		if _, ok := lease(ctx, t, a, vg, uuid); !ok {
			return fmt.Errorf("host1 holds no lease yet")
		}
		off, err := a.LVM.TakenOffline(ctx, vg, "stranded")
		if err != nil || off {
			return fmt.Errorf("device still offline (%v)", err)
		}
		return nil
	})
	tm.add(fmt.Sprintf("kill (%.0f s after a second path loss) with the attachment left on the host: path back → lease and a working device again", killed2.Seconds()), time.Since(back2))
	cl.wait("KilledLVRepaired Event", 10*time.Second, eventFn(cl, "stranded", "KilledLVRepaired"))
	run(ctx, t, a, "dd", "if="+dev, "of=/tmp/read", "bs=1M", "count=16", "iflag=direct")
	if got := md5(ctx, t, a, "/tmp/read"); got != want {
		t.Fatalf("data read on host1 after the repair %s, written %s", got, want)
	}
	mustNoLease(ctx, t, b, vg, uuid)
}

// eventFn: an Event with the reason regarding the named object exists.
func eventFn(cl *cluster, name, reason string) func() error {
	return func() error {
		var evs eventsv1.EventList
		if err := cl.c.List(cl.ctx, &evs); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Regarding.Name == name && e.Reason == reason {
				cl.t.Logf("Event %s %s on %s: %s", e.Type, e.Reason, name, e.Note)
				return nil
			}
		}
		return fmt.Errorf("no %s Event on %s", reason, name)
	}
}
