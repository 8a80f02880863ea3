package flows_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/heartbeat"
)

var _ = Describe("Agent heartbeats", func() {
	entry := func(node string) v1.NodeLockspaceStatus {
		vg := get(&v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: vgCR}})
		for _, n := range vg.Status.Nodes {
			if n.Node == node {
				return n
			}
		}
		Fail("no entry for " + node)
		return v1.NodeLockspaceStatus{}
	}
	renewed := func(node string) time.Time {
		var l coordv1.Lease
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: heartbeat.DefaultNamespace, Name: heartbeat.LeaseName(node)}, &l)).To(Succeed())
		Expect(*l.Spec.HolderIdentity).To(Equal(node))
		return l.Spec.RenewTime.Time
	}

	It("renews a Lease per node every cycle and rewrites an unchanged VolumeGroup entry only rarely", func() {
		// Four report intervals (2 s each): the heartbeat moves every cycle; the entry, which
		// used to be rewritten every cycle, at most once (its refresh).
		hb := renewed("node-1")
		seen := map[time.Time]bool{}
		for end := time.Now().Add(8 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
			e := entry("node-1")
			Expect(e.LockspaceStarted).To(BeTrue())
			seen[e.LastReport.Time] = true
		}
		Expect(renewed("node-1")).To(BeTemporally(">=", hb.Add(5*time.Second)))
		Expect(len(seen)).To(BeNumerically("<=", 2), "entry rewritten %d times in 4 cycles", len(seen))
	})

	It("treats a node whose agent stopped as not ready once its heartbeat expires, and ready again when it returns", func() {
		vol := volume("hb-vol", "4Mi")
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		available(vol)
		stop("node-2")
		// Entry unchanged (lockspace started); heartbeat (and the entry's own last write)
		// older than 3 intervals (10 s min).
		Eventually(func() time.Duration {
			last := renewed("node-2")
			if e := entry("node-2"); e.LastReport.After(last) {
				last = e.LastReport.Time
			}
			return time.Since(last)
		}, 30*time.Second).Should(BeNumerically(">", 11*time.Second))
		a := attachment("hb-vol-node-2", "hb-vol", "node-2", v1.PurposeInstance)
		Expect(k8s.Create(ctx, a)).To(Succeed())
		Eventually(func(g Gomega) {
			get(a)
			c := meta.FindStatusCondition(a.Status.Conditions, v1.ConditionReady)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal("NodeNotReady"))
			g.Expect(c.Message).To(ContainSubstring("last reported"))
		}, 40*time.Second).Should(Succeed())
		Expect(a.Status.DesiredLock).NotTo(Equal(v1.LockExclusive))
		Expect(holders("hb-vol")).To(BeEmpty())

		startAgent("node-2", storage.Host(2))
		Eventually(func() v1.AttachmentPhase { return get(a).Status.Phase }, 40*time.Second).Should(Equal(v1.AttachmentAttached))
		Expect(holders("hb-vol")).To(Equal(map[int]string{2: "ex"}))

		Expect(k8s.Delete(ctx, a)).To(Succeed())
		Eventually(func() bool { return gone(a) }).Should(BeTrue())
		Expect(k8s.Delete(ctx, vol)).To(Succeed())
		Eventually(func() bool { return gone(vol) }).Should(BeTrue())
	})
})
