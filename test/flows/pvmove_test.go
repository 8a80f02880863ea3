package flows_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

var _ = Describe("pvmove through spec.pvs", func() {
	It("moves an unattached volume under a transient lock, refuses while shared, moves on the holder", func() {
		vol := volume("mover", "8Mi")
		vol.Spec.PVs = []v1.DevicePath{"/dev/vda"}
		vol.Spec.MultiAttach = true
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		available(vol)
		Expect(get(vol).Status.PVs).To(Equal([]string{"/dev/vda"}))

		By("unattached: an executor takes the lock for the move and releases it")
		vol.Spec.PVs = []v1.DevicePath{"/dev/vdb"}
		Expect(k8s.Update(ctx, vol)).To(Succeed())
		Eventually(func() []string { return get(vol).Status.PVs }).Should(Equal([]string{"/dev/vdb"}))
		Eventually(func() v1.VolumePhase { return get(vol).Status.Phase }).Should(Equal(v1.VolumeAvailable))
		Expect(holders("mover")).To(BeEmpty())
		Eventually(func() []string { return eventReasons(vol) }).Should(ContainElement("Moved"))

		By("held shared by two nodes: refused with a condition until one holder is left")
		for _, n := range []string{"node-1", "node-2"} {
			Expect(k8s.Create(ctx, attachment("mover-"+n, "mover", n, v1.PurposeInstance))).To(Succeed())
		}
		attached(&v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: "mover-node-2"}}, v1.LockShared)
		get(vol)
		vol.Spec.PVs = []v1.DevicePath{"/dev/vda"}
		Expect(k8s.Update(ctx, vol)).To(Succeed())
		Eventually(func(g Gomega) {
			c := meta.FindStatusCondition(get(vol).Status.Conditions, v1.ConditionReady)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal("MoveRefusedWhileShared"))
		}).Should(Succeed())
		Consistently(func() []string { return get(vol).Status.PVs }, "1s").Should(Equal([]string{"/dev/vdb"}))

		a2 := &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: "mover-node-2"}}
		Expect(k8s.Delete(ctx, a2)).To(Succeed())
		Eventually(func() bool { return gone(a2) }).Should(BeTrue())
		Eventually(func() []string { return get(vol).Status.PVs }).Should(Equal([]string{"/dev/vda"}))
		Expect(holders("mover")).To(Equal(map[int]string{1: "ex"}), "moved on the holder, which keeps its lock")

		a1 := &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: "mover-node-1"}}
		Expect(k8s.Delete(ctx, a1)).To(Succeed())
		Eventually(func() bool { return gone(a1) }).Should(BeTrue())
		Expect(k8s.Delete(ctx, vol)).To(Succeed())
		Eventually(func() bool { return gone(vol) }).Should(BeTrue())
	})
})
