//go:build storage

package storage

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/testbed"
)

// TestNodeDeathOnRealSharedLVM: a node dies holding a volume exclusively; the volume is
// moved (its attachment deleted, a new one on the other node, as Nova's evacuate does). The
// new attachment waits, saying why, until sanlock declares the dead host DEAD, then takes
// the lease. Twice (#14 item 1): first with the dead node's agent left running (its host's
// storage is gone, the agent keeps heartbeating: only sanlock's verdict can tell), then,
// after the node came back, the other node dies with its agent stopped. Each takeover is
// shown next to the moment the survivor's own sanlock turned the dead host DEAD.
// watchSlack is how late the test's own sanlock watcher may see DEAD after the agents did:
// one poll period (1 s) and a command's round trip into a TCG guest (seconds under load).
const watchSlack = 5 * time.Second

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
	uuid := vol.Status.LVUUID

	// evacuate kills the holder, moves the volume to the survivor and returns when the
	// survivor holds it, checking that it never did before sanlock said DEAD.
	evacuate := func(variant string, dead, survivor *node, stopAgent bool) {
		oldName, newName := "evacuee-"+dead.Name, "evacuee-"+survivor.Name
		var cur v1.VolumeAttachment
		if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "cloud", Name: oldName}, &cur); err != nil {
			cl.attach(oldName, "evacuee", dead.Name, v1.PurposeInstance)
		}
		cl.wait("on "+dead.Name, time.Minute, cl.attached(oldName, v1.LockExclusive))
		mustLease(ctx, t, dead, vg, uuid, false)
		hostID := hostIDOf(ctx, t, dead)

		killed := time.Now()
		dead.Kill()
		if stopAgent {
			cl.agents[dead.Name]()
		}
		var seen verdicts
		watchCtx, stopWatch := context.WithCancel(ctx)
		defer stopWatch()
		go func() { // the survivor's own sanlock, every second
			for watchCtx.Err() == nil {
				seen.observe(watchCtx, survivor, hostID, killed)
				time.Sleep(time.Second)
			}
		}()
		old := &v1.VolumeAttachment{}
		old.Namespace, old.Name = "cloud", oldName
		if err := cl.c.Delete(ctx, old); err != nil {
			t.Fatal(err)
		}
		cl.attach(newName, "evacuee", survivor.Name, v1.PurposeInstance)
		sawWaiting := ""
		cl.wait(variant+": attached on "+survivor.Name+" after sanlock declares "+dead.Name+" DEAD", 6*time.Minute, func() error {
			var att v1.VolumeAttachment
			if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "cloud", Name: newName}, &att); err != nil {
				return err
			}
			if c := meta.FindStatusCondition(att.Status.Conditions, v1.ConditionReady); c != nil && c.Reason == "WaitingForDeadHost" && sawWaiting == "" {
				sawWaiting = fmt.Sprintf("%.0fs after the kill: %s", time.Since(killed).Seconds(), c.Message)
				if r, ok := lease(ctx, t, survivor, vg, uuid); ok {
					t.Fatalf("%s holds %+v while %s is not declared dead", survivor.Name, r, dead.Name)
				}
			}
			return cl.attached(newName, v1.LockExclusive)()
		})
		took := time.Since(killed)
		seen.waitDead(30 * time.Second)
		stopWatch()
		fa, da := seen.get()
		t.Logf("%s: waiting condition seen %s", variant, sawWaiting)
		t.Logf("%s: sanlock on %s saw host_id %d FAIL at %.0fs, DEAD at %.0fs; takeover at %.1fs", variant, survivor.Name, hostID, fa.Seconds(), da.Seconds(), took.Seconds())
		tm.add(fmt.Sprintf("node death, %s: sanlock FAIL at %.0f s, DEAD at %.0f s after the kill; takeover", variant, fa.Seconds(), da.Seconds()), took)
		if sawWaiting == "" {
			t.Fatalf("%s: the new attachment never said it was waiting for the dead host", variant)
		}
		// sanlock grants the lease only once the holder's host_id is dead; the watcher sees
		// that at most a poll period plus a command's latency after the agent that acted.
		if da == 0 || took < da-watchSlack {
			t.Fatalf("%s: lock moved %v after the kill, sanlock's DEAD seen at %v: sooner than sanlock released it", variant, took, da)
		}
		mustLease(ctx, t, survivor, vg, uuid, false)
		cl.wait(variant+": old attachment finalized", time.Minute, cl.goneFn(old))
	}

	evacuate("agent left running", b, a, false)
	cl.agents[b.Name]() // the node is repaired: its agent restarts with it

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

	// The other way round (host1 holds it now), with the dead node's agent stopped with it.
	evacuate("agent stopped", a, b, true)
}

// hostIDOf reads a node's sanlock host_id in the VG's lockspace from its own sanlock.
func hostIDOf(ctx context.Context, t *testing.T, n *node) int32 {
	t.Helper()
	st, err := n.Sanlock.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ls, ok := st.Lockspace(vg)
	if !ok {
		t.Fatalf("%s has no lockspace of %s", n.Name, vg)
	}
	return int32(ls.HostID)
}
