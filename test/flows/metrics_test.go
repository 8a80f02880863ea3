package flows_test

import (
	"bytes"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

// scrape reads the operator's /metrics endpoint and returns each sample as "name{labels}".
func scrape() map[string]float64 {
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	Expect(resp.StatusCode).To(Equal(http.StatusOK))
	body, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	out := map[string]float64{}
	sample := regexp.MustCompile(`^(sharedlvm_[a-z_]+(?:\{[^}]*\})?) (\S+)$`)
	for _, line := range regexp.MustCompile("\n").Split(string(body), -1) {
		if m := sample.FindStringSubmatch(line); m != nil {
			v, err := strconv.ParseFloat(m[2], 64)
			Expect(err).NotTo(HaveOccurred())
			out[m[1]] = v
		}
	}
	// The whole page must parse as Prometheus text.
	p := expfmt.NewTextParser(model.UTF8Validation)
	_, err = p.TextToMetricFamilies(bytes.NewReader(body))
	Expect(err).NotTo(HaveOccurred())
	return out
}

var _ = Describe("Prometheus metrics", func() {
	It("reports VG capacity, locks per node and mode, operation durations and failures", func() {
		vol := volume("metered", "8Mi")
		Expect(k8s.Create(ctx, vol)).To(Succeed())
		available(vol)
		att := attachment("metered-node-1", "metered", "node-1", v1.PurposeInstance)
		Expect(k8s.Create(ctx, att)).To(Succeed())
		attached(att, v1.LockExclusive)

		Eventually(func(g Gomega) {
			m := scrape()
			g.Expect(m).To(HaveKeyWithValue(`sharedlvm_volumegroup_size_bytes{vg="vg1",volumegroup="vg1"}`, BeNumerically("==", 2<<30)))
			g.Expect(m).To(HaveKey(`sharedlvm_volumegroup_free_bytes{vg="vg1",volumegroup="vg1"}`))
			g.Expect(m).To(HaveKeyWithValue(`sharedlvm_volumegroup_lockspaces_started{vg="vg1",volumegroup="vg1"}`, BeNumerically("==", 2)))
			g.Expect(m).To(HaveKeyWithValue(`sharedlvm_volumegroup_lvs{vg="vg1",volumegroup="vg1"}`, BeNumerically(">=", 1)))
			g.Expect(m).To(HaveKeyWithValue(`sharedlvm_locks_held{mode="Exclusive",node="node-1"}`, BeNumerically(">=", 1)))
			g.Expect(m).To(HaveKeyWithValue(`sharedlvm_volumes{phase="InUse"}`, BeNumerically(">=", 1)))
			g.Expect(m).To(HaveKeyWithValue(MatchRegexp(`sharedlvm_operation_duration_seconds_count\{node="node-\d",operation="create"\}`), BeNumerically(">=", 1)))
			g.Expect(m).To(HaveKeyWithValue(`sharedlvm_operation_duration_seconds_count{node="node-1",operation="attach"}`, BeNumerically(">=", 1)))
			// The storage model cannot be read as a device: its creates learn the UUID with lvs.
			g.Expect(m).To(HaveKeyWithValue(MatchRegexp(`sharedlvm_created_lv_reads_total\{node="node-\d",source="lvs"\}`), BeNumerically(">=", 1)))
		}).Should(Succeed())

		By("a refused lock counts as a failure with its reason")
		Expect(k8s.Delete(ctx, att)).To(Succeed())
		Eventually(func() bool { return gone(att) }).Should(BeTrue())
		var refused sync.Once
		storage.SetHooks(func(host int, argv []string) *executor.Result {
			var r *executor.Result
			if host == 2 && argv[0] == "lvchange" && argv[1] == "-aey" && argv[2] == vgName+"/metered" {
				refused.Do(func() {
					r = &executor.Result{ExitCode: 5, Stderr: []byte("  LV locked by other host: vg1/metered\n")}
				})
			}
			return r
		}, nil)
		defer storage.SetHooks(nil, nil)
		att2 := attachment("metered-node-2", "metered", "node-2", v1.PurposeInstance)
		Expect(k8s.Create(ctx, att2)).To(Succeed())
		attached(att2, v1.LockExclusive) // the retry after the refusal succeeds
		Expect(scrape()).To(HaveKeyWithValue(`sharedlvm_operation_failures_total{node="node-2",operation="attach",reason="LockHeldByOtherHost"}`, BeNumerically(">=", 1)))
		Expect(k8s.Delete(ctx, att2)).To(Succeed())
		Eventually(func() bool { return gone(att2) }).Should(BeTrue())
		Expect(k8s.Delete(ctx, vol)).To(Succeed())
		Eventually(func() bool { return gone(vol) }).Should(BeTrue())
	})
})
