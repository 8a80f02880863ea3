// Command local runs the product on an embedded default with no cluster: a real
// kube-apiserver + etcd (envtest binaries built from the Go module proxy), the CRDs, the
// operator, and one agent per node, all in this process. With --storage=vms (hack/run.sh's
// default) each node is a test-bed VM with real lvm2 + lvmlockd + sanlock sharing one LUN
// image, and a demo drives a volume through create, attach and live migration, printing
// the resources and the lock view at each step; with --storage=model the nodes' storage is
// the in-memory model (no root, no VMs) and the samples are applied. It writes a
// kubeconfig, prints how to use kubectl against it, and runs until Ctrl-C, then cleans up.
//
//	go run ./hack/local            # or: hack/run.sh
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/envtestutil"
	"github.com/sharedlvm/sharedlvm-operator/internal/fakelvm"
	"github.com/sharedlvm/sharedlvm-operator/roles"
)

func main() {
	nodes := flag.Int("nodes", 2, "number of nodes, each with an agent")
	storageKind := flag.String("storage", "vms", "vms (the default, as hack/run.sh): test-bed VMs with real shared LVM and the demo; model: the in-memory model and the samples")
	samples := flag.Bool("samples", true, "with --storage=model, create the objects of config/samples")
	exitAfter := flag.Duration("exit-after", 0, "stop after this long (0: run until Ctrl-C); for smoke tests")
	flag.BoolVar(&exitWhenDone, "exit-when-done", false, "with --storage=vms, stop and clean up once the demo is done (the storage tier's smoke test)")
	verbose := flag.Bool("v", false, "log controller output")
	flag.StringVar(&volumeGroups, "volume-groups", "cinder-ssd", "with --storage=model, the shared VGs of the model (comma-separated); each gets a VolumeGroup of the same name unless a sample creates it")
	flag.StringVar(&kubeconfigOut, "write-kubeconfig", "", "also write the control plane's kubeconfig to this path (for clients such as the Cinder driver's tests)")
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseDevMode(*verbose), zap.Level(levelFor(*verbose))))
	var err error
	switch *storageKind {
	case "vms":
		err = runVMs(*nodes, *exitAfter)
	case "model":
		err = run(*nodes, *samples, *exitAfter)
	default:
		err = fmt.Errorf("--storage must be vms or model, not %q", *storageKind)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "local:", err)
		os.Exit(1)
	}
}

var (
	exitWhenDone  bool
	volumeGroups  string
	kubeconfigOut string
)

func levelFor(v bool) zapcore.Level {
	if v {
		return -1
	}
	return 2
}

func run(nodes int, samples bool, exitAfter time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if exitAfter > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, exitAfter)
		defer cancel()
	}
	t0 := time.Now()
	fmt.Println("starting a local control plane (kube-apiserver + etcd; the first run builds them, ~6 min)...")
	env, err := envtestutil.Start()
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop(); fmt.Println("control plane stopped, cleaned up") }()
	fmt.Printf("control plane up in %.1fs\n", time.Since(t0).Seconds())

	c, err := client.New(env.Config, client.Options{Scheme: roles.Scheme()})
	if err != nil {
		return err
	}
	errs := make(chan error, nodes+1)

	// --storage=model: an in-memory model of one shared VG on a SAN LUN with lvmlockd +
	// sanlock on every node (internal/fakelvm): no disks, no root, nothing touched on this
	// machine (the fallback when the VMs cannot be prepared).
	storage := fakelvm.New()
	vgNames := strings.Split(volumeGroups, ",")
	for i, name := range vgNames {
		storage.CreateVG(name, map[string]int64{modelPV(i): 100 << 30})
	}
	// Each node's agent is the real agent; its commands go to the model's host i+1.
	hosts := make([]executor.Executor, nodes)
	for i := range hosts {
		hosts[i] = storage.Host(i + 1)
	}
	if _, err := startControlPlane(ctx, c, env, hosts, map[string]string{"sharedlvm.io/san-ssd": "true"}, errs); err != nil {
		return err
	}
	if samples {
		if err := applySamples(ctx, c); err != nil {
			return err
		}
	}
	for i, name := range vgNames {
		vg := &v1.VolumeGroup{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1.VolumeGroupSpec{
				VGName:       v1.LVMVGName(name),
				PVs:          []v1.DevicePath{v1.DevicePath(modelPV(i))},
				NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"sharedlvm.io/san-ssd": "true"}},
			},
		}
		if err := c.Create(ctx, vg); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}

	kubeconfig, err := publishKubeconfig(env)
	if err != nil {
		return err
	}
	defer os.Remove(kubeconfig)
	if kubeconfigOut != "" {
		data, err := os.ReadFile(kubeconfig)
		if err != nil {
			return err
		}
		// Written last and atomically: a client waiting for the file finds a running system.
		if err := os.WriteFile(kubeconfigOut+".tmp", data, 0o600); err != nil {
			return err
		}
		if err := os.Rename(kubeconfigOut+".tmp", kubeconfigOut); err != nil {
			return err
		}
		defer os.Remove(kubeconfigOut)
	}

	time.Sleep(4 * time.Second) // let lockspaces start and the samples attach before showing them
	show := exec.Command(env.Kubectl, "--kubeconfig", kubeconfig, "get", "sharedlvm", "-A", "-o", "wide")
	show.Stdout, show.Stderr = os.Stdout, os.Stderr
	fmt.Println("\n$ kubectl get sharedlvm -A -o wide")
	_ = show.Run()
	fmt.Printf(`
operator and %d agent(s) running against a local control plane; the agents' storage is an
in-memory model of a shared VG (lvmlockd + sanlock rules included). Try:
  kubectl delete sva -n openstack volume-3f1c2a9e-compute-0     # end the live migration: compute-1 goes exclusive

Point kubectl at it:
  export KUBECONFIG=%s
  %s get sharedlvm -A -o wide
  %s describe sharedvolumes -n openstack
Metrics: http://127.0.0.1:18080/metrics   Press Ctrl-C to stop and clean up.
`, nodes, kubeconfig, env.Kubectl, env.Kubectl)

	select {
	case <-ctx.Done():
		return nil
	case err := <-errs:
		return err
	}
}

// modelPV is the device path of the model's i-th VG's only PV (a by-id path, as on a SAN).
func modelPV(i int) string {
	if i == 0 {
		return "/dev/disk/by-id/wwn-0x600a098038303053453f463045727041"
	}
	return fmt.Sprintf("/dev/disk/by-id/wwn-0x600a0980383030534537%06d", i)
}

// publishKubeconfig copies the control plane's admin kubeconfig to a stable path under the
// cache, which the printed instructions name; the caller removes it on exit.
func publishKubeconfig(env *envtestutil.Env) (string, error) {
	dir := filepath.Join(cacheDir(), "local")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	data, err := os.ReadFile(env.Kubeconfig)
	if err != nil {
		return "", err
	}
	return kubeconfig, os.WriteFile(kubeconfig, data, 0o600)
}

func cacheDir() string {
	if d := os.Getenv("SHAREDLVM_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "sharedlvm-operator")
	}
	return filepath.Join(os.TempDir(), "sharedlvm-operator")
}

func applySamples(ctx context.Context, c client.Client) error {
	files, err := filepath.Glob(filepath.Join(envtestutil.RepoRoot(), "config", "samples", "*.yaml"))
	if err != nil {
		return err
	}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return err
		}
		dec := yaml.NewYAMLOrJSONDecoder(fh, 4096)
		for {
			u := &unstructured.Unstructured{}
			if err := dec.Decode(&u.Object); err != nil {
				break
			}
			if len(u.Object) == 0 {
				continue
			}
			if ns := u.GetNamespace(); ns != "" {
				_ = c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
			}
			if err := c.Create(ctx, u); err != nil {
				fh.Close()
				return fmt.Errorf("%s: %w", filepath.Base(f), err)
			}
		}
		fh.Close()
	}
	return nil
}

// startControlPlane starts the operator and, for each host, a Node named compute-<i> with
// labels and that node's real agent over the host's executor; their exits go to errs. It
// returns the node names.
func startControlPlane(ctx context.Context, c client.Client, env *envtestutil.Env, hosts []executor.Executor, labels map[string]string, errs chan<- error) ([]string, error) {
	op, err := roles.NewOperator(ctx, env.Config, roles.OperatorOptions{MetricsAddr: "127.0.0.1:18080", ProbeAddr: "127.0.0.1:18081"})
	if err != nil {
		return nil, err
	}
	go func() { errs <- op.Start(ctx) }()
	names := make([]string, 0, len(hosts))
	for i, h := range hosts {
		name := fmt.Sprintf("compute-%d", i)
		names = append(names, name)
		if err := c.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}); err != nil {
			return nil, err
		}
		ag, err := roles.NewAgent(ctx, env.Config, roles.AgentOptions{NodeName: name, MetricsAddr: "0", ProbeAddr: "0", Executor: h, ReportInterval: 5 * time.Second})
		if err != nil {
			return nil, err
		}
		go func() { errs <- ag.Start(ctx) }()
	}
	return names, nil
}
