package controllers_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/controllers"
)

// staleVG is a cache that still holds an older copy of one VolumeGroup (its own last status
// write has not come back through the watch yet).
type staleVG struct {
	client.Client
	old *v1.VolumeGroup
}

func (s staleVG) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if g, ok := obj.(*v1.VolumeGroup); ok && key.Name == s.old.Name {
		s.old.DeepCopyInto(g)
		return nil
	}
	return s.Client.Get(ctx, key, obj, opts...)
}

var _ = Describe("VolumeGroup create node", func() {
	It("is not moved to another node from a cache that has not seen the current choice", func() {
		for _, n := range []string{"cn-1", "cn-2"} {
			Expect(k8s.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"zone": "cn"}}})).To(Succeed())
		}
		g := &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: "vgcn"},
			Spec: v1.VolumeGroupSpec{VGName: "vgcn", PVs: []v1.DevicePath{"/dev/vdy"},
				NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"zone": "cn"}}}}
		controllerutil.AddFinalizer(g, v1.Finalizer)
		Expect(k8s.Create(ctx, g)).To(Succeed())
		now := metav1.NewTime(time.Now())
		for i, n := range []string{"cn-1", "cn-2"} {
			g.Status.Nodes = append(g.Status.Nodes, v1.NodeLockspaceStatus{Node: n, HostID: int32(i + 1), LastReport: &now, ReportIntervalSeconds: 30,
				Reason: v1.LockspaceVGNotFound, Message: "VG vgcn is not visible on this node's devices"})
		}
		Expect(k8s.Status().Update(ctx, g)).To(Succeed())
		old := g.DeepCopy()
		By("cn-2 was chosen (it reported first) and may hold the create claim")
		g.Status.CreateNode = "cn-2"
		Expect(k8s.Status().Update(ctx, g)).To(Succeed())

		r := &controllers.VolumeGroupReconciler{Client: staleVG{k8s, old}, APIReader: k8s, Recorder: events.NewFakeRecorder(10)}
		_, err := r.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(g)})
		Expect(err).NotTo(HaveOccurred(), "a conflict requeues quietly")
		Expect(get(g).Status.CreateNode).To(Equal("cn-2"), "moved away from cn-2 on a stale read")

		By("on fresh facts the choice stays")
		r.Client = k8s
		_, err = r.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(g)})
		Expect(err).NotTo(HaveOccurred())
		Expect(get(g).Status.CreateNode).To(Equal("cn-2"))
	})
})
