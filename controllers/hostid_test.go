package controllers_test

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/controllers"
	"github.com/sharedlvm/sharedlvm-operator/heartbeat"
)

var _ = Describe("host_id allocation", func() {
	ns := heartbeat.DefaultNamespace
	beat := func(node, local string) *coordv1.Lease {
		now := metav1.NewMicroTime(time.Now())
		return &coordv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: heartbeat.LeaseName(node), Labels: map[string]string{heartbeat.Label: heartbeat.LabelValue},
				Annotations: map[string]string{v1.AnnotationLocalHostID: local}},
			Spec: coordv1.LeaseSpec{HolderIdentity: ptr.To(node), RenewTime: &now, LeaseDurationSeconds: ptr.To[int32](3600)},
		}
	}
	claims := func() map[string][]int32 {
		var l coordv1.LeaseList
		Expect(k8s.List(ctx, &l, client.InNamespace(ns), client.MatchingLabels{v1.LabelHostIDClaim: "true"})).To(Succeed())
		out := map[string][]int32{}
		for _, c := range l.Items {
			id, ok := v1.HostIDFromClaimName(c.Name)
			Expect(ok).To(BeTrue(), c.Name)
			out[*c.Spec.HolderIdentity] = append(out[*c.Spec.HolderIdentity], id)
		}
		return out
	}

	It("gives 100 nodes that start at once 100 distinct ids, keeping free lvmlocal.conf ids, with a second allocator racing the operator", func() {
		// A second allocator (an old leader that has not noticed it lost) runs passes in a loop.
		racer := &controllers.HostIDReconciler{Client: k8s, APIReader: k8s, Namespace: ns}
		stop := make(chan struct{})
		var racing sync.WaitGroup
		racing.Add(1)
		go func() {
			defer racing.Done()
			defer GinkgoRecover()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = racer.Reconcile(ctx, reconcile.Request{})
			}
		}()
		// 100 agents start at once: 40 configured with host_id 7 (copied lvmlocal.conf), 30
		// with none, 30 with their own distinct id (100+i).
		local := func(i int) string {
			switch {
			case i < 40:
				return "7"
			case i < 70:
				return v1.LocalHostIDNone
			}
			return strconv.Itoa(100 + i)
		}
		var wg sync.WaitGroup
		for i := range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer GinkgoRecover()
				Expect(k8s.Create(ctx, beat(fmt.Sprintf("burst-%03d", i), local(i)))).To(Succeed())
			}()
		}
		wg.Wait()
		Eventually(func(g Gomega) {
			got := claims()
			byID := map[int32]string{}
			for i := range 100 {
				node := fmt.Sprintf("burst-%03d", i)
				g.Expect(got[node]).To(HaveLen(1), "node %s: claims %v", node, got[node])
				id := got[node][0]
				g.Expect(byID).NotTo(HaveKey(id), "host_id %d given twice", id)
				byID[id] = node
				if i >= 70 {
					g.Expect(id).To(Equal(int32(100+i)), "node %s keeps its free lvmlocal.conf id", node)
				}
			}
			g.Expect(byID).To(HaveKey(int32(7)), "one of the 40 nodes configured with 7 keeps it")
			g.Expect(byID[7]).To(BeElementOf(func() []string {
				var out []string
				for i := range 40 {
					out = append(out, fmt.Sprintf("burst-%03d", i))
				}
				return out
			}()))
		}).WithTimeout(60 * time.Second).Should(Succeed())
		close(stop)
		racing.Wait()

		By("a removed node's id is released once its heartbeat is gone and it has no Node object")
		gone := claims()["burst-099"][0]
		Expect(k8s.Delete(ctx, beat("burst-099", ""))).To(Succeed())
		Eventually(func() error {
			return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: v1.HostIDClaimName(gone)}, &coordv1.Lease{})
		}).WithTimeout(30 * time.Second).Should(Satisfy(apierrors.IsNotFound))
		Expect(claims()).To(HaveLen(99), "no other claim moved")

		for i := range 99 {
			Expect(client.IgnoreNotFound(k8s.Delete(ctx, beat(fmt.Sprintf("burst-%03d", i), "")))).To(Succeed())
		}
		Eventually(func() map[string][]int32 { return claims() }).WithTimeout(60 * time.Second).Should(BeEmpty())
	})
})
