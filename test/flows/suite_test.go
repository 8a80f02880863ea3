// Package flows_test runs the real operator and one real agent per node against a real
// kube-apiserver (envtest), with the agents' commands answered by fakelvm, an in-memory model
// of shared LVM + sanlock that refuses what the real tools refuse. The storage tier runs the
// same flows on real VMs.
package flows_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/envtestutil"
	"github.com/sharedlvm/sharedlvm-operator/internal/fakelvm"
	"github.com/sharedlvm/sharedlvm-operator/roles"
)

func TestFlows(t *testing.T) {
	RegisterFailHandler(Fail)
	if !RunSpecs(t, "Core flows: operator + agents over a model of shared LVM (envtest)") {
		// CI keeps only the tail of the output: repeat each failure's message there, with the
		// seed that replays the order (-ginkgo.seed).
		for _, f := range failures {
			fmt.Println(f)
		}
	}
}

// failures are the failed specs' messages, collected for the end of the output.
var failures []string

var _ = ReportAfterSuite("failures, repeated at the end of the output", func(r Report) {
	for _, s := range r.SpecReports {
		if !s.Failed() {
			continue
		}
		msg := s.Failure.Message
		if len(msg) > 2500 {
			msg = msg[:2500] + "..."
		}
		failures = append(failures, fmt.Sprintf("FAILED (seed %d) %s\n  at %s\n  %s", r.SuiteConfig.RandomSeed, s.FullText(), s.Failure.Location, msg))
	}
})

var (
	env     *envtestutil.Env
	k8s     client.WithWatch
	ctx     context.Context
	cancel  context.CancelFunc
	storage *fakelvm.Cluster

	// metricsAddr is where the operator serves /metrics (a free loopback port; the same
	// one again after a restart).
	metricsAddr string

	procMu  sync.Mutex
	procs   = map[string]context.CancelFunc{} // stop and wait, by operator/agent name
	crashes = map[string]context.CancelFunc{} // stop without waiting (usable from a hook)
	dones   = map[string]chan struct{}{}
)

const (
	vgName  = "vg1"
	vgCR    = "vg1"
	nodeSel = "sharedlvm-test"
)

// startAgent runs the real agent for a node over the model, with exec wrapping the model
// host when a test needs to intercept commands.
func startAgent(node string, exec executor.Executor) { startAgentVia(node, exec, env.Config) }

// startAgentVia runs the agent with its own apiserver config (a faults.Proxy's).
func startAgentVia(node string, exec executor.Executor, cfg *rest.Config) {
	actx, acancel := context.WithCancel(ctx)
	mgr, err := roles.NewAgent(actx, cfg, roles.AgentOptions{
		NodeName: node, MetricsAddr: "0", ProbeAddr: "0", Executor: exec, ReportInterval: 2 * time.Second,
	})
	Expect(err).NotTo(HaveOccurred())
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		err := mgr.Start(actx)
		if err != nil && strings.Contains(err.Error(), "within grace period") {
			// Stopped while the apiserver is unreachable (the outage spec), one of the
			// agent's runnables once took longer than the 30 s grace period to end (CI); the
			// process ends anyway, as the kubelet kills a pod after its grace period. Said,
			// not failed: what the spec checks is the locks.
			GinkgoWriter.Printf("agent %s: %v\n", node, err)
			err = nil
		}
		Expect(err).To(Succeed())
	}()
	procMu.Lock()
	procs[node] = func() { acancel(); <-done }
	crashes[node], dones[node] = acancel, done
	procMu.Unlock()
}

// crash ends a process at once without waiting for it (callable from a command hook).
func crash(name string) {
	procMu.Lock()
	f := crashes[name]
	procMu.Unlock()
	if f != nil {
		f()
	}
}

// waitStopped waits until a crashed process has exited and forgets it.
func waitStopped(name string) {
	procMu.Lock()
	done := dones[name]
	procMu.Unlock()
	Eventually(done).Should(BeClosed())
	procMu.Lock()
	delete(procs, name)
	delete(crashes, name)
	delete(dones, name)
	procMu.Unlock()
}

func startOperator() {
	startOperatorVia("operator", env.Config, roles.OperatorOptions{MetricsAddr: metricsAddr, ProbeAddr: "0"})
}

// startOperatorVia runs an operator named name (for stop and crash) with its own apiserver
// config and options; it returns the manager (whose Elected channel says when it leads).
func startOperatorVia(name string, cfg *rest.Config, o roles.OperatorOptions) manager.Manager {
	octx, ocancel := context.WithCancel(ctx)
	mgr, err := roles.NewOperator(octx, cfg, o)
	Expect(err).NotTo(HaveOccurred())
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		// A killed leader (its connections cut, then stopped) may end with "leader election
		// lost": what matters is that it stopped when told to.
		if err := mgr.Start(octx); octx.Err() == nil {
			Expect(err).To(Succeed())
		}
	}()
	procMu.Lock()
	procs[name] = func() { ocancel(); <-done }
	crashes[name], dones[name] = ocancel, done
	procMu.Unlock()
	return mgr
}

// stop kills a running operator or agent (its in-flight work is abandoned mid-way).
func stop(name string) {
	procMu.Lock()
	f := procs[name]
	delete(procs, name)
	procMu.Unlock()
	if f != nil {
		f()
	}
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	ctx, cancel = context.WithCancel(context.Background())
	var err error
	env, err = envtestutil.Start()
	Expect(err).NotTo(HaveOccurred())
	k8s, err = client.NewWithWatch(env.Config, client.Options{Scheme: roles.Scheme()})
	Expect(err).NotTo(HaveOccurred())
	SetDefaultEventuallyTimeout(30 * time.Second)
	SetDefaultEventuallyPollingInterval(100 * time.Millisecond)

	// Events about cluster-scoped objects go to "default", which the apiserver creates a
	// moment after it starts; agents emit their first events at once.
	Eventually(func() error {
		return k8s.Get(ctx, client.ObjectKey{Name: "default"}, &corev1.Namespace{})
	}).Should(Succeed())

	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	metricsAddr = l.Addr().String()
	Expect(l.Close()).To(Succeed())

	storage = fakelvm.New()
	storage.CreateVG(vgName, map[string]int64{"/dev/vda": 1 << 30, "/dev/vdb": 1 << 30})
	for i := 1; i <= 2; i++ {
		name := fmt.Sprintf("node-%d", i)
		Expect(k8s.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{nodeSel: "yes"}}})).To(Succeed())
		storage.Host(i)
		startAgent(name, storage.Host(i))
	}
	startOperator()
	Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cloud"}})).To(Succeed())
	Expect(k8s.Create(ctx, &v1.VolumeGroup{
		ObjectMeta: metav1.ObjectMeta{Name: vgCR},
		Spec: v1.VolumeGroupSpec{VGName: vgName, PVs: []v1.DevicePath{"/dev/vda", "/dev/vdb"},
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{nodeSel: "yes"}}},
	})).To(Succeed())
	// Every spec starts from lockspaces started on both nodes.
	Eventually(func() string {
		vg := &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: vgCR}}
		return get(vg).Status.NodesReady
	}).Should(Equal("2/2"))
})

var _ = AfterSuite(func() {
	procMu.Lock()
	names := make([]string, 0, len(procs))
	for n := range procs {
		names = append(names, n)
	}
	procMu.Unlock()
	for _, n := range names {
		stop(n)
	}
	cancel()
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})

func get[T client.Object](o T) T {
	Expect(k8s.Get(ctx, client.ObjectKeyFromObject(o), o)).To(Succeed())
	return o
}

func gone(o client.Object) bool {
	err := k8s.Get(ctx, client.ObjectKeyFromObject(o), o)
	return err != nil && client.IgnoreNotFound(err) == nil
}

// remove deletes objects one after another, each waited for until it is gone.
func remove(objs ...client.Object) {
	removeWithin(30*time.Second, objs...)
}

// removeWithin is remove with its own bound for each object.
func removeWithin(d time.Duration, objs ...client.Object) {
	for _, o := range objs {
		Expect(k8s.Delete(ctx, o)).To(Succeed())
		t := time.Now()
		Eventually(func() bool { return gone(o) }).WithTimeout(d).Should(BeTrue(), "%s is not gone", o.GetName())
		if s := time.Since(t); s > 10*time.Second {
			GinkgoWriter.Printf("%s gone %.1fs after its deletion\n", o.GetName(), s.Seconds())
		}
	}
}

func eventReasons(o client.Object) []string { return envtestutil.EventReasons(ctx, k8s, o) }

func eventNotes(o client.Object, reason string) []string {
	return envtestutil.EventNotes(ctx, k8s, o, reason)
}

// holders returns the model's truth: which host holds which mode on an LV.
func holders(lvName string) map[int]string {
	for _, l := range storage.LVs(vgName) {
		if l.Name == lvName {
			return l.Holders
		}
	}
	return nil
}

func lvsNamed(prefix string) []fakelvm.LV {
	var out []fakelvm.LV
	for _, l := range storage.LVs(vgName) {
		if strings.HasPrefix(l.Name, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// lockChangesOn returns the order of successful lvchange calls on an LV, as "host:mode".
func lockChangesOn(lvName string, since int) []string {
	var out []string
	for _, c := range storage.Log()[since:] {
		if c.Exit == 0 && len(c.Argv) >= 3 && c.Argv[0] == "lvchange" && strings.HasPrefix(c.Argv[1], "-a") && c.Argv[2] == vgName+"/"+lvName {
			out = append(out, fmt.Sprintf("%d:%s", c.Host, strings.TrimPrefix(c.Argv[1], "-a")))
		}
	}
	return out
}
