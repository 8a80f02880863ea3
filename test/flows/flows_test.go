package flows_test

import (
	"context"
	"fmt"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

func volume(name, size string) *v1.SharedVolume {
	return &v1.SharedVolume{
		ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: name},
		Spec:       v1.SharedVolumeSpec{VolumeGroup: vgCR, Size: resource.MustParse(size)},
	}
}

func attachment(name, vol, node string, purpose v1.AttachmentPurpose) *v1.VolumeAttachment {
	return &v1.VolumeAttachment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: name},
		Spec:       v1.VolumeAttachmentSpec{Volume: v1.ObjectName(vol), Node: v1.ObjectName(node), Purpose: purpose},
	}
}

func available(vol *v1.SharedVolume) {
	Eventually(func() v1.VolumePhase { return get(vol).Status.Phase }).Should(Equal(v1.VolumeAvailable))
}

func attached(a *v1.VolumeAttachment, mode v1.LockMode) {
	Eventually(func(g Gomega) {
		get(a)
		g.Expect(a.Status.Phase).To(Equal(v1.AttachmentAttached), "conditions: %+v", a.Status.Conditions)
		g.Expect(a.Status.AppliedLock).To(Equal(mode), "conditions: %+v", a.Status.Conditions)
	}).Should(Succeed())
}

var _ = Describe("VolumeGroup", Ordered, func() {
	It("has every agent start the lockspace and report its own entry; one node writes the VG-wide report", func() {
		vg := &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: vgCR}}
		Eventually(func(g Gomega) {
			get(vg)
			g.Expect(vg.Status.NodesReady).To(Equal("2/2"))
			g.Expect(vg.Status.Nodes).To(HaveLen(2))
			for _, n := range vg.Status.Nodes {
				g.Expect(fmt.Sprintf("node-%d", n.HostID)).To(Equal(n.Node), "host_id from each node's lvmlocal.conf")
				g.Expect(n.LockspaceStarted).To(BeTrue())
				g.Expect(n.VGFound).To(BeTrue())
			}
			g.Expect(vg.Status.VGUUID).NotTo(BeEmpty())
			g.Expect(vg.Status.Size.String()).To(Equal("2Gi"))
			g.Expect(vg.Status.ExtentSize.String()).To(Equal("4Mi"))
			g.Expect(vg.Status.PVCount).To(Equal(int32(2)))
			g.Expect(vg.Status.PVs).To(HaveLen(2))
			g.Expect(meta.IsStatusConditionTrue(vg.Status.Conditions, v1.ConditionLockspaceReady)).To(BeTrue())
		}).Should(Succeed())
		Eventually(func() []string { return eventReasons(vg) }).Should(ContainElement("LockspaceStarted"))
		managers := map[string]bool{}
		for _, mf := range vg.ManagedFields {
			managers[mf.Manager] = true
		}
		Expect(managers).To(HaveKey("sharedlvm-agent/node-1"))
		Expect(managers).To(HaveKey("sharedlvm-agent/node-2"))
		Expect(managers).To(HaveKey("sharedlvm-agent-vgreport"))
	})

	It("costs a fixed set of commands per cycle (sanlock status and hosts, one LVM report), whatever the number of LVs", func() {
		h := storage.Host(2)
		// Past the agent's first cycle, which also looks for devices a kill left offline
		// (dmsetup; run 3 of a local loop saw it here right after another spec restarted
		// the agents): two reports, then the window.
		h.ResetCalls()
		Eventually(func() int {
			n := 0
			for _, c := range h.Calls() {
				if len(c) > 1 && c[0] == "lvm" && c[1] == "fullreport" {
					n++
				}
			}
			return n
		}).Should(BeNumerically(">=", 2))
		h.ResetCalls()
		Eventually(func() int { return len(h.Calls()) }).Should(BeNumerically(">=", 4))
		counts := map[string]int{}
		for _, c := range h.Calls() {
			counts[strings.Join(c[:min(3, len(c))], " ")]++
		}
		Expect(counts["sanlock client status"]).To(BeNumerically("<=", counts["lvm fullreport --reportformat"]+1))
		for k := range counts {
			Expect(k).To(Or(HavePrefix("sanlock client status"), HavePrefix("sanlock client gets"), HavePrefix("lvm fullreport"), HavePrefix("lvmconfig"), HavePrefix("lvmlockctl --info")), "unexpected per-cycle command %q", k)
		}
	})

	It("refuses to start the lockspace on a node configured with a host_id allocated to another node, naming the collision", func() {
		Expect(k8s.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-dup", Labels: map[string]string{nodeSel: "yes"}}})).To(Succeed())
		storage.Host(3)
		startAgent("node-dup", claimsHostID{Executor: storage.Host(3), id: 1})
		defer stop("node-dup")
		vg := &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: vgCR}}
		Eventually(func(g Gomega) {
			get(vg)
			var dup *v1.NodeLockspaceStatus
			for i := range vg.Status.Nodes {
				if vg.Status.Nodes[i].Node == "node-dup" {
					dup = &vg.Status.Nodes[i]
				}
			}
			g.Expect(dup).NotTo(BeNil())
			g.Expect(dup.LockspaceStarted).To(BeFalse())
			g.Expect(dup.Reason).To(Equal(v1.LockspaceHostIDConflict))
			g.Expect(dup.HostID).NotTo(Equal(int32(1)), "node-dup was allocated another id")
			g.Expect(dup.Message).To(ContainSubstring("lvmlocal.conf sets local/host_id = 1"))
			g.Expect(dup.Message).To(ContainSubstring("1 is node node-1's: set local/host_id = %d there", dup.HostID))
			c := meta.FindStatusCondition(vg.Status.Conditions, v1.ConditionHostIDConflict)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(c.Message).To(ContainSubstring("node node-dup: /etc/lvm/lvmlocal.conf sets local/host_id = 1"))
		}).Should(Succeed())
		Eventually(func() []string { return eventReasons(vg) }).Should(ContainElement("DuplicateHostID"))
		for _, c := range storage.Host(3).Calls() {
			Expect(c).NotTo(ContainElement("--lockstart"), "the duplicate node ran lockstart")
		}
		// Clean up: the node goes away, and so does its entry's effect.
		Expect(k8s.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-dup"}})).To(Succeed())
	})
})

// claimsHostID makes a node claim a host_id in lvmlocal.conf (a misconfigured node).
type claimsHostID struct {
	executor.Executor
	id int
}

func (c claimsHostID) Run(ctx context.Context, argv []string) (executor.Result, error) {
	if argv[0] == "lvmconfig" {
		return executor.Result{Stdout: []byte(fmt.Sprintf("host_id=%d\n", c.id))}, nil
	}
	return c.Executor.Run(ctx, argv)
}

var _ = Describe("SharedVolume lifecycle and the lock rule", Ordered, func() {
	var vol *v1.SharedVolume
	var lvName, uuid string

	It("creates the LV tagged with the CR's UID, unlocked, rounded up to whole extents", func() {
		vol = volume("volume-0001", "10Mi")
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		available(vol)
		st := get(vol).Status
		lvName, uuid = st.LVName, st.LVUUID
		Expect(st.LVName).To(Equal("volume-0001"))
		Expect(st.VGName).To(Equal(vgName))
		Expect(st.Path).To(Equal("/dev/vg1/volume-0001"))
		Expect(st.AllocatedSize.String()).To(Equal("12Mi"), "10Mi rounded up to 4Mi extents")
		Expect(st.Lock.Mode).To(Equal(v1.LockNone))
		Expect(meta.IsStatusConditionTrue(st.Conditions, v1.ConditionProvisioned)).To(BeTrue())
		lvs := lvsNamed("volume-0001")
		Expect(lvs).To(HaveLen(1))
		Expect(lvs[0].Tags).To(ConsistOf(v1.OwnerTag(string(vol.UID)), v1.TagManaged))
		Expect(lvs[0].Holders).To(BeEmpty(), "a new volume holds no lock anywhere")
		Expect(eventReasons(vol)).To(ContainElement("Created"))
	})

	It("attach on node-1: exclusive there, and node-2 is refused by the lock manager", func() {
		a := attachment("volume-0001-node-1", "volume-0001", "node-1", v1.PurposeInstance)
		Expect(k8s.Create(ctx, a)).To(Succeed())
		attached(a, v1.LockExclusive)
		Expect(get(a).Status.DevicePath).To(Equal("/dev/vg1/volume-0001"))
		Expect(a.Status.LVUUID).To(Equal(uuid))
		Expect(holders(lvName)).To(Equal(map[int]string{1: "ex"}))
		res, err := storage.Host(2).Run(ctx, []string{"lvchange", "-aey", vgName + "/" + lvName})
		Expect(err).NotTo(HaveOccurred())
		Expect(res.ExitCode).To(Equal(5))
		Eventually(func(g Gomega) {
			get(vol)
			g.Expect(vol.Status.Phase).To(Equal(v1.VolumeInUse))
			g.Expect(vol.Status.Lock.Mode).To(Equal(v1.LockExclusive))
			g.Expect(vol.Status.Lock.Holders).To(Equal([]string{"node-1"}))
		}).Should(Succeed())
	})

	It("live migration to node-2: the holder converts ex→sh before the newcomer activates sh", func() {
		since := len(storage.Log())
		b := attachment("volume-0001-node-2", "volume-0001", "node-2", v1.PurposeMigrationTarget)
		Expect(k8s.Create(ctx, b)).To(Succeed())
		attached(b, v1.LockShared)
		attached(&v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: "volume-0001-node-1"}}, v1.LockShared)
		Expect(holders(lvName)).To(Equal(map[int]string{1: "sh", 2: "sh"}))
		Expect(lockChangesOn(lvName, since)).To(Equal([]string{"1:sy", "2:sy"}))
		Eventually(func() []string { return get(vol).Status.Lock.Holders }).Should(Equal([]string{"node-1", "node-2"}))
		Expect(vol.Status.Lock.Mode).To(Equal(v1.LockShared))
		By("kubectl's columns are plain text")
		Eventually(func() (map[string]string, error) { return env.TableRow("sharedvolumes", "cloud", "volume-0001") }).Should(
			HaveKeyWithValue("HOLDERS", "node-1,node-2"))
	})

	It("source detaches: it releases before the stayer converts sh→ex", func() {
		since := len(storage.Log())
		a := &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: "volume-0001-node-1"}}
		Expect(k8s.Delete(ctx, a)).To(Succeed())
		Eventually(func() bool { return gone(a) }).Should(BeTrue())
		b := &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: "volume-0001-node-2"}}
		attached(b, v1.LockExclusive)
		Expect(holders(lvName)).To(Equal(map[int]string{2: "ex"}))
		Expect(lockChangesOn(lvName, since)).To(Equal([]string{"1:n", "2:ey"}))
	})

	It("extends on the exclusive holder", func() {
		get(vol)
		vol.Spec.Size = resource.MustParse("20Mi")
		Expect(k8s.Update(ctx, vol)).To(Succeed())
		Eventually(func() string { return get(vol).Status.AllocatedSize.String() }).Should(Equal("20Mi"))
		var extendHost int
		for _, c := range storage.Log() {
			if c.Argv[0] == "lvextend" && c.Exit == 0 {
				extendHost = c.Host
			}
		}
		Expect(extendHost).To(Equal(2), "the holder extends")
		Expect(eventReasons(vol)).To(ContainElement("Extended"))
	})

	It("refuses to delete while attached, then wipes and removes the LV once detached", func() {
		storage.WriteData(vgName, lvName)
		Expect(k8s.Delete(ctx, vol)).To(Succeed())
		Eventually(func(g Gomega) {
			get(vol)
			c := meta.FindStatusCondition(vol.Status.Conditions, v1.ConditionDeletionBlocked)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal("Attached"))
		}).Should(Succeed())
		Eventually(func() []string { return eventReasons(vol) }).Should(ContainElement("DeleteBlocked"))
		Expect(lvsNamed("volume-0001")).To(HaveLen(1))

		b := &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: "volume-0001-node-2"}}
		Expect(k8s.Delete(ctx, b)).To(Succeed())
		Eventually(func() bool { return gone(vol) }).Should(BeTrue())
		Expect(lvsNamed("volume-0001")).To(BeEmpty())
		Expect(storage.RemovedDirty).To(BeEmpty(), "an LV was removed without being wiped")
		var wiped bool
		for _, c := range storage.Log() {
			if c.Argv[0] == "blkdiscard" && c.Argv[len(c.Argv)-1] == "/dev/vg1/volume-0001" && c.Exit == 0 {
				wiped = true
			}
		}
		Expect(wiped).To(BeTrue())
	})
})

var _ = Describe("bad input and failures get conditions and Events", func() {
	It("reports an LV name collision and never touches the other LV", func() {
		res, err := storage.Host(1).Run(ctx, []string{"lvcreate", "-y", "-an", "-Zn", "-n", "taken", "-L", "4194304b", vgName})
		Expect(err).NotTo(HaveOccurred())
		Expect(res.ExitCode).To(Equal(0))
		vol := volume("collides", "4Mi")
		vol.Spec.LVName = "taken"
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		Eventually(func(g Gomega) {
			c := meta.FindStatusCondition(get(vol).Status.Conditions, v1.ConditionProvisioned)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal("AlreadyExists"))
			g.Expect(c.Message).To(ContainSubstring("set spec.lvName to another name"))
		}).Should(Succeed())
		Eventually(func() []string { return eventReasons(vol) }).Should(ContainElement("AlreadyExists"))
		Expect(lvsNamed("taken")).To(HaveLen(1))
		Expect(lvsNamed("taken")[0].Tags).To(BeEmpty())
		Expect(get(vol).Status.Phase).NotTo(Equal(v1.VolumeAvailable))
		Expect(k8s.Delete(ctx, vol)).To(Succeed())
		Eventually(func() bool { return gone(vol) }).Should(BeTrue())
		Expect(lvsNamed("taken")).To(HaveLen(1), "deleting the volume must not remove an LV it does not own")
	})

	It("reports a VG out of space", func() {
		vol := volume("too-big", "100Gi")
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		Eventually(func(g Gomega) {
			c := meta.FindStatusCondition(get(vol).Status.Conditions, v1.ConditionProvisioned)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal("InsufficientSpace"))
			g.Expect(c.Message).To(ContainSubstring("insufficient free space"))
		}).Should(Succeed())
		Eventually(func() []string { return eventReasons(vol) }).Should(ContainElement("InsufficientSpace"))
		Expect(k8s.Delete(ctx, vol)).To(Succeed())
		Eventually(func() bool { return gone(vol) }).Should(BeTrue())
	})

	It("keeps an attachment to a node without an agent pending, with the reason", func() {
		vol := volume("no-agent", "4Mi")
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		available(vol)
		a := attachment("no-agent-ghost", "no-agent", "ghost-node", v1.PurposeInstance)
		Expect(k8s.Create(ctx, a)).To(Succeed())
		Eventually(func(g Gomega) {
			get(a)
			g.Expect(a.Status.Phase).To(Equal(v1.AttachmentPending))
			c := meta.FindStatusCondition(a.Status.Conditions, v1.ConditionReady)
			g.Expect(c.Reason).To(Equal("NodeNotReady"))
			g.Expect(c.Message).To(ContainSubstring("node ghost-node does not exist"))
		}).Should(Succeed())
		Expect(k8s.Delete(ctx, a)).To(Succeed())
		Eventually(func() bool { return gone(a) }).Should(BeTrue())
		Expect(k8s.Delete(ctx, vol)).To(Succeed())
		Eventually(func() bool { return gone(vol) }).Should(BeTrue())
	})

	It("reports a lock held by another host (sanlock refuses) and takes it once released", func() {
		vol := volume("contended", "4Mi")
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		available(vol)
		// A host that runs no agent of the product holds the LV (an admin's lvchange there):
		// nothing releases it behind the test's back, so the refusal is certain.
		const outsider = 9
		storage.Host(outsider)
		storage.LockstartAll(vgName, outsider)
		res, _ := storage.Host(outsider).Run(ctx, []string{"lvchange", "-aey", vgName + "/contended"})
		Expect(res.ExitCode).To(Equal(0))
		a := attachment("contended-node-1", "contended", "node-1", v1.PurposeInstance)
		Expect(k8s.Create(ctx, a)).To(Succeed())
		// The refusal is visible as an Event (and as the LockApplied condition with reason
		// LockHeldByOtherHost) while the other host holds it.
		Eventually(func() []string { return eventNotes(a, "LockRefused") }).Should(ContainElement(
			ContainSubstring("sanlock refused: another host holds it")))
		res, _ = storage.Host(outsider).Run(ctx, []string{"lvchange", "-an", vgName + "/contended"})
		Expect(res.ExitCode).To(Equal(0))
		Eventually(func() map[int]string { return holders("contended") }).Should(Equal(map[int]string{1: "ex"}))
		attached(a, v1.LockExclusive)
		// Drift: once node-1 lets go, an admin activates it on host 2, where an agent runs and
		// no attachment asks for it: node-2's agent releases it and says so.
		Expect(k8s.Delete(ctx, a)).To(Succeed())
		Eventually(func() bool { return gone(a) }).Should(BeTrue())
		res, _ = storage.Host(2).Run(ctx, []string{"lvchange", "-aey", vgName + "/contended"})
		Expect(res.ExitCode).To(Equal(0))
		Eventually(func() []string { return eventReasons(vol) }).Should(ContainElement("LockDrift"))
		Eventually(func(g Gomega) {
			c := meta.FindStatusCondition(get(vol).Status.Conditions, v1.ConditionLockDrift)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal("Repaired"))
			g.Expect(c.Message).To(ContainSubstring("node node-2 held a lock on LV vg1/contended with no attachment; released it"))
		}).Should(Succeed())
		Eventually(func() map[int]string { return holders("contended") }).Should(BeEmpty())
		Expect(k8s.Delete(ctx, vol)).To(Succeed())
		Eventually(func() bool { return gone(vol) }).Should(BeTrue())
	})
})

var _ = Describe("copy attachments", func() {
	It("behave like any attachment and release the lock when deleted", func() {
		vol := volume("imaged", "4Mi")
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		available(vol)
		c := attachment("imaged-copy", "imaged", "node-2", v1.PurposeCopy)
		Expect(k8s.Create(ctx, c)).To(Succeed())
		attached(c, v1.LockExclusive)
		Expect(k8s.Delete(ctx, c)).To(Succeed())
		Eventually(func() bool { return gone(c) }).Should(BeTrue())
		Expect(holders("imaged")).To(BeEmpty())
		Expect(k8s.Delete(ctx, vol)).To(Succeed())
		Eventually(func() bool { return gone(vol) }).Should(BeTrue())
	})
})

var _ client.Object = &v1.SharedVolume{}
