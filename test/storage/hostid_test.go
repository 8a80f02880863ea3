//go:build storage

package storage

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/testbed"
)

// TestHostIDCollisionOnRealSharedLVM: two hosts whose lvmlocal.conf set one host_id (a
// copied config). The operator allocates the id to one of them; exactly that one joins the
// lockspace, the other starts nothing and says why on its entry and the VG's HostIDConflict
// condition, naming the other node and the id to set. Once its lvmlocal.conf is fixed, it
// joins with the allocated id.
func TestHostIDCollisionOnRealSharedLVM(t *testing.T) {
	bed := newBed(t, testbed.Config{Hosts: 2, LUNs: 1, LUNSize: 1 << 30, IOTimeout: 3, LocalHostIDs: []int{1, 1}})
	tm := &timings{dir: bed.Dir}
	defer tm.report(t)
	cl := startCluster(t, bed)
	// Which of the two wins depends on whose agent says its id first: a is the winner, b the
	// other, once known.
	a, b := cl.nodes[0], cl.nodes[1]
	ctx := cl.ctx
	if err := cl.c.Create(ctx, &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: "cinder"},
		Spec: v1.VolumeGroupSpec{VGName: vg, PVs: []v1.DevicePath{"/dev/vda"},
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"san": "lun0"}}}}); err != nil {
		t.Fatal(err)
	}
	entry := func(g *v1.VolumeGroup, node string) *v1.NodeLockspaceStatus {
		for i := range g.Status.Nodes {
			if g.Status.Nodes[i].Node == node {
				return &g.Status.Nodes[i]
			}
		}
		return nil
	}
	var allocated int32
	tm.add("VolumeGroup → one host joins, the other refuses naming the collision", cl.wait("collision reported", 4*time.Minute, func() error {
		var g v1.VolumeGroup
		if err := cl.c.Get(ctx, client.ObjectKey{Name: "cinder"}, &g); err != nil {
			return err
		}
		ea, eb := entry(&g, a.Name), entry(&g, b.Name)
		if eb != nil && eb.LockspaceStarted {
			a, b = b, a
			ea, eb = eb, ea
		}
		c := meta.FindStatusCondition(g.Status.Conditions, v1.ConditionHostIDConflict)
		switch {
		case ea == nil || !ea.LockspaceStarted || ea.HostID != 1:
			return fmt.Errorf("%s entry %+v", a.Name, ea)
		case eb == nil || eb.Reason != v1.LockspaceHostIDConflict || eb.LockspaceStarted:
			return fmt.Errorf("%s entry %+v", b.Name, eb)
		case !strings.Contains(eb.Message, "local/host_id = 1") || !strings.Contains(eb.Message, "node "+a.Name+"'s"):
			return fmt.Errorf("%s message %q does not name the collision", b.Name, eb.Message)
		case c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, b.Name):
			return fmt.Errorf("HostIDConflict condition %+v", c)
		}
		allocated = eb.HostID
		t.Logf("%s refuses: %s", b.Name, eb.Message)
		return nil
	}))
	if allocated == 1 || allocated < 1 {
		t.Fatalf("%s was allocated host_id %d", b.Name, allocated)
	}
	// From the hosts themselves: a holds the lockspace as host_id 1, b holds nothing.
	stA, err := a.Sanlock.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ls, ok := stA.Lockspace(vg); !ok || ls.HostID != 1 {
		t.Fatalf("%s: sanlock shows %+v", a.Name, stA.Lockspaces)
	}
	stB, err := b.Sanlock.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(stB.Lockspaces) != 0 {
		t.Fatalf("%s joined despite the collision: %+v", b.Name, stB.Lockspaces)
	}

	// The administrator sets the allocated id in b's lvmlocal.conf; the agent joins with it.
	run(ctx, t, b, "busybox", "sed", "-i", fmt.Sprintf("s/host_id = 1/host_id = %d/", allocated), "/etc/lvm/lvmlocal.conf")
	tm.add("lvmlocal.conf fixed → the host joins as its allocated id", cl.wait("b joins", 4*time.Minute, func() error {
		var g v1.VolumeGroup
		if err := cl.c.Get(ctx, client.ObjectKey{Name: "cinder"}, &g); err != nil {
			return err
		}
		eb := entry(&g, b.Name)
		if eb == nil || !eb.LockspaceStarted || eb.HostID != allocated {
			return fmt.Errorf("%s entry %+v", b.Name, eb)
		}
		if c := meta.FindStatusCondition(g.Status.Conditions, v1.ConditionHostIDConflict); c == nil || c.Status != metav1.ConditionFalse {
			return fmt.Errorf("HostIDConflict condition %+v", c)
		}
		return nil
	}))
	// From the host itself: its sanlock holds the lockspace as the allocated id.
	cl.wait("b's sanlock holds the lockspace as the allocated id", time.Minute, func() error {
		st, err := b.Sanlock.Status(ctx)
		if err != nil {
			return err
		}
		if ls, ok := st.Lockspace(vg); !ok || ls.HostID != int(allocated) || ls.Adding {
			return fmt.Errorf("%s: sanlock shows %+v, want lvm_%s as host_id %d", b.Name, st.Lockspaces, vg, allocated)
		}
		return nil
	})
}
