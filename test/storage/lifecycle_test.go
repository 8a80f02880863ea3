//go:build storage

package storage

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sharedlvm/sharedlvm-operator/agent/sanlock"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/testbed"
	"github.com/sharedlvm/sharedlvm-operator/roles"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// restoreCount is how many attachments the reboot test restores (SHAREDLVM_RESTORE_N
// overrides it, e.g. 500 for the bench run; the tier default keeps CI short).
func restoreCount() int {
	if n, err := strconv.Atoi(os.Getenv("SHAREDLVM_RESTORE_N")); err == nil && n > 0 {
		return n
	}
	return 50
}

// TestLifecycleOnRealSharedLVM: node reboot restore before workloads, then live and cold
// migration, through the custom resources only, checked on the hosts.
func TestLifecycleOnRealSharedLVM(t *testing.T) {
	bed := newBed(t, testbed.Config{Hosts: 2, LUNs: 1, LUNSize: 4 << 30, IOTimeout: 3})
	tm := &timings{dir: bed.Dir}
	defer tm.report(t)
	cl := startCluster(t, bed)
	a, b := cl.nodes[0], cl.nodes[1]
	ctx := cl.ctx
	cl.createVG()

	// --- Reboot restore -------------------------------------------------------------
	n := restoreCount()
	start := time.Now()
	vols := make([]*v1.SharedVolume, n)
	for i := range vols {
		vols[i] = cl.createVolume(fmt.Sprintf("boot-%03d", i), "4Mi", false)
		cl.attach(fmt.Sprintf("boot-%03d-host1", i), vols[i].Name, "host1", v1.PurposeInstance)
	}
	for i := range vols {
		cl.wait("attached", 5*time.Minute, cl.attached(fmt.Sprintf("boot-%03d-host1", i), v1.LockExclusive))
	}
	tm.add(fmt.Sprintf("create + attach %d volumes on host1 (CRs)", n), time.Since(start))
	attachedUUIDs := map[string]bool{}
	for _, v := range vols {
		if err := cl.c.Get(ctx, client.ObjectKeyFromObject(v), v); err != nil {
			t.Fatal(err)
		}
		attachedUUIDs[v.Status.LVUUID] = true
	}
	// The invariant is about LV leases, by UUID: exactly the attached LVs. A report that
	// overlaps the check holds the VG lock (VGLK) for a moment, and that is no LV lease (#14).
	mustHoldExactly(ctx, t, a, attachedUUIDs, "before the reboot")

	bootID := cl.powerCycle(a) // power loss: the agent dies with the node
	var node corev1.Node
	out := &lockedBuffer{}
	waited := make(chan error, 1)
	go func() {
		waited <- roles.WaitLocks(ctx, cl.c, "host1", bootID, 10*time.Minute, 500*time.Millisecond, out)
	}()

	start = time.Now()
	cl.startAgent(a)
	if err := <-waited; err != nil {
		t.Fatalf("wait-locks: %v\n%s", err, out.String())
	}
	restore := time.Since(start)
	if err := cl.c.Get(ctx, client.ObjectKey{Name: "host1"}, &node); err != nil {
		t.Fatal(err)
	}
	var msg string
	for _, c := range node.Status.Conditions {
		if c.Type == v1.NodeConditionLocksRestored {
			msg = c.Message
		}
	}
	t.Logf("restore after reboot: %s", msg)
	tm.add(fmt.Sprintf("reboot restore of %d attachments, agent start → recorded (wait-locks returns)", n), restore)
	if i := strings.Index(msg, "lockspaces of 1 VG(s) after "); i >= 0 {
		var secs float64
		if _, err := fmt.Sscanf(msg[i:], "lockspaces of 1 VG(s) after %fs", &secs); err == nil {
			tm.add("  of which: daemons + lockspace join after the unclean shutdown", time.Duration(secs*float64(time.Second)))
		}
	}
	if !strings.Contains(msg, fmt.Sprintf("%d attachment(s) re-activated in 1 batch(es)", n)) {
		t.Fatalf("restore message %q: want all %d in one batch", msg, n)
	}
	for _, r := range mustHoldExactly(ctx, t, a, attachedUUIDs, "after restore") {
		if r.Shared {
			t.Fatalf("restored lease is shared: %+v", r)
		}
	}
	if node.Labels[v1.LabelLocksRestored] != "true" || node.Annotations[v1.AnnotationRestoredBootID] != bootID {
		t.Fatalf("node markers: %v %v", node.Labels, node.Annotations)
	}
	for i := range vols {
		cl.wait("attached after restore", time.Minute, cl.attached(fmt.Sprintf("boot-%03d-host1", i), v1.LockExclusive))
	}

	// --- Live migration with a writer on the source throughout the handoff -------------
	lm := cl.createVolume("live", "64Mi", false)
	cl.wait("live available", time.Minute, cl.available(lm))
	cl.attach("live-host1", "live", "host1", v1.PurposeInstance)
	cl.wait("live on host1", time.Minute, cl.attached("live-host1", v1.LockExclusive))
	run(ctx, t, a, "dd", "if=/dev/urandom", "of=/tmp/src", "bs=1M", "count=48")
	want := md5(ctx, t, a, "/tmp/src")
	writerDone := make(chan error, 1)
	writeStart := time.Now()
	go func() {
		// Small synchronous writes: the "VM" keeps writing during the whole handoff.
		_, err := a.MustRun(ctx, "dd", "if=/tmp/src", "of=/dev/vg1/live", "bs=4k", "oflag=direct,dsync")
		writerDone <- err
	}()
	time.Sleep(time.Second)
	start = time.Now()
	cl.attach("live-host2", "live", "host2", v1.PurposeMigrationTarget)
	cl.wait("both shared", time.Minute, func() error {
		if err := cl.attached("live-host2", v1.LockShared)(); err != nil {
			return err
		}
		return cl.attached("live-host1", v1.LockShared)()
	})
	tm.add("live migration: target attach → both Shared, while the source writes", time.Since(start))
	select {
	case err := <-writerDone:
		t.Fatalf("the writer finished (%v) before the handoff completed: the test did not write throughout", err)
	default:
	}
	mustLease(ctx, t, a, vg, lm.Status.LVUUID, true)
	mustLease(ctx, t, b, vg, lm.Status.LVUUID, true)
	if err := <-writerDone; err != nil {
		t.Fatalf("writer on the source failed during the handoff: %v", err)
	}
	t.Logf("writer ran %.1fs on host1 across the ex→sh handoff", time.Since(writeStart).Seconds())
	run(ctx, t, b, "dd", "if=/dev/vg1/live", "of=/tmp/read", "bs=1M", "count=48", "iflag=direct")
	if got := md5(ctx, t, b, "/tmp/read"); got != want {
		t.Fatalf("destination reads %s, source wrote %s", got, want)
	}
	start = time.Now()
	src := &v1.VolumeAttachment{}
	src.Namespace, src.Name = "cloud", "live-host1"
	if err := cl.c.Delete(ctx, src); err != nil {
		t.Fatal(err)
	}
	cl.wait("destination exclusive", time.Minute, cl.attached("live-host2", v1.LockExclusive))
	tm.add("live migration: source detach → destination Exclusive", time.Since(start))
	mustNoLease(ctx, t, a, vg, lm.Status.LVUUID)
	mustLease(ctx, t, b, vg, lm.Status.LVUUID, false)

	// --- Cold migration: host2 detaches, host1 attaches exclusive ------------------------
	start = time.Now()
	dst := &v1.VolumeAttachment{}
	dst.Namespace, dst.Name = "cloud", "live-host2"
	if err := cl.c.Delete(ctx, dst); err != nil {
		t.Fatal(err)
	}
	cl.wait("host2 detached", time.Minute, cl.goneFn(dst))
	cl.attach("live-host1-again", "live", "host1", v1.PurposeInstance)
	cl.wait("host1 exclusive", time.Minute, cl.attached("live-host1-again", v1.LockExclusive))
	tm.add("cold migration: detach on host2, attach on host1 → Exclusive", time.Since(start))
	mustLease(ctx, t, a, vg, lm.Status.LVUUID, false)
	mustNoLease(ctx, t, b, vg, lm.Status.LVUUID)
	run(ctx, t, a, "dd", "if=/dev/vg1/live", "of=/tmp/read", "bs=1M", "count=48", "iflag=direct")
	if got := md5(ctx, t, a, "/tmp/read"); got != want {
		t.Fatalf("after cold migration host1 reads %s, want %s", got, want)
	}
}

// mustHoldExactly checks that a host's sanlock holds leases on exactly the LVs of want (by
// UUID; the VG and global locks, VGLK and GLLK, are not LV leases) and returns them.
func mustHoldExactly(ctx context.Context, t *testing.T, n *node, want map[string]bool, when string) map[string]sanlock.Resource {
	t.Helper()
	st, err := n.Sanlock.Status(ctx)
	if err != nil {
		t.Fatalf("%s: sanlock status: %v", n.Name, err)
	}
	got := map[string]sanlock.Resource{}
	var other []string
	for _, r := range st.Resources {
		switch {
		case r.Name == "VGLK" || r.Name == "GLLK":
			other = append(other, r.Lockspace+":"+r.Name)
		default:
			got[r.Name] = r
		}
	}
	var extra, missing []string
	for uuid, r := range got {
		if !want[uuid] {
			extra = append(extra, fmt.Sprintf("%s (%+v)", uuid, r))
		}
	}
	for uuid := range want {
		if _, ok := got[uuid]; !ok {
			missing = append(missing, uuid)
		}
	}
	if len(extra) > 0 || len(missing) > 0 {
		t.Fatalf("%s %s holds %d LV leases, want %d: not attached %v; missing %v (also held: %v)", n.Name, when, len(got), len(want), extra, missing, other)
	}
	if len(other) > 0 {
		t.Logf("%s %s also holds %v (a report's VG lock, not an LV lease)", n.Name, when, other)
	}
	return got
}
