package controllers_test

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/envtestutil"
	"github.com/sharedlvm/sharedlvm-operator/roles"
)

var (
	env    *envtestutil.Env
	k8s    client.Client
	ctx    context.Context
	cancel context.CancelFunc
)

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Operator controllers (envtest)")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	ctx, cancel = context.WithCancel(context.Background())
	var err error
	env, err = envtestutil.Start()
	Expect(err).NotTo(HaveOccurred())
	scheme := roles.Scheme()
	Expect(apiextensionsv1.AddToScheme(scheme)).To(Succeed())
	k8s, err = client.New(env.Config, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	// node-a and node-b have agents that restored their locks for the current boot.
	for _, n := range []string{"node-a", "node-b"} {
		Expect(k8s.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{v1.LabelLocksRestored: "true"}}})).To(Succeed())
	}
	// The agents' side of VG vg1, as they would report it: node-a and node-b have started
	// the lockspace (the operator only plans locks for nodes that can take them).
	vg := &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: "vg1"}, Spec: v1.VolumeGroupSpec{VGName: "vg1", PVs: []v1.DevicePath{"/dev/vdb"}}}
	Expect(k8s.Create(ctx, vg)).To(Succeed())
	now := metav1.Now()
	vg.Status.Nodes = []v1.NodeLockspaceStatus{
		{Node: "node-a", HostID: 1, VGFound: true, LockspaceStarted: true, LastReport: &now},
		{Node: "node-b", HostID: 2, VGFound: true, LockspaceStarted: true, LastReport: &now},
	}
	Expect(k8s.Status().Update(ctx, vg)).To(Succeed())

	mgr, err := roles.NewOperator(ctx, env.Config, roles.OperatorOptions{MetricsAddr: "0", ProbeAddr: "0"})
	Expect(err).NotTo(HaveOccurred())
	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
	SetDefaultEventuallyTimeout(20 * time.Second)

	SetDefaultEventuallyPollingInterval(100 * time.Millisecond)
})

var _ = AfterSuite(func() {
	cancel()
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})
