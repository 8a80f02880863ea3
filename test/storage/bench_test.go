//go:build storage && bench

package storage

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/sharedlvm/sharedlvm-operator/agent"
	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
	"github.com/sharedlvm/sharedlvm-operator/internal/envtestutil"
	"github.com/sharedlvm/sharedlvm-operator/internal/testbed"
	"github.com/sharedlvm/sharedlvm-operator/metrics"
	"github.com/sharedlvm/sharedlvm-operator/roles"
)

// benchRow is one operation through the CRs next to the raw command doing the same work on
// the same host and VG in the same run.
type benchRow struct {
	op, raw     string
	cr, rawTime time.Duration
	target      float64 // ratio target (0: none)
}

// rawLVCreate is the argv the agent's create runs (lvm.Client.CreateLV with the owner tags),
// for another LV name: the raw side of the create rows does the same work.
func rawLVCreate(name string, size int64) []string {
	return []string{"lvcreate", "-y", "-n", name, "-L", fmt.Sprintf("%db", size), "-an", "-Zn",
		"--addtag", v1.OwnerTag("00000000-0000-4000-8000-000000000000"), "--addtag", v1.TagManaged, vg}
}

// createdLVReads sums the agents' sharedlvm_created_lv_reads_total by source, from the
// process's metrics registry (the agents run in this process).
func createdLVReads(t *testing.T) string {
	mfs, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "sharedlvm_created_lv_reads_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "source" {
					by[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return fmt.Sprintf("%.0f read the metadata lvcreate committed, %.0f asked lvs", by[metrics.SourceCommittedMetadata], by[metrics.SourceLVs])
}

// agentCreateTimes are the agent's own create times, from its Created Events ("... in 0.52s")
// of the volumes named with prefix.
func agentCreateTimes(t *testing.T, cl *cluster, prefix string) []time.Duration {
	t.Helper()
	var evs eventsv1.EventList
	if err := cl.c.List(cl.ctx, &evs, client.InNamespace("cloud")); err != nil {
		t.Fatal(err)
	}
	var out []time.Duration
	for _, e := range evs.Items {
		if e.Reason != "Created" || !strings.HasPrefix(e.Regarding.Name, prefix) {
			continue
		}
		i := strings.LastIndex(e.Note, " in ")
		var secs float64
		if i < 0 || !strings.HasSuffix(e.Note, "s") {
			continue
		}
		if _, err := fmt.Sscanf(strings.TrimSuffix(e.Note[i+4:], "s"), "%f", &secs); err == nil {
			out = append(out, time.Duration(secs*float64(time.Second)))
		}
	}
	return out
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// TestBenchRatiosOnRealSharedLVM is the bench tier (hack/bench.sh): each operation through
// the custom resources against the raw LVM command on the same VM host and VG, medians of
// several runs, ratios against the targets; the table goes to bench/results.
//
// With SHAREDLVM_BENCH_SHORT set (the README's test command), its short form: the single
// operations, 5 of each, and target 5 asserted; no restores, no table kept (~1.5 min).
func TestBenchRatiosOnRealSharedLVM(t *testing.T) {
	// 9: the raw lvcreate alone varies 0.32–0.42 s from run to run on this bed.
	reps := 9
	short := os.Getenv("SHAREDLVM_BENCH_SHORT") != ""
	if short {
		reps = 5
	}
	bed := newBed(t, testbed.Config{Hosts: 2, LUNs: 3, LUNSize: 16 << 30, IOTimeout: 3})
	// The agents report at the product's default interval: each report holds the VG lock
	// shared for a moment, and the storage scenarios' 2 s would make metadata changes wait
	// for it far more often than a deployment does.
	cl := startClusterWith(t, bed, agent.DefaultReportInterval)
	a, b := cl.nodes[0], cl.nodes[1]
	ctx := cl.ctx
	cl.createVG()
	var rows []benchRow
	var targets []benchTarget
	timeRaw := func(n *node, argv ...string) time.Duration {
		t.Helper()
		start := time.Now()
		run(ctx, t, n, argv...)
		return time.Since(start)
	}

	// create: SharedVolume → Available, vs lvcreate -an of the same size. Each lvcreate is
	// traced: how long it took seen from the host, and inside the guest.
	var crCreate, rawCreate []time.Duration
	var traceMu sync.Mutex
	lvcreateTook := map[string][]time.Duration{}
	type span struct {
		host, cmd  string
		start, end time.Time
	}
	var spans []span
	for _, n := range cl.nodes {
		n.Trace(func(argv []string, took, inGuest time.Duration) {
			traceMu.Lock()
			spans = append(spans, span{n.Name, strings.Join(argv[:min(len(argv), 4)], " "), time.Now().Add(-took), time.Now()})
			traceMu.Unlock()
			if len(argv) < 4 || argv[0] != "lvcreate" {
				return
			}
			side := "agent"
			if strings.HasPrefix(argv[3], "raw-") {
				side = "raw"
			}
			traceMu.Lock()
			defer traceMu.Unlock()
			lvcreateTook[side] = append(lvcreateTook[side], took)
			lvcreateTook[side+" in guest"] = append(lvcreateTook[side+" in guest"], inGuest)
		})
	}
	for i := 0; i < reps; i++ {
		start := time.Now()
		vol := cl.createVolume(fmt.Sprintf("bench-%d", i), "64Mi", true)
		cl.wait("available", time.Minute, cl.available(vol))
		crCreate = append(crCreate, time.Since(start))
		rawCreate = append(rawCreate, timeRaw(a, rawLVCreate(fmt.Sprintf("raw-%d", i), 64<<20)...))
	}
	for _, n := range cl.nodes {
		n.Trace(nil)
	}
	// What else ran, on either host, while the agent's lvcreates ran.
	overlaps := 0
	for _, c := range spans {
		if !strings.HasPrefix(c.cmd, "lvcreate -y -n bench-") {
			continue
		}
		for _, o := range spans {
			if o != c && o.start.Before(c.end) && o.end.After(c.start) {
				overlaps++
				t.Logf("during %s on %s (%v): %s on %s (%v)", c.cmd, c.host, c.end.Sub(c.start).Round(time.Millisecond), o.cmd, o.host, o.end.Sub(o.start).Round(time.Millisecond))
			}
		}
	}
	rows = append(rows, benchRow{"create (SharedVolume → Available)", "lvcreate -an, the agent's argv", median(crCreate), median(rawCreate), 1.2})
	agentCreate := agentCreateTimes(t, cl, "bench-")

	// attach and detach on host1, vs lvchange -aey / -an.
	var crAttach, rawAttach, crDetach, rawDetach []time.Duration
	for i := 0; i < reps; i++ {
		name := fmt.Sprintf("bench-%d-host1", i)
		start := time.Now()
		cl.attach(name, fmt.Sprintf("bench-%d", i), "host1", v1.PurposeInstance)
		cl.wait("attached", time.Minute, cl.attached(name, v1.LockExclusive))
		crAttach = append(crAttach, time.Since(start))
		rawAttach = append(rawAttach, timeRaw(a, "lvchange", "-aey", fmt.Sprintf("%s/raw-%d", vg, i)))
	}
	// 1→2 holders (live-migration handoff) on each bench-i: host2's target → both shared,
	// vs the raw pair (convert on host1, activate shared on host2) on raw-i; then the target
	// goes and host1 is exclusive again (both sides).
	var crConvert, rawConvert []time.Duration
	for i := 0; i < reps; i++ {
		start := time.Now()
		cl.attach(fmt.Sprintf("bench-%d-host2", i), fmt.Sprintf("bench-%d", i), "host2", v1.PurposeMigrationTarget)
		cl.wait("both shared", time.Minute, cl.attached(fmt.Sprintf("bench-%d-host2", i), v1.LockShared))
		crConvert = append(crConvert, time.Since(start))
		rawLV := fmt.Sprintf("%s/raw-%d", vg, i)
		rawConvert = append(rawConvert, timeRaw(a, "lvchange", "-asy", rawLV)+timeRaw(b, "lvchange", "-asy", rawLV))
		cl.detach(fmt.Sprintf("bench-%d-host2", i))
		cl.wait("exclusive again", time.Minute, cl.attached(fmt.Sprintf("bench-%d-host1", i), v1.LockExclusive))
		run(ctx, t, b, "lvchange", "-an", rawLV)
		run(ctx, t, a, "lvchange", "-aey", rawLV)
	}
	t.Logf("create %v (raw %v); attach %v (raw %v); 1→2 %v (raw %v)", crCreate, rawCreate, crAttach, rawAttach, crConvert, rawConvert)
	rows = append(rows, benchRow{"attach (VolumeAttachment → Attached, exclusive)", "lvchange -aey", median(crAttach), median(rawAttach), 1.2})
	// #18's target 5, judged with the raw pair's spread in the targets table below.
	rows = append(rows, benchRow{"1→2 holders (migration target → both Shared)", "lvchange -asy on holder + on target", median(crConvert), median(rawConvert), 0})
	targets = append(targets, ratioTarget("5. 1→2 holders (live-migration handoff), median", median(crConvert), rawConvert, 1.2))
	for i := 0; i < reps; i++ {
		start := time.Now()
		cl.detach(fmt.Sprintf("bench-%d-host1", i))
		crDetach = append(crDetach, time.Since(start))
		rawDetach = append(rawDetach, timeRaw(a, "lvchange", "-an", fmt.Sprintf("%s/raw-%d", vg, i)))
	}
	t.Logf("detach %v (raw %v)", crDetach, rawDetach)
	rows = append(rows, benchRow{"detach (VolumeAttachment deleted → gone, lock released)", "lvchange -an", median(crDetach), median(rawDetach), 1.2})
	if short {
		var md strings.Builder
		fmt.Fprintf(&md, "Bench short form (SHAREDLVM_BENCH_SHORT), medians of %d:\n\n", reps)
		writeRows(&md, rows)
		writeTargets(&md, targets)
		t.Logf("bench:\n%s", md.String())
		assertTargets(t, targets)
		return
	}

	// 100 creates at once vs 100 serialized lvcreates (LVM serializes per VG anyway).
	const batch = 100
	start := time.Now()
	vols := make([]*v1.SharedVolume, batch)
	for i := range vols {
		vols[i] = cl.createVolume(fmt.Sprintf("batch-%03d", i), "4Mi", false)
	}
	for _, vol := range vols {
		cl.wait("available", 10*time.Minute, cl.available(vol))
	}
	crBatch := time.Since(start)
	start = time.Now()
	for i := 0; i < batch; i++ {
		run(ctx, t, a, rawLVCreate(fmt.Sprintf("rawbatch-%03d", i), 4<<20)...)
	}
	rawBatch := time.Since(start)
	rows = append(rows, benchRow{fmt.Sprintf("%d creates at once → all Available", batch), fmt.Sprintf("%d such lvcreate in sequence", batch), crBatch, rawBatch, 1.2})
	batchCreate := agentCreateTimes(t, cl, "batch-")
	sort.Slice(batchCreate, func(i, j int) bool { return batchCreate[i] < batchCreate[j] })

	// Reboot restores of host1 (#18): A) N attachments in one VG (the batch's), B) 3 VGs ×
	// N, C) 500 in one VG, D) the same 500 of which 5 were taken by host2 while host1 was
	// away. Each against lvmlockd's floor measured raw on the same host and LVs.
	restoreN := max(restoreCount(), batch)
	for i := batch; i < restoreN; i++ {
		vols = append(vols, cl.createVolume(fmt.Sprintf("batch-%03d", i), "4Mi", false))
	}
	attachAll := func(vols []*v1.SharedVolume) {
		for _, vol := range vols {
			cl.wait("available", 10*time.Minute, cl.available(vol))
		}
		for _, vol := range vols {
			cl.attach(vol.Name+"-host1", vol.Name, "host1", v1.PurposeInstance)
		}
		for _, vol := range vols {
			cl.wait("attached", 10*time.Minute, cl.attached(vol.Name+"-host1", v1.LockExclusive))
		}
	}
	attachAll(vols)
	lvNames := func(vgName string, vols []*v1.SharedVolume) []string {
		out := make([]string, len(vols))
		for i, vol := range vols {
			out[i] = vgName + "/" + vol.Name
		}
		return out
	}
	// rawActivate: with host1's agent stopped (it would take back its attachments' locks
	// while the raw commands run), lvmlockd's floor: one lvchange -aey of all the LVs, as the
	// restore runs it, twice (the two give the run-to-run spread). It leaves them active.
	rawActivate := func(names []string) (time.Duration, time.Duration) {
		t.Helper()
		if stop := cl.agents["host1"]; stop != nil {
			stop()
		}
		var took [2]time.Duration
		for k := range took {
			run(ctx, t, a, append([]string{"lvchange", "-an"}, names...)...)
			took[k] = timeRaw(a, append([]string{"lvchange", "-aey"}, names...)...)
		}
		return took[0], took[1]
	}
	// rawAfterBoot: lvmlockd's floor in the restore's own situation: host1 power-cycled with
	// its agent stopped, the VGs' lockspaces joined raw (at once), then one lvchange -aey of
	// each VG's LVs (the VGs at once), the first after the boot: the warm raw runs take place
	// a minute later on a settled host. It leaves the LVs active and host1's agent stopped.
	rawAfterBoot := func(lvs map[string][]string) time.Duration {
		t.Helper()
		hostID := hostIDOf(ctx, t, a)
		cl.powerCycle(a)
		vgs := slices.Sorted(maps.Keys(lvs))
		atOnce(vgs, func(vgName string) {
			deadline := time.Now().Add(5 * time.Minute)
			for {
				// The daemons start with the guest; until lvmlockd answers, lockstart fails.
				_, err := a.LVM.Lockstart(ctx, vgName, hostID)
				if err == nil {
					return
				}
				if time.Now().After(deadline) {
					t.Errorf("raw join of %s on host1 after its power cycle: %v", vgName, err)
					return
				}
				time.Sleep(time.Second)
			}
		})
		return atOnce(vgs, func(vgName string) {
			if _, err := a.MustRun(ctx, append([]string{"lvchange", "-aey"}, lvs[vgName]...)...); err != nil {
				t.Error(err)
			}
		})
	}
	cA := restoreCycle(t, cl, a)
	restoreN = len(vols)
	names := lvNames(vg, vols)
	rawA1, rawA2 := rawActivate(names)
	rawABoot := rawAfterBoot(map[string][]string{vg: names})
	// The same LVs one lvchange each, for the record (what a restore without batching costs).
	run(ctx, t, a, append([]string{"lvchange", "-an"}, names...)...)
	start = time.Now()
	retries := 0
	for _, n := range names {
		// Retried like the agent would: on this bed sanlock sometimes fails a VG lock under
		// load (lvmlockd error -221), which is not the product's time.
		for attempt := 1; ; attempt++ {
			_, err := a.MustRun(ctx, "lvchange", "-aey", n)
			if err == nil {
				break
			}
			if attempt == 3 {
				t.Fatal(err)
			}
			retries++
			t.Logf("raw lvchange -aey %s failed (retrying): %v", n, err)
		}
	}
	rawSeq := time.Since(start)
	if retries > 0 {
		t.Logf("%d raw lvchange retries", retries)
	}
	rows = append(rows, benchRow{fmt.Sprintf("reboot restore of %d attachments (agent start → recorded)", restoreN), "lockspace join alone", cA.total, cA.joins[vg], 0})
	rows = append(rows, benchRow{"  its re-activation part (restore − join)", fmt.Sprintf("%d lvchange -aey in sequence", restoreN), cA.total - cA.join(), rawSeq, 0})
	rows = append(rows, benchRow{"  its re-activation part (restore − join)", fmt.Sprintf("one lvchange -aey of all %d LVs (mean of 2)", restoreN), cA.total - cA.join(), (rawA1 + rawA2) / 2, 0})
	rows = append(rows, benchRow{"  its re-activation part (restore − join)", "the same, the first after a power cycle and a raw join (target 3 below)", cA.total - cA.join(), rawABoot, 0})
	targets = append(targets, bootFloorTarget(fmt.Sprintf("3. restore − join, N=%d", restoreN), cA.total-cA.join(), rawABoot, []time.Duration{rawA1, rawA2}, 1.1))

	// B) 3 VGs × N: two more VolumeGroups on their own LUNs, N attachments each on host1.
	cl.startAgent(a)
	perVG := map[string][]*v1.SharedVolume{vg: vols}
	for k, lun := range []string{"/dev/vdb", "/dev/vdc"} {
		cr, vgName := fmt.Sprintf("cinder%d", k+2), fmt.Sprintf("vg%d", k+2)
		createVGNamed(t, cl, cr, vgName, v1.DevicePath(lun))
		for i := 0; i < restoreN; i++ {
			vol := &v1.SharedVolume{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: fmt.Sprintf("%s-%03d", vgName, i)},
				Spec: v1.SharedVolumeSpec{VolumeGroup: v1.ObjectName(cr), Size: resource.MustParse("4Mi")}}
			if err := cl.c.Create(ctx, vol); err != nil {
				t.Fatal(err)
			}
			perVG[vgName] = append(perVG[vgName], vol)
		}
	}
	attachAll(append(perVG["vg2"], perVG["vg3"]...))
	cB := restoreCycle(t, cl, a)
	rawB := map[string]time.Duration{}
	var slowestAct, serial time.Duration
	for _, vgName := range []string{vg, "vg2", "vg3"} {
		r1, r2 := rawActivate(lvNames(vgName, perVG[vgName]))
		rawB[vgName] = min(r1, r2)
		slowestAct = max(slowestAct, rawB[vgName])
		serial += cB.joins[vgName] + rawB[vgName]
	}
	// The floor on this host: the three VGs' one-command re-activations run at once, raw
	// (lvmlockd has a thread per lockspace; whether sanlock and the storage take the leases
	// in parallel is what this measures).
	var all []string
	for _, vgName := range []string{vg, "vg2", "vg3"} {
		all = append(all, lvNames(vgName, perVG[vgName])...)
	}
	run(ctx, t, a, append([]string{"lvchange", "-an"}, all...)...)
	rawConcurrent := atOnce([]string{vg, "vg2", "vg3"}, func(vgName string) {
		if _, err := a.MustRun(ctx, append([]string{"lvchange", "-aey"}, lvNames(vgName, perVG[vgName])...)...); err != nil {
			t.Error(err)
		}
	})
	bLVs := map[string][]string{}
	for _, vgName := range []string{vg, "vg2", "vg3"} {
		bLVs[vgName] = lvNames(vgName, perVG[vgName])
	}
	rawBBoot := rawAfterBoot(bLVs)
	slowestJoin := cB.slowestJoin()
	boundB := slowestJoin + slowestAct + 2*time.Second
	floorB := slowestJoin + rawBBoot + 2*time.Second
	verdict := "met"
	if cB.total > boundB {
		verdict = fmt.Sprintf("missed: at the floor (≤ %.1f s)? %v", floorB.Seconds(), cB.total <= floorB)
	}
	targets = append(targets, benchTarget{name: fmt.Sprintf("1. restore of 3 VGs × %d", restoreN), measured: fmtS(cB.total) + fmt.Sprintf(" (joins in parallel: %s)", durations(cB.joins)),
		bound: fmt.Sprintf("≤ slowest join %.1f s + slowest VG's one lvchange %.1f s + 2 s = %.1f s (%s); serial sum %.1f s; floor here: the 3 VGs' lvchanges at once, raw, the first after a power cycle %.1f s (warm %.1f s) → %.1f s (asserted)",
			slowestJoin.Seconds(), slowestAct.Seconds(), boundB.Seconds(), verdict, serial.Seconds(), rawBBoot.Seconds(), rawConcurrent.Seconds(), floorB.Seconds()),
		tolerance: "the target's 2 s", met: cB.total <= floorB})
	t.Logf("3 VGs: restore %v, joins %v, activations %v, raw one lvchange per VG %v, raw the three at once %v (after a power cycle %v)", cB.total, cB.joins, cB.acts, rawB, rawConcurrent, rawBBoot)

	// C) 500 in one VG: the other VGs' attachments go, vg1 grows to 500.
	cl.startAgent(a)
	for _, vgName := range []string{"vg2", "vg3"} {
		for _, vol := range perVG[vgName] {
			att := &v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: vol.Name + "-host1"}}
			if err := cl.c.Delete(ctx, att); err != nil {
				t.Fatal(err)
			}
		}
		for _, vol := range perVG[vgName] {
			cl.wait("detached", 5*time.Minute, cl.goneFn(&v1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "cloud", Name: vol.Name + "-host1"}}))
		}
	}
	const bigN = 500
	var more []*v1.SharedVolume
	for i := len(vols); i < bigN; i++ {
		more = append(more, cl.createVolume(fmt.Sprintf("batch-%03d", i), "4Mi", false))
	}
	attachAll(more)
	vols = append(vols, more...)
	cC := restoreCycle(t, cl, a)
	names = lvNames(vg, vols)
	rawC1, rawC2 := rawActivate(names)
	rawCBoot := rawAfterBoot(map[string][]string{vg: names})
	rows = append(rows, benchRow{fmt.Sprintf("reboot restore of %d attachments (agent start → recorded)", len(vols)), "lockspace join alone", cC.total, cC.joins[vg], 0})
	rows = append(rows, benchRow{"  its re-activation part (restore − join)", fmt.Sprintf("one lvchange -aey of all %d LVs (mean of 2)", len(vols)), cC.total - cC.join(), (rawC1 + rawC2) / 2, 0})
	rows = append(rows, benchRow{"  its re-activation part (restore − join)", "the same, the first after a power cycle and a raw join (target 3 below)", cC.total - cC.join(), rawCBoot, 0})
	targets = append(targets, bootFloorTarget(fmt.Sprintf("3. restore − join, N=%d", len(vols)), cC.total-cC.join(), rawCBoot, []time.Duration{rawC1, rawC2}, 1.1))

	// D) the same 500, of which 5 host2 took while host1 was away (host2's agent stopped,
	// or it would release locks no attachment of host2 asks for).
	taken := []string{vg + "/batch-050", vg + "/batch-150", vg + "/batch-250", vg + "/batch-350", vg + "/batch-450"}
	run(ctx, t, a, append([]string{"lvchange", "-an"}, taken...)...)
	cl.agents["host2"]()
	run(ctx, t, b, append([]string{"lvchange", "-aey"}, taken...)...)
	cD := restoreCycle(t, cl, a)
	conflictsOK := strings.Contains(cD.message, "5 could not be re-activated")
	for _, lv := range taken {
		conflictsOK = conflictsOK && strings.Contains(cD.message, lv+": LV locked by other host")
	}
	if !conflictsOK {
		t.Errorf("the restore with 5 LVs held by host2 does not name them: %s", cD.message)
	}
	// The join after an unclean shutdown varies by a few seconds from boot to boot (when the
	// old delta lease expires): compare the parts after it, and state both.
	targets = append(targets, benchTarget{name: fmt.Sprintf("2. restore of %d with 5 held elsewhere", len(vols)), measured: fmtS(cD.total) + fmt.Sprintf(" (after join %.1f s)", (cD.total-cD.join()).Seconds()),
		bound:     fmt.Sprintf("≤ without conflicts %.1f s + 2 s (after join: %.1f s + 2 s)", cC.total.Seconds(), (cC.total - cC.join()).Seconds()),
		tolerance: "the target's 2 s", met: cD.total-cD.join() <= cC.total-cC.join()+2*time.Second && conflictsOK})
	t.Logf("restore with conflicts: %s", cD.message)
	for _, lv := range taken {
		name := strings.TrimPrefix(lv, vg+"/") + "-host1"
		cl.wait("conflict reported on "+name, time.Minute, func() error {
			var att v1.VolumeAttachment
			if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "cloud", Name: name}, &att); err != nil {
				return err
			}
			if c := meta.FindStatusCondition(att.Status.Conditions, v1.ConditionLockApplied); c == nil || c.Status != metav1.ConditionFalse || c.Reason != "LockHeldByOtherHost" {
				return fmt.Errorf("LockApplied %+v", c)
			}
			return nil
		})
	}
	run(ctx, t, b, append([]string{"lvchange", "-an"}, taken...)...)
	cl.startAgent(b)
	for _, lv := range taken {
		name := strings.TrimPrefix(lv, vg+"/") + "-host1"
		cl.wait("taken back", 2*time.Minute, func() error {
			var att v1.VolumeAttachment
			if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "cloud", Name: name}, &att); err != nil {
				return err
			}
			if !meta.IsStatusConditionTrue(att.Status.Conditions, v1.ConditionLockApplied) || att.Status.AppliedLock != v1.LockExclusive {
				return fmt.Errorf("applied %q, conditions %+v", att.Status.AppliedLock, att.Status.Conditions)
			}
			return nil
		})
	}
	rawOne := min(rawC1, rawC2)
	restoreN = len(vols)

	// E) a planned reboot (#18 target 4). leave-lockspaces (`sharedlvm leave-lockspaces`, the
	// same code through the host's executor) never leaves a lockspace with LV locks: on host1
	// (agent stopped, or it would start the left ones again) it keeps vg1 and its 500 locks.
	cl.agents["host1"]()
	left1, kept1, err := a.LVM.LeaveIdleLockspaces(ctx)
	if err != nil {
		t.Fatal(err)
	}
	held1, err := a.LVM.LockdInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	locks1 := 0
	for _, g := range held1 {
		for _, m := range g.LVs {
			if g.Name == vg && m == lvm.LockdExclusive {
				locks1++
			}
		}
	}
	t.Logf("leave-lockspaces on host1: left %v, kept %+v; vg1 locks still held: %d", left1, kept1, locks1)
	if !slices.Equal(left1, []string{"vg2", "vg3"}) || len(kept1) != 1 || kept1[0].VG != vg || locks1 != len(vols) {
		t.Errorf("leave-lockspaces on host1 (500 LVs active in vg1): left %v, kept %+v, vg1 locks %d; want vg2 and vg3 left, vg1 kept with %d locks", left1, kept1, locks1, len(vols))
	}
	cl.startAgent(a)
	// host2 is evacuated (no attachment): its shutdown leaves all three lockspaces, then
	// powers off cleanly; its restore joins without waiting for its old delta lease.
	cl.agents["host2"]()
	left2, kept2, err := b.LVM.LeaveIdleLockspaces(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := b.Sanlock.Status(ctx); err != nil || len(st.Lockspaces) != 0 || len(kept2) != 0 {
		t.Fatalf("leave-lockspaces on evacuated host2: left %v kept %+v; sanlock afterwards %+v (%v)", left2, kept2, st, err)
	}
	cE := restoreCycleVia(t, cl, b, func() string { return cl.reboot(b, true) })
	// The raw first-time join, in the restore's own situation: host2's lockspaces left and
	// the guest powered off cleanly and booted again with no agent, then the three started at
	// once as the restore does, through the command layer alone (vgchange --config
	// local/host_id=ID --lockstart, with its retry of sanlock's "invalid parameters" on a host
	// without udev); each join timed from the attempt that succeeded (until lvmlockd answers
	// after the boot, lockstart fails at once). The same joins on the settled host, lockspaces
	// left a moment before, are shown next to it (a freshly booted TCG guest is slower).
	cl.agents["host2"]()
	hostID2 := hostIDOf(ctx, t, b)
	rawJoinAt := func(what string) time.Duration {
		var mu sync.Mutex
		var slowest time.Duration
		atOnce([]string{vg, "vg2", "vg3"}, func(vgName string) {
			deadline := time.Now().Add(5 * time.Minute)
			for {
				t0 := time.Now()
				n, err := b.LVM.Lockstart(ctx, vgName, hostID2)
				if err == nil {
					mu.Lock()
					slowest = max(slowest, time.Since(t0))
					mu.Unlock()
					if n > 1 {
						t.Logf("raw join of %s on host2 (%s): %d attempts", vgName, what, n)
					}
					return
				}
				if time.Now().After(deadline) {
					t.Errorf("raw join of %s on host2 (%s): %v", vgName, what, err)
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
		return slowest
	}
	run(ctx, t, b, "vgchange", "--lockstop", vg, "vg2", "vg3")
	rawJoinWarm := rawJoinAt("settled host")
	run(ctx, t, b, "vgchange", "--lockstop", vg, "vg2", "vg3")
	cl.reboot(b, true)
	rawJoin := rawJoinAt("after a clean power cycle")
	cl.startAgent(b)
	targets = append(targets, benchTarget{name: "4. restore after a planned reboot (evacuated host2, 3 VGs)", measured: fmtS(cE.total) + fmt.Sprintf(" (joins %s)", durations(cE.joins)),
		bound: fmt.Sprintf("≤ a first-time join of the 3 (raw, at once, after a clean power cycle: slowest %.1f s; on the settled host %.1f s) + 2 s; after an unclean shutdown: %.1f s (B)",
			rawJoin.Seconds(), rawJoinWarm.Seconds(), cB.total.Seconds()),
		tolerance: "the target's 2 s", met: cE.total <= rawJoin+2*time.Second})

	// Where the time goes: the single commands the CR paths run besides the raw one, timed
	// on the same host (create adds one report for the new LV's UUID and lease; a resync
	// reads sanlock), and the agent's own timing of its lvchange from its log.
	var tReport, tSanlock []time.Duration
	for i := 0; i < reps; i++ {
		tReport = append(tReport, timeRaw(a, lvm.FullReportArgs(vg)...))
		tSanlock = append(tSanlock, timeRaw(a, "sanlock", "client", "status"))
	}

	var md strings.Builder
	fmt.Fprintf(&md, "Bench run %s on the test bed (2 TCG VMs, sanlock io_timeout 3 s, VGs on 16 GiB LUNs); medians of %d where repeated.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), reps)
	writeRows(&md, rows)
	fmt.Fprintf(&md, "\nSingle commands on the same host (medians): `lvm fullreport %s` %.2f s, `sanlock client status` %.3f s.\n",
		vg, median(tReport).Seconds(), median(tSanlock).Seconds())
	if len(agentCreate) > 0 {
		fmt.Fprintf(&md, "\nCreate, where the time goes (medians): the agent's own create (lvcreate, then reading the new LV's UUID and lease from the metadata it committed) %.2f s of the %.2f s; the rest is the API round trips (the operator assigns the create to a node, the agent records the LV, the operator makes the volume Available) and the watches between them.\n",
			median(agentCreate).Seconds(), median(crCreate).Seconds())
		traceMu.Lock()
		fmt.Fprintf(&md, "The lvcreate itself, seen from the host (inside the guest): %.2f s (%.2f s) as the agent ran it, %.2f s (%.2f s) raw; other commands on either host while the agent's ran: %d.\n",
			median(lvcreateTook["agent"]).Seconds(), median(lvcreateTook["agent in guest"]).Seconds(),
			median(lvcreateTook["raw"]).Seconds(), median(lvcreateTook["raw in guest"]).Seconds(), overlaps)
		traceMu.Unlock()
	}
	if n := len(batchCreate); n > 0 {
		fmt.Fprintf(&md, "\n%d creates at once, the agent's own create times (waiting for the VG, lvcreate, reading what it committed): median %.2f s, p90 %.2f s, max %.2f s.\n",
			n, batchCreate[n/2].Seconds(), batchCreate[n*9/10].Seconds(), batchCreate[n-1].Seconds())
	}
	fmt.Fprintf(&md, "\nHow the creates learned their new LV's UUID (sharedlvm_created_lv_reads_total): %s.\n", createdLVReads(t))
	fmt.Fprintf(&md, "\nRestore: lvmlockd takes the LV leases one after another, %.0f ms each on this bed (one lvchange of all %d LVs, %.1f s), so a restore of N attachments needs the lockspace join plus N such lease acquisitions at least.\n",
		float64(rawOne.Milliseconds())/float64(restoreN), restoreN, rawOne.Seconds())
	fmt.Fprintf(&md, "\nRestores of host1 after a power cycle (the agent's own step times, sharedlvm_restore_step_seconds):\n\n| restore | total | joins (in parallel) | re-activations (VGs in parallel) |\n|---|---|---|---|\n")
	for _, c := range []struct {
		name string
		r    restoreRun
	}{{fmt.Sprintf("A: %d in vg1", batch), cA}, {fmt.Sprintf("B: 3 VGs × %d", batch), cB}, {fmt.Sprintf("C: %d in vg1", restoreN), cC}, {fmt.Sprintf("D: %d in vg1, 5 held by host2", restoreN), cD}, {"E: host2 evacuated, planned reboot (lockspaces left)", cE}} {
		fmt.Fprintf(&md, "| %s | %.1f s | %s | %s |\n", c.name, c.r.total.Seconds(), durations(c.r.joins), durations(c.r.acts))
	}
	fmt.Fprintf(&md, "\nB's raw one-command re-activation per VG: %s.\n", durations(rawB))
	fmt.Fprintf(&md, "\nD's restore message on the Node: %s\n", cD.message)
	writeTargets(&md, targets)
	t.Logf("bench:\n%s", md.String())
	// The bench asserts its targets (after the table is kept).
	defer assertTargets(t, targets)
	dir := filepath.Join(envtestutil.RepoRoot(), "bench", "results")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "bench-"+time.Now().UTC().Format("20060102-150405")+".md")
	if err := os.WriteFile(out, []byte(md.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", out)
}

// writeRows renders the operations table.
func writeRows(md *strings.Builder, rows []benchRow) {
	md.WriteString("| operation through the CRs | time | raw command, same host and VG | time | ratio | target |\n|---|---|---|---|---|---|\n")
	for _, r := range rows {
		ratio := float64(r.cr) / float64(max(r.rawTime, time.Millisecond))
		target := ""
		if r.target > 0 {
			target = fmt.Sprintf("≤ %.1f× %s", r.target, map[bool]string{true: "met", false: "missed"}[ratio <= r.target])
		}
		fmt.Fprintf(md, "| %s | %.2f s | %s | %.2f s | %.2f× | %s |\n", r.op, r.cr.Seconds(), r.raw, r.rawTime.Seconds(), ratio, target)
	}
}

// writeTargets renders #18's targets table.
func writeTargets(md *strings.Builder, targets []benchTarget) {
	md.WriteString("\n## Targets (#18)\n\n| target | measured | bound | tolerance (run-to-run spread) | |\n|---|---|---|---|---|\n")
	for _, g := range targets {
		fmt.Fprintf(md, "| %s | %s | %s | %s | %s |\n", g.name, g.measured, g.bound, g.tolerance, map[bool]string{true: "met", false: "**missed**"}[g.met])
	}
}

// assertTargets fails the test for each target missed.
func assertTargets(t *testing.T, targets []benchTarget) {
	t.Helper()
	for _, g := range targets {
		if !g.met {
			t.Errorf("target missed: %s: %s, bound %s (tolerance %s)", g.name, g.measured, g.bound, g.tolerance)
		}
	}
}

// benchTarget is one of #18's targets, asserted by the bench.
type benchTarget struct {
	name, measured, bound, tolerance string
	met                              bool
}

// ratioTarget: cr against the median of the raw samples, ≤ target × (1 + spread), where the
// spread is the raw samples' own run-to-run spread (half their range over their median:
// what the same raw command varies by in the same run).
func ratioTarget(name string, cr time.Duration, raws []time.Duration, target float64) benchTarget {
	m, spread, tolerance := rawSpread(raws)
	ratio := float64(cr) / float64(max(m, time.Millisecond))
	return benchTarget{name: name, measured: fmt.Sprintf("%.2f s = %.2f× raw %.2f s", cr.Seconds(), ratio, m.Seconds()),
		bound: fmt.Sprintf("≤ %.1f×", target), tolerance: tolerance, met: ratio <= target*(1+spread)}
}

// rawSpread is the raw samples' median (with an even count the mean of the middle two:
// median() takes the upper one, with two samples the slower run, which flatters a ratio) and
// their run-to-run spread (half their range over that median), also said as a tolerance.
func rawSpread(raws []time.Duration) (m time.Duration, spread float64, tolerance string) {
	m = median(raws)
	if n := len(raws); n%2 == 0 {
		s := slices.Sorted(slices.Values(raws))
		m = (s[n/2-1] + s[n/2]) / 2
	}
	lo, hi := slices.Min(raws), slices.Max(raws)
	spread = float64(hi-lo) / 2 / float64(max(m, time.Millisecond))
	return m, spread, fmt.Sprintf("±%.0f%% (raw %.2f–%.2f s, %d runs)", spread*100, lo.Seconds(), hi.Seconds(), len(raws))
}

// bootFloorTarget: cr against the raw command run in the restore's own situation (the
// first after a power cycle: one sample, a power cycle each), ≤ target × (1 + spread), the
// spread being the same command's run-to-run spread measured warm in the same run; the warm
// ratio is stated next to it.
func bootFloorTarget(name string, cr, afterBoot time.Duration, warm []time.Duration, target float64) benchTarget {
	_, spread, tolerance := rawSpread(warm)
	ratio := float64(cr) / float64(max(afterBoot, time.Millisecond))
	return benchTarget{name: name,
		measured:  fmt.Sprintf("%.2f s = %.2f× raw %.2f s, the first lvchange after a power cycle (warm: %s)", cr.Seconds(), ratio, afterBoot.Seconds(), ratioTarget(name, cr, warm, target).measured),
		bound:     fmt.Sprintf("≤ %.1f× the raw command after a power cycle", target),
		tolerance: tolerance + ", the warm pair's",
		met:       ratio <= target*(1+spread)}
}

func fmtS(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

// durations renders per-VG durations sorted by VG.
func durations(d map[string]time.Duration) string {
	if len(d) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(d)) {
		parts = append(parts, fmt.Sprintf("%s %.1f s", k, d[k].Seconds()))
	}
	return strings.Join(parts, ", ")
}

// restoreRun is one boot restore of a node, from the agent's start to wait-locks' return,
// with the agent's own step times (sharedlvm_restore_step_seconds) and its Node message.
type restoreRun struct {
	total      time.Duration
	joins      map[string]time.Duration
	acts       map[string]time.Duration
	message    string
	agentTotal time.Duration
	// lockspaces: from the restore's start until every lockspace was started (the
	// daemons' wait after the boot, the host_id check, the parallel joins).
	lockspaces time.Duration
}

// join is the restore's lockspace phase: from its start until every lockspace was started
// (the daemons' wait after the boot and the parallel joins; the joins alone are r.joins).
func (r restoreRun) join() time.Duration { return r.lockspaces }

// slowestJoin is the slowest of the restore's parallel vgchange --lockstart.
func (r restoreRun) slowestJoin() time.Duration {
	var j time.Duration
	for _, d := range r.joins {
		j = max(j, d)
	}
	return j
}

// restoreCycle power-cycles n, starts its agent and times the restore until wait-locks
// returns.
func restoreCycle(t *testing.T, cl *cluster, n *node) restoreRun {
	t.Helper()
	return restoreCycleVia(t, cl, n, func() string { return cl.powerCycle(n) })
}

// restoreCycleVia is restoreCycle with the reboot given (it returns the new boot ID).
func restoreCycleVia(t *testing.T, cl *cluster, n *node, reboot func() string) restoreRun {
	t.Helper()
	bootID := reboot()
	start := time.Now()
	cl.startAgent(n)
	if err := roles.WaitLocks(cl.ctx, cl.c, n.Name, bootID, 15*time.Minute, 200*time.Millisecond, &strings.Builder{}); err != nil {
		t.Fatal(err)
	}
	r := restoreRun{total: time.Since(start), joins: map[string]time.Duration{}, acts: map[string]time.Duration{}}
	var node corev1.Node
	if err := cl.c.Get(cl.ctx, client.ObjectKey{Name: n.Name}, &node); err != nil {
		t.Fatal(err)
	}
	for _, c := range node.Status.Conditions {
		if c.Type == v1.NodeConditionLocksRestored {
			r.message = c.Message
		}
	}
	mfs, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sharedlvm_restore_step_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["node"] != n.Name {
				continue
			}
			d := time.Duration(m.GetGauge().GetValue() * float64(time.Second))
			switch l["step"] {
			case metrics.RestoreJoin:
				r.joins[l["vg"]] = d
			case metrics.RestoreActivate:
				r.acts[l["vg"]] = d
			case metrics.RestoreTotal:
				r.agentTotal = d
			case metrics.RestoreLockspaces:
				r.lockspaces = d
			}
		}
	}
	t.Logf("restore of %s: %v (agent's own %v), joins %v, activations %v: %s", n.Name, r.total, r.agentTotal, r.joins, r.acts, r.message)
	return r
}

// createVGNamed creates VolumeGroup cr for VG vgName on pv, selecting both hosts, and waits
// until both have started its lockspace.
func createVGNamed(t *testing.T, cl *cluster, cr, vgName string, pv v1.DevicePath) {
	t.Helper()
	if err := cl.c.Create(cl.ctx, &v1.VolumeGroup{ObjectMeta: metav1.ObjectMeta{Name: cr},
		Spec: v1.VolumeGroupSpec{VGName: v1.LVMVGName(vgName), PVs: []v1.DevicePath{pv},
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"san": "lun0"}}}}); err != nil {
		t.Fatal(err)
	}
	cl.wait(cr+" created and started on both hosts", 5*time.Minute, func() error {
		var g v1.VolumeGroup
		if err := cl.c.Get(cl.ctx, client.ObjectKey{Name: cr}, &g); err != nil {
			return err
		}
		if g.Status.NodesReady != "2/2" || g.Status.VGUUID == "" {
			return fmt.Errorf("nodesReady %q vgUUID %q", g.Status.NodesReady, g.Status.VGUUID)
		}
		return nil
	})
}

// atOnce runs f for each VG at once and returns how long they took together.
func atOnce(vgs []string, f func(vg string)) time.Duration {
	var wg sync.WaitGroup
	start := time.Now()
	for _, v := range vgs {
		wg.Add(1)
		go func() { defer wg.Done(); f(v) }()
	}
	wg.Wait()
	return time.Since(start)
}
