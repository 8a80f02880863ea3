//go:build storage

package storage

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/testbed"
)

// TestCopyAndMigrationOnRealSharedLVM: clones (spec.source) of an attached volume, from a
// temporary snapshot on its exclusive holder that keeps its lease, and of an unattached one
// into another VG; migration of a detached volume between VGs (copy, switch, wipe, remove),
// refused with a condition while attached. Leases read from sanlock on every host; data
// compared by md5 after every copy.
func TestCopyAndMigrationOnRealSharedLVM(t *testing.T) {
	bed := newBed(t, testbed.Config{Hosts: 2, LUNs: 2, LUNSize: 1 << 30, IOTimeout: 3})
	tm := &timings{dir: bed.Dir}
	defer tm.report(t)
	cl := startCluster(t, bed)
	a, b := cl.nodes[0], cl.nodes[1]
	ctx := cl.ctx
	cl.createVG("/dev/vda")
	// A second VolumeGroup on the second LUN: the target of clones and migrations.
	if err := cl.c.Create(ctx, &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: "fast"},
		Spec: v1.VolumeGroupSpec{VGName: "vg2", PVs: []v1.DevicePath{"/dev/vdb"},
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"san": "lun0"}}}}); err != nil {
		t.Fatal(err)
	}
	cl.wait("VG vg2 created and started on both hosts", 4*time.Minute, func() error {
		var g v1.VolumeGroup
		if err := cl.c.Get(ctx, client.ObjectKey{Name: "fast"}, &g); err != nil {
			return err
		}
		if g.Status.NodesReady != "2/2" {
			return fmt.Errorf("nodesReady %q", g.Status.NodesReady)
		}
		return nil
	})

	getVol := func(name string) *v1.SharedVolume {
		t.Helper()
		v := &v1.SharedVolume{}
		if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "cloud", Name: name}, v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	createClone := func(name, source, vgCR string) *v1.SharedVolume {
		t.Helper()
		v := &v1.SharedVolume{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: name},
			Spec: v1.SharedVolumeSpec{VolumeGroup: v1.ObjectName(vgCR), Size: resource.MustParse("128Mi"),
				Source: &v1.VolumeSource{Volume: v1.ObjectName(source)}}}
		if err := cl.c.Create(ctx, v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	// readBack activates an LV on n, reads 64 MiB and releases it.
	readBack := func(n *node, path string) string {
		t.Helper()
		lv := strings.TrimPrefix(path, "/dev/")
		run(ctx, t, n, "lvchange", "-aey", lv)
		run(ctx, t, n, "dd", "if="+path, "of=/tmp/read", "bs=1M", "count=64", "iflag=direct")
		run(ctx, t, n, "lvchange", "-an", lv)
		return md5(ctx, t, n, "/tmp/read")
	}
	noSnapshots := func(n *node, vgName string) {
		t.Helper()
		rep, err := n.LVM.Report(ctx, vgName)
		if err != nil {
			t.Fatal(err)
		}
		g, _ := rep.VG(vgName)
		for _, l := range g.LVs {
			if l.Origin != "" {
				t.Fatalf("snapshot %s of %s left behind", l.Name, l.Origin)
			}
		}
	}

	// The source, attached exclusively on host1 with 64 MiB of data.
	src := cl.createVolume("orig", "128Mi", false)
	cl.wait("orig available", time.Minute, cl.available(src))
	cl.attach("orig-host1", "orig", "host1", v1.PurposeInstance)
	cl.wait("orig on host1", time.Minute, cl.attached("orig-host1", v1.LockExclusive))
	run(ctx, t, a, "dd", "if=/dev/urandom", "of=/tmp/pattern", "bs=1M", "count=64")
	run(ctx, t, a, "dd", "if=/tmp/pattern", "of=/dev/vg1/orig", "bs=1M", "oflag=direct")
	want := md5(ctx, t, a, "/tmp/pattern")
	srcUUID := getVol("orig").Status.LVUUID

	// The raw cost of the same copy, for comparison.
	run(ctx, t, a, "lvcreate", "-y", "-an", "-Zn", "-n", "rawcopy", "-L", "128m", "vg1")
	run(ctx, t, a, "lvchange", "-aey", "vg1/rawcopy")
	if err := tm.time("raw dd 128Mi (O_DIRECT, same host)", func() error {
		_, err := a.MustRun(ctx, "dd", "if=/dev/vg1/orig", "of=/dev/vg1/rawcopy", "bs=1M", "iflag=direct", "oflag=direct", "conv=fsync")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	run(ctx, t, a, "lvremove", "-y", "vg1/rawcopy")

	// 1. Snapshot/clone of the attached volume: copied on its holder from a temporary
	// snapshot, while the holder keeps its exclusive lease.
	start := time.Now()
	c1 := createClone("snap1", "orig", "cinder")
	cl.wait("snap1 available", 3*time.Minute, cl.available(c1))
	tm.add("clone 128Mi of an attached volume (snapshot on the holder → copy → drop)", time.Since(start))
	mustLease(ctx, t, a, vg, srcUUID, false)
	c1 = getVol("snap1")
	if c1.Status.LVUUID == srcUUID || c1.Status.LVUUID == "" {
		t.Fatalf("the clone has no LV of its own: %+v", c1.Status)
	}
	for _, n := range cl.nodes {
		mustNoLease(ctx, t, n, vg, c1.Status.LVUUID)
	}
	noSnapshots(a, vg)
	if got := readBack(b, "/dev/vg1/snap1"); got != want {
		t.Fatalf("clone of the attached volume differs: %s != %s", got, want)
	}

	// 2. Clone of the unattached volume into the other VG: a node of both VGs copies under
	// a shared lease on the source that it releases.
	cl.detach("orig-host1")
	start = time.Now()
	c2 := createClone("clone2", "orig", "fast")
	cl.wait("clone2 available", 3*time.Minute, cl.available(c2))
	tm.add("clone 128Mi of an unattached volume into another VG", time.Since(start))
	for _, n := range cl.nodes {
		mustNoLease(ctx, t, n, vg, srcUUID)
		mustNoLease(ctx, t, n, "vg2", getVol("clone2").Status.LVUUID)
	}
	if got := readBack(a, "/dev/vg2/clone2"); got != want {
		t.Fatalf("clone into vg2 differs: %s != %s", got, want)
	}

	// 3. Migration of the detached volume to the other VG.
	vol := getVol("orig")
	setVG := func(vgCR v1.ObjectName) {
		t.Helper()
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := cl.c.Get(ctx, client.ObjectKeyFromObject(vol), vol); err != nil {
				return err
			}
			vol.Spec.VolumeGroup = vgCR
			return cl.c.Update(ctx, vol)
		}); err != nil {
			t.Fatal(err)
		}
	}
	setVG("fast")
	start = time.Now()
	var seen []int32
	migrated := func(vgCR string) func() error {
		return func() error {
			if err := cl.c.Get(ctx, client.ObjectKeyFromObject(vol), vol); err != nil {
				return err
			}
			if p := vol.Status.Progress; p != nil && (len(seen) == 0 || seen[len(seen)-1] != p.Percent) {
				seen = append(seen, p.Percent)
			}
			if vol.Status.VolumeGroup != vgCR || vol.Status.RetiredLV != nil || vol.Status.Phase != v1.VolumeAvailable {
				return fmt.Errorf("status vg %s retired %+v phase %s", vol.Status.VolumeGroup, vol.Status.RetiredLV, vol.Status.Phase)
			}
			return nil
		}
	}
	cl.wait("migrated to vg2", 3*time.Minute, migrated("fast"))
	tm.add("migrate 128Mi detached vg1 → vg2 (copy, switch, wipe + remove old)", time.Since(start))
	t.Logf("progress seen in status: %v", seen)
	rep, err := b.LVM.Report(ctx, vg, "vg2")
	if err != nil {
		t.Fatal(err)
	}
	g1, _ := rep.VG(vg)
	if _, ok := g1.LV("orig"); ok {
		t.Fatal("the old LV is still in vg1")
	}
	g2, _ := rep.VG("vg2")
	nl, ok := g2.LV("orig")
	if !ok || nl.UUID != vol.Status.LVUUID || !nl.HasTag(v1.OwnerTag(string(vol.UID))) {
		t.Fatalf("new LV %+v does not match status %+v", nl, vol.Status)
	}
	for _, n := range cl.nodes {
		mustNoLease(ctx, t, n, "vg2", nl.UUID)
	}
	if got := readBack(a, "/dev/vg2/orig"); got != want {
		t.Fatalf("migrated volume differs: %s != %s", got, want)
	}

	// 4. Attached: migration is refused with a condition until detached; then back to vg1.
	cl.attach("orig-host2", "orig", "host2", v1.PurposeInstance)
	cl.wait("orig on host2 (new LV)", time.Minute, cl.attached("orig-host2", v1.LockExclusive))
	mustLease(ctx, t, b, "vg2", nl.UUID, false)
	setVG("cinder")
	cl.wait("refused while attached", time.Minute, func() error {
		if err := cl.c.Get(ctx, client.ObjectKeyFromObject(vol), vol); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(vol.Status.Conditions, v1.ConditionReady); c == nil || c.Reason != "MigrationNeedsDetach" {
			return fmt.Errorf("conditions %+v", vol.Status.Conditions)
		}
		return nil
	})
	mustLease(ctx, t, b, "vg2", nl.UUID, false)
	cl.detach("orig-host2")
	start = time.Now()
	seen = nil
	cl.wait("migrated back to vg1", 3*time.Minute, migrated("cinder"))
	tm.add("migrate 128Mi back vg2 → vg1 after the detach", time.Since(start))
	if got := readBack(b, "/dev/vg1/orig"); got != want {
		t.Fatalf("volume migrated back differs: %s != %s", got, want)
	}
	noSnapshots(a, vg)
	noSnapshots(a, "vg2")
}
