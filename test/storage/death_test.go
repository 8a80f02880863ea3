//go:build storage

package storage

import (
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/test/testbed"
)

// TestNodeDeathOnRealSharedLVM: a node dies holding a volume exclusively; the volume is
// moved (its attachment deleted, a new one on the other node, as Nova's evacuate does). The
// new attachment waits, saying why, until sanlock declares the dead host gone, then takes
// the lease. When the dead node comes back it does not take the lock again.
func TestNodeDeathOnRealSharedLVM(t *testing.T) {
	bed := newBed(t, testbed.Config{Hosts: 2, LUNs: 1, LUNSize: 1 << 30, IOTimeout: 3})
	tm := &timings{dir: bed.Dir}
	defer tm.report(t)
	cl := startCluster(t, bed)
	a, b := cl.nodes[0], cl.nodes[1]
	ctx := cl.ctx
	cl.createVG()

	vol := cl.createVolume("evacuee", "16Mi", false)
	cl.wait("available", time.Minute, cl.available(vol))
	cl.attach("evacuee-host2", "evacuee", "host2", v1.PurposeInstance)
	cl.wait("on host2", time.Minute, cl.attached("evacuee-host2", v1.LockExclusive))
	uuid := vol.Status.LVUUID
	mustLease(ctx, t, b, vg, uuid, false)

	killed := time.Now()
	b.Kill()
	cl.agents["host2"]()

	old := &v1.VolumeAttachment{}
	old.Namespace, old.Name = "cloud", "evacuee-host2"
	if err := cl.c.Delete(ctx, old); err != nil {
		t.Fatal(err)
	}
	cl.attach("evacuee-host1", "evacuee", "host1", v1.PurposeInstance)

	// While host2's lease lives, host1 waits and says why.
	sawWaiting := ""
	cl.wait("attached on host1 after host2 is declared dead", 6*time.Minute, func() error {
		var att v1.VolumeAttachment
		if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "cloud", Name: "evacuee-host1"}, &att); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(att.Status.Conditions, v1.ConditionReady); c != nil && c.Reason == "WaitingForDeadHost" && sawWaiting == "" {
			sawWaiting = fmt.Sprintf("%.0fs after the kill: %s", time.Since(killed).Seconds(), c.Message)
			if r, ok := lease(ctx, t, a, vg, uuid); ok {
				t.Fatalf("host1 holds %+v while host2 is not declared dead", r)
			}
		}
		return cl.attached("evacuee-host1", v1.LockExclusive)()
	})
	took := time.Since(killed)
	tm.add("node death: kill holder → lock taken on the other node (stale report + sanlock DEAD)", took)
	t.Logf("waiting condition seen %s", sawWaiting)
	if sawWaiting == "" {
		t.Fatal("the new attachment never said it was waiting for the dead host")
	}
	if took < 60*time.Second {
		t.Fatalf("lock moved %v after the kill: sooner than sanlock can declare a host dead", took)
	}
	mustLease(ctx, t, a, vg, uuid, false)
	cl.wait("old attachment finalized", time.Minute, cl.goneFn(old))

	// The dead node comes back: it restores nothing for the moved volume.
	start := time.Now()
	if err := b.Boot(ctx); err != nil {
		t.Fatal(err)
	}
	cl.startAgent(b)
	cl.wait("host2 lockspace back", 5*time.Minute, func() error {
		var g v1.VolumeGroup
		if err := cl.c.Get(ctx, client.ObjectKey{Name: "cinder"}, &g); err != nil {
			return err
		}
		if g.Status.NodesReady != "2/2" {
			return fmt.Errorf("nodesReady %s", g.Status.NodesReady)
		}
		return nil
	})
	tm.add("dead node back: boot + lockstart", time.Since(start))
	time.Sleep(5 * time.Second) // a few report cycles: nothing may re-take the lock
	mustNoLease(ctx, t, b, vg, uuid)
	mustLease(ctx, t, a, vg, uuid, false)
}
