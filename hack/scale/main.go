// Command scale drives the real operator (its own process, so that its RSS and CPU are its
// own) against a real kube-apiserver (envtest) with many simulated nodes: the real agent
// code per node over internal/fakelvm, an in-memory model of shared LVM + sanlock that obeys the
// same lock rules. For each volume count it takes that many SharedVolumes and
// VolumeAttachments through create → attach → live migration → detach → delete and reports
// throughput, p50/p99 time from the CR change to the applied status, operator RSS and CPU,
// apiserver requests per volume operation, and LVM/sanlock calls per agent reporting cycle.
//
//	hack/scale.sh                                   # 100 nodes; 1,000 then 10,000 volumes
//	go run ./hack/scale --nodes 10 --volumes 100,500 # a quick one
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/envtestutil"
	"github.com/sharedlvm/sharedlvm-operator/internal/fakelvm"
	"github.com/sharedlvm/sharedlvm-operator/internal/memlimit"
	"github.com/sharedlvm/sharedlvm-operator/roles"
)

var (
	nodes          = flag.Int("nodes", 100, "simulated nodes, each with a real agent")
	volumeCounts   = flag.String("volumes", "1000,10000", "volume counts to run, in order")
	workers        = flag.Int("workers", 16, "parallel clients creating and deleting objects")
	reportInterval = flag.Duration("report-interval", 30*time.Second, "agents' reporting interval")
	outDir         = flag.String("out", "bench/results", "where the table and the plot are written")
	cpuProfile     = flag.String("cpuprofile", "", "write this process's CPU profile (agents and storage model) to the file")
	heapProfile    = flag.String("heapprofile", "", "write the operator's in-use heap profile after each migrate phase to this file, suffixed with the volume count (for go tool pprof -peek/-list)")
	until          = flag.String("until", "", "stop each volume count's cycle after this phase (create, attach, migrate, handoff, detach; empty: all six); migrate is the operator's memory peak (N volumes, 2N attachments)")
)

const ns = "scale"

func main() {
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.Level(zapcore.DPanicLevel))) // quiet: the table is the output
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

// phase results of one volume count.
type phaseResult struct {
	name         string
	n            int
	wall         time.Duration
	p50, p99     time.Duration
	apiPerOp     float64
	operatorCPUs float64
	// liveHeap is the operator's heap after a forced GC at the end of the phase (bytes).
	liveHeap int64
	// gcs is how many GC cycles the operator ran during the phase (the runtime's own: the
	// soft memory limit, when the heap nears it, shows as more of them).
	gcs int64
}

type cycleResult struct {
	n             int
	phases        []phaseResult
	maxRSS        int64 // bytes
	cpuSeconds    float64
	callsPerCycle float64
	// restCPU is the operator's CPU per second at rest with the cycle's volumes attached
	// (100 agents' report cycles and heartbeats, nothing asked of it).
	restCPU float64
	// liveHeap0 is the operator's live heap before the cycle's first phase.
	liveHeap0 int64
	// top is `go tool pprof -top` of the operator's heap after the migrate phase (the most
	// objects: N volumes, 2N attachments).
	top string
}

// chartOperatorMemoryLimit is the chart's default operator.resources.limits.memory, in bytes.
func chartOperatorMemoryLimit() (int64, error) {
	p := filepath.Join(envtestutil.RepoRoot(), "charts", "sharedlvm-operator", "values.yaml")
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	var v struct {
		Operator struct {
			Resources corev1.ResourceRequirements `json:"resources"`
		} `json:"operator"`
	}
	if err := yaml.Unmarshal(b, &v); err != nil {
		return 0, fmt.Errorf("%s: %w", p, err)
	}
	q, ok := v.Operator.Resources.Limits[corev1.ResourceMemory]
	if !ok || q.Value() <= 0 {
		return 0, fmt.Errorf("%s: no operator.resources.limits.memory", p)
	}
	return q.Value(), nil
}

// heapURL is the operator's /debug/pprof/heap.
var heapURL string

// freeLoopbackAddr returns a loopback address with a port free at the time of the call.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// liveHeap forces a GC in the operator and returns its heap then (runtime.MemStats.HeapAlloc,
// which after a GC is the live heap: what the caches and queues hold).
func liveHeap(ctx context.Context) (int64, error) {
	live, _, err := heapStats(ctx, true)
	return live, err
}

// gcCount returns how many GC cycles the operator has run (runtime.MemStats.NumGC), without
// forcing one.
func gcCount(ctx context.Context) (int64, error) {
	_, n, err := heapStats(ctx, false)
	return n, err
}

// heapStats reads the operator's runtime.MemStats HeapAlloc and NumGC from its pprof heap
// page, after a forced GC if gc.
func heapStats(ctx context.Context, gc bool) (heapAlloc, numGC int64, err error) {
	url := heapURL + "?debug=1"
	if gc {
		url += "&gc=1"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	found := 0
	for sc.Scan() && found < 2 {
		if v, ok := strings.CutPrefix(sc.Text(), "# HeapAlloc = "); ok {
			if heapAlloc, err = strconv.ParseInt(strings.TrimSpace(v), 10, 64); err != nil {
				return 0, 0, err
			}
			found++
		}
		if v, ok := strings.CutPrefix(sc.Text(), "# NumGC = "); ok {
			if numGC, err = strconv.ParseInt(strings.TrimSpace(v), 10, 64); err != nil {
				return 0, 0, err
			}
			found++
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if found < 2 {
		return 0, 0, fmt.Errorf("%s: no HeapAlloc or NumGC line", heapURL)
	}
	return heapAlloc, numGC, nil
}

// heapTop is `go tool pprof -top` of the operator's in-use heap right after a forced GC; with
// --heapprofile the profile is kept in that file (suffixed -<n>) too. Without the forced GC
// the profile is that of the operator's last collection, in which what a busy operator
// allocated while that collection marked counts as in use (12–15 MB of per-reconcile copies
// in the tops of the runs before).
func heapTop(ctx context.Context, n int) string {
	src := fmt.Sprintf("%s-%d", *heapProfile, n)
	if *heapProfile == "" {
		f, err := os.CreateTemp("", "sharedlvm-heap-*")
		if err != nil {
			return fmt.Sprintf("(heap profile: %v)", err)
		}
		f.Close()
		defer os.Remove(f.Name())
		src = f.Name()
	}
	if err := fetch(ctx, heapURL+"?gc=1", src); err != nil {
		return fmt.Sprintf("(heap profile: %v)", err)
	}
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=25", "-sample_index=inuse_space", src).Output()
	if err != nil {
		return fmt.Sprintf("(go tool pprof: %v)", err)
	}
	// The lines before "Showing nodes" name the fetched file under $HOME: not kept.
	s := string(out)
	if i := strings.Index(s, "Showing nodes"); i >= 0 {
		s = s[i:]
	}
	return s
}

// fetch writes what url serves to the file path.
func fetch(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func run() error {
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	// Ctrl-C or a kill ends the run through the deferred clean-up, so that the envtest
	// apiserver and etcd and the operator process are not left behind.
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	var counts []int
	for _, f := range strings.Split(*volumeCounts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return fmt.Errorf("--volumes: %q is not a positive count", f)
		}
		counts = append(counts, n)
	}
	t0 := time.Now()
	fmt.Printf("building the operator binary (hack/build.sh)...\n")
	bin := filepath.Join(os.TempDir(), "sharedlvm-scale")
	if out, err := exec.Command(filepath.Join(envtestutil.RepoRoot(), "hack", "build.sh"), bin).CombinedOutput(); err != nil {
		return fmt.Errorf("build: %v\n%s", err, out)
	}
	env, err := envtestutil.Start()
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	c, err := client.New(env.Config, client.Options{Scheme: roles.Scheme()})
	if err != nil {
		return err
	}
	cs := kubernetes.NewForConfigOrDie(env.Config)

	// The operator in its own process, its heap readable on a loopback port.
	pprofAddr, err := freeLoopbackAddr()
	if err != nil {
		return err
	}
	heapURL = "http://" + pprofAddr + "/debug/pprof/heap"
	op := exec.CommandContext(ctx, bin, "operator", "--leader-elect=false", "--metrics-bind-address=0", "--health-probe-bind-address=0", "--zap-log-level=error",
		"--pprof-bind-address="+pprofAddr)
	// As the chart runs it: the container's memory limit (the chart's default) passed as the
	// downward API does, from which the operator sets its soft memory limit.
	memLimit, err := chartOperatorMemoryLimit()
	if err != nil {
		return err
	}
	op.Env = append(os.Environ(), "KUBECONFIG="+env.Kubeconfig, fmt.Sprintf("%s=%d", memlimit.Env, memLimit))
	fmt.Printf("operator: %s=%d (the chart's default limit)\n", memlimit.Env, memLimit)
	op.Stderr = os.Stderr
	if err := op.Start(); err != nil {
		return err
	}
	defer func() { _ = op.Process.Kill(); _, _ = op.Process.Wait() }()

	// The storage model and one real agent per node, in this process.
	storage := fakelvm.New()
	storage.CreateVG("vg1", map[string]int64{"/dev/sdb": 64 << 40})
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return err
	}
	for i := 1; i <= *nodes; i++ {
		name := nodeName(i)
		if err := c.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"scale": "yes"}}}); err != nil {
			return err
		}
		mgr, err := roles.NewAgent(ctx, env.Config, roles.AgentOptions{NodeName: name, MetricsAddr: "0", ProbeAddr: "0",
			Executor: storage.Host(i), ReportInterval: *reportInterval})
		if err != nil {
			return err
		}
		go func() { _ = mgr.Start(ctx) }()
	}
	if err := c.Create(ctx, &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: "vg1"},
		Spec: v1.VolumeGroupSpec{VGName: "vg1", PVs: []v1.DevicePath{"/dev/sdb"}, WipePolicy: v1.WipeNone,
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"scale": "yes"}}}}); err != nil {
		return err
	}
	want := fmt.Sprintf("%d/%d", *nodes, *nodes)
	if err := waitFor(ctx, 5*time.Minute, func() bool {
		var g v1.VolumeGroup
		return c.Get(ctx, client.ObjectKey{Name: "vg1"}, &g) == nil && g.Status.NodesReady == want
	}); err != nil {
		return fmt.Errorf("lockspaces of %d nodes: %w", *nodes, err)
	}
	fmt.Printf("control plane, operator (pid %d) and %d agents up in %.1fs\n", op.Process.Pid, *nodes, time.Since(t0).Seconds())

	tr, err := newTracker(ctx, env)
	if err != nil {
		return err
	}
	idleCalls, idleCPU, err := atRest(ctx, storage, op.Process.Pid)
	if err != nil {
		return err
	}
	fmt.Printf("at rest, no volumes: LVM/sanlock calls of one agent per reporting cycle %.1f, operator CPU %.1f ms/s\n", idleCalls, idleCPU*1000)

	var results []cycleResult
	for _, n := range counts {
		fmt.Printf("\n== %d volumes on %d nodes\n", n, *nodes)
		r, err := cycle(ctx, c, cs, tr, storage, op.Process.Pid, n)
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	return report(results, idleCalls, idleCPU)
}

func nodeName(i int) string { return fmt.Sprintf("node-%03d", i) }

// phaseStall bounds a phase by its progress, not by its length: a phase fails when no
// operation was applied for this long (a stuck system), however slow but steady it is (a
// 10,000-volume phase on a loaded 2-core machine may take half an hour and still be worth its
// table).
const phaseStall = 5 * time.Minute

// waitProgress waits until missing() is 0, failing only when it has not fallen for stall.
func waitProgress(ctx context.Context, stall time.Duration, missing func() int) error {
	last, since := missing(), time.Now()
	for last > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if m := missing(); m < last {
			last, since = m, time.Now()
		} else if time.Since(since) > stall {
			return fmt.Errorf("none applied for %v", stall)
		}
	}
	return nil
}

func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}

// tracker records, from watches, when each object first reached a state.
type tracker struct {
	mu      sync.Mutex
	reached map[string]time.Time
}

// markDeleted returns a delete handler that marks prefix+name of the deleted object.
func (t *tracker) markDeleted(prefix string) func(any) {
	return func(o any) {
		if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
			o = d.Obj
		}
		if obj, ok := o.(client.Object); ok {
			t.mark(prefix + obj.GetName())
		}
	}
}

func (t *tracker) mark(key string) {
	t.mu.Lock()
	if _, ok := t.reached[key]; !ok {
		t.reached[key] = time.Now()
	}
	t.mu.Unlock()
}

func (t *tracker) at(key string) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, ok := t.reached[key]
	return v, ok
}

func (t *tracker) reset() {
	t.mu.Lock()
	t.reached = map[string]time.Time{}
	t.mu.Unlock()
}

func newTracker(ctx context.Context, env *envtestutil.Env) (*tracker, error) {
	t := &tracker{reached: map[string]time.Time{}}
	ca, err := cache.New(env.Config, cache.Options{Scheme: roles.Scheme()})
	if err != nil {
		return nil, err
	}
	svInf, err := ca.GetInformer(ctx, &v1.SharedVolume{})
	if err != nil {
		return nil, err
	}
	onVol := func(o any) {
		v, ok := o.(*v1.SharedVolume)
		if ok && v.Status.Phase == v1.VolumeAvailable && v.Status.LVUUID != "" {
			t.mark("available/" + v.Name)
		}
	}
	_, _ = svInf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: onVol, UpdateFunc: func(_, o any) { onVol(o) },
		DeleteFunc: t.markDeleted("deleted/"),
	})
	vaInf, err := ca.GetInformer(ctx, &v1.VolumeAttachment{})
	if err != nil {
		return nil, err
	}
	onAtt := func(o any) {
		a, ok := o.(*v1.VolumeAttachment)
		if ok && a.Status.Phase == v1.AttachmentAttached {
			t.mark(string(a.Status.AppliedLock) + "/" + a.Name)
		}
	}
	_, _ = vaInf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: onAtt, UpdateFunc: func(_, o any) { onAtt(o) },
		DeleteFunc: t.markDeleted("gone/"),
	})
	go func() { _ = ca.Start(ctx) }()
	if !ca.WaitForCacheSync(ctx) {
		return nil, fmt.Errorf("tracker cache did not sync")
	}
	return t, nil
}

// parallel runs f(i) for i in [0,n) on the workers, returning each call's end time.
func parallel(n int, f func(i int) error) ([]time.Time, error) {
	ends := make([]time.Time, n)
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || firstErr.Load() != nil {
					return
				}
				if err := f(i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				ends[i] = time.Now()
			}
		}()
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return nil, err
	}
	return ends, nil
}

func cycle(ctx context.Context, c client.Client, cs *kubernetes.Clientset, tr *tracker, storage *fakelvm.Cluster, pid, n int) (cycleResult, error) {
	res := cycleResult{n: n}
	tr.reset()
	var rss atomic.Int64
	sampleCtx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	go func() {
		for {
			if v := rssOf(pid); v > rss.Load() {
				rss.Store(v)
			}
			select {
			case <-sampleCtx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	cpu0 := cpuOf(pid)
	var err error
	if res.liveHeap0, err = liveHeap(ctx); err != nil {
		return res, err
	}
	volName := func(i int) string { return fmt.Sprintf("vol-%d-%05d", n, i) }
	srcName := func(i int) string { return volName(i) + "-src" }
	dstName := func(i int) string { return volName(i) + "-dst" }
	srcNode := func(i int) string { return nodeName(i%*nodes + 1) }
	dstNode := func(i int) string { return nodeName((i+1)%*nodes + 1) }
	attach := func(name, vol, node string, p v1.AttachmentPurpose) error {
		return c.Create(ctx, &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: v1.VolumeAttachmentSpec{Volume: v1.ObjectName(vol), Node: v1.ObjectName(node), Purpose: p}})
	}
	detach := func(name string) error {
		return c.Delete(ctx, &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})
	}
	stopped := false
	phase := func(name string, do func(i int) error, key func(i int) string) error {
		if stopped {
			return nil
		}
		defer func() { stopped = stopped || name == *until }()
		api0, err := apiRequests(ctx, cs)
		if err != nil {
			return err
		}
		gc0, err := gcCount(ctx)
		if err != nil {
			return err
		}
		cpuStart := cpuOf(pid)
		start := time.Now()
		ends, err := parallel(n, do)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		missing := func() int {
			m := 0
			for i := 0; i < n; i++ {
				if _, ok := tr.at(key(i)); !ok {
					m++
				}
			}
			return m
		}
		if err := waitProgress(ctx, phaseStall, missing); err != nil {
			return fmt.Errorf("%s: %d of %d not applied: %w", name, missing(), n, err)
		}
		wall := time.Since(start)
		lat := make([]time.Duration, n)
		for i := range lat {
			at, _ := tr.at(key(i))
			lat[i] = at.Sub(ends[i])
			if lat[i] < 0 {
				lat[i] = 0 // applied before the client call returned
			}
		}
		sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
		api1, err := apiRequests(ctx, cs)
		if err != nil {
			return err
		}
		p := phaseResult{name: name, n: n, wall: wall, p50: lat[n/2], p99: lat[n*99/100], apiPerOp: (api1 - api0) / float64(n),
			operatorCPUs: cpuOf(pid) - cpuStart}
		// After the CPU reading: the forced GC is the harness's, not the operation's.
		var gc1 int64
		if p.liveHeap, gc1, err = heapStats(ctx, true); err != nil {
			return err
		}
		p.gcs = gc1 - gc0 - 1
		if name == "migrate" {
			res.top = heapTop(ctx, n)
		}
		res.phases = append(res.phases, p)
		fmt.Printf("  %-8s %6d in %7.1fs  %7.1f/s  p50 %6.0fms  p99 %6.0fms  %5.1f API requests/op  operator CPU %.1fs  %d GCs  live heap %.1f MiB\n",
			name, n, wall.Seconds(), float64(n)/wall.Seconds(), ms(p.p50), ms(p.p99), p.apiPerOp, p.operatorCPUs, p.gcs, float64(p.liveHeap)/(1<<20))
		return nil
	}
	if err := phase("create", func(i int) error {
		return c.Create(ctx, &v1.SharedVolume{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: volName(i)},
			Spec: v1.SharedVolumeSpec{VolumeGroup: "vg1", Size: resource.MustParse("1Gi")}})
	}, func(i int) string { return "available/" + volName(i) }); err != nil {
		return res, err
	}
	if err := phase("attach", func(i int) error { return attach(srcName(i), volName(i), srcNode(i), v1.PurposeInstance) },
		func(i int) string { return "Exclusive/" + srcName(i) }); err != nil {
		return res, err
	}
	if !stopped {
		calls, cpu, err := atRest(ctx, storage, pid)
		if err != nil {
			return res, err
		}
		res.callsPerCycle, res.restCPU = calls, cpu
		fmt.Printf("  at rest, %d volumes attached (%d per node): LVM/sanlock calls of one agent per reporting cycle %.1f, operator CPU %.1f ms/s\n", n, n / *nodes, calls, cpu*1000)
	}
	if err := phase("migrate", func(i int) error { return attach(dstName(i), volName(i), dstNode(i), v1.PurposeMigrationTarget) },
		func(i int) string { return "Shared/" + dstName(i) }); err != nil {
		return res, err
	}
	if err := phase("handoff", func(i int) error { return detach(srcName(i)) },
		func(i int) string { return "Exclusive/" + dstName(i) }); err != nil {
		return res, err
	}
	if err := phase("detach", func(i int) error { return detach(dstName(i)) },
		func(i int) string { return "gone/" + dstName(i) }); err != nil {
		return res, err
	}
	if err := phase("delete", func(i int) error {
		return c.Delete(ctx, &v1.SharedVolume{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: volName(i)}})
	}, func(i int) string { return "deleted/" + volName(i) }); err != nil {
		return res, err
	}
	stopSampling()
	res.maxRSS = rss.Load()
	res.cpuSeconds = cpuOf(pid) - cpu0
	fmt.Printf("  operator: max RSS %.0f MiB, CPU %.1fs\n", float64(res.maxRSS)/(1<<20), res.cpuSeconds)
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// atRest counts one agent's storage commands per reporting cycle and the operator's CPU
// seconds per second, over two reporting cycles with nothing asked of the system: the cost
// that runs whatever the load (and that a slower phase counts as per-operation CPU).
func atRest(ctx context.Context, storage *fakelvm.Cluster, pid int) (calls, cpuPerSecond float64, err error) {
	// One report cycle to settle first: the phase before ends when its last change is
	// applied, with the operator still working off the tail of the burst's queue.
	select {
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	case <-time.After(*reportInterval):
	}
	h := storage.Host(1)
	h.ResetCalls()
	cpu0, t0 := cpuOf(pid), time.Now()
	select {
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	case <-time.After(2 * *reportInterval):
	}
	return float64(len(h.Calls())) / 2, (cpuOf(pid) - cpu0) / time.Since(t0).Seconds(), nil
}

// apiRequests sums the apiserver's apiserver_request_total (every client's requests).
func apiRequests(ctx context.Context, cs *kubernetes.Clientset) (float64, error) {
	raw, err := cs.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, err
	}
	var total float64
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			total += v
		}
	}
	return total, nil
}

func rssOf(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// cpuOf returns a process's user+system CPU seconds (USER_HZ = 100 on Linux).
func cpuOf(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndex(s, ")")+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100
}
