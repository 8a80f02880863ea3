package controllers_test

import (
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/envtestutil"
)

func newVolume(ns, name, vg string) *v1.SharedVolume {
	return &v1.SharedVolume{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       v1.SharedVolumeSpec{VolumeGroup: v1.ObjectName(vg), Size: resource.MustParse("1Gi")},
	}
}

func newAttachment(ns, name, vol, node string, purpose v1.AttachmentPurpose) *v1.VolumeAttachment {
	return &v1.VolumeAttachment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       v1.VolumeAttachmentSpec{Volume: v1.ObjectName(vol), Node: v1.ObjectName(node), Purpose: purpose},
	}
}

func get[T client.Object](o T) T {
	Expect(k8s.Get(ctx, client.ObjectKeyFromObject(o), o)).To(Succeed())
	return o
}

// agentReports plays the node agent's side of the handshake: it reports the lock it holds.
func agentReports(a *v1.VolumeAttachment, mode v1.LockMode) {
	Eventually(func() error {
		get(a)
		orig := a.DeepCopy()
		a.Status.AppliedLock = mode
		return k8s.Status().Patch(ctx, a, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
	}).Should(Succeed())
}

// provision plays the agent's create step: the LV exists.
func provision(vol *v1.SharedVolume) {
	Eventually(func() error {
		get(vol)
		orig := vol.DeepCopy()
		vol.Status.LVUUID = "0Lmg4d-BEKE-bsNl-0qMz-PxcS-tmnj-" + vol.Name[:6]
		vol.Status.LVName = vol.LVName()
		vol.Status.VGName = "vg1"
		vol.Status.Phase = v1.VolumeAvailable
		return k8s.Status().Patch(ctx, vol, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
	}).Should(Succeed())
}

func desired(a *v1.VolumeAttachment) v1.LockMode { return get(a).Status.DesiredLock }

var _ = Describe("SharedVolume reconciler", func() {
	const ns = "sv-tests"
	BeforeEach(func() { ensureNamespace(ns) })

	It("adds its finalizer, sets phase Pending and explains what it waits for", func() {
		vol := newVolume(ns, "vol-pending", "no-such-vg")
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		Eventually(func(g Gomega) {
			get(vol)
			g.Expect(vol.Finalizers).To(ContainElement(v1.Finalizer))
			g.Expect(vol.Status.Phase).To(Equal(v1.VolumePending))
			g.Expect(vol.Status.ObservedGeneration).To(Equal(vol.Generation))
			c := meta.FindStatusCondition(vol.Status.Conditions, v1.ConditionReady)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal("VolumeGroupNotFound"))
			g.Expect(c.Message).To(ContainSubstring("create it"))
		}).Should(Succeed())
		Eventually(func() []string { return eventReasons(vol) }).Should(ContainElement("VolumeGroupNotFound"))
	})

	It("refuses to delete an attached volume with a condition and an Event, then deletes it once detached", func() {
		vol := newVolume(ns, "vol-del", "vg1")
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		att := newAttachment(ns, "vol-del-a", "vol-del", "node-a", v1.PurposeInstance)
		Expect(k8s.Create(ctx, att)).To(Succeed())
		Eventually(func() []string { return get(vol).Finalizers }).Should(ContainElement(v1.Finalizer))
		Expect(k8s.Delete(ctx, vol)).To(Succeed())
		Eventually(func(g Gomega) {
			get(vol)
			c := meta.FindStatusCondition(vol.Status.Conditions, v1.ConditionDeletionBlocked)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal("Attached"))
			g.Expect(c.Message).To(ContainSubstring("vol-del-a (node node-a)"))
			g.Expect(vol.Status.Phase).To(Equal(v1.VolumeDeleting))
		}).Should(Succeed())
		Eventually(func() []string { return eventReasons(vol) }).Should(ContainElement("DeleteBlocked"))
		Consistently(func() error { return k8s.Get(ctx, client.ObjectKeyFromObject(vol), vol) }, "1s").Should(Succeed())

		Expect(k8s.Delete(ctx, att)).To(Succeed())
		if c := meta.FindStatusCondition(get(vol).Status.Conditions, v1.ConditionProvisioned); c != nil {
			// A node was asked to create the LV (this suite runs no agent): it may exist
			// unrecorded, so a node must look for it before the object goes.
			Eventually(func() string {
				c := meta.FindStatusCondition(get(vol).Status.Conditions, v1.ConditionDeletionBlocked)
				return c.Reason
			}).Should(Equal("CleaningUp"))
			Consistently(func() error { return k8s.Get(ctx, client.ObjectKeyFromObject(vol), vol) }, "500ms").Should(Succeed())
			Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error { // what the agent reports after its pass
				get(vol)
				meta.SetStatusCondition(&vol.Status.Conditions, metav1.Condition{Type: v1.ConditionProvisioned, Status: metav1.ConditionFalse, Reason: "Deleted", Message: "nothing left"})
				return k8s.Status().Update(ctx, vol)
			})).To(Succeed())
		}
		Eventually(func() bool { return isGone(vol) }).Should(BeTrue(), "finalizer removed once no attachment is left")
	})
})

func isGone(o client.Object) bool {
	err := k8s.Get(ctx, client.ObjectKeyFromObject(o), o)
	return err != nil && client.IgnoreNotFound(err) == nil
}

func eventReasons(o client.Object) []string { return envtestutil.EventReasons(ctx, k8s, o) }

var _ = Describe("VolumeAttachment reconciler: the lock rule through the status handshake", func() {
	const ns = "va-tests"
	BeforeEach(func() { ensureNamespace(ns) })

	It("waits for the volume's LV before asking for any lock", func() {
		vol := newVolume(ns, "vol-wait", "vg1")
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		a := newAttachment(ns, "vol-wait-a", "vol-wait", "node-a", "")
		Expect(k8s.Create(ctx, a)).To(Succeed())
		Eventually(func(g Gomega) {
			get(a)
			g.Expect(a.Finalizers).To(ContainElement(v1.Finalizer))
			g.Expect(a.Spec.Purpose).To(Equal(v1.PurposeInstance), "defaulted by the CRD")
			g.Expect(a.Status.Phase).To(Equal(v1.AttachmentPending))
			g.Expect(meta.FindStatusCondition(a.Status.Conditions, v1.ConditionReady).Reason).To(Equal("WaitingForVolume"))
		}).Should(Succeed())
		provision(vol)
		Eventually(func() v1.LockMode { return desired(a) }).Should(Equal(v1.LockExclusive))
	})

	It("runs attach, live migration and detach in the order sanlock accepts", func() {
		vol := newVolume(ns, "vol-mig", "vg1")
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		provision(vol)

		By("one attachment: exclusive on its node")
		a := newAttachment(ns, "vol-mig-a", "vol-mig", "node-a", v1.PurposeInstance)
		Expect(k8s.Create(ctx, a)).To(Succeed())
		Eventually(func() v1.LockMode { return desired(a) }).Should(Equal(v1.LockExclusive))
		Expect(get(a).Status.Phase).To(Equal(v1.AttachmentAttaching))
		agentReports(a, v1.LockExclusive)
		Eventually(func() v1.AttachmentPhase { return get(a).Status.Phase }).Should(Equal(v1.AttachmentAttached))
		Eventually(func() v1.LockMode { return get(vol).Status.Lock.Mode }).Should(Equal(v1.LockExclusive))
		Expect(get(vol).Status.Lock.Holders).To(Equal([]string{"node-a"}))

		By("migration target: the holder converts to shared first, the newcomer waits")
		b := newAttachment(ns, "vol-mig-b", "vol-mig", "node-b", v1.PurposeMigrationTarget)
		Expect(k8s.Create(ctx, b)).To(Succeed())
		Eventually(func() v1.LockMode { return desired(a) }).Should(Equal(v1.LockShared))
		// The newcomer's status may not be written yet (desired lock ""): wait for the
		// operator's None before checking that it stays so.
		Eventually(func() v1.LockMode { return desired(b) }).Should(Equal(v1.LockNone))
		Consistently(func() v1.LockMode { return desired(b) }, "1s").Should(Equal(v1.LockNone))
		agentReports(a, v1.LockShared)
		Eventually(func() v1.LockMode { return desired(b) }).Should(Equal(v1.LockShared))
		agentReports(b, v1.LockShared)
		Eventually(func() []string { return get(vol).Status.Lock.Holders }).Should(Equal([]string{"node-a", "node-b"}))
		Expect(get(vol).Status.Lock.Mode).To(Equal(v1.LockShared))

		By("source detaches: it releases first, the stayer keeps shared until then")
		Expect(k8s.Delete(ctx, a)).To(Succeed())
		Eventually(func() v1.LockMode { return desired(a) }).Should(Equal(v1.LockNone))
		Consistently(func() v1.LockMode { return desired(b) }, "1s").Should(Equal(v1.LockShared))
		Expect(get(a).Status.Phase).To(Equal(v1.AttachmentDetaching))
		agentReports(a, v1.LockNone)
		Eventually(func() bool { return isGone(a) }).Should(BeTrue(), "finalizer removed once the node released")
		Eventually(func() v1.LockMode { return desired(b) }).Should(Equal(v1.LockExclusive))
		agentReports(b, v1.LockExclusive)
		Eventually(func() v1.LockMode { return get(vol).Status.Lock.Mode }).Should(Equal(v1.LockExclusive))
		Expect(get(vol).Status.Lock.Holders).To(Equal([]string{"node-b"}))
	})

	It("refuses a second instance attachment on another node unless the volume is multi-attach", func() {
		vol := newVolume(ns, "vol-single", "vg1")
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		provision(vol)
		a := newAttachment(ns, "vol-single-a", "vol-single", "node-a", v1.PurposeInstance)
		Expect(k8s.Create(ctx, a)).To(Succeed())
		Eventually(func() v1.LockMode { return desired(a) }).Should(Equal(v1.LockExclusive))
		b := newAttachment(ns, "vol-single-b", "vol-single", "node-b", v1.PurposeInstance)
		Expect(k8s.Create(ctx, b)).To(Succeed())
		Eventually(func(g Gomega) {
			get(b)
			g.Expect(b.Status.Phase).To(Equal(v1.AttachmentFailed))
			c := meta.FindStatusCondition(b.Status.Conditions, v1.ConditionReady)
			g.Expect(c.Reason).To(Equal("MultiAttachNotAllowed"))
			g.Expect(c.Message).To(ContainSubstring("migration-target"))
		}).Should(Succeed())
		Consistently(func() v1.LockMode { return desired(a) }, "1s").Should(Equal(v1.LockExclusive))
	})
})

var _ = Describe("VolumeGroup reconciler", func() {
	It("counts ready nodes and flags duplicate sanlock host IDs with an Event", func() {
		for _, n := range []string{"vgt-1", "vgt-2"} {
			node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"vgtest": "yes"}}}
			Expect(k8s.Create(ctx, node)).To(Succeed())
		}
		vg := &v1.VolumeGroup{
			ObjectMeta: metav1.ObjectMeta{Name: "vg-agg"},
			Spec: v1.VolumeGroupSpec{VGName: "vgagg", PVs: []v1.DevicePath{"/dev/vdc"},
				NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"vgtest": "yes"}}},
		}
		Expect(k8s.Create(ctx, vg)).To(Succeed())
		Eventually(func() string { return get(vg).Status.NodesReady }).Should(Equal("0/2"))
		Expect(get(vg).Spec.WipePolicy).To(Equal(v1.WipeZero), "defaulted")

		get(vg)
		vg.Status.Nodes = []v1.NodeLockspaceStatus{
			{Node: "vgt-1", HostID: 7, LockspaceStarted: true},
			{Node: "vgt-2", HostID: 7, LockspaceStarted: true},
		}
		Expect(k8s.Status().Update(ctx, vg)).To(Succeed())
		Eventually(func(g Gomega) {
			get(vg)
			g.Expect(vg.Status.NodesReady).To(Equal("2/2"))
			c := meta.FindStatusCondition(vg.Status.Conditions, v1.ConditionHostIDConflict)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(c.Message).To(ContainSubstring("host_id 7 on vgt-1, vgt-2"))
			g.Expect(meta.IsStatusConditionTrue(vg.Status.Conditions, v1.ConditionReady)).To(BeFalse())
		}).Should(Succeed())
		Eventually(func() []string { return eventReasons(vg) }).Should(ContainElement("DuplicateHostID"))
	})
})

var _ = Describe("status subresource and printer columns", func() {
	const ns = "columns"
	BeforeEach(func() { ensureNamespace(ns) })

	It("ignores status in main-resource writes and spec in status writes", func() {
		vol := newVolume(ns, "vol-sub", "vg1")
		vol.Status.Phase = v1.VolumeFailed
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		Expect(get(vol).Status.Phase).NotTo(Equal(v1.VolumeFailed))
		// vg1 has ready nodes, so an executor is assigned at once (no agent runs in this suite).
		Eventually(func() v1.VolumePhase { return get(vol).Status.Phase }).Should(Equal(v1.VolumeCreating))
		Expect(vol.Status.ExecutorNode).To(BeElementOf("node-a", "node-b"))
		get(vol)
		vol.Spec.Size = resource.MustParse("5Gi")
		vol.Status.LVName = "written-through-status"
		Expect(k8s.Status().Update(ctx, vol)).To(Succeed())
		get(vol)
		Expect(vol.Spec.Size.String()).To(Equal("1Gi"))
		Expect(vol.Status.LVName).To(Equal("written-through-status"))
	})

	It("shows the columns an admin asks first in kubectl get", func() {
		vol := newVolume(ns, "vol-cols", "vg1")
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		provision(vol)
		a := newAttachment(ns, "vol-cols-a", "vol-cols", "node-a", v1.PurposeInstance)
		Expect(k8s.Create(ctx, a)).To(Succeed())
		Eventually(func() v1.LockMode { return desired(a) }).Should(Equal(v1.LockExclusive))
		agentReports(a, v1.LockExclusive)
		Eventually(func() v1.LockMode { return get(vol).Status.Lock.Mode }).Should(Equal(v1.LockExclusive))

		header := func(args ...string) (string, string) {
			out, err := env.KubectlCmd(args...).CombinedOutput()
			Expect(err).NotTo(HaveOccurred(), string(out))
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			return strings.Join(strings.Fields(lines[0]), " "), string(out)
		}
		h, out := header("get", "sharedvolumes", "-n", ns, "vol-cols")
		Expect(h).To(Equal("NAME VG SIZE PHASE LOCK HOLDERS AGE"))
		Expect(out).To(MatchRegexp(`vol-cols\s+vg1\s+1Gi\s+InUse\s+Exclusive\s+node-a\s`), "HOLDERS is plain text, not a JSON array")
		h, _ = header("get", "sharedvolumes", "-n", ns, "vol-cols", "-o", "wide")
		Expect(h).To(Equal("NAME VG SIZE PHASE LOCK HOLDERS PROGRESS LV UUID EXECUTOR AGE"))
		h, out = header("get", "sva", "-n", ns, "vol-cols-a")
		Expect(h).To(Equal("NAME VOLUME NODE LOCK PHASE AGE"))
		Expect(out).To(MatchRegexp(`vol-cols-a\s+vol-cols\s+node-a\s+Exclusive\s+Attached`))
		h, _ = header("get", "volumeattachments.sharedlvm.io", "-n", ns, "-o", "wide")
		Expect(h).To(Equal("NAME VOLUME NODE PURPOSE LOCK DESIRED PHASE DEVICE AGE"))
		h, _ = header("get", "volumegroups")
		Expect(h).To(Equal("NAME VG SIZE FREE PVS NODES READY AGE"))
		_, out = header("get", "sharedlvm", "-A")
		Expect(out).To(ContainSubstring("sharedvolume.sharedlvm.io/vol-cols"))
		Expect(out).To(ContainSubstring("volumeattachment.sharedlvm.io/vol-cols-a"))
		Expect(out).To(ContainSubstring("volumegroup.sharedlvm.io/"))
	})
})
