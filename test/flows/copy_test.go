package flows_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/fakelvm"
)

func readyReason(vol *v1.SharedVolume) func() string {
	return func() string {
		if c := meta.FindStatusCondition(get(vol).Status.Conditions, v1.ConditionReady); c != nil {
			return c.Reason
		}
		return ""
	}
}

func lvIn(vg, name string) (fakelvm.LV, bool) {
	for _, l := range storage.LVs(vg) {
		if l.Name == name {
			return l, true
		}
	}
	return fakelvm.LV{}, false
}

func clone(name, size, source string) *v1.SharedVolume {
	v := volume(name, size)
	v.Spec.Source = &v1.VolumeSource{Volume: v1.ObjectName(source)}
	return v
}

// ran says whether a host ran a command whose argv starts with prefix (since log index).
func ran(since int, host int, prefix ...string) bool {
	for _, c := range storage.Log()[since:] {
		if c.Host == host && c.Exit == 0 && len(c.Argv) >= len(prefix) && slices.Equal(c.Argv[:len(prefix)], prefix) {
			return true
		}
	}
	return false
}

// update applies mutate to the latest version of vol, retrying on conflicts (operator and
// agents write its status concurrently).
func update(vol *v1.SharedVolume, mutate func(*v1.SharedVolume)) {
	Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		get(vol)
		mutate(vol)
		return k8s.Update(ctx, vol)
	})).To(Succeed())
}

func detach(a *v1.VolumeAttachment) {
	Expect(k8s.Delete(ctx, a)).To(Succeed())
	Eventually(func() bool { return gone(a) }).Should(BeTrue())
}

func deleteVolume(v *v1.SharedVolume) {
	Expect(k8s.Delete(ctx, v)).To(Succeed())
	Eventually(func() bool { return gone(v) }).Should(BeTrue())
}

var _ = Describe("clones and snapshots (spec.source)", func() {
	It("copies an unattached volume under a shared lock it releases; the copy has its own lease and starts unlocked", func() {
		src := volume("origin-a", "8Mi")
		Expect(k8s.Create(ctx, src)).To(Succeed())
		available(src)
		token := storage.WriteData(vgName, "origin-a")

		By("a copy smaller than its source is refused with a condition")
		small := clone("clone-small", "4Mi", "origin-a")
		Expect(k8s.Create(ctx, small)).To(Succeed())
		Eventually(readyReason(small)).Should(Equal("SourceLargerThanVolume"))
		deleteVolume(small)

		since := len(storage.Log())
		c := clone("clone-a", "16Mi", "origin-a")
		Expect(k8s.Create(ctx, c)).To(Succeed())
		available(c)
		lv, ok := lvIn(vgName, "clone-a")
		Expect(ok).To(BeTrue())
		Expect(lv.Data).To(Equal(token), "the copy carries the source's data")
		Expect(lv.UUID).To(Equal(get(c).Status.LVUUID))
		Expect(lv.UUID).NotTo(Equal(get(src).Status.LVUUID), "its own LV, so its own lease")
		Expect(lv.Tags).To(ContainElements(v1.OwnerTag(string(c.UID)), v1.TagCopied))
		Expect(lv.Holders).To(BeEmpty(), "a new volume starts unlocked")
		Expect(holders("origin-a")).To(BeEmpty(), "the copy's shared lock on the source is released")
		host := 0
		for _, l := range storage.Log()[since:] {
			if l.Argv[0] == "dd" {
				host = l.Host // the node that ran the copy
			}
		}
		Expect(ran(since, host, "lvchange", "-asy", vgName+"/origin-a")).To(BeTrue(), "source read under a shared lock")
		Expect(ran(since, host, "lvchange", "-an", vgName+"/origin-a")).To(BeTrue(), "and released")
		Eventually(func() []string { return eventReasons(c) }).Should(ContainElement("Copied"))

		By("the source cannot be deleted... once the copy is done it can")
		deleteVolume(src)
		deleteVolume(c)
		Expect(storage.RemovedDirty).NotTo(ContainElement(vgName + "/clone-a"))
	})

	It("keeps a copy's target locked for the whole copy: the drift repair never releases it mid-copy (seen on the bed)", func() {
		src := volume("origin-d", "8Mi")
		Expect(k8s.Create(ctx, src)).To(Succeed())
		available(src)
		token := storage.WriteData(vgName, "origin-d")
		target := vgName + "/clone-d"
		// The copier activates the target, then waits two report cycles (2 s each) before its
		// dd: the drift repair of that node sees an active LV no attachment asks for.
		storage.SetHooks(nil, func(host int, argv []string, res executor.Result) {
			if len(argv) >= 3 && argv[0] == "lvchange" && argv[1] == "-aey" && argv[2] == target && res.ExitCode == 0 {
				time.Sleep(5 * time.Second)
			}
		})
		defer storage.SetHooks(nil, nil)
		since := len(storage.Log())
		c := clone("clone-d", "8Mi", "origin-d")
		Expect(k8s.Create(ctx, c)).To(Succeed())
		available(c)
		lv, ok := lvIn(vgName, "clone-d")
		Expect(ok).To(BeTrue())
		Expect(lv.Data).To(Equal(token))
		// Between the copier's activation of the target and its dd, nobody released it.
		log := storage.Log()[since:]
		act, dd := -1, -1
		for i, l := range log {
			if act < 0 && l.Argv[0] == "lvchange" && len(l.Argv) >= 3 && l.Argv[1] == "-aey" && l.Argv[2] == target {
				act = i
			}
			if act >= 0 && dd < 0 && l.Argv[0] == "dd" && l.Host == log[act].Host {
				dd = i
			}
		}
		Expect(act).To(BeNumerically(">=", 0))
		Expect(dd).To(BeNumerically(">", act))
		for _, l := range log[act:dd] {
			Expect(l.Argv).NotTo(Equal([]string{"lvchange", "-an", target}), "the target was released in the middle of its copy")
		}
		Expect(eventReasons(c)).NotTo(ContainElement("LockDrift"))
		deleteVolume(c)
		deleteVolume(src)
	})

	It("copies an attached volume from a snapshot on its holder; waits while it is held shared", func() {
		src := volume("origin-b", "8Mi")
		src.Spec.MultiAttach = true
		Expect(k8s.Create(ctx, src)).To(Succeed())
		available(src)
		a1 := attachment("origin-b-node-1", "origin-b", "node-1", v1.PurposeInstance)
		a2 := attachment("origin-b-node-2", "origin-b", "node-2", v1.PurposeInstance)
		Expect(k8s.Create(ctx, a1)).To(Succeed())
		Expect(k8s.Create(ctx, a2)).To(Succeed())
		attached(a1, v1.LockShared)
		attached(a2, v1.LockShared)
		token := storage.WriteData(vgName, "origin-b")

		c := clone("snap-b", "8Mi", "origin-b")
		Expect(k8s.Create(ctx, c)).To(Succeed())
		Eventually(readyReason(c)).Should(Equal("CopyWaitsForSingleHolder"))
		Expect(get(c).Status.LVUUID).To(BeEmpty())

		since := len(storage.Log())
		detach(a1)
		attached(a2, v1.LockExclusive)
		available(c)
		Expect(ran(since, 2, "lvcreate", "-y", "-s")).To(BeTrue(), "a temporary snapshot on the exclusive holder")
		for _, l := range storage.LVs(vgName) {
			Expect(l.Origin).To(BeEmpty(), "the temporary snapshot %s is dropped", l.Name)
		}
		lv, _ := lvIn(vgName, "snap-b")
		Expect(lv.Data).To(Equal(token))
		Expect(lv.Holders).To(BeEmpty())
		Expect(holders("origin-b")).To(Equal(map[int]string{2: "ex"}), "the VM's holder kept its exclusive lock throughout")

		By("with the snapshot gone, the source can be live-migrated (shared) again")
		a1 = attachment("origin-b-node-1b", "origin-b", "node-1", v1.PurposeMigrationTarget)
		Expect(k8s.Create(ctx, a1)).To(Succeed())
		attached(a1, v1.LockShared)
		detach(a1)
		detach(a2)
		deleteVolume(c)
		deleteVolume(src)
	})

	It("deleting a volume whose copy never completed leaves nothing behind", func() {
		src := volume("origin-c", "8Mi")
		Expect(k8s.Create(ctx, src)).To(Succeed())
		available(src)
		storage.SetHooks(func(host int, argv []string) *executor.Result {
			if argv[0] == "dd" && slices.Contains(argv, "of=/dev/"+vgName+"/cut-c") {
				return &executor.Result{ExitCode: 1, Stderr: []byte("dd: error writing '/dev/vg1/cut-c': Input/output error\n")}
			}
			return nil
		}, nil)
		defer storage.SetHooks(nil, nil)
		c := clone("cut-c", "8Mi", "origin-c")
		Expect(k8s.Create(ctx, c)).To(Succeed())
		Eventually(func() bool { _, ok := lvIn(vgName, "cut-c"); return ok }).Should(BeTrue(), "the LV exists before the copy fails")
		Eventually(func() []string { return eventReasons(c) }).Should(ContainElement("CopyFailed"))
		Expect(get(c).Status.LVUUID).To(BeEmpty(), "an incomplete copy is never recorded")
		deleteVolume(c)
		_, ok := lvIn(vgName, "cut-c")
		Expect(ok).To(BeFalse(), "the cleanup pass removed the half-copied LV")
		Expect(holders("origin-c")).To(BeEmpty())
		deleteVolume(src)
	})
})

var _ = Describe("migration between VolumeGroups (spec.volumeGroup)", Ordered, func() {
	const vg2 = "vg2"
	BeforeAll(func() {
		storage.CreateVG(vg2, map[string]int64{"/dev/vdc": 1 << 30})
		Expect(k8s.Create(ctx, &v1.VolumeGroup{
			ObjectMeta: metav1.ObjectMeta{Name: vg2},
			Spec: v1.VolumeGroupSpec{VGName: vg2, PVs: []v1.DevicePath{"/dev/vdc"},
				NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{nodeSel: "yes"}}},
		})).To(Succeed())
		Eventually(func() string { return get(&v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: vg2}}).Status.NodesReady }).Should(Equal("2/2"))
	})
	AfterEach(func() { storage.SetHooks(nil, nil) })

	It("waits for a detach, then copies, switches, and wipes and removes the old LV", func() {
		vol := volume("mig", "8Mi")
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		available(vol)
		token := storage.WriteData(vgName, "mig")
		oldUUID := get(vol).Status.LVUUID
		att := attachment("mig-node-1", "mig", "node-1", v1.PurposeInstance)
		Expect(k8s.Create(ctx, att)).To(Succeed())
		attached(att, v1.LockExclusive)

		By("attached: a condition says to detach first; nothing moves")
		update(vol, func(v *v1.SharedVolume) { v.Spec.VolumeGroup = vg2 })
		Eventually(readyReason(vol)).Should(Equal("MigrationNeedsDetach"))
		Expect(get(vol).Status.VolumeGroup).To(Equal(vgCR))
		Expect(storage.LVs(vg2)).To(BeEmpty())

		By("detached: copied to vg2, switched, old LV wiped and removed")
		detach(att)
		Eventually(func(g Gomega) {
			st := get(vol).Status
			g.Expect(st.VolumeGroup).To(Equal(vg2))
			g.Expect(st.RetiredLV).To(BeNil())
			g.Expect(st.Phase).To(Equal(v1.VolumeAvailable))
		}).Should(Succeed())
		st := get(vol).Status
		Expect(st.VGName).To(Equal(vg2))
		Expect(st.LVUUID).NotTo(Equal(oldUUID))
		Expect(st.Path).To(Equal("/dev/vg2/mig"))
		lv, ok := lvIn(vg2, "mig")
		Expect(ok).To(BeTrue())
		Expect(lv.Data).To(Equal(token))
		Expect(lv.Holders).To(BeEmpty())
		_, ok = lvIn(vgName, "mig")
		Expect(ok).To(BeFalse(), "old LV removed")
		Expect(storage.RemovedDirty).NotTo(ContainElement(vgName+"/mig"), "and wiped before")
		Eventually(func() []string { return eventReasons(vol) }).Should(ContainElements("Migrated", "LVRemoved"))

		By("attaching now takes the new LV's lease")
		att = attachment("mig-node-2", "mig", "node-2", v1.PurposeInstance)
		Expect(k8s.Create(ctx, att)).To(Succeed())
		attached(att, v1.LockExclusive)
		Expect(lv.UUID).To(Equal(get(att).Status.LVUUID))
		l2, _ := lvIn(vg2, "mig")
		Expect(l2.Holders).To(Equal(map[int]string{2: "ex"}))

		By("a retype that keeps the VolumeGroup changes nothing on disk")
		since := len(storage.Log())
		update(vol, func(v *v1.SharedVolume) { v.Spec.MultiAttach = true })
		Consistently(func() v1.VolumePhase { return get(vol).Status.Phase }, "1s").Should(Equal(v1.VolumeInUse))
		for _, c := range storage.Log()[since:] {
			Expect(c.Argv[0]).To(BeElementOf("lvm", "sanlock", "cat", "lvmconfig", "lvs", "lvmlockctl"), "only reports ran: %v", c.Argv)
		}
		detach(att)
		deleteVolume(vol)
		Expect(storage.LVs(vg2)).To(BeEmpty())
	})

	for _, point := range []string{"after the copy is tagged complete", "before the old LV is removed"} {
		It("recovers when the executor is killed "+point, func() {
			name := "migcrash-" + strings.ReplaceAll(strings.Fields(point)[0], " ", "")
			vol := volume(name, "8Mi")
			Expect(k8s.Create(ctx, vol)).To(Succeed())
			available(vol)
			token := storage.WriteData(vgName, name)
			var mu sync.Mutex
			victim := ""
			kill := func(host int) {
				mu.Lock()
				defer mu.Unlock()
				if victim == "" {
					victim = fmt.Sprintf("node-%d", host)
					crash(victim)
				}
			}
			if strings.HasPrefix(point, "after") {
				storage.SetHooks(nil, func(host int, argv []string, res executor.Result) {
					if argv[0] == "lvchange" && argv[1] == "--addtag" && argv[2] == v1.TagCopied && strings.HasSuffix(argv[3], "/"+name) {
						kill(host)
					}
				})
			} else {
				storage.SetHooks(func(host int, argv []string) *executor.Result {
					if argv[0] == "lvremove" && argv[len(argv)-1] == vgName+"/"+name {
						kill(host)
						return &executor.Result{ExitCode: 137, Stderr: []byte("killed")}
					}
					return nil
				}, nil)
			}
			update(vol, func(v *v1.SharedVolume) { v.Spec.VolumeGroup = vg2 })
			Eventually(func() string { mu.Lock(); defer mu.Unlock(); return victim }).ShouldNot(BeEmpty())
			mu.Lock()
			v := victim
			mu.Unlock()
			waitStopped(v)
			storage.SetHooks(nil, nil)
			var id int
			fmt.Sscanf(v, "node-%d", &id)
			startAgent(v, storage.Host(id))

			Eventually(func(g Gomega) {
				st := get(vol).Status
				g.Expect(st.VolumeGroup).To(Equal(vg2))
				g.Expect(st.RetiredLV).To(BeNil())
			}).Should(Succeed())
			lv, ok := lvIn(vg2, name)
			Expect(ok).To(BeTrue())
			Expect(lv.Data).To(Equal(token), "the data survived the crash")
			Expect(lv.Holders).To(BeEmpty())
			_, ok = lvIn(vgName, name)
			Expect(ok).To(BeFalse())
			Expect(storage.RemovedDirty).NotTo(ContainElement(vgName + "/" + name))
			deleteVolume(vol)
		})
	}
})
