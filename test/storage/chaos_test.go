//go:build storage

package storage

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/envtestutil"
	"github.com/sharedlvm/sharedlvm-operator/internal/testbed"
	"github.com/sharedlvm/sharedlvm-operator/roles"
	"github.com/sharedlvm/sharedlvm-operator/test/faults"
)

// The chaos tier (#16 §1): random faults at random moments of real work on the VM bed, then
// invariants read from the hosts themselves. SHAREDLVM_CHAOS_ROUNDS sets the rounds (default
// 50: every fault kind, resets rarest as each costs sanlock's unclean-rejoin time),
// SHAREDLVM_CHAOS_SEED replays a run.

// fault kinds, each recovered as production would.
const (
	faultAgent     = "agent SIGKILL (DaemonSet restarts it)"
	faultOperator  = "operator leader SIGKILL (the standby replica takes over; the Deployment restarts it)"
	faultLvmlockd  = "lvmlockd SIGKILL (restarted with -A 1)"
	faultAPIServer = "apiserver unreachable 30-60 s"
	faultReset     = "VM hard reset"
	faultSanlock   = "sanlock SIGKILL (watchdog resets the VM)"
)

// chaosSchedule returns the faults of n rounds: every kind at least once from 6 rounds on,
// in proportions that keep 50 rounds near 15 minutes (a reset costs ~100 s of sanlock
// rejoin after an unclean shutdown), shuffled.
// chaosVGs: VolumeGroup object → LVM VG. The first spans two PVs (pvmove moves between
// them); the second is the target of migrations between VGs.
var chaosVGs = map[string]string{"cinder": vg, "cinder2": "vg2"}

func chaosSchedule(n int, rng *rand.Rand) []string {
	counts := map[string]int{faultReset: 1, faultSanlock: 1, faultAPIServer: max(1, n/12), faultLvmlockd: max(1, n/5), faultOperator: max(1, n/4)}
	var out []string
	for _, k := range []string{faultReset, faultSanlock, faultAPIServer, faultLvmlockd, faultOperator} {
		for range counts[k] {
			if len(out) < n {
				out = append(out, k)
			}
		}
	}
	for len(out) < n {
		out = append(out, faultAgent)
	}
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

type chaosVol struct {
	name string
	uid  string
	// vg is the VolumeGroup the volume lives in (chaosVGs), pv the PV its spec.pvs asks
	// for ("" when none).
	vg, pv string
	sum    string // md5 of its first MiB, once written ("" before)
	sizeMi int64
	// atts: node → attachment name, in the order attached.
	atts  []string
	nodes []string
}

type chaos struct {
	*cluster
	t      *testing.T
	rng    *rand.Rand
	api    *faults.Proxy // the apiserver's network: every process goes through it
	apiCfg *rest.Config
	mu     sync.Mutex
	proc   map[string]*faults.Proxy // each process's own connections
	vols   []*chaosVol
	next   int
	// figures
	byKindStep map[string]int
	recover    []time.Duration
	verified   int
	boots      map[string]string // node → boot ID after a reset
	// elected: each operator replica's "elected leader" signal (manager.Elected).
	elected map[string]<-chan struct{}
	// lvmlockdNode is the host whose lvmlockd the round killed (nil otherwise).
	lvmlockdNode *node
	// adminReboots counts rounds after which lvmlockd's successor had not adopted an LV lease
	// (a sanlock ORPHAN): the LV stays blocked until the node is rebooted, which the tier
	// then does as an administrator would (the agent says so on the volume).
	adminReboots int
}

func envInt(name string, def int) int {
	if s := os.Getenv(name); s != "" {
		if v, err := strconv.Atoi(s); err == nil {
			return v
		}
	}
	return def
}

func TestChaosOnRealSharedLVM(t *testing.T) {
	rounds := envInt("SHAREDLVM_CHAOS_ROUNDS", 50)
	seed := int64(envInt("SHAREDLVM_CHAOS_SEED", int(time.Now().UnixNano()%1_000_000_007)))
	t.Logf("chaos: %d rounds, seed %d (replay with SHAREDLVM_CHAOS_SEED=%d SHAREDLVM_CHAOS_ROUNDS=%d)", rounds, seed, seed, rounds)
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
	bed := newBed(t, testbed.Config{Hosts: 2, LUNs: 3, LUNSize: 1 << 30, IOTimeout: 3})
	ch := &chaos{t: t, rng: rng, proc: map[string]*faults.Proxy{}, byKindStep: map[string]int{}, boots: map[string]string{}}
	cl := startClusterVia(t, bed, 0, func(env *envtestutil.Env, name string) *rest.Config {
		ch.mu.Lock()
		defer ch.mu.Unlock()
		if ch.api == nil {
			p, cfg, err := faults.ForConfig(env.Config)
			if err != nil {
				t.Fatal(err)
			}
			ch.api, ch.apiCfg = p, cfg
		}
		// The process's own connections, through the apiserver's network.
		p, cfg, err := faults.ForConfig(ch.apiCfg)
		if err != nil {
			t.Fatal(err)
		}
		if old := ch.proc[name]; old != nil {
			old.Close()
		}
		ch.proc[name] = p
		return cfg
	})
	ch.cluster = cl
	// The operator as the chart deploys it: two replicas with leader election (lease 3 s).
	ch.kill("operator")
	for _, name := range operatorReplicas {
		ch.startReplica(name)
	}
	start := time.Now()
	cl.createVG("/dev/vda", "/dev/vdb")
	if err := cl.c.Create(cl.ctx, &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: "cinder2"},
		Spec: v1.VolumeGroupSpec{VGName: "vg2", PVs: []v1.DevicePath{"/dev/vdc"},
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"san": "lun0"}}}}); err != nil {
		t.Fatal(err)
	}
	cl.wait("VG vg2 created and started on both hosts", 4*time.Minute, func() error {
		var g v1.VolumeGroup
		if err := cl.c.Get(cl.ctx, client.ObjectKey{Name: "cinder2"}, &g); err != nil {
			return err
		}
		if g.Status.NodesReady != "2/2" {
			return fmt.Errorf("nodesReady %q", g.Status.NodesReady)
		}
		return nil
	})
	t.Logf("VGs vg1 (2 PVs) and vg2 created, both hosts' lockspaces started in %.1fs", time.Since(start).Seconds())

	schedule := chaosSchedule(rounds, rng)
	t0 := time.Now()
	for i, fault := range schedule {
		step := ch.pickStep()
		ch.byKindStep[fault+" | "+step]++
		rs := time.Now()
		ch.lvmlockdNode = nil
		ch.issue(step)
		time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
		recovered := ch.inject(fault)
		settled := ch.settle(fmt.Sprintf("round %d (%s during %s)", i+1, fault, step), recovered)
		ch.recover = append(ch.recover, settled)
		ch.writeNew()
		ch.check(fmt.Sprintf("round %d (%s during %s)", i+1, fault, step))
		t.Logf("round %d/%d: %s during %s: settled %.1fs after recovery (round %.1fs)", i+1, rounds, fault, step, settled.Seconds(), time.Since(rs).Seconds())
	}
	ch.report(rounds, time.Since(t0))
}

// pickStep chooses a piece of work that applies to the current volumes.
func (ch *chaos) pickStep() string {
	var steps []string
	live := 0
	for _, v := range ch.vols {
		live++
		switch len(v.nodes) {
		case 0:
			steps = append(steps, "attach", "extend", "delete", "migration to the other VG")
		case 1:
			steps = append(steps, "live migration (ex→sh)", "detach", "extend")
			if v.sum != "" {
				steps = append(steps, "clone")
			}
		case 2:
			steps = append(steps, "migration done (sh→ex)")
		}
		if v.vg == "cinder" && len(v.nodes) < 2 {
			steps = append(steps, "pvmove")
		}
	}
	if live < 5 {
		steps = append(steps, "create", "create")
	}
	return steps[ch.rng.IntN(len(steps))]
}

func (ch *chaos) pickVol(pred func(*chaosVol) bool) *chaosVol {
	var c []*chaosVol
	for _, v := range ch.vols {
		if pred(v) {
			c = append(c, v)
		}
	}
	return c[ch.rng.IntN(len(c))]
}

func (ch *chaos) nodeNames() []string {
	var out []string
	for _, n := range ch.nodes {
		out = append(out, n.Name)
	}
	return out
}

// issue starts a step through the API (as Cinder and Nova would) without waiting for it.
func (ch *chaos) issue(step string) {
	ctx, c := ch.ctx, ch.c
	must := func(err error) {
		if err != nil {
			ch.t.Fatalf("%s: %v", step, err)
		}
	}
	newVol := func(spec v1.SharedVolumeSpec, sizeMi int64) *chaosVol {
		ch.next++
		v := &chaosVol{name: fmt.Sprintf("chaos-%03d", ch.next), sizeMi: sizeMi, vg: "cinder"}
		spec.VolumeGroup, spec.Size = "cinder", resource.MustParse(fmt.Sprintf("%dMi", sizeMi))
		obj := &v1.SharedVolume{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: v.name}, Spec: spec}
		must(c.Create(ctx, obj))
		v.uid = string(obj.UID)
		ch.vols = append(ch.vols, v)
		return v
	}
	attach := func(v *chaosVol, node string, purpose v1.AttachmentPurpose) {
		name := v.name + "-" + node
		must(c.Create(ctx, &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: name},
			Spec: v1.VolumeAttachmentSpec{Volume: v1.ObjectName(v.name), Node: v1.ObjectName(node), Purpose: purpose}}))
		v.atts, v.nodes = append(v.atts, name), append(v.nodes, node)
	}
	detach := func(v *chaosVol, i int) {
		must(client.IgnoreNotFound(c.Delete(ctx, &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: v.atts[i]}})))
		v.atts, v.nodes = slices.Delete(v.atts, i, i+1), slices.Delete(v.nodes, i, i+1)
	}
	switch step {
	case "create":
		newVol(v1.SharedVolumeSpec{}, 8)
	case "attach":
		v := ch.pickVol(func(v *chaosVol) bool { return len(v.nodes) == 0 })
		attach(v, ch.nodeNames()[ch.rng.IntN(len(ch.nodes))], v1.PurposeInstance)
	case "live migration (ex→sh)":
		v := ch.pickVol(func(v *chaosVol) bool { return len(v.nodes) == 1 })
		for _, n := range ch.nodeNames() {
			if n != v.nodes[0] {
				attach(v, n, v1.PurposeMigrationTarget)
				break
			}
		}
	case "migration done (sh→ex)":
		detach(ch.pickVol(func(v *chaosVol) bool { return len(v.nodes) == 2 }), 0)
	case "detach":
		detach(ch.pickVol(func(v *chaosVol) bool { return len(v.nodes) == 1 }), 0)
	case "extend":
		v := ch.pickVol(func(v *chaosVol) bool { return len(v.nodes) < 2 })
		v.sizeMi += 8
		// The operator writes the volume's status meanwhile: re-read on conflict.
		must(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var obj v1.SharedVolume
			if err := c.Get(ctx, client.ObjectKey{Namespace: "cloud", Name: v.name}, &obj); err != nil {
				return err
			}
			obj.Spec.Size = resource.MustParse(fmt.Sprintf("%dMi", v.sizeMi))
			return c.Update(ctx, &obj)
		}))
	case "clone":
		src := ch.pickVol(func(v *chaosVol) bool { return len(v.nodes) == 1 && v.sum != "" })
		clone := newVol(v1.SharedVolumeSpec{Source: &v1.VolumeSource{Volume: v1.ObjectName(src.name)}}, src.sizeMi)
		clone.sum = src.sum
	case "pvmove":
		v := ch.pickVol(func(v *chaosVol) bool { return v.vg == "cinder" && len(v.nodes) < 2 })
		v.pv = "/dev/vdb"
		var obj v1.SharedVolume
		must(c.Get(ctx, client.ObjectKey{Namespace: "cloud", Name: v.name}, &obj))
		if len(obj.Status.PVs) == 1 && obj.Status.PVs[0] == "/dev/vdb" {
			v.pv = "/dev/vda"
		}
		must(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := c.Get(ctx, client.ObjectKey{Namespace: "cloud", Name: v.name}, &obj); err != nil {
				return err
			}
			obj.Spec.PVs = []v1.DevicePath{v1.DevicePath(v.pv)}
			return c.Update(ctx, &obj)
		}))
	case "migration to the other VG":
		v := ch.pickVol(func(v *chaosVol) bool { return len(v.nodes) == 0 })
		v.vg = map[string]string{"cinder": "cinder2", "cinder2": "cinder"}[v.vg]
		v.pv = "" // spec.pvs name PVs of the old VG: the migration clears them
		must(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var obj v1.SharedVolume
			if err := c.Get(ctx, client.ObjectKey{Namespace: "cloud", Name: v.name}, &obj); err != nil {
				return err
			}
			obj.Spec.VolumeGroup, obj.Spec.PVs = v1.ObjectName(v.vg), nil
			return c.Update(ctx, &obj)
		}))
	case "delete":
		v := ch.pickVol(func(v *chaosVol) bool { return len(v.nodes) == 0 })
		must(client.IgnoreNotFound(c.Delete(ctx, &v1.SharedVolume{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: v.name}})))
		ch.vols = slices.DeleteFunc(ch.vols, func(x *chaosVol) bool { return x == v })
	default:
		ch.t.Fatalf("unknown step %q", step)
	}
}

// operatorReplicas are the operator's pods.
var operatorReplicas = []string{"operator-a", "operator-b"}

// startReplica runs one operator replica (again, after a kill) with leader election.
func (ch *chaos) startReplica(name string) {
	ch.t.Helper()
	if stop := ch.agents[name]; stop != nil {
		stop()
	}
	octx, cancel := context.WithCancel(ch.ctx)
	op, err := roles.NewOperator(octx, ch.config(name), roles.OperatorOptions{MetricsAddr: "0", ProbeAddr: "0",
		LeaderElection: true, LeaderElectionNamespace: "default",
		LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 500 * time.Millisecond})
	if err != nil {
		ch.t.Fatal(err)
	}
	go func() { _ = op.Start(octx) }()
	ch.agents[name] = cancel
	ch.mu.Lock()
	if ch.elected == nil {
		ch.elected = map[string]<-chan struct{}{}
	}
	ch.elected[name] = op.Elected()
	ch.mu.Unlock()
}

// leader is the replica that leads now (waiting for an election if none does yet).
func (ch *chaos) leader() string {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ch.mu.Lock()
		for _, name := range operatorReplicas {
			select {
			case <-ch.elected[name]:
				ch.mu.Unlock()
				return name
			default:
			}
		}
		ch.mu.Unlock()
		time.Sleep(100 * time.Millisecond)
	}
	ch.t.Fatal("no operator replica elected within 30 s")
	return ""
}

// kill ends a process abruptly: its connections die first (no last write), then it stops.
func (ch *chaos) kill(name string) {
	ch.mu.Lock()
	p := ch.proc[name]
	ch.mu.Unlock()
	if p != nil {
		p.Cut()
	}
	if stop := ch.agents[name]; stop != nil {
		stop()
		delete(ch.agents, name)
	}
}

// inject applies a fault and its recovery, returning when the recovery action was taken.
func (ch *chaos) inject(fault string) time.Time {
	ctx := ch.ctx
	n := ch.nodes[ch.rng.IntN(len(ch.nodes))]
	switch fault {
	case faultAgent:
		ch.kill(n.Name)
		time.Sleep(time.Duration(500+ch.rng.IntN(2500)) * time.Millisecond)
		ch.startAgent(n)
	case faultOperator:
		leader := ch.leader()
		ch.kill(leader)
		time.Sleep(time.Duration(500+ch.rng.IntN(2500)) * time.Millisecond)
		ch.startReplica(leader)
	case faultLvmlockd:
		ch.lvmlockdNode = n
		pid := strings.TrimSpace(run(ctx, ch.t, n, "cat", "/run/lvmlockd.pid"))
		run(ctx, ch.t, n, "busybox", "kill", "-9", pid)
		time.Sleep(time.Duration(200+ch.rng.IntN(1800)) * time.Millisecond)
		// As a node's init restarts it: adopting the locks the dead one held.
		run(ctx, ch.t, n, "lvmlockd", "-o", "3", "-A", "1")
	case faultAPIServer:
		ch.api.Cut()
		time.Sleep(time.Duration(30+ch.rng.IntN(31)) * time.Second)
		if err := ch.api.Restore(); err != nil {
			ch.t.Fatal(err)
		}
	case faultReset, faultSanlock:
		if fault == faultSanlock {
			pid := strings.TrimSpace(run(ctx, ch.t, n, "cat", "/run/sanlock/sanlock.pid"))
			run(ctx, ch.t, n, "busybox", "kill", "-9", pid)
			time.Sleep(time.Second) // the watchdog's reset follows
		}
		ch.kill(n.Name)
		ch.boots[n.Name] = ch.powerCycle(n)
		ch.startAgent(n)
	default:
		ch.t.Fatalf("unknown fault %q", fault)
	}
	return time.Now()
}

// settle waits until every volume and attachment is where its spec says (Ready), failing
// with the objects that are not, and their conditions, after the bound.
func (ch *chaos) settle(round string, from time.Time) time.Duration {
	bound := 3 * time.Minute
	if strings.Contains(round, "reset") {
		bound = 6 * time.Minute // sanlock's rejoin after an unclean shutdown: ~100 s here
	}
	var last string
	for time.Since(from) < bound {
		last = ch.unsettled()
		if last == "" {
			return time.Since(from)
		}
		if n := ch.lvmlockdNode; n != nil && time.Since(from) > 45*time.Second && ch.orphanedLVLease(n) {
			ch.t.Logf("%s: %s holds an LV lease lvmlockd did not adopt (sanlock ORPHAN), the LV blocked (%s): rebooting the node as an administrator would", round, n.Name, last)
			ch.adminReboots++
			ch.lvmlockdNode = nil
			ch.kill(n.Name)
			ch.boots[n.Name] = ch.powerCycle(n)
			ch.startAgent(n)
			from, bound = time.Now(), 6*time.Minute
		}
		time.Sleep(500 * time.Millisecond)
	}
	ch.diagnose()
	ch.t.Fatalf("%s: not settled %s after recovery: %s", round, bound, last)
	return 0
}

func (ch *chaos) unsettled() string {
	ctx := ch.ctx
	var vols v1.SharedVolumeList
	var atts v1.VolumeAttachmentList
	if err := ch.c.List(ctx, &vols, client.InNamespace("cloud")); err != nil {
		return err.Error()
	}
	if err := ch.c.List(ctx, &atts, client.InNamespace("cloud")); err != nil {
		return err.Error()
	}
	want := map[string]*chaosVol{}
	for _, v := range ch.vols {
		want[v.name] = v
	}
	var out []string
	for _, v := range vols.Items {
		w, ok := want[v.Name]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("volume %s still exists (deleting: %v)", v.Name, v.DeletionTimestamp != nil))
		case v.Status.Phase != v1.VolumeAvailable && v.Status.Phase != v1.VolumeInUse:
			out = append(out, fmt.Sprintf("volume %s %s %s", v.Name, v.Status.Phase, conds(v.Status.Conditions)))
		case v.Status.AllocatedSize == nil || v.Status.AllocatedSize.Value() < w.sizeMi<<20:
			out = append(out, fmt.Sprintf("volume %s allocated %v, want %dMi %s", v.Name, v.Status.AllocatedSize, w.sizeMi, conds(v.Status.Conditions)))
		case string(v.Status.VolumeGroup) != w.vg || v.Status.RetiredLV != nil:
			out = append(out, fmt.Sprintf("volume %s in VolumeGroup %s (retired LV %v), want %s %s", v.Name, v.Status.VolumeGroup, v.Status.RetiredLV, w.vg, conds(v.Status.Conditions)))
		case w.pv != "" && (len(v.Status.PVs) != 1 || string(v.Status.PVs[0]) != w.pv || v.Status.Progress != nil):
			out = append(out, fmt.Sprintf("volume %s on PVs %v (progress %v), want %s %s", v.Name, v.Status.PVs, v.Status.Progress, w.pv, conds(v.Status.Conditions)))
		}
		delete(want, v.Name)
	}
	for name := range want {
		out = append(out, "volume "+name+" missing")
	}
	wantAtt := map[string]bool{}
	for _, v := range ch.vols {
		for _, a := range v.atts {
			wantAtt[a] = true
		}
	}
	for _, a := range atts.Items {
		switch {
		case !wantAtt[a.Name]:
			out = append(out, fmt.Sprintf("attachment %s still exists", a.Name))
		case a.Status.Phase != v1.AttachmentAttached || a.Status.AppliedLock != a.Status.DesiredLock:
			out = append(out, fmt.Sprintf("attachment %s %s applied %q desired %q %s", a.Name, a.Status.Phase, a.Status.AppliedLock, a.Status.DesiredLock, conds(a.Status.Conditions)))
		}
		delete(wantAtt, a.Name)
	}
	for name := range wantAtt {
		out = append(out, "attachment "+name+" missing")
	}
	// The VolumeGroup is an object too: every node's lockspace started, every node restored
	// for its current boot.
	for name := range chaosVGs {
		var g v1.VolumeGroup
		if err := ch.c.Get(ctx, client.ObjectKey{Name: name}, &g); err != nil {
			return err.Error()
		}
		if c := meta.FindStatusCondition(g.Status.Conditions, v1.ConditionReady); g.Status.NodesReady != "2/2" || c == nil || c.Status != metav1.ConditionTrue {
			out = append(out, fmt.Sprintf("VolumeGroup %s nodesReady %s %s", name, g.Status.NodesReady, conds(g.Status.Conditions)))
		}
		for _, e := range g.Status.Nodes {
			if !e.LockspaceStarted || (e.Reason != "" && e.Reason != v1.LockspaceStarted) {
				out = append(out, fmt.Sprintf("VolumeGroup %s entry of %s: started %v %s: %s", name, e.Node, e.LockspaceStarted, e.Reason, e.Message))
			}
		}
	}
	for _, n := range ch.nodes {
		var node corev1.Node
		if err := ch.c.Get(ctx, client.ObjectKey{Name: n.Name}, &node); err != nil {
			return err.Error()
		}
		if boot := ch.boots[n.Name]; boot != "" && node.Annotations[v1.AnnotationRestoredBootID] != boot {
			out = append(out, fmt.Sprintf("node %s has not restored boot %s yet", n.Name, boot))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

func conds(cs []metav1.Condition) string {
	var out []string
	for _, c := range cs {
		if c.Status != metav1.ConditionTrue || c.Type == v1.ConditionReady {
			out = append(out, fmt.Sprintf("%s=%s/%s: %s", c.Type, c.Status, c.Reason, c.Message))
		}
	}
	return "[" + strings.Join(out, "; ") + "]"
}

// writeNew writes 1 MiB of random data to each attached volume not written yet, on its
// holder, and records its checksum.
func (ch *chaos) writeNew() {
	ctx := ch.ctx
	for _, v := range ch.vols {
		if v.sum != "" || len(v.nodes) != 1 {
			continue
		}
		n := ch.node(v.nodes[0])
		dev := "/dev/" + chaosVGs[v.vg] + "/" + v.name
		run(ctx, ch.t, n, "dd", "if=/dev/urandom", "of="+dev, "bs=1M", "count=1", "oflag=direct", "conv=fsync")
		v.sum = ch.readSum(n, v)
	}
}

func (ch *chaos) readSum(n *node, v *chaosVol) string {
	ctx := ch.ctx
	run(ctx, ch.t, n, "dd", "if=/dev/"+chaosVGs[v.vg]+"/"+v.name, "of=/tmp/chaos-read", "bs=1M", "count=1", "iflag=direct")
	return md5(ctx, ch.t, n, "/tmp/chaos-read")
}

// check reads the truth from the hosts: which LVs are active where, which leases each
// host's sanlock holds, every LV's owner tag, and the data.
func (ch *chaos) check(round string) {
	ctx := ch.ctx
	t := ch.t
	attOn := map[string]map[string]bool{} // volume → nodes
	byUID := map[string]*chaosVol{}
	for _, v := range ch.vols {
		attOn[v.name] = map[string]bool{}
		for _, n := range v.nodes {
			attOn[v.name][n] = true
		}
		byUID[v.uid] = v
	}
	owners := map[string]int{}
	for _, n := range ch.nodes {
		rep, err := n.LVM.Report(ctx, vg, "vg2")
		if err != nil {
			t.Fatalf("%s: %s: lvs: %v", round, n.Name, err)
		}
		st, err := n.Sanlock.Status(ctx)
		if err != nil {
			t.Fatalf("%s: %s: sanlock status: %v", round, n.Name, err)
		}
		for _, vgName := range []string{vg, "vg2"} {
			g, _ := rep.VG(vgName)
			for _, lv := range g.LVs {
				if lv.Name == "lvmlock" || strings.HasPrefix(lv.Name, "[") {
					continue
				}
				uid := ""
				for _, tag := range lv.Tags {
					if u, ok := strings.CutPrefix(tag, v1.OwnerTag("")); ok {
						uid = u
					}
				}
				v := byUID[uid]
				if n == ch.nodes[0] {
					if v == nil {
						t.Fatalf("%s: LV %s (tags %v) belongs to no live volume: leaked or lost", round, lv.Name, lv.Tags)
					}
					owners[uid]++
				}
				_, leased := st.Lease(vgName, lv.UUID)
				if v == nil {
					continue
				}
				if chaosVGs[v.vg] != vgName {
					t.Fatalf("%s: LV %s of volume %s is in VG %s, the volume in %s", round, lv.Name, v.name, vgName, v.vg)
				}
				if lv.ActiveLocally && !attOn[v.name][n.Name] {
					t.Fatalf("%s: LV %s active on %s without an attachment there (attachments on %v)", round, lv.Name, n.Name, v.nodes)
				}
				if leased && !attOn[v.name][n.Name] {
					t.Fatalf("%s: %s's sanlock holds the lease of %s without an attachment there (attachments on %v)", round, n.Name, lv.Name, v.nodes)
				}
				if attOn[v.name][n.Name] && (!leased || !lv.ActiveLocally) {
					t.Fatalf("%s: %s has an attachment of %s but holds lease=%v active=%v", round, n.Name, lv.Name, leased, lv.ActiveLocally)
				}
			}
		}
	}
	for uid, v := range byUID {
		if owners[uid] != 1 {
			t.Fatalf("%s: volume %s has %d LVs with its owner tag", round, v.name, owners[uid])
		}
		if v.sum != "" && len(v.nodes) > 0 {
			if got := ch.readSum(ch.node(v.nodes[0]), v); got != v.sum {
				t.Fatalf("%s: volume %s reads md5 %s on %s, written %s", round, v.name, got, v.nodes[0], v.sum)
			}
			ch.verified++
		}
	}
	var vgObj v1.VolumeGroup
	if err := ch.c.Get(ctx, client.ObjectKey{Name: "cinder"}, &vgObj); err == nil {
		if c := meta.FindStatusCondition(vgObj.Status.Conditions, v1.ConditionHostIDConflict); c != nil && c.Status == metav1.ConditionTrue {
			t.Fatalf("%s: HostIDConflict: %s", round, c.Message)
		}
	}
}

func (ch *chaos) report(rounds int, took time.Duration) {
	var keys []string
	for k := range ch.byKindStep {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	kinds := map[string]int{}
	var b strings.Builder
	fmt.Fprintf(&b, "chaos: %d rounds in %.1f min, 0 violations, %d checksum reads verified, %d node reboot(s) for an LV lease lvmlockd did not adopt\n", rounds, took.Minutes(), ch.verified, ch.adminReboots)
	fmt.Fprintf(&b, "| fault | step | rounds |\n|---|---|---|\n")
	for _, k := range keys {
		f, s, _ := strings.Cut(k, " | ")
		kinds[f] += ch.byKindStep[k]
		fmt.Fprintf(&b, "| %s | %s | %d |\n", f, s, ch.byKindStep[k])
	}
	rec := slices.Clone(ch.recover)
	slices.Sort(rec)
	pct := func(p float64) float64 {
		if len(rec) == 0 {
			return 0
		}
		return rec[min(len(rec)-1, int(p*float64(len(rec))))].Seconds()
	}
	fmt.Fprintf(&b, "recovery (fault recovered → everything settled): p50 %.1f s, p99 %.1f s, max %.1f s\n", pct(0.5), pct(0.99), rec[len(rec)-1].Seconds())
	var kk []string
	for k, n := range kinds {
		kk = append(kk, fmt.Sprintf("%s: %d", k, n))
	}
	sort.Strings(kk)
	fmt.Fprintf(&b, "by fault: %s\n", strings.Join(kk, "; "))
	ch.t.Log("\n" + b.String())
	_ = os.WriteFile(ch.nodes[0].Host.Console+".chaos.md", []byte(b.String()), 0o644)
}

// diagnose logs each host's lock state, lvmlockd's and sanlock's own logs included.
func (ch *chaos) diagnose() {
	for _, n := range ch.nodes {
		for _, argv := range [][]string{
			{"sanlock", "client", "status"}, {"lvmlockctl", "--info"}, {"cat", "/run/lvm/lvmlockd.adopt"},
			{"lvmlockctl", "--dump"}, {"sanlock", "client", "log_dump"},
		} {
			res, err := n.Run(ch.ctx, argv)
			out := string(res.Stdout) + string(res.Stderr)
			if len(out) > 6000 {
				out = "…" + out[len(out)-6000:]
			}
			ch.t.Logf("%s: %v (err %v):\n%s", n.Name, argv, err, out)
		}
	}
}

// orphanedLVLease: the host's sanlock keeps an LV lease whose holder (a dead lvmlockd) is gone.
func (ch *chaos) orphanedLVLease(n *node) bool {
	st, err := n.Sanlock.Status(ch.ctx)
	if err != nil {
		return false
	}
	for _, r := range st.Resources {
		if r.Orphan && r.Name != "VGLK" && r.Name != "GLLK" {
			return true
		}
	}
	return false
}
