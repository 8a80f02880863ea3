package flows_test

import (
	"fmt"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

// mutating reports whether argv changes LVM metadata or a lock on the named LV.
func mutating(argv []string, lv string) bool {
	switch argv[0] {
	case "lvcreate":
		for i, a := range argv {
			if a == "-n" && i+1 < len(argv) && argv[i+1] == lv {
				return true
			}
		}
	case "lvchange":
		return strings.HasPrefix(argv[1], "-a") && argv[len(argv)-1] == vgName+"/"+lv
	}
	return false
}

var _ = Describe("crash safety of create and attach", Ordered, func() {
	// The steps of create + attach that change the storage: lvcreate (on the executor
	// node) and lvchange -aey (on the attaching node). A crash can come before a step
	// (nothing happened) or after it (storage changed, status not yet written).
	type point struct {
		step   int
		after  bool
		victim string // "agent" (whichever ran the step) or "operator"
	}
	var points []point
	for step := 1; step <= 2; step++ {
		for _, after := range []bool{false, true} {
			points = append(points, point{step, after, "agent"})
		}
		points = append(points, point{step, true, "operator"})
	}

	AfterEach(func() {
		storage.SetHooks(nil, nil)
	})

	for i, p := range points {
		name := fmt.Sprintf("crash-%d", i)
		when := map[bool]string{false: "before", true: "after"}[p.after]
		It(fmt.Sprintf("kill the %s %s step %d: restart completes with one LV and the right lease", p.victim, when, p.step), func() {
			var mu sync.Mutex
			seen, victim := 0, ""
			hit := func(host int, argv []string) bool {
				if !mutating(argv, name) {
					return false
				}
				mu.Lock()
				defer mu.Unlock()
				seen++
				if seen != p.step || victim != "" {
					return false
				}
				victim = p.victim
				if victim == "agent" {
					victim = fmt.Sprintf("node-%d", host)
				}
				crash(victim)
				return true
			}
			if p.after {
				storage.SetHooks(nil, func(host int, argv []string, _ executor.Result) { hit(host, argv) })
			} else {
				storage.SetHooks(func(host int, argv []string) *executor.Result {
					if hit(host, argv) {
						return &executor.Result{ExitCode: 137, Stderr: []byte("killed")}
					}
					return nil
				}, nil)
			}
			vol := volume(name, "4Mi")
			Expect(k8s.Create(ctx, vol)).To(Succeed())
			att := attachment(name+"-node-1", name, "node-1", v1.PurposeInstance)
			Expect(k8s.Create(ctx, att)).To(Succeed())

			Eventually(func() string { mu.Lock(); defer mu.Unlock(); return victim }).ShouldNot(BeEmpty())
			mu.Lock()
			v := victim
			mu.Unlock()
			waitStopped(v)
			storage.SetHooks(nil, nil)
			time.Sleep(200 * time.Millisecond) // the world moves on while it is down
			if v == "operator" {
				startOperator()
			} else {
				var id int
				fmt.Sscanf(v, "node-%d", &id)
				startAgent(v, storage.Host(id))
			}

			attached(att, v1.LockExclusive)
			lvs := lvsNamed(name)
			Expect(lvs).To(HaveLen(1), "exactly one LV")
			Expect(lvs[0].Tags).To(ContainElement(v1.OwnerTag(string(get(vol).UID))))
			Expect(lvs[0].Holders).To(Equal(map[int]string{1: "ex"}))
			Expect(get(vol).Status.LVUUID).To(Equal(lvs[0].UUID))

			Expect(k8s.Delete(ctx, att)).To(Succeed())
			Eventually(func() bool { return gone(att) }).Should(BeTrue())
			Expect(k8s.Delete(ctx, vol)).To(Succeed())
			Eventually(func() bool { return gone(vol) }).Should(BeTrue())
			Expect(lvsNamed(name)).To(BeEmpty())
		})
	}
})
