package flows_test

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/roles"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

var _ = Describe("node reboot: locks restored before workloads start", Ordered, func() {
	It("restores every attachment's lock in batches, records the boot, and releases wait-locks", func() {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}
		Eventually(func() string { return get(node).Annotations[v1.AnnotationRestoredBootID] }).Should(Equal(storage.CurrentBootID(1)))
		Expect(node.Labels[v1.LabelLocksRestored]).To(Equal("true"))

		// r1, r2 exclusive on node-1; r3 shared by node-1 and node-2.
		for _, n := range []string{"r1", "r2", "r3"} {
			vol := volume(n, "4Mi")
			vol.Spec.MultiAttach = n == "r3"
			Expect(k8s.Create(ctx, vol)).To(Succeed())
			available(vol)
			Expect(k8s.Create(ctx, attachment(n+"-node-1", n, "node-1", v1.PurposeInstance))).To(Succeed())
		}
		Expect(k8s.Create(ctx, attachment("r3-node-2", "r3", "node-2", v1.PurposeInstance))).To(Succeed())
		for _, n := range []string{"r1", "r2"} {
			attached(&v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: n + "-node-1"}}, v1.LockExclusive)
		}
		attached(&v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: "r3-node-1"}}, v1.LockShared)
		attached(&v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: "r3-node-2"}}, v1.LockShared)

		By("node-1 loses power and boots again: no lockspace, no lease")
		stop("node-1")
		storage.Crash(1)
		storage.Reboot(1)
		newBoot := storage.CurrentBootID(1)
		Expect(holders("r1")).To(BeEmpty())
		Expect(holders("r3")).To(Equal(map[int]string{2: "sh"}))
		// The kubelet reports the new boot ID when the node comes back.
		Eventually(func() error {
			get(node)
			node.Status.NodeInfo.BootID = newBoot
			return k8s.Status().Update(ctx, node)
		}).Should(Succeed())

		By("nova-compute's init container waits")
		out := &syncBuffer{}
		waited := make(chan error, 1)
		go func() {
			defer GinkgoRecover()
			// A retry longer than the timeout: only its watch of the Node can return it.
			waited <- roles.WaitLocks(ctx, k8s, "node-1", newBoot, time.Minute, 10*time.Minute, out)
		}()
		Consistently(waited, "1s").ShouldNot(Receive())
		Expect(out.String()).To(ContainSubstring("waiting for node node-1 to restore its locks for boot " + newBoot))

		By("a new attachment to the node waits with a condition")
		Expect(k8s.Create(ctx, volume("r4", "4Mi"))).To(Succeed())
		available(&v1.SharedVolume{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: "r4"}})
		r4 := attachment("r4-node-1", "r4", "node-1", v1.PurposeInstance)
		Expect(k8s.Create(ctx, r4)).To(Succeed())
		Eventually(func(g Gomega) {
			c := meta.FindStatusCondition(get(r4).Status.Conditions, v1.ConditionReady)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal("NodeNotReady"))
			g.Expect(c.Message).To(ContainSubstring("rebooted"))
		}).Should(Succeed())

		By("the agent starts: the startup taint back while it restores (the kubelet sets it only when it registers a Node), restore, then record")
		Expect(v1.StartupTaint(get(node))).To(BeNil(), "an existing Node: the kubelet did not taint it again")
		wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: roles.Scheme()})
		Expect(err).NotTo(HaveOccurred())
		w, err := wc.Watch(ctx, &corev1.NodeList{}, client.MatchingFields{"metadata.name": "node-1"})
		Expect(err).NotTo(HaveOccurred())
		tainted := make(chan bool, 1)
		go func() {
			defer GinkgoRecover()
			seen := false
			defer func() { tainted <- seen }()
			for ev := range w.ResultChan() {
				if n, ok := ev.Object.(*corev1.Node); ok {
					seen = seen || (v1.StartupTaint(n) != nil && v1.StartupTaint(n).Effect == corev1.TaintEffectNoSchedule)
					if seen && n.Annotations[v1.AnnotationRestoredBootID] == newBoot {
						return
					}
				}
			}
		}()
		// The join takes a while (a real one waits for the old delta lease): the report
		// cycle must leave the node's LVM to the restore meanwhile.
		storage.SetHooks(nil, func(host int, argv []string, _ executor.Result) {
			if host == 1 && strings.Join(argv, " ") == "vgchange --config local/host_id=1 --lockstart "+vgName {
				time.Sleep(1500 * time.Millisecond)
			}
		})
		defer storage.SetHooks(nil, nil)
		since := len(storage.Log())
		startAgent("node-1", storage.Host(1))
		Eventually(waited).Should(Receive(BeNil()))
		storage.SetHooks(nil, nil)
		w.Stop()
		Expect(<-tainted).To(BeTrue(), "the agent tainted the node while restoring")
		Expect(v1.StartupTaint(get(node))).To(BeNil(), "and removed the taint once restored")
		Expect(out.String()).To(ContainSubstring("restored its locks for boot " + newBoot))
		get(node)
		Expect(node.Labels[v1.LabelLocksRestored]).To(Equal("true"))
		Expect(node.Annotations[v1.AnnotationRestoredBootID]).To(Equal(newBoot))
		var cond *corev1.NodeCondition
		for i := range node.Status.Conditions {
			if node.Status.Conditions[i].Type == v1.NodeConditionLocksRestored {
				cond = &node.Status.Conditions[i]
			}
		}
		Expect(cond).NotTo(BeNil())
		Expect(cond.Status).To(Equal(corev1.ConditionTrue))
		Expect(cond.Message).To(ContainSubstring("3 attachment(s) re-activated in 2 batch(es)"))
		Expect(holders("r1")).To(Equal(map[int]string{1: "ex"}))
		Expect(holders("r2")).To(Equal(map[int]string{1: "ex"}))
		Expect(holders("r3")).To(Equal(map[int]string{1: "sh", 2: "sh"}))

		// Batched: lockstart first, then one lvchange per (VG, mode), before anything else.
		var lockCalls []string
		for _, c := range storage.Log()[since:] {
			// Only vg1's: other specs may have left more VGs, whose lockstarts interleave.
			if c.Host == 1 && (c.Argv[0] == "lvchange" || c.Argv[0] == "vgchange") && strings.Contains(strings.Join(c.Argv, " "), vgName) {
				lockCalls = append(lockCalls, strings.Join(c.Argv, " "))
			}
		}
		Expect(len(lockCalls)).To(BeNumerically(">=", 3))
		Expect(lockCalls[0]).To(Equal("vgchange --config local/host_id=1 --lockstart vg1"), "the lockspace starts with the allocated host_id")
		Expect(lockCalls[1:3]).To(ConsistOf("lvchange -aey vg1/r1 vg1/r2", "lvchange -asy vg1/r3"))
		// No LVM report of node-1 until the restore's last lvchange: the VolumeGroup agent's
		// cycle waits while the node restores (its fullreports slowed the real restore).
		calls := storage.Log()[since:]
		last := -1
		for i, c := range calls {
			if line := strings.Join(c.Argv, " "); c.Host == 1 && (line == "lvchange -aey vg1/r1 vg1/r2" || line == "lvchange -asy vg1/r3") {
				last = i
			}
		}
		Expect(last).To(BeNumerically(">=", 0))
		var during []string
		for _, c := range calls[:last] {
			line := strings.Join(c.Argv, " ")
			if c.Host == 1 && (strings.HasPrefix(line, "lvm fullreport") || c.Argv[0] == "vgchange" && !strings.HasPrefix(line, "vgchange --config local/host_id=1 --lockstart")) {
				during = append(during, line)
			}
		}
		Expect(during).To(BeEmpty(), "node-1 ran LVM reports or VG changes of its own while it restored")

		By("then the waiting attachment proceeds")
		attached(r4, v1.LockExclusive)

		for _, n := range []string{"r1-node-1", "r2-node-1", "r3-node-1", "r3-node-2", "r4-node-1"} {
			a := &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: n}}
			Expect(k8s.Delete(ctx, a)).To(Succeed())
			Eventually(func() bool { return gone(a) }).Should(BeTrue())
		}
		for _, n := range []string{"r1", "r2", "r3", "r4"} {
			vol := &v1.SharedVolume{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: n}}
			Expect(k8s.Delete(ctx, vol)).To(Succeed())
			Eventually(func() bool { return gone(vol) }).Should(BeTrue())
		}
	})

	It("restores around LVs another host took meanwhile: one lvchange, one read of the locks, the taken ones named", func() {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}
		Eventually(func() string { return get(node).Annotations[v1.AnnotationRestoredBootID] }).Should(Equal(storage.CurrentBootID(1)))
		names := []string{"cf1", "cf2", "cf3", "cf4", "cf5", "cf6"}
		for _, n := range names {
			Expect(k8s.Create(ctx, volume(n, "4Mi"))).To(Succeed())
			available(&v1.SharedVolume{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: n}})
			Expect(k8s.Create(ctx, attachment(n+"-node-1", n, "node-1", v1.PurposeInstance))).To(Succeed())
		}
		for _, n := range names {
			attached(&v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: n + "-node-1"}}, v1.LockExclusive)
		}

		By("node-1 loses power; while it is away a host with no agent (an admin's lvchange) takes cf2 and cf5")
		stop("node-1")
		storage.Crash(1)
		storage.Reboot(1)
		newBoot := storage.CurrentBootID(1)
		const outsider = 9
		storage.Host(outsider)
		storage.LockstartAll(vgName, outsider)
		for _, n := range []string{"cf2", "cf5"} {
			res, _ := storage.Host(outsider).Run(ctx, []string{"lvchange", "-aey", vgName + "/" + n})
			Expect(res.ExitCode).To(Equal(0))
		}
		Eventually(func() error {
			get(node)
			node.Status.NodeInfo.BootID = newBoot
			return k8s.Status().Update(ctx, node)
		}).Should(Succeed())

		since := len(storage.Log())
		startAgent("node-1", storage.Host(1))
		Eventually(func() string { return get(node).Annotations[v1.AnnotationRestoredBootID] }).Should(Equal(newBoot))
		var cond *corev1.NodeCondition
		for i := range node.Status.Conditions {
			if node.Status.Conditions[i].Type == v1.NodeConditionLocksRestored {
				cond = &node.Status.Conditions[i]
			}
		}
		Expect(cond).NotTo(BeNil())
		Expect(cond.Status).To(Equal(corev1.ConditionTrue), "the rest is restored: the node is not held back by the taken ones")
		Expect(cond.Message).To(ContainSubstring("2 could not be re-activated (see their attachments): vg1/cf2: LV locked by other host: vg1/cf2; vg1/cf5: LV locked by other host: vg1/cf5"))
		Expect(eventNotes(node, "RestoreConflicts")).To(ContainElement(ContainSubstring("vg1/cf5: LV locked by other host")))
		for _, n := range []string{"cf1", "cf3", "cf4", "cf6"} {
			Expect(holders(n)).To(Equal(map[int]string{1: "ex"}), n)
		}
		for _, n := range []string{"cf2", "cf5"} {
			Expect(holders(n)).To(Equal(map[int]string{outsider: "ex"}), n)
		}
		By("no LV was retried one by one: each restored LV appears in exactly one lvchange of node-1")
		seen := map[string]int{}
		for _, c := range storage.Log()[since:] {
			if c.Host != 1 || c.Argv[0] != "lvchange" {
				continue
			}
			for _, a := range c.Argv[2:] {
				seen[strings.TrimPrefix(a, vgName+"/")]++
			}
		}
		for _, n := range []string{"cf1", "cf3", "cf4", "cf6"} {
			Expect(seen[n]).To(Equal(1), "%s: %v", n, seen)
		}

		By("the taken ones are reported on their attachments, and taken back once the other host lets go")
		for _, n := range []string{"cf2", "cf5"} {
			a := &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: n + "-node-1"}}
			Eventually(func() []string { return eventNotes(get(a), "LockRefused") }).Should(ContainElement(ContainSubstring("another host holds it")))
			res, _ := storage.Host(outsider).Run(ctx, []string{"lvchange", "-an", vgName + "/" + n})
			Expect(res.ExitCode).To(Equal(0))
			Eventually(func() map[int]string { return holders(n) }).Should(Equal(map[int]string{1: "ex"}), n)
			attached(a, v1.LockExclusive)
		}
		for _, n := range names {
			removeWithin(time.Minute, &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: n + "-node-1"}})
			removeWithin(time.Minute, &v1.SharedVolume{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: n}})
		}
	})

	It("an agent restart without a reboot keeps the locks and re-records at once", func() {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-2"}}
		before := get(node).Annotations[v1.AnnotationRestoredBootID]
		stop("node-2")
		since := len(storage.Log())
		startAgent("node-2", storage.Host(2))
		Eventually(func(g Gomega) {
			for _, c := range get(node).Status.Conditions {
				if c.Type == v1.NodeConditionLocksRestored {
					g.Expect(c.Message).To(ContainSubstring("agent restarted"))
				}
			}
		}).Should(Succeed())
		Expect(node.Annotations[v1.AnnotationRestoredBootID]).To(Equal(before))
		for _, c := range storage.Log()[since:] {
			Expect(c.Argv[0]).NotTo(Equal("lvchange"), fmt.Sprintf("no lock change on a plain agent restart: %v", c.Argv))
		}
	})
})

var _ client.Object = &corev1.Node{}
