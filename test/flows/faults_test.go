package flows_test

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/roles"
	"github.com/sharedlvm/sharedlvm-operator/test/faults"
)

// #16 §3: control-plane faults, with the real operator(s) and agents over the model.
var _ = Describe("control-plane faults", Ordered, func() {
	AfterEach(func() { storage.SetHooks(nil, nil) })

	lvcreates := func(lv string, since int) int {
		n := 0
		for _, c := range storage.Log()[since:] {
			if c.Argv[0] == "lvcreate" && c.Exit == 0 && mutating(c.Argv, lv) {
				n++
			}
		}
		return n
	}

	It("operator HA: the leader dies mid-create and mid-handshake of a live migration; the new leader finishes both, planning each step once", func() {
		stop("operator")
		defer startOperator()
		type op struct {
			name  string
			proxy *faults.Proxy
			mgr   manager.Manager
		}
		// Two replicas with leader election, each with its own connections (a process).
		haOptions := roles.OperatorOptions{MetricsAddr: "0", ProbeAddr: "0", LeaderElection: true, LeaderElectionNamespace: "default",
			LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 250 * time.Millisecond}
		var ops []*op
		for _, name := range []string{"op-a", "op-b"} {
			p, cfg, err := faults.ForConfig(env.Config)
			Expect(err).NotTo(HaveOccurred())
			ops = append(ops, &op{name: name, proxy: p, mgr: startOperatorVia(name, cfg, haOptions)})
		}
		defer func() {
			for _, o := range ops {
				o.proxy.Close()
				stop(o.name)
			}
		}()
		leader := func() *op {
			for _, o := range ops {
				select {
				case <-o.mgr.Elected():
					if o.proxy.Cuts() == 0 {
						return o
					}
				default:
				}
			}
			return nil
		}
		Eventually(leader).ShouldNot(BeNil())
		// SIGKILL of the leader's process: its connections die at once (no release of the
		// leader lease, no last write), then it stops.
		var mu sync.Mutex
		var killed []string
		kill := func() {
			mu.Lock()
			defer mu.Unlock()
			l := leader()
			if l == nil {
				return
			}
			l.proxy.Cut()
			crash(l.name)
			killed = append(killed, l.name)
		}

		By("mid-create: the leader dies right after the executor's lvcreate")
		since := len(storage.Log())
		var once sync.Once
		storage.SetHooks(nil, func(_ int, argv []string, res executor.Result) {
			if res.ExitCode == 0 && mutating(argv, "ha-0001") && argv[0] == "lvcreate" {
				once.Do(func() { go kill() })
			}
		})
		vol := volume("ha-0001", "8Mi")
		t0 := time.Now()
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		available(vol)
		Expect(killed).To(HaveLen(1), "the leader was killed mid-create")
		GinkgoWriter.Printf("create with the leader killed mid-way: Available after %.1fs\n", time.Since(t0).Seconds())
		Expect(lvcreates("ha-0001", since)).To(Equal(1), "one lvcreate: the new leader did not plan the create again")
		Expect(lvsNamed("ha-0001")).To(HaveLen(1))
		Expect(lvsNamed("ha-0001")[0].Tags).To(ContainElement(v1.OwnerTag(string(vol.UID))))

		// The Deployment replaces the dead replica.
		p, cfg, err := faults.ForConfig(env.Config)
		Expect(err).NotTo(HaveOccurred())
		ops = append(ops, &op{name: "op-c", proxy: p, mgr: startOperatorVia("op-c", cfg, haOptions)})

		By("mid-handshake of a live migration: the leader dies once the source converted to shared")
		a := attachment("ha-0001-node-1", "ha-0001", "node-1", v1.PurposeInstance)
		Expect(k8s.Create(ctx, a)).To(Succeed())
		attached(a, v1.LockExclusive)
		since = len(storage.Log())
		once = sync.Once{}
		storage.SetHooks(nil, func(host int, argv []string, res executor.Result) {
			if host == 1 && res.ExitCode == 0 && mutating(argv, "ha-0001") && argv[1] == "-asy" {
				once.Do(func() { go kill() })
			}
		})
		b := attachment("ha-0001-node-2", "ha-0001", "node-2", v1.PurposeMigrationTarget)
		t0 = time.Now()
		Expect(k8s.Create(ctx, b)).To(Succeed())
		attached(b, v1.LockShared)
		attached(a, v1.LockShared)
		Expect(killed).To(HaveLen(2), "the second leader was killed mid-handshake")
		GinkgoWriter.Printf("live migration with the leader killed mid-handshake: both shared after %.1fs\n", time.Since(t0).Seconds())
		Expect(lockChangesOn("ha-0001", since)).To(Equal([]string{"1:sy", "2:sy"}), "each step once, in order")
		Expect(holders("ha-0001")).To(Equal(map[int]string{1: "sh", 2: "sh"}))

		By("the third replica leads now; the source detaches: release, then exclusive on the target")
		since = len(storage.Log())
		remove(a)
		attached(b, v1.LockExclusive)
		Expect(lockChangesOn("ha-0001", since)).To(Equal([]string{"1:n", "2:ey"}))
		remove(b)
		remove(vol)
	})

	It("apiserver unreachable: every lock stays held, a node rebooted meanwhile restores only once it is back, and everything resumes", func() {
		outage := 60 * time.Second
		if s := os.Getenv("SHAREDLVM_APISERVER_OUTAGE"); s != "" {
			d, err := time.ParseDuration(s)
			Expect(err).NotTo(HaveOccurred())
			outage = d
		}
		// Every process reaches the apiserver through one proxy: cutting it is the apiserver
		// going away for all of them.
		p, cfg, err := faults.ForConfig(env.Config)
		Expect(err).NotTo(HaveOccurred())
		defer p.Close()
		stop("operator")
		stop("node-1")
		stop("node-2")
		startAgentVia("node-1", storage.Host(1), cfg)
		startAgentVia("node-2", storage.Host(2), cfg)
		startOperatorVia("operator", cfg, roles.OperatorOptions{MetricsAddr: metricsAddr, ProbeAddr: "0"})
		defer func() {
			// Back to the suite's processes, straight to the apiserver.
			stop("operator")
			stop("node-1")
			stop("node-2")
			startAgent("node-1", storage.Host(1))
			startAgent("node-2", storage.Host(2))
			startOperator()
		}()
		var atts []*v1.VolumeAttachment
		for i, node := range []string{"node-1", "node-2", "node-1"} {
			name := fmt.Sprintf("outage-%04d", i+1)
			vol := volume(name, "4Mi")
			Expect(k8s.Create(ctx, vol)).To(Succeed())
			available(vol)
			a := attachment(name+"-"+node, name, node, v1.PurposeInstance)
			Expect(k8s.Create(ctx, a)).To(Succeed())
			atts = append(atts, a)
		}
		for _, a := range atts {
			attached(a, v1.LockExclusive)
		}
		want := map[string]map[int]string{"outage-0001": {1: "ex"}, "outage-0002": {2: "ex"}, "outage-0003": {1: "ex"}}
		locks := func() map[string]map[int]string {
			out := map[string]map[int]string{}
			for name := range want {
				out[name] = holders(name)
			}
			return out
		}
		Expect(locks()).To(Equal(want))

		By(fmt.Sprintf("the apiserver is unreachable for %s; node-2 reboots in the middle of it", outage))
		since := len(storage.Log())
		p.Cut()
		t0 := time.Now()
		Consistently(locks, outage/2, time.Second).Should(Equal(want), "no lock released because the API cannot be read")
		stop("node-2")
		storage.Crash(2)
		storage.Reboot(2)
		// The agent starts again with the node and waits for the apiserver.
		go func() {
			defer GinkgoRecover()
			startAgentVia("node-2", storage.Host(2), cfg)
		}()
		Consistently(func() map[int]string { return holders("outage-0001") }, outage-time.Since(t0), time.Second).Should(Equal(map[int]string{1: "ex"}))
		Expect(holders("outage-0002")).To(BeEmpty(), "the rebooted node lost its lease")
		for _, c := range storage.Log()[since:] {
			if c.Host == 2 {
				Expect(c.Argv[0]).NotTo(Equal("lvchange"), "node-2's restore guessed without the API: %v", c.Argv)
				Expect(strings.Join(c.Argv, " ")).NotTo(ContainSubstring("--lockstart"), "node-2 started a lockspace without reading its host_id claim")
			}
			if c.Host == 1 && c.Argv[0] == "lvchange" {
				Fail(fmt.Sprintf("node-1 changed a lock while the API was unreachable: %v", c.Argv))
			}
		}

		By("the apiserver is back: node-2 restores, and new work goes through without manual steps")
		Expect(p.Restore()).To(Succeed())
		t1 := time.Now()
		Eventually(locks).WithTimeout(time.Minute).Should(Equal(want))
		GinkgoWriter.Printf("after a %s outage: locks as desired again %.1fs after the apiserver came back\n", outage, time.Since(t1).Seconds())
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-2"}}
		Eventually(func() string { return get(node).Annotations[v1.AnnotationRestoredBootID] }).Should(Equal(storage.CurrentBootID(2)))
		vol := volume("outage-0004", "4Mi")
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		// A new object is seen once the operator's informers list again: client-go's
		// reflectors back off while the apiserver is away, up to [30, 60) s after a long
		// outage (k8s.io/client-go/tools/cache/reflector.go, not configurable through
		// controller-runtime), so the first new work may wait that long (CI saw > 30 s).
		t2 := time.Now()
		Eventually(func() v1.VolumePhase { return get(vol).Status.Phase }).WithTimeout(90 * time.Second).Should(Equal(v1.VolumeAvailable))
		GinkgoWriter.Printf("a volume created after the outage: Available %.1fs later\n", time.Since(t2).Seconds())
		a := attachment("outage-0004-node-2", "outage-0004", "node-2", v1.PurposeInstance)
		Expect(k8s.Create(ctx, a)).To(Succeed())
		Eventually(func(g Gomega) {
			get(a)
			g.Expect(a.Status.Phase).To(Equal(v1.AttachmentAttached), "conditions: %+v", a.Status.Conditions)
			g.Expect(a.Status.AppliedLock).To(Equal(v1.LockExclusive))
		}).WithTimeout(90 * time.Second).Should(Succeed()) // each informer has its own backoff
		atts = append(atts, a)
		// A deletion is seen once the informers of the agent that holds the lock list again:
		// the same reflector backoff as above (CI saw node-1's release wait > 30 s).
		for _, a := range atts {
			removeWithin(90*time.Second, a)
		}
		for i := 1; i <= 4; i++ {
			removeWithin(90*time.Second, &v1.SharedVolume{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: fmt.Sprintf("outage-%04d", i)}})
		}
	})

	It("an agent restart (a rolling update of the DaemonSet) keeps every lease and changes no lock", func() {
		vol := volume("restart-0001", "4Mi")
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		available(vol)
		a := attachment("restart-0001-node-1", "restart-0001", "node-1", v1.PurposeInstance)
		Expect(k8s.Create(ctx, a)).To(Succeed())
		attached(a, v1.LockExclusive)
		since := len(storage.Log())
		stop("node-1")
		Expect(holders("restart-0001")).To(Equal(map[int]string{1: "ex"}))
		startAgent("node-1", storage.Host(1))
		Consistently(func() map[int]string { return holders("restart-0001") }, "5s", "100ms").Should(Equal(map[int]string{1: "ex"}))
		Expect(lockChangesOn("restart-0001", since)).To(BeEmpty(), "the restarted agent re-applied nothing")
		attached(a, v1.LockExclusive)
		remove(a)
		remove(vol)
	})
})
