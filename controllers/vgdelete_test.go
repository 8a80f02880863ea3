package controllers_test

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/controllers"
)

// staleCache is a cache that has not seen any SharedVolume yet (one created a moment ago).
type staleCache struct{ client.Client }

func (s staleCache) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if _, ok := list.(*v1.SharedVolumeList); ok {
		return nil
	}
	return s.Client.List(ctx, list, opts...)
}

var _ = Describe("VolumeGroup deletion", func() {
	It("keeps a deleted VolumeGroup whose volume its cache has not seen yet (a live list decides)", func() {
		const ns = "vgdel-tests"
		ensureNamespace(ns)
		g := &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: "vgdel-1"},
			Spec: v1.VolumeGroupSpec{VGName: "vgdel1", PVs: []v1.DevicePath{"/dev/vdz"},
				NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"zone": "nowhere"}}}}
		controllerutil.AddFinalizer(g, v1.Finalizer)
		Expect(k8s.Create(ctx, g)).To(Succeed())
		vol := newVolume(ns, "vgdel-vol", g.Name)
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		Expect(k8s.Delete(ctx, g)).To(Succeed())

		r := &controllers.VolumeGroupReconciler{Client: staleCache{k8s}, APIReader: k8s, Recorder: events.NewFakeRecorder(10)}
		_, err := r.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(g)})
		Expect(err).NotTo(HaveOccurred())
		Expect(controllerutil.ContainsFinalizer(get(g), v1.Finalizer)).To(BeTrue(), "released while a volume lives in it")

		By("once the volume is gone, the VolumeGroup goes")
		Expect(k8s.Delete(ctx, vol)).To(Succeed())
		Eventually(func() bool { return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(vol), vol)) }).Should(BeTrue())
		Eventually(func() bool { return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(g), g)) }).Should(BeTrue())
	})
})
