package controllers_test

import (
	"context"
	"sort"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/controllers"
	"github.com/sharedlvm/sharedlvm-operator/roles"
)

// The operator's field indexes each key an object under one scope only (its namespace, or
// all namespaces), in the layout controller-runtime's cache reader looks up: a list through
// each index, in the scope its callers use, finds exactly the objects it should.
var _ = Describe("field indexes", func() {
	It("answer each index's lookups in its scope", func() {
		nss := []string{"idx-a", "idx-b"}
		for _, ns := range nss {
			ensureNamespace(ns)
			src := newVolume(ns, "src", "vg-idx")
			Expect(k8s.Create(ctx, src)).To(Succeed())
			clone := newVolume(ns, "clone", "vg-idx-other")
			clone.Spec.Source = &v1.VolumeSource{Volume: "src"}
			Expect(k8s.Create(ctx, clone)).To(Succeed())
			Expect(k8s.Create(ctx, newAttachment(ns, "on-1", "src", "node-idx-1", v1.PurposeInstance))).To(Succeed())
			Expect(k8s.Create(ctx, newAttachment(ns, "on-2", "src", "node-idx-2", v1.PurposeInstance))).To(Succeed())
			Expect(k8s.Create(ctx, newAttachment(ns, "clone-on-1", "clone", "node-idx-1", v1.PurposeInstance))).To(Succeed())
		}

		mgr, err := ctrl.NewManager(env.Config, ctrl.Options{Scheme: roles.Scheme(), Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0"})
		Expect(err).NotTo(HaveOccurred())
		Expect(controllers.SetupIndexes(ctx, mgr)).To(Succeed())
		mctx, stop := context.WithCancel(ctx)
		defer stop()
		go func() {
			defer GinkgoRecover()
			Expect(mgr.Start(mctx)).To(Succeed())
		}()
		Expect(mgr.GetCache().WaitForCacheSync(mctx)).To(BeTrue())
		c := mgr.GetClient()

		keys := func(list client.ObjectList, opts ...client.ListOption) []string {
			Expect(c.List(mctx, list, opts...)).To(Succeed())
			var out []string
			switch l := list.(type) {
			case *v1.VolumeAttachmentList:
				for _, o := range l.Items {
					out = append(out, o.Namespace+"/"+o.Name)
				}
			case *v1.SharedVolumeList:
				for _, o := range l.Items {
					out = append(out, o.Namespace+"/"+o.Name)
				}
			}
			sort.Strings(out)
			return out
		}
		Eventually(func() []string {
			return keys(&v1.VolumeAttachmentList{}, client.InNamespace("idx-a"), client.MatchingFields{controllers.IndexAttachmentVolume: "src"})
		}).Should(Equal([]string{"idx-a/on-1", "idx-a/on-2"}))
		Expect(keys(&v1.VolumeAttachmentList{}, client.InNamespace("idx-b"), client.MatchingFields{controllers.IndexAttachmentVolume: "clone"})).
			To(Equal([]string{"idx-b/clone-on-1"}))
		Expect(keys(&v1.VolumeAttachmentList{}, client.MatchingFields{controllers.IndexAttachmentNode: "node-idx-1"})).
			To(Equal([]string{"idx-a/clone-on-1", "idx-a/on-1", "idx-b/clone-on-1", "idx-b/on-1"}))
		Expect(keys(&v1.SharedVolumeList{}, client.MatchingFields{controllers.IndexVolumeGroup: "vg-idx"})).
			To(Equal([]string{"idx-a/src", "idx-b/src"}))
		Expect(keys(&v1.SharedVolumeList{}, client.InNamespace("idx-b"), client.MatchingFields{controllers.IndexSource: "src"})).
			To(Equal([]string{"idx-b/clone"}))
	})
})
