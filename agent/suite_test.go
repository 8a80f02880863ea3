package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/sharedlvm/sharedlvm-operator/agent"
	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/cmd"
	"github.com/sharedlvm/sharedlvm-operator/test/envtestutil"
)

func TestAgent(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Agent (envtest)")
}

// recorder is an executor that answers from captured real output and records every argv.
type recorder struct {
	mu      sync.Mutex
	answers map[string][]byte
	calls   []string
}

func (r *recorder) Run(_ context.Context, argv []string) (executor.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := strings.Join(argv, " ")
	r.calls = append(r.calls, key)
	out, ok := r.answers[key]
	if !ok {
		return executor.Result{ExitCode: 1, Stderr: []byte("not scripted: " + key)}, nil
	}
	return executor.Result{Stdout: out}, nil
}

func (r *recorder) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

func sanlockFixture(name string) []byte {
	b, err := os.ReadFile(filepath.Join("sanlock", "testdata", name))
	Expect(err).NotTo(HaveOccurred())
	return b
}

var (
	env    *envtestutil.Env
	k8s    client.Client
	ctx    context.Context
	cancel context.CancelFunc
	execs  = map[string]*recorder{}
)

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	ctx, cancel = context.WithCancel(context.Background())
	var err error
	env, err = envtestutil.Start()
	Expect(err).NotTo(HaveOccurred())
	k8s, err = client.New(env.Config, client.Options{Scheme: cmd.Scheme()})
	Expect(err).NotTo(HaveOccurred())

	// Two nodes: node-1 holds the lockspace with host_id 1 (exclusive fixture), node-2
	// with host_id 2 (shared fixture). Each runs the real agent over a recording executor.
	fixtures := map[string]string{"node-1": "status-exclusive.txt", "node-2": "status-shared.txt"}
	for node, fx := range fixtures {
		Expect(k8s.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{"san": "a"}}})).To(Succeed())
		rec := &recorder{answers: map[string][]byte{"sanlock client status": sanlockFixture(fx)}}
		execs[node] = rec
		mgr, err := cmd.NewAgent(ctx, env.Config, cmd.AgentOptions{
			NodeName: node, MetricsAddr: "0", ProbeAddr: "0",
			Storage: &agent.NodeStorage{Exec: rec}, ReportInterval: time.Second,
		})
		Expect(err).NotTo(HaveOccurred())
		go func() {
			defer GinkgoRecover()
			Expect(mgr.Start(ctx)).To(Succeed())
		}()
	}
	SetDefaultEventuallyTimeout(20 * time.Second)
})

var _ = AfterSuite(func() {
	cancel()
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})

var _ = Describe("VolumeGroup reporter", func() {
	It("keeps one entry per node, written by each agent with server-side apply", func() {
		vg := &v1.VolumeGroup{
			ObjectMeta: metav1.ObjectMeta{Name: "vg1"},
			Spec: v1.VolumeGroupSpec{VGName: "vg1", PVs: []v1.DevicePath{"/dev/vda"},
				NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"san": "a"}}},
		}
		Expect(k8s.Create(ctx, vg)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(vg), vg)).To(Succeed())
			byNode := map[string]v1.NodeLockspaceStatus{}
			for _, n := range vg.Status.Nodes {
				byNode[n.Node] = n
			}
			g.Expect(byNode).To(HaveLen(2))
			g.Expect(byNode["node-1"].HostID).To(Equal(int32(1)))
			g.Expect(byNode["node-2"].HostID).To(Equal(int32(2)))
			g.Expect(byNode["node-1"].LockspaceStarted).To(BeTrue())
			g.Expect(byNode["node-1"].LastReport).NotTo(BeNil())
		}).Should(Succeed())

		managers := map[string]bool{}
		for _, mf := range vg.ManagedFields {
			managers[mf.Manager] = true
		}
		Expect(managers).To(HaveKey("sharedlvm-agent/node-1"))
		Expect(managers).To(HaveKey("sharedlvm-agent/node-2"))
		// One sanlock call per report, never one per LV.
		Expect(execs["node-1"].Calls()).To(HaveEach(Equal("sanlock client status")))
	})

	It("drops its entry when the node no longer matches the selector", func() {
		vg := &v1.VolumeGroup{}
		Expect(k8s.Get(ctx, client.ObjectKey{Name: "vg1"}, vg)).To(Succeed())
		vg.Spec.NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "kubernetes.io/hostname", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"x"}},
			{Key: "san", Operator: metav1.LabelSelectorOpIn, Values: []string{"a"}},
		}}
		Expect(k8s.Update(ctx, vg)).To(Succeed())
		node := &corev1.Node{}
		Expect(k8s.Get(ctx, client.ObjectKey{Name: "node-2"}, node)).To(Succeed())
		node.Labels["san"] = "b"
		Expect(k8s.Update(ctx, node)).To(Succeed())
		// The reporter re-evaluates on its next periodic report.
		Eventually(func() []string {
			Expect(k8s.Get(ctx, client.ObjectKey{Name: "vg1"}, vg)).To(Succeed())
			var names []string
			for _, n := range vg.Status.Nodes {
				names = append(names, n.Node)
			}
			return names
		}).Should(Equal([]string{"node-1"}))
	})

	It("reports a lockspace that is not joined, with the reason", func() {
		execs["node-1"].mu.Lock()
		execs["node-1"].answers["sanlock client status"] = []byte("daemon x\np -1 helper\n")
		execs["node-1"].mu.Unlock()
		Eventually(func(g Gomega) {
			vg := &v1.VolumeGroup{}
			g.Expect(k8s.Get(ctx, client.ObjectKey{Name: "vg1"}, vg)).To(Succeed())
			g.Expect(vg.Status.Nodes).To(HaveLen(1))
			g.Expect(vg.Status.Nodes[0].LockspaceStarted).To(BeFalse())
			g.Expect(vg.Status.Nodes[0].Message).To(ContainSubstring("lockspace lvm_vg1 is not joined"))
		}).Should(Succeed())
	})
})
