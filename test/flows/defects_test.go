package flows_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sharedlvm/sharedlvm-operator/agent"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/heartbeat"
)

func readyCond(o client.Object, conds func() []metav1.Condition) *metav1.Condition {
	get(o)
	return meta.FindStatusCondition(conds(), v1.ConditionReady)
}

func attCond(a *v1.VolumeAttachment) *metav1.Condition {
	return readyCond(a, func() []metav1.Condition { return a.Status.Conditions })
}

func vgCond(vg *v1.VolumeGroup, typ string) *metav1.Condition {
	get(vg)
	return meta.FindStatusCondition(vg.Status.Conditions, typ)
}

// statusDump renders a VolumeGroup's status, with the heartbeats' view of each node, for a
// failure message.
func statusDump(vg *v1.VolumeGroup) string {
	b, _ := json.Marshal(vg.Status)
	var leases []string
	for _, n := range []string{"node-1", "node-2"} {
		var l coordv1.Lease
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: heartbeat.DefaultNamespace, Name: heartbeat.LeaseName(n)}, &l); err == nil && l.Spec.RenewTime != nil {
			leases = append(leases, fmt.Sprintf("%s renewed %v ago", n, time.Since(l.Spec.RenewTime.Time).Round(time.Millisecond)))
		}
	}
	return fmt.Sprintf("%s; heartbeats: %v; creation vgcreate calls: %v", b, leases, vgcreateCalls())
}

func vgcreateCalls() []string {
	var out []string
	for _, c := range storage.Log() {
		if c.Argv[0] == "vgcreate" {
			out = append(out, fmt.Sprintf("host %d: %v", c.Host, c.Argv))
		}
	}
	return out
}

func del(o client.Object) {
	Expect(client.IgnoreNotFound(k8s.Delete(ctx, o))).To(Succeed())
	Eventually(func() bool { return gone(o) }).Should(BeTrue(), "%s gone", o.GetName())
}

// Regression tests of issue #14, each failing on the main it was filed against.
var _ = Describe("Defects of #14", Ordered, func() {
	It("1. takes over from a host sanlock declares DEAD although its agent still runs, and not a moment earlier", func() {
		vol := volume("dh", "4Mi")
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		multi := volume("dh-multi", "4Mi")
		multi.Spec.MultiAttach = true
		Expect(k8s.Create(ctx, multi)).To(Succeed())
		available(vol)
		available(multi)
		old := attachment("dh-node-1", "dh", "node-1", v1.PurposeInstance)
		Expect(k8s.Create(ctx, old)).To(Succeed())
		attached(old, v1.LockExclusive)
		m1, m2 := attachment("dh-multi-node-1", "dh-multi", "node-1", v1.PurposeInstance), attachment("dh-multi-node-2", "dh-multi", "node-2", v1.PurposeInstance)
		Expect(k8s.Create(ctx, m1)).To(Succeed())
		Expect(k8s.Create(ctx, m2)).To(Succeed())
		attached(m1, v1.LockShared)
		attached(m2, v1.LockShared)

		By("node-1's storage dies; its agent keeps running and heartbeating")
		storage.Crash(1)
		Expect(k8s.Delete(ctx, old)).To(Succeed())
		evac := attachment("dh-node-2", "dh", "node-2", v1.PurposeInstance)
		Expect(k8s.Create(ctx, evac)).To(Succeed())
		Eventually(func(g Gomega) {
			c := attCond(evac)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal("WaitingForDeadHost"))
			g.Expect(c.Message).To(ContainSubstring("node-1 (host_id 1) holds the lease (Exclusive); sanlock on node-2 reports it FAIL since "))
		}).Should(Succeed())
		var l coordv1.Lease
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: heartbeat.DefaultNamespace, Name: heartbeat.LeaseName("node-1")}, &l)).To(Succeed())
		Expect(time.Since(l.Spec.RenewTime.Time)).To(BeNumerically("<", 10*time.Second), "node-1's agent is alive")
		// FAIL is not DEAD: nothing moves.
		Consistently(func(g Gomega) {
			g.Expect(holders("dh")).To(Equal(map[int]string{1: "ex"}))
			g.Expect(get(evac).Status.DesiredLock).To(Equal(v1.LockNone))
			g.Expect(gone(old)).To(BeFalse())
		}, "3s").Should(Succeed())

		By("sanlock declares node-1's host_id DEAD: the lease is released and taken within seconds")
		storage.DeclareDead(1)
		dead := time.Now()
		attached(evac, v1.LockExclusive)
		took := time.Since(dead)
		GinkgoWriter.Printf("takeover %v after sanlock's DEAD verdict (agent running)\n", took)
		Expect(holders("dh")).To(Equal(map[int]string{2: "ex"}))
		Eventually(func() bool { return gone(old) }).Should(BeTrue(), "the dead host's attachment is finalized: sanlock released its lease")

		By("the dead host's remaining attachment says its host lost the lockspace")
		Eventually(func(g Gomega) {
			c := attCond(m1)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal("HostLostLockspace"))
			g.Expect(c.Message).To(ContainSubstring("sanlock on node-2 declares host_id 1 DEAD"))
		}).Should(Succeed())
		Eventually(func() []string { return eventReasons(m1) }).Should(ContainElement("HostLostLockspace"))
		attached(m2, v1.LockShared)

		By("node-1 comes back")
		del(m1)
		stop("node-1")
		storage.Reboot(1)
		// The kubelet reports the new boot ID when the node comes back (whatever boot an
		// earlier spec left the Node at): the agent restores for that boot.
		node1 := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}
		Eventually(func() error {
			get(node1)
			node1.Status.NodeInfo.BootID = storage.CurrentBootID(1)
			return k8s.Status().Update(ctx, node1)
		}).Should(Succeed())
		startAgent("node-1", storage.Host(1))
		Eventually(func() string {
			return get(&v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: vgCR}}).Status.NodesReady
		}).Should(Equal("2/2"))
		Eventually(func() string { return get(node1).Annotations[v1.AnnotationRestoredBootID] }).Should(Equal(storage.CurrentBootID(1)))
		for _, o := range []client.Object{evac, m2, vol, multi} {
			del(o)
		}
	})

	It("2. keeps a VolumeGroup while volumes live in it, never plans a node that does not exist, and never runs vgremove or lockstop", func() {
		storage.CreateVG("vgdel", map[string]int64{"/dev/vdd": 1 << 30})
		vg := &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: "vgdel"}, Spec: v1.VolumeGroupSpec{VGName: "vgdel", PVs: []v1.DevicePath{"/dev/vdd"},
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{nodeSel: "yes"}}}}
		Expect(k8s.Create(ctx, vg)).To(Succeed())
		Eventually(func() string { return get(vg).Status.NodesReady }).Should(Equal("2/2"))
		vol := volume("in-vgdel", "4Mi")
		vol.Spec.VolumeGroup = "vgdel"
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		available(vol)
		a := attachment("in-vgdel-node-2", "in-vgdel", "node-2", v1.PurposeInstance)
		Expect(k8s.Create(ctx, a)).To(Succeed())
		attached(a, v1.LockExclusive)
		since := len(storage.Log())

		Expect(k8s.Delete(ctx, vg)).To(Succeed())
		Eventually(func(g Gomega) {
			c := vgCond(vg, v1.ConditionDeletionBlocked)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal("VolumesExist"))
			g.Expect(c.Message).To(ContainSubstring("cloud/in-vgdel"))
		}).Should(Succeed())
		Eventually(func() []string { return eventReasons(vg) }).Should(ContainElement("DeleteBlocked"))

		ghost := attachment("in-vgdel-nosuchnode", "in-vgdel", "nosuchnode", v1.PurposeMigrationTarget)
		Expect(k8s.Create(ctx, ghost)).To(Succeed())
		Eventually(func(g Gomega) {
			c := attCond(ghost)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal("NodeNotReady"))
			g.Expect(c.Message).To(ContainSubstring("node nosuchnode does not exist"))
		}).Should(Succeed())
		Consistently(func(g Gomega) {
			g.Expect(get(a).Status.DesiredLock).To(Equal(v1.LockExclusive))
			g.Expect(holders("in-vgdel")).To(BeNil()) // not in vg1
			g.Expect(gone(vg)).To(BeFalse())
		}, "3s").Should(Succeed())
		for _, l := range storage.LVs("vgdel") {
			if l.Name == "in-vgdel" {
				Expect(l.Holders).To(Equal(map[int]string{2: "ex"}), "the holder was not converted to shared")
			}
		}

		del(ghost)
		del(a)
		del(vol)
		Eventually(func() bool { return gone(vg) }).Should(BeTrue(), "released once no volume is left")
		for _, c := range storage.Log()[since:] {
			line := strings.Join(c.Argv, " ")
			Expect(line).NotTo(ContainSubstring("vgremove"))
			Expect(line).NotTo(ContainSubstring("--lockstop"))
		}
		Expect(storage.LVs("vgdel")).To(BeEmpty(), "the VG stays on disk")
	})

	It("3. live-migrates A→B→A→B through the CRs with no edit, and a refused attachment recovers by itself", func() {
		vol := volume("mig", "4Mi")
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		available(vol)
		first := attachment("mig-0", "mig", "node-1", v1.PurposeInstance)
		Expect(k8s.Create(ctx, first)).To(Succeed())
		attached(first, v1.LockExclusive)
		from, to := 1, 2
		current := []*v1.VolumeAttachment{first}
		for i := 1; i <= 3; i++ {
			target := attachment(fmt.Sprintf("mig-%d", i), "mig", fmt.Sprintf("node-%d", to), v1.PurposeMigrationTarget)
			Expect(k8s.Create(ctx, target)).To(Succeed())
			attached(target, v1.LockShared)
			Eventually(func() map[int]string { return holders("mig") }).Should(Equal(map[int]string{from: "sh", to: "sh"}))
			for _, a := range current {
				del(a)
			}
			attached(target, v1.LockExclusive)
			Eventually(func() map[int]string { return holders("mig") }).Should(Equal(map[int]string{to: "ex"}))
			current = []*v1.VolumeAttachment{target}
			from, to = to, from
		}
		By("a second instance elsewhere fails, then proceeds once the holder is gone")
		other := attachment("mig-other", "mig", fmt.Sprintf("node-%d", to), v1.PurposeInstance)
		Expect(k8s.Create(ctx, other)).To(Succeed())
		Eventually(func() v1.AttachmentPhase { return get(other).Status.Phase }).Should(Equal(v1.AttachmentFailed))
		del(current[0])
		attached(other, v1.LockExclusive)
		Expect(holders("mig")).To(Equal(map[int]string{to: "ex"}))
		del(other)
		del(vol)
	})

	It("4. serves only the older of two VolumeGroups claiming one VG or PV, and shows LVM's vgcreate refusal on the VolumeGroup", func() {
		sel := &metav1.LabelSelector{MatchLabels: map[string]string{nodeSel: "yes"}}
		dupName := &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: "dup-name"}, Spec: v1.VolumeGroupSpec{VGName: vgName, PVs: []v1.DevicePath{"/dev/vdq"}, NodeSelector: sel}}
		dupPV := &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: "dup-pv"}, Spec: v1.VolumeGroupSpec{VGName: "vgdup", PVs: []v1.DevicePath{"/dev/vda"}, NodeSelector: sel}}
		for _, vg := range []*v1.VolumeGroup{dupName, dupPV} {
			Expect(k8s.Create(ctx, vg)).To(Succeed())
		}
		for vg, what := range map[*v1.VolumeGroup]string{dupName: "VG name vg1", dupPV: "PV /dev/vda"} {
			Eventually(func(g Gomega) {
				c := vgCond(vg, v1.ConditionReady)
				g.Expect(c).NotTo(BeNil())
				g.Expect(c.Reason).To(Equal("VolumeGroupConflict"))
				g.Expect(c.Message).To(ContainSubstring("VolumeGroup vg1 already claims " + what))
			}).Should(Succeed())
			Eventually(func() []string { return eventReasons(vg) }).Should(ContainElement("VolumeGroupConflict"))
		}
		vol := volume("in-dup", "4Mi")
		vol.Spec.VolumeGroup = "dup-name"
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		Eventually(func(g Gomega) {
			c := readyCond(vol, func() []metav1.Condition { return vol.Status.Conditions })
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal("VolumeGroupConflict"))
		}).Should(Succeed())
		Consistently(func(g Gomega) {
			g.Expect(get(dupName).Status.Nodes).To(BeEmpty(), "no agent serves it")
			g.Expect(get(dupPV).Status.Nodes).To(BeEmpty())
			g.Expect(get(vol).Status.ExecutorNode).To(BeEmpty())
		}, "3s").Should(Succeed())
		get(&v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: vgCR}})
		Expect(meta.IsStatusConditionTrue(get(&v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: vgCR}}).Status.Conditions, v1.ConditionReady)).To(BeTrue(), "the older one is still served")
		del(vol)
		del(dupName)
		del(dupPV)

		By("a PV that LVM already has in another VG: the VolumeGroup shows vgcreate's refusal; one node tried")
		storage.CreateVG("vgother", map[string]int64{"/dev/vdw": 1 << 30})
		since := len(storage.Log())
		taken := &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: "taken"}, Spec: v1.VolumeGroupSpec{VGName: "vgnew", PVs: []v1.DevicePath{"/dev/vdw"}, NodeSelector: sel}}
		Expect(k8s.Create(ctx, taken)).To(Succeed())
		Eventually(func(g Gomega) {
			c := vgCond(taken, v1.ConditionReady)
			g.Expect(c).NotTo(BeNil())
			// On failure, what the operator and the agents saw (CI timed out here twice: the
			// operator moved the create to node-1 on a stale read after node-2 had run it;
			// controllers/vgcreatenode_test.go).
			g.Expect(c.Reason).To(Equal("VGCreateFailed"), "status of %s: %s", taken.Name, statusDump(taken))
			g.Expect(c.Message).To(ContainSubstring("Physical volume '/dev/vdw' is already in volume group 'vgother'"))
		}).Should(Succeed())
		time.Sleep(5 * time.Second) // two report cycles
		tried := map[int]bool{}
		for _, c := range storage.Log()[since:] {
			if c.Argv[0] == "vgcreate" {
				tried[c.Host] = true
			}
		}
		Expect(tried).To(HaveLen(1), "exactly one node ran vgcreate")
		Expect(countEvents(taken, "VGCreateFailed")).To(Equal(1), "the same failure is evented once")
		del(taken)
	})

	It("5. runs exactly one vgcreate when two agents are told to create at the same instant (50 times)", func() {
		newAgent := func(n int) *agent.VolumeGroupAgent {
			name := fmt.Sprintf("node-%d", n)
			node := agent.NewNode(name, storage.Host(n))
			return &agent.VolumeGroupAgent{Client: k8s, APIReader: k8s, Node: node, Recorder: &events.FakeRecorder{},
				Claim:   &agent.VGCreateClaim{Client: k8s, Reader: k8s, Namespace: heartbeat.DefaultNamespace, Node: name},
				HostIDs: &agent.HostIDs{Reader: k8s, Namespace: heartbeat.DefaultNamespace, Node: node}}
		}
		agents := []*agent.VolumeGroupAgent{newAgent(1), newAgent(2)}
		for i := range 50 {
			vg := &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("race-%d", i)},
				Spec: v1.VolumeGroupSpec{VGName: v1.LVMVGName(fmt.Sprintf("race%d", i)), PVs: []v1.DevicePath{v1.DevicePath(fmt.Sprintf("/dev/race%d", i))}}}
			since := len(storage.Log())
			var wg sync.WaitGroup
			start := make(chan struct{})
			created, waiting := make([]bool, 2), make([]v1.LockspaceReason, 2)
			for j, a := range agents {
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer GinkgoRecover()
					<-start
					rep, reason, _ := a.CreateVG(ctx, vg)
					created[j], waiting[j] = rep != nil, reason
				}()
			}
			close(start)
			wg.Wait()
			n := 0
			for _, c := range storage.Log()[since:] {
				if c.Argv[0] == "vgcreate" && c.Argv[len(c.Argv)-2] == string(vg.Spec.VGName) {
					n++
				}
			}
			Expect(n).To(Equal(1), "round %d: vgcreate ran %d times", i, n)
			Expect(created[0] != created[1]).To(BeTrue(), "round %d: one creator (%v)", i, created)
			Expect(waiting).To(ContainElement(v1.LockspaceWaitingForVGCreateClaim))
		}

		By("a claim held by a node that stopped renewing is taken over only once it expired")
		claim := &agent.VGCreateClaim{Client: k8s, Reader: k8s, Namespace: heartbeat.DefaultNamespace, Node: "node-1", TTL: time.Minute}
		l := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: heartbeat.DefaultNamespace, Name: v1.VGCreateClaimName("orphan")},
			Spec: coordv1.LeaseSpec{HolderIdentity: ptr.To("node-gone"), LeaseDurationSeconds: ptr.To[int32](60), RenewTime: ptr.To(metav1.NewMicroTime(time.Now()))}}
		Expect(k8s.Create(ctx, l)).To(Succeed())
		_, err := claim.Acquire(ctx, "orphan")
		var held *agent.ClaimHeldError
		Expect(err).To(BeAssignableToTypeOf(held))
		Expect(err.Error()).To(ContainSubstring("node node-gone holds the create claim"))
		get(l)
		l.Spec.RenewTime = ptr.To(metav1.NewMicroTime(time.Now().Add(-2 * time.Minute)))
		Expect(k8s.Update(ctx, l)).To(Succeed())
		got, err := claim.Acquire(ctx, "orphan")
		Expect(err).NotTo(HaveOccurred())
		Expect(*got.Spec.HolderIdentity).To(Equal("node-1"))
		Expect(claim.Fence(ctx, got)).To(Succeed())
		// Someone else writes it after: the fence refuses.
		other := &agent.VGCreateClaim{Client: k8s, Reader: k8s, Namespace: heartbeat.DefaultNamespace, Node: "node-1", TTL: time.Minute}
		_, err = other.Acquire(ctx, "orphan") // a renewal bumps the version
		Expect(err).NotTo(HaveOccurred())
		Expect(claim.Fence(ctx, got)).To(MatchError(ContainSubstring("changed since this node took it")))
	})
})

func countEvents(o client.Object, reason string) int {
	return len(eventNotes(o, reason))
}
