//go:build nodes

package nodes

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sharedlvm/sharedlvm-operator/agent/sanlock"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/memlimit"
	"github.com/sharedlvm/sharedlvm-operator/internal/testbed"
	"github.com/sharedlvm/sharedlvm-operator/roles"
)

// ctr runs containerd's client in a guest, in the kubelet's namespace.
func (e *env) ctr(h *testbed.Host, args ...string) string {
	e.t.Helper()
	out, err := h.MustRun(e.ctx, append([]string{"ctr", "--address", "/run/containerd/containerd.sock", "-n", "k8s.io"}, args...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// upgradeWithWriter loads a new tag's images into the nodes' runtime, then helm upgrade to it
// while a writer runs on volume-2 on host1: every pod restarts, host1's lease is never
// dropped (same lease version each second), and the writer sees no I/O error.
func (e *env) upgradeWithWriter(chart, uuid string) {
	t := e.t
	for _, h := range e.bed.Hosts {
		start := time.Now()
		for _, f := range []string{"operator.tar", "agent.tar"} {
			e.ctr(h, "images", "import", "--no-unpack", filepath.Join(e.images["bed-2"], f))
		}
		t.Logf("timings: %s: images bed-2 loaded into containerd in %.1fs", h.Name, time.Since(start).Seconds())
	}
	h := e.bed.Hosts[0]
	a := &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: "volume-2-host1"}}
	if err := e.c.Get(e.ctx, client.ObjectKeyFromObject(a), a); err != nil {
		t.Fatal(err)
	}
	dev := a.Status.DevicePath
	st, err := (&sanlock.Client{Exec: h}).Status(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	before, ok := st.Lease(vgName, uuid)
	if !ok || before.Shared {
		t.Fatalf("host1 holds no exclusive lease on volume-2: %+v", before)
	}

	wctx, stop := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	writes := 0
	go func() {
		for i := 0; wctx.Err() == nil; i++ {
			r, err := h.Run(wctx, []string{"dd", "if=/dev/zero", "of=" + dev, "bs=1M", "count=1", fmt.Sprintf("seek=%d", i%32), "oflag=direct"})
			if wctx.Err() != nil {
				break
			}
			if err != nil || r.ExitCode != 0 {
				done <- fmt.Errorf("write %d: %v exit %d: %s", i, err, r.ExitCode, r.Stderr)
				return
			}
			writes++
		}
		done <- nil
	}()
	watch := make(chan error, 1)
	checks := 0
	go func() {
		for wctx.Err() == nil {
			st, err := (&sanlock.Client{Exec: h}).Status(wctx)
			if wctx.Err() != nil {
				break
			}
			if err != nil {
				watch <- err
				return
			}
			r, ok := st.Lease(vgName, uuid)
			if !ok || r.Shared || r.Version != before.Version {
				watch <- fmt.Errorf("host1's lease changed during the upgrade: held %v %+v (before: %+v)", ok, r, before)
				return
			}
			checks++
			time.Sleep(time.Second)
		}
		watch <- nil
	}()
	start := time.Now()
	e.helmRun("upgrade", release, chart, "--namespace", namespace, "--reuse-values", "--set", "image.tag=bed-2")
	e.rolledOut("bed-2", 10*time.Minute)
	rolled := time.Since(start)
	time.Sleep(5 * time.Second) // the new agents' first reports
	stop()
	if err := <-done; err != nil {
		t.Fatalf("the writer saw an error across the upgrade: %v", err)
	}
	if err := <-watch; err != nil {
		t.Fatal(err)
	}
	e.expectLeases(uuid, "host1=ex host2=")
	t.Logf("timings: helm upgrade bed-1 -> bed-2 with a writer on host1: every pod on bed-2 and ready %.1fs after the upgrade; %d writes, no I/O error; host1's lease (version %d) checked %d times, never dropped",
		rolled.Seconds(), writes, before.Version, checks)
}

// podToken reads the ServiceAccount token the kubelet mounted into a pod (from its node).
func (e *env) podToken(p *corev1.Pod) string {
	e.t.Helper()
	h := e.host(p.Spec.NodeName)
	dir := "/var/lib/kubelet/pods/" + string(p.UID) + "/volumes/kubernetes.io~projected"
	ls, err := h.MustRun(e.ctx, "ls", dir)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, v := range strings.Fields(ls) {
		if strings.HasPrefix(v, "kube-api-access-") {
			tok, err := h.MustRun(e.ctx, "cat", dir+"/"+v+"/token")
			if err != nil {
				e.t.Fatal(err)
			}
			return strings.TrimSpace(tok)
		}
	}
	e.t.Fatalf("no kube-api-access volume in %s: %s", dir, ls)
	return ""
}

// hostOf is the bed host named name (nil if none); host fails the test instead.
func (e *env) hostOf(name string) *testbed.Host {
	for _, h := range e.bed.Hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

func (e *env) host(name string) *testbed.Host {
	e.t.Helper()
	h := e.hostOf(name)
	if h == nil {
		e.t.Fatalf("no host %s", name)
	}
	return h
}

// agentPod is the agent pod on node.
func (e *env) agentPod(node string) *corev1.Pod {
	e.t.Helper()
	var pods corev1.PodList
	if err := e.c.List(e.ctx, &pods, client.InNamespace(namespace), client.MatchingLabels{"app.kubernetes.io/component": "agent"}); err != nil {
		e.t.Fatal(err)
	}
	for i := range pods.Items {
		if pods.Items[i].Spec.NodeName == node && pods.Items[i].DeletionTimestamp == nil {
			return &pods.Items[i]
		}
	}
	e.t.Fatalf("no agent pod on %s", node)
	return nil
}

// tokens: the RBAC and the admission policy with the pods' real ServiceAccount tokens (bound
// to their pod and node by the kubelet): host1's agent may write its own Node, not host2's.
func (e *env) tokens() {
	t := e.t
	pod := e.agentPod("host1")
	cfg := rest.CopyConfig(e.cluster.Config)
	cfg.TLSClientConfig = rest.TLSClientConfig{CAFile: e.cluster.CA()}
	cfg.BearerToken = e.podToken(pod)
	agent, err := client.New(cfg, client.Options{Scheme: roles.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	review := &authnv1.SelfSubjectReview{}
	if err := agent.Create(e.ctx, review); err != nil {
		t.Fatal(err)
	}
	u := review.Status.UserInfo
	if u.Username != "system:serviceaccount:"+namespace+":"+release+"-agent" || strings.Join(u.Extra["authentication.kubernetes.io/node-name"], "") != "host1" {
		t.Fatalf("the agent pod's token: %+v", u)
	}
	own := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "host1"}}
	if err := agent.Patch(e.ctx, own, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"sharedlvm.io/token-test":"own"}}}`))); err != nil {
		t.Fatalf("host1's agent cannot label its own Node: %v", err)
	}
	other := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "host2"}}
	err = agent.Patch(e.ctx, other, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"sharedlvm.io/token-test":"other"}}}`)))
	if err == nil || !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Fatalf("host1's agent wrote host2's Node: %v", err)
	}
	t.Logf("host1's agent pod token (%s, node-name host1): its own Node patched, host2's refused: %v", u.Username, err)
	a2 := &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: "token-host2"},
		Spec: v1.VolumeAttachmentSpec{Volume: "volume-2", Node: "host2", Purpose: v1.PurposeInstance}}
	if err := agent.Create(e.ctx, a2); err == nil {
		t.Fatal("host1's agent created an attachment")
	}
	_ = e.c.Patch(e.ctx, own, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"sharedlvm.io/token-test":null}}}`)))
}

// metricsAndProbes scrapes every pod's metrics endpoint from its node (the probes passed:
// rolledOut waits for Ready).
func (e *env) metricsAndProbes() {
	t := e.t
	var pods corev1.PodList
	if err := e.c.List(e.ctx, &pods, client.InNamespace(namespace)); err != nil {
		t.Fatal(err)
	}
	leaders := 0
	for _, p := range pods.Items {
		port := 0
		var memLimit int64
		for _, c := range p.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.Name == "metrics" {
					port = int(cp.ContainerPort)
					memLimit = c.Resources.Limits.Memory().Value()
				}
			}
		}
		out, err := e.host(p.Spec.NodeName).MustRun(e.ctx, "busybox", "wget", "-q", "-O", "-", fmt.Sprintf("http://%s:%d/metrics", p.Status.PodIP, port))
		if err != nil {
			t.Fatalf("scraping %s: %v", p.Name, err)
		}
		// The product's own histograms appear with their first operation; a pod just upgraded
		// may have none yet, so only the controllers' series are required, and of the two
		// operator replicas only the leader runs controllers.
		want := []string{"rest_client_requests_total"}
		leads := strings.Contains(out, "controller_runtime_reconcile_total")
		if p.Labels["app.kubernetes.io/component"] == "agent" {
			want = append(want, "controller_runtime_reconcile_total")
		} else if leads {
			leaders++
		}
		for _, m := range want {
			if !strings.Contains(out, m) {
				t.Fatalf("%s's metrics have no %s", p.Name, m)
			}
		}
		// The Go runtime's soft memory limit, from the container's limit through the
		// kubelet's downward API (internal/memlimit).
		got, err := gauge(out, "go_gc_gomemlimit_bytes")
		if want := int64(float64(memLimit) * memlimit.Fraction); err != nil || got != want {
			t.Fatalf("%s: go_gc_gomemlimit_bytes %d (%v), want %d (%.0f %% of the container's limit %d)", p.Name, got, err, want, memlimit.Fraction*100, memLimit)
		}
		t.Logf("metrics scraped from %s at %s:%d (%d bytes, controllers running: %v, soft memory limit %d MiB)", p.Name, p.Status.PodIP, port, len(out), leads, got>>20)
	}
	if leaders != 1 {
		t.Fatalf("%d operator replicas run controllers, want 1 (the leader)", leaders)
	}
}

// gauge reads the value of metric's (unlabelled) sample from a Prometheus text exposition.
func gauge(exposition, metric string) (int64, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(exposition))
	if err != nil {
		return 0, err
	}
	f, ok := families[metric]
	if !ok || len(f.GetMetric()) != 1 {
		return 0, fmt.Errorf("no single %s sample", metric)
	}
	return int64(f.GetMetric()[0].GetGauge().GetValue()), nil
}

// uninstall: helm uninstall removes the pods and leaves every LV and lease where it was.
func (e *env) uninstall(uuid string) {
	t := e.t
	e.helmRun("uninstall", release, "--namespace", namespace, "--wait")
	e.wait("every pod of the release gone", 3*time.Minute, func() error {
		var pods corev1.PodList
		if err := e.c.List(e.ctx, &pods, client.InNamespace(namespace)); err != nil {
			return err
		}
		if len(pods.Items) > 0 {
			return fmt.Errorf("%d pods left", len(pods.Items))
		}
		return nil
	})
	time.Sleep(5 * time.Second)
	e.expectLeases(uuid, "host1=ex host2=")
	out, err := e.bed.Hosts[0].MustRun(e.ctx, "lvs", "--noheadings", "-o", "lv_name,lv_active", vgName)
	if err != nil || !strings.Contains(out, "volume-2") {
		t.Fatalf("volume-2's LV after helm uninstall: %v %s", err, out)
	}
	t.Logf("after helm uninstall: the LV is there and active, host1's lease held: %s", strings.Join(strings.Fields(out), " "))
}
