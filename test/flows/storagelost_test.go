package flows_test

import (
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

// #16 §4 over the model (the bed's TestPathLossOnRealSharedLVM shows sanlock's part): a node
// whose reads of the VG's PVs fail says StorageLost on its VolumeGroup entry with an Event,
// takes no new work in the VG, and its attachments say why; when the reads work again it
// says StorageBack and serves again.
var _ = Describe("a node that loses its path to the VG's storage", Ordered, func() {
	entryOf := func(node string) v1.NodeLockspaceStatus {
		vg := get(&v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: vgCR}})
		for _, n := range vg.Status.Nodes {
			if n.Node == node {
				return n
			}
		}
		return v1.NodeLockspaceStatus{}
	}
	AfterAll(func() { storage.SetHooks(nil, nil) })

	It("says StorageLost, places nothing new there, and serves again when the path returns", func() {
		held := volume("pathloss-held", "4Mi")
		Expect(k8s.Create(ctx, held)).To(Succeed())
		available(held)
		a := attachment("pathloss-held-1", held.Name, "node-1", v1.PurposeInstance)
		Expect(k8s.Create(ctx, a)).To(Succeed())
		attached(a, v1.LockExclusive)
		other := volume("pathloss-new", "4Mi")
		Expect(k8s.Create(ctx, other)).To(Succeed())
		available(other)

		// node-1's path goes: its LVM report fails as on the bed, and so does a read of a PV.
		start := time.Now()
		storage.SetHooks(func(host int, argv []string) *executor.Result {
			if host != 1 {
				return nil
			}
			switch {
			case argv[0] == "lvm" && slices.Contains(argv, "fullreport"):
				return &executor.Result{ExitCode: 5, Stderr: []byte("  VG vg1 lock skipped: error -221\n  Volume group \"vg1\" not found\n  Cannot process volume group vg1\n")}
			case argv[0] == "dd" && slices.Contains(argv, "of=/dev/null"):
				return &executor.Result{ExitCode: 1, Stderr: []byte("dd: error reading '/dev/vda': Input/output error\n")}
			}
			return nil
		}, nil)
		Eventually(func(g Gomega) {
			e := entryOf("node-1")
			g.Expect(e.Reason).To(Equal(v1.LockspaceStorageLost), "entry: %+v", e)
			g.Expect(e.LockspaceStarted).To(BeFalse())
			g.Expect(e.Message).To(ContainSubstring("PV /dev/vda of VG vg1 cannot be read on this node"))
		}).WithTimeout(conditionBound).Should(Succeed())
		GinkgoWriter.Printf("StorageLost on node-1's entry %.1fs after the reads failed\n", time.Since(start).Seconds())
		vg := get(&v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: vgCR}})
		Eventually(func() []string { return eventReasons(vg) }).WithTimeout(conditionBound).Should(ContainElement("StorageLost"))
		// node-2 is not affected.
		Expect(entryOf("node-2").Reason).To(Equal(v1.LockspaceStarted))

		// The attachment held there says why, with an Event.
		Eventually(func(g Gomega) {
			c := meta.FindStatusCondition(get(a).Status.Conditions, v1.ConditionReady)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal("NodeNotReady"))
			g.Expect(c.Message).To(ContainSubstring("lost its path"))
		}).WithTimeout(conditionBound).Should(Succeed())
		Eventually(func() []string { return eventReasons(a) }).WithTimeout(conditionBound).Should(ContainElement("NodeNotReady"))

		// Nothing new is placed on node-1: a new attachment there waits, saying why, and no
		// lvchange of that LV runs on node-1.
		n := attachment("pathloss-new-1", other.Name, "node-1", v1.PurposeInstance)
		Expect(k8s.Create(ctx, n)).To(Succeed())
		Eventually(func(g Gomega) {
			c := meta.FindStatusCondition(get(n).Status.Conditions, v1.ConditionReady)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal("NodeNotReady"))
		}).WithTimeout(conditionBound).Should(Succeed())
		Consistently(func() v1.LockMode { return get(n).Status.DesiredLock.OrNone() }).WithTimeout(3 * time.Second).Should(Equal(v1.LockNone))
		for _, call := range storage.Log() {
			if call.Host == 1 && call.Argv[0] == "lvchange" && strings.Contains(strings.Join(call.Argv, " "), "pathloss-new") {
				Fail("lvchange of the new volume on node-1 while its storage is lost: " + strings.Join(call.Argv, " "))
			}
		}

		// The path returns.
		back := time.Now()
		storage.SetHooks(nil, nil)
		Eventually(func() v1.LockspaceReason { return entryOf("node-1").Reason }).WithTimeout(conditionBound).Should(Equal(v1.LockspaceStarted))
		Eventually(func() []string { return eventReasons(vg) }).WithTimeout(conditionBound).Should(ContainElement("StorageBack"))
		attached(a, v1.LockExclusive)
		attached(n, v1.LockExclusive)
		GinkgoWriter.Printf("node-1 serving again %.1fs after the reads worked\n", time.Since(back).Seconds())

		for _, o := range []*v1.VolumeAttachment{a, n} {
			Expect(k8s.Delete(ctx, o)).To(Succeed())
			Eventually(func() bool { return gone(o) }).WithTimeout(time.Minute).Should(BeTrue())
		}
		for _, v := range []*v1.SharedVolume{held, other} {
			Expect(k8s.Delete(ctx, v)).To(Succeed())
			Eventually(func() bool { return gone(v) }).WithTimeout(time.Minute).Should(BeTrue())
		}
	})
})
