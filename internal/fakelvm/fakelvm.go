// Package fakelvm is an in-memory model of shared LVM with lvmlockd + sanlock, answering the
// exact argument vectors the agent runs with output in the real tools' formats (the fixtures
// captured on the test bed) and refusing what they refuse: an exclusive lease while any other
// host holds the LV, a shared lease while another holds it exclusively, lvextend of a shared
// LV without shupdate, pvmove without the exclusive lease, and so on.
//
// A Cluster is the shared disk; Cluster.Host(id) is one node's executor.Executor. It serves
// envtest suites (the real agent code over a model of the storage) and the scale harness;
// the VM storage tier remains the truth for the real tools.
package fakelvm

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
)

const extent = 4 << 20

// Cluster is the shared storage and the lock managers of every host.
type Cluster struct {
	// mu guards the model; commands that only read it (reports, sanlock status) share it,
	// as each real host runs its own report concurrently: a global lock would serialize
	// 100 simulated hosts' O(LVs) reports and make the scale harness measure the model.
	mu sync.RWMutex
	// logMu guards the command logs (written by every command, readers included).
	logMu sync.Mutex
	vgs   map[string]*vg
	hosts map[int]*hostState
	seq   int
	// Latency, if set, is added to every command (to model the real tools' cost).
	Latency time.Duration
	// Fail, if set, is consulted before each command; a non-nil result is returned as-is.
	// Set it with SetHooks once agents run.
	Fail func(host int, argv []string) *executor.Result
	// After, if set, is called (without the model's lock) after each command completed.
	After func(host int, argv []string, res executor.Result)

	// reports caches full reports by argv until a command changes metadata: 100 simulated
	// hosts' reports of one 10,000-LV VG would otherwise have the model spend the harness's
	// CPU building the same JSON (each real host builds its own on its own CPU).
	reportMu sync.Mutex
	reports  map[string][]byte

	log []Call
	// RemovedDirty lists LVs removed while still holding data (not wiped).
	RemovedDirty []string
}

// SetHooks sets Fail and After (nil clears them) while no command runs: tests change them
// while agents are running commands.
func (c *Cluster) SetHooks(fail func(host int, argv []string) *executor.Result, after func(host int, argv []string, res executor.Result)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Fail, c.After = fail, after
}

// Call is one command in the cluster-wide order in which they ran.
type Call struct {
	Host int
	Argv []string
	Exit int
}

// Log returns every command any host ran, in order.
func (c *Cluster) Log() []Call {
	c.logMu.Lock()
	defer c.logMu.Unlock()
	return append([]Call(nil), c.log...)
}

type hostState struct {
	lockspaces map[string]bool
	// deadIn: the lockspaces in which the other hosts' sanlock declared this host DEAD
	// (until it joins them again).
	deadIn map[string]bool
	calls  [][]string
	up     bool
	boots  int
	// localID is the host_id its lvmlocal.conf sets (SetLocalHostID; default the host's id).
	localID  int
	hasLocal bool
}

type vg struct {
	name, uuid string
	pvs        []*pv
	lvs        map[string]*lv
	nextLease  int64
}

type pv struct {
	name, uuid string
	size       int64
	missing    bool
}

type lv struct {
	name, uuid string
	size       int64
	tags       []string
	lease      int64
	holders    map[int]string // host -> "ex" | "sh"
	devices    []string
	version    int64
	dirty      bool   // holds data a wipe has not cleared
	data       string // content token: what WriteData wrote, carried by copies
	origin     string // for a thick snapshot: its origin LV (it shares the origin's lock)
}

// New returns an empty cluster.
func New() *Cluster {
	return &Cluster{vgs: map[string]*vg{}, hosts: map[int]*hostState{}}
}

// Host is one node's executor; hosts are up when created.
func (c *Cluster) Host(id int) *Host {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.hosts[id]; !ok {
		c.hosts[id] = &hostState{lockspaces: map[string]bool{}, deadIn: map[string]bool{}, up: true}
	}
	return &Host{c: c, id: id}
}

// Host implements executor.Executor for one node.
type Host struct {
	c  *Cluster
	id int
}

var _ executor.Executor = (*Host)(nil)

// ID is the host's sanlock host_id.
func (h *Host) ID() int { return h.id }

// SetLocalHostID makes the host's lvmconfig report local/host_id = id (0: none set), as
// an lvmlocal.conf that disagrees with the host's id would. The host still joins
// lockspaces only as its own id.
func (h *Host) SetLocalHostID(id int) {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	hs := h.c.hosts[h.id]
	hs.localID, hs.hasLocal = id, true
}

// withoutConfig removes `--config X` pairs from argv and returns their key=value settings.
func withoutConfig(argv []string) ([]string, map[string]string) {
	var cfg map[string]string
	out := make([]string, 0, len(argv))
	for i := 0; i < len(argv); i++ {
		if argv[i] == "--config" && i+1 < len(argv) {
			if k, v, ok := strings.Cut(argv[i+1], "="); ok {
				if cfg == nil {
					cfg = map[string]string{}
				}
				cfg[k] = v
			}
			i++
			continue
		}
		out = append(out, argv[i])
	}
	return out, cfg
}

// Calls returns every argv this host ran, in order.
func (h *Host) Calls() [][]string {
	h.c.mu.RLock()
	hs := h.c.hosts[h.id]
	h.c.mu.RUnlock()
	h.c.logMu.Lock()
	defer h.c.logMu.Unlock()
	return append([][]string(nil), hs.calls...)
}

// ResetCalls forgets the recorded calls.
func (h *Host) ResetCalls() {
	h.c.mu.RLock()
	hs := h.c.hosts[h.id]
	h.c.mu.RUnlock()
	h.c.logMu.Lock()
	defer h.c.logMu.Unlock()
	hs.calls = nil
}

// CreateVG sets up a shared VG with the given PVs (sizes in bytes), as an admin would.
func (c *Cluster) CreateVG(name string, pvs map[string]int64) {
	defer c.invalidateReports()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.createVG(name, pvs)
}

func (c *Cluster) createVG(name string, pvs map[string]int64) *vg {
	c.seq++
	v := &vg{name: name, uuid: fakeUUID("vg", c.seq), lvs: map[string]*lv{}, nextLease: 70254592}
	names := make([]string, 0, len(pvs))
	for n := range pvs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c.seq++
		v.pvs = append(v.pvs, &pv{name: n, uuid: fakeUUID("pv", c.seq), size: pvs[n]})
	}
	c.vgs[name] = v
	return v
}

// LockstartAll starts the VG's lockspace on every given host (test set-up shortcut).
func (c *Cluster) LockstartAll(vgName string, hosts ...int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range hosts {
		c.hosts[h].lockspaces[vgName] = true
	}
}

// LV describes a modelled LV, for assertions.
type LV struct {
	Name, UUID string
	Size       int64
	Tags       []string
	Holders    map[int]string
	Dirty      bool
	Devices    []string
	// Data is the content token (WriteData's, or the one a copy carried over).
	Data string
	// Origin is set on a thick snapshot.
	Origin string
}

// LVs returns the LVs of a VG.
func (c *Cluster) LVs(vgName string) []LV {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.vgs[vgName]
	if !ok {
		return nil
	}
	var out []LV
	for _, l := range v.lvs {
		h := map[int]string{}
		for k, m := range l.holders {
			h[k] = m
		}
		out = append(out, LV{Name: l.name, UUID: l.uuid, Size: l.size, Tags: append([]string(nil), l.tags...), Holders: h, Dirty: l.dirty, Devices: append([]string(nil), l.devices...), Data: l.data, Origin: l.origin})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// WriteData marks an LV as holding data (what a VM writes), so tests can check wipes, and
// gives it a new content token that copies carry over; it returns the token.
func (c *Cluster) WriteData(vgName, lvName string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.vgs[vgName]; ok {
		if l, ok := v.lvs[lvName]; ok {
			c.seq++
			l.dirty = true
			l.data = fmt.Sprintf("data-%d", c.seq)
			return l.data
		}
	}
	return ""
}

// Crash models a node losing power: its daemons stop answering; its leases stay held
// (until Release, which models sanlock declaring it dead).
func (c *Cluster) Crash(host int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hosts[host].up = false
}

// DeclareDead releases every lease of a crashed host, as the other hosts' sanlock does once
// its delta lease expired: from then on they list its host_id DEAD in those lockspaces.
func (c *Cluster) DeclareDead(host int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name := range c.hosts[host].lockspaces {
		c.hosts[host].deadIn[name] = true
	}
	c.dropLocks(host)
}

// dropLocks forgets every lease and lockspace of a host (caller holds c.mu).
func (c *Cluster) dropLocks(host int) {
	for _, v := range c.vgs {
		for _, l := range v.lvs {
			delete(l.holders, host)
		}
	}
	c.hosts[host].lockspaces = map[string]bool{}
}

// Reboot brings a crashed host back with no lockspaces and no leases.
func (c *Cluster) Reboot(host int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropLocks(host)
	c.hosts[host].up = true
	c.hosts[host].boots++
}

// BootID is the boot ID the model reports for a host's nth boot (0 = the first).
func BootID(host, boot int) string {
	return fmt.Sprintf("b00710d0-0000-4000-8000-%06d%06d", host, boot)
}

// CurrentBootID returns a host's current boot ID.
func (c *Cluster) CurrentBootID(host int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return BootID(host, c.hosts[host].boots)
}

func fakeUUID(kind string, n int) string {
	s := fmt.Sprintf("%s%030d", kind, n)
	s = s[len(s)-32:]
	return s[0:6] + "-" + s[6:10] + "-" + s[10:14] + "-" + s[14:18] + "-" + s[18:22] + "-" + s[22:26] + "-" + s[26:32]
}

func ok(stdout string) executor.Result { return executor.Result{Stdout: []byte(stdout)} }

func fail(code int, stderr string) executor.Result {
	return executor.Result{ExitCode: code, Stderr: []byte(stderr)}
}

// Run implements executor.Executor.
func (h *Host) Run(ctx context.Context, argv []string) (executor.Result, error) {
	res, err := h.run(ctx, argv)
	h.c.mu.RLock()
	after := h.c.After
	h.c.mu.RUnlock()
	if err == nil {
		h.c.logMu.Lock()
		h.c.log = append(h.c.log, Call{Host: h.id, Argv: append([]string(nil), argv...), Exit: res.ExitCode})
		h.c.logMu.Unlock()
		if after != nil {
			after(h.id, argv, res)
		}
	}
	return res, err
}

func (h *Host) run(ctx context.Context, argv []string) (executor.Result, error) {
	if err := ctx.Err(); err != nil {
		return executor.Result{}, err
	}
	c := h.c
	if c.Latency > 0 {
		select {
		case <-time.After(c.Latency):
		case <-ctx.Done():
			return executor.Result{}, ctx.Err()
		}
	}
	if readOnly(argv) {
		c.mu.RLock()
		defer c.mu.RUnlock()
	} else {
		c.mu.Lock()
		defer c.mu.Unlock()
		if changesMetadata(argv) {
			c.invalidateReports()
		}
	}
	hs := c.hosts[h.id]
	c.logMu.Lock()
	hs.calls = append(hs.calls, append([]string(nil), argv...))
	c.logMu.Unlock()
	if !hs.up {
		return executor.Result{}, fmt.Errorf("host %d is down", h.id)
	}
	if c.Fail != nil {
		if r := c.Fail(h.id, argv); r != nil {
			return *r, nil
		}
	}
	if len(argv) == 0 {
		return fail(1, "empty"), nil
	}
	argv, cfg := withoutConfig(argv)
	if want, set := cfg["local/host_id"]; set && want != strconv.Itoa(h.id) {
		// The model keys a host's lockspace membership by its id: it can only join as that.
		return fail(5, fmt.Sprintf("  fakelvm: host %d cannot start a lockspace as host_id %s\n", h.id, want)), nil
	}
	switch argv[0] {
	case "lvm":
		if len(argv) > 1 && argv[1] == "fullreport" {
			return c.fullreport(argv), nil
		}
	case "lvcreate":
		return c.lvcreate(h.id, argv), nil
	case "lvremove":
		return c.lvremove(h.id, argv), nil
	case "lvextend":
		return c.lvextend(h.id, argv), nil
	case "lvchange":
		return c.lvchange(h.id, argv), nil
	case "lvrename":
		return c.lvrename(h.id, argv), nil
	case "vgcreate":
		return c.vgcreate(h.id, argv), nil
	case "vgchange":
		return c.vgchange(h.id, argv), nil
	case "lvmlockctl":
		return c.lockctl(h.id), nil
	case "lvmconfig":
		if hs.hasLocal {
			return ok(fmt.Sprintf("host_id=%d\n", hs.localID)), nil
		}
		return ok(fmt.Sprintf("host_id=%d\n", h.id)), nil
	case "cat":
		if len(argv) == 2 && argv[1] == "/proc/sys/kernel/random/boot_id" {
			return ok(BootID(h.id, hs.boots) + "\n"), nil
		}
	case "sanlock":
		return c.sanlock(h.id, argv), nil
	case "pvmove":
		return c.pvmove(h.id, argv), nil
	case "lvs":
		return c.lvs(argv), nil
	case "blkdiscard":
		return c.wipe(h.id, argv), nil
	case "dd":
		return c.dd(h.id, argv), nil
	}
	return fail(127, fmt.Sprintf("fakelvm: command not modelled: %v", argv)), nil
}

// changesMetadata: commands that may change what a report shows (everything but lock and
// activation changes, which the model's reports do not show, and data writes).
func changesMetadata(argv []string) bool {
	if len(argv) == 0 {
		return false
	}
	switch argv[0] {
	case "sanlock", "dd", "blkdiscard", "cat":
		return false
	case "vgchange":
		return !hasArg(argv, "--lockstart") && !hasArg(argv, "--lockstop")
	case "lvchange":
		for _, a := range argv[1:] {
			if strings.HasPrefix(a, "--") && a != "--lockopt" || a == "-p" {
				return true // --addtag, --deltag, --refresh...: not only an activation
			}
		}
		return false
	}
	return true
}

func hasArg(argv []string, a string) bool {
	for _, x := range argv {
		if x == a {
			return true
		}
	}
	return false
}

func (c *Cluster) invalidateReports() {
	c.reportMu.Lock()
	c.reports = nil
	c.reportMu.Unlock()
}

// readOnly: the commands that only read the model.
func readOnly(argv []string) bool {
	switch {
	case len(argv) >= 2 && argv[0] == "lvm" && argv[1] == "fullreport":
		return true
	case len(argv) >= 3 && argv[0] == "sanlock" && argv[1] == "client" && (argv[2] == "status" || argv[2] == "gets"):
		return true
	case len(argv) >= 1 && (argv[0] == "lvmlockctl" || argv[0] == "lvmconfig" || argv[0] == "cat" || argv[0] == "lvs"):
		return true
	}
	return false
}

func (c *Cluster) lookup(path string) (*vg, *lv, executor.Result, bool) {
	vgName, lvName, _ := strings.Cut(path, "/")
	v, ok := c.vgs[vgName]
	if !ok {
		return nil, nil, fail(5, fmt.Sprintf("  Volume group \"%s\" not found\n  Cannot process volume group %s\n", vgName, vgName)), false
	}
	l, ok := v.lvs[lvName]
	if !ok {
		return v, nil, fail(5, fmt.Sprintf("  Failed to find logical volume \"%s\"\n", path)), false
	}
	return v, l, executor.Result{}, true
}

func (c *Cluster) started(host int, vgName string) bool { return c.hosts[host].lockspaces[vgName] }

func lockFailed(vgName string) executor.Result {
	return fail(5, fmt.Sprintf("  Cannot access VG %s due to failed lock.\n", vgName))
}

func lockedByOther(path string) executor.Result {
	return fail(5, fmt.Sprintf("  LV locked by other host: %s\n  Failed to lock logical volume %s.\n", path, path))
}

func othersHold(l *lv, host int, exclusiveOnly bool) bool {
	for h, m := range l.holders {
		if h != host && (!exclusiveOnly || m == "ex") {
			return true
		}
	}
	return false
}

func (c *Cluster) lvcreate(host int, argv []string) executor.Result {
	var name, vgName string
	var size int64
	var tags, pvs []string
	activate, snapshot := true, false
	for i := 1; i < len(argv); i++ {
		switch a := argv[i]; a {
		case "-y", "-Zn":
		case "-s":
			snapshot = true
		case "-an":
			activate = false
		case "-n":
			i++
			name = argv[i]
		case "-L":
			i++
			n, err := strconv.ParseInt(strings.TrimSuffix(argv[i], "b"), 10, 64)
			if err != nil {
				return fail(3, "  Invalid argument for --size")
			}
			size = n
		case "--addtag":
			i++
			tags = append(tags, argv[i])
		default:
			if vgName == "" {
				vgName = a
			} else {
				pvs = append(pvs, a)
			}
		}
	}
	if strings.HasPrefix(name, "snapshot") {
		return fail(3, "  Names starting \"snapshot\" are reserved. Please choose a different LV name.\n")
	}
	if snapshot {
		return c.snapshot(host, vgName, name, size, tags)
	}
	v, ok := c.vgs[vgName]
	if !ok {
		return fail(5, fmt.Sprintf("  Volume group \"%s\" not found\n  Cannot process volume group %s\n", vgName, vgName))
	}
	if !c.started(host, vgName) {
		return lockFailed(vgName)
	}
	if _, exists := v.lvs[name]; exists {
		return fail(5, fmt.Sprintf("  Logical Volume \"%s\" already exists in volume group \"%s\"\n", name, vgName))
	}
	size = (size + extent - 1) / extent * extent
	if free := c.free(v); size > free {
		return fail(5, fmt.Sprintf("  Volume group \"%s\" has insufficient free space (%d extents): %d required.\n", vgName, free/extent, size/extent))
	}
	c.seq++
	dev := v.pvs[0].name
	if len(pvs) > 0 {
		dev = pvs[0]
	}
	l := &lv{name: name, uuid: fakeUUID("lv", c.seq), size: size, tags: tags, lease: v.nextLease, holders: map[int]string{}, devices: []string{dev}, version: 1}
	v.nextLease += 1 << 20
	if activate {
		l.holders[host] = "ex"
	}
	v.lvs[name] = l
	return executor.Result{Stdout: []byte(fmt.Sprintf("  Logical volume \"%s\" created.\n", name)), Stderr: []byte("  WARNING: This metadata update is NOT backed up.\n")}
}

// snapshot models `lvcreate -s -n name -L size VG/origin` in a shared VG: the origin must be
// active exclusively on this host; the snapshot shares the origin's lock and content.
func (c *Cluster) snapshot(host int, originPath, name string, size int64, tags []string) executor.Result {
	v, o, res, found := c.lookup(originPath)
	if !found {
		return res
	}
	if !c.started(host, v.name) {
		return lockFailed(v.name)
	}
	if o.holders[host] != "ex" || othersHold(o, host, false) {
		return fail(5, fmt.Sprintf("  LV locked by other host: %s\n  Failed to lock logical volume %s.\n", originPath, originPath))
	}
	if _, exists := v.lvs[name]; exists {
		return fail(5, fmt.Sprintf("  Logical Volume \"%s\" already exists in volume group \"%s\"\n", name, v.name))
	}
	size = (size + extent - 1) / extent * extent
	if free := c.free(v); size > free {
		return fail(5, fmt.Sprintf("  Volume group \"%s\" has insufficient free space (%d extents): %d required.\n", v.name, free/extent, size/extent))
	}
	c.seq++
	v.lvs[name] = &lv{name: name, uuid: fakeUUID("lv", c.seq), size: size, tags: tags, lease: -1, holders: map[int]string{},
		devices: append([]string(nil), o.devices...), version: 1, data: o.data, origin: o.name}
	return ok(fmt.Sprintf("  Logical volume \"%s\" created.\n", name))
}

// hasSnapshot says whether an LV is the origin of a thick snapshot.
func hasSnapshot(v *vg, l *lv) bool {
	for _, s := range v.lvs {
		if s.origin == l.name {
			return true
		}
	}
	return false
}

// readable says whether host can open an LV's device: it holds its lock (a snapshot: its
// origin's, exclusively).
func readable(v *vg, l *lv, host int) bool {
	if l.origin != "" {
		o, ok := v.lvs[l.origin]
		return ok && o.holders[host] == "ex"
	}
	_, held := l.holders[host]
	return held
}

// dd models a chunked copy `dd if=SRC of=DST ... skip=OFF seek=OFF count=N`: both devices
// must be open on this host; the chunk that reaches the end of the source carries its
// content token over (a copy cut short leaves the target without it).
func (c *Cluster) dd(host int, argv []string) executor.Result {
	kv := map[string]string{}
	for _, a := range argv[1:] {
		if k, val, ok := strings.Cut(a, "="); ok {
			kv[k] = val
		}
	}
	open := func(dev string) (*vg, *lv, *executor.Result) {
		v, l, res, found := c.lookup(strings.TrimPrefix(dev, "/dev/"))
		if !found {
			return nil, nil, &res
		}
		if !readable(v, l, host) {
			r := fail(1, fmt.Sprintf("dd: failed to open '%s': No such file or directory\n", dev))
			return nil, nil, &r
		}
		return v, l, nil
	}
	if kv["of"] == "/dev/null" {
		return ok("") // a probe read of a device (the agent's path check): every path works here
	}
	_, src, res := open(kv["if"])
	if res != nil {
		return *res
	}
	_, dst, res := open(kv["of"])
	if res != nil {
		return *res
	}
	off, _ := strconv.ParseInt(kv["skip"], 10, 64)
	n, _ := strconv.ParseInt(kv["count"], 10, 64)
	if off+n > dst.size {
		return fail(1, "dd: error writing '"+kv["of"]+"': No space left on device\n")
	}
	if off == 0 {
		dst.data = ""
	}
	dst.dirty = true
	if off+n >= src.size {
		dst.data = src.data
	}
	return ok("")
}

func (c *Cluster) free(v *vg) int64 {
	var total, used int64
	for _, p := range v.pvs {
		total += p.size
	}
	for _, l := range v.lvs {
		used += l.size
	}
	return total - used - 256<<20 // the hidden lvmlock LV
}

func (c *Cluster) lvremove(host int, argv []string) executor.Result {
	path := argv[len(argv)-1]
	v, l, res, found := c.lookup(path)
	if !found {
		return res
	}
	if !c.started(host, v.name) {
		return lockFailed(v.name)
	}
	if othersHold(l, host, false) {
		return fail(5, fmt.Sprintf("  LV locked by other host: %s\n", path))
	}
	if l.dirty {
		c.RemovedDirty = append(c.RemovedDirty, path)
	}
	delete(v.lvs, l.name)
	return ok(fmt.Sprintf("  Logical volume \"%s\" successfully removed.\n", l.name))
}

func (c *Cluster) lvextend(host int, argv []string) executor.Result {
	path := argv[len(argv)-1]
	v, l, res, found := c.lookup(path)
	if !found {
		return res
	}
	if !c.started(host, v.name) {
		return lockFailed(v.name)
	}
	shupdate := false
	var size int64
	for i := 1; i < len(argv)-1; i++ {
		switch argv[i] {
		case "-L":
			i++
			size, _ = strconv.ParseInt(strings.TrimSuffix(argv[i], "b"), 10, 64)
		case "--lockopt":
			i++
			shupdate = argv[i] == "shupdate"
		}
	}
	if othersHold(l, host, true) || (othersHold(l, host, false) && !shupdate) {
		return lockedByOther(path)
	}
	if l.holders[host] == "sh" && !shupdate {
		return fail(5, fmt.Sprintf("  LV is already locked with incompatible mode: %s\n", path))
	}
	size = (size + extent - 1) / extent * extent
	if size == l.size {
		return fail(5, fmt.Sprintf("  New size (%d extents) matches existing size (%d extents).\n", size/extent, size/extent))
	}
	if size < l.size {
		return fail(5, "  New size given smaller than existing size.\n")
	}
	if size-l.size > c.free(v) {
		return fail(5, fmt.Sprintf("  Insufficient free space: %d extents needed, but only %d available\n", (size-l.size)/extent, c.free(v)/extent))
	}
	l.size = size
	return ok("  Logical volume " + path + " successfully resized.\n")
}

func (c *Cluster) lvchange(host int, argv []string) executor.Result {
	if len(argv) < 3 {
		return fail(3, "usage")
	}
	if argv[1] == "--refresh" {
		_, _, res, found := c.lookup(argv[2])
		if !found {
			return res
		}
		return ok("")
	}
	if (argv[1] == "--addtag" || argv[1] == "--deltag") && len(argv) == 4 {
		v, l, res, found := c.lookup(argv[3])
		if !found {
			return res
		}
		if !c.started(host, v.name) {
			return lockFailed(v.name)
		}
		l.tags = slices.DeleteFunc(l.tags, func(t string) bool { return t == argv[2] })
		if argv[1] == "--addtag" {
			l.tags = append(l.tags, argv[2])
		}
		return ok("  Logical volume " + argv[3] + " changed.\n")
	}
	mode := strings.TrimPrefix(argv[1], "-a")
	// lvchange processes each LV, going on past the ones it cannot lock or find; any failure
	// fails the command (LVM's exit 5), and stderr names each failed LV.
	var failed *executor.Result
	var stderrs []string
	fail1 := func(r executor.Result) {
		if failed == nil {
			failed = &r
		}
		stderrs = append(stderrs, string(r.Stderr))
	}
	for _, path := range argv[2:] {
		v, l, res, found := c.lookup(path)
		if !found {
			fail1(res)
			continue
		}
		if !c.started(host, v.name) {
			r := lockFailed(v.name)
			return r
		}
		switch mode {
		case "n":
			delete(l.holders, host)
		case "ey":
			if othersHold(l, host, false) {
				fail1(lockedByOther(path))
				continue
			}
			if l.holders[host] != "ex" {
				l.version++
			}
			l.holders[host] = "ex"
		case "sy":
			if hasSnapshot(v, l) || l.origin != "" {
				fail1(fail(5, fmt.Sprintf("  Shared activation not compatible with LV type: %s\n", path)))
				continue
			}
			if othersHold(l, host, true) {
				fail1(lockedByOther(path))
				continue
			}
			l.holders[host] = "sh"
		default:
			return fail(3, "  Invalid argument "+argv[1])
		}
	}
	if failed != nil {
		out := *failed
		out.Stderr = []byte(strings.Join(stderrs, ""))
		return out
	}
	return ok("")
}

func (c *Cluster) lvrename(host int, argv []string) executor.Result {
	if len(argv) != 4 {
		return fail(3, "usage")
	}
	v, l, res, found := c.lookup(argv[1] + "/" + argv[2])
	if !found {
		return res
	}
	if !c.started(host, v.name) {
		return lockFailed(v.name)
	}
	if _, exists := v.lvs[argv[3]]; exists {
		return fail(5, fmt.Sprintf("  Logical Volume \"%s\" already exists in volume group \"%s\"\n", argv[3], v.name))
	}
	delete(v.lvs, l.name)
	l.name = argv[3]
	v.lvs[l.name] = l
	return ok("")
}

func (c *Cluster) vgcreate(host int, argv []string) executor.Result {
	var name string
	pvs := map[string]int64{}
	for i := 1; i < len(argv); i++ {
		switch argv[i] {
		case "--shared":
		case "--lock-type":
			i++
		default:
			if name == "" {
				name = argv[i]
			} else {
				pvs[argv[i]] = 1 << 30
			}
		}
	}
	if _, exists := c.vgs[name]; exists {
		return fail(5, fmt.Sprintf("  A volume group called %s already exists.\n", name))
	}
	for _, vn := range c.sortedVGs() {
		for _, p := range c.vgs[vn].pvs {
			if _, ok := pvs[p.name]; ok {
				// The refusal's first line, as lvm 2.03.16 printed it on the bed.
				return fail(5, fmt.Sprintf("  Physical volume '%s' is already in volume group '%s'\n", p.name, vn))
			}
		}
	}
	c.createVG(name, pvs)
	c.hosts[host].lockspaces[name] = true
	return ok(fmt.Sprintf("  Volume group \"%s\" successfully created\n", name))
}

func (c *Cluster) vgchange(host int, argv []string) executor.Result {
	if len(argv) < 2 {
		return fail(3, "usage")
	}
	op := argv[1]
	names := argv[2:]
	if len(names) == 0 {
		for n := range c.hosts[host].lockspaces {
			names = append(names, n)
		}
	}
	for _, n := range names {
		v, exists := c.vgs[n]
		if !exists {
			return fail(5, fmt.Sprintf("  Volume group \"%s\" not found\n  Cannot process volume group %s\n", n, n))
		}
		switch op {
		case "--lockstart":
			c.hosts[host].lockspaces[n] = true
			delete(c.hosts[host].deadIn, n)
		case "--lockstop":
			for _, l := range v.lvs {
				if _, held := l.holders[host]; held {
					return fail(5, fmt.Sprintf("  VG %s stop failed: LVs must first be deactivated\n", n))
				}
			}
			delete(c.hosts[host].lockspaces, n)
		default:
			return fail(3, "  unsupported vgchange "+op)
		}
	}
	return ok("")
}

func (c *Cluster) lockctl(host int) executor.Result {
	var b strings.Builder
	for _, name := range c.sortedVGs() {
		if !c.started(host, name) {
			continue
		}
		v := c.vgs[name]
		fmt.Fprintf(&b, "VG %s lock_type=sanlock %s\nLS sanlock lvm_%s\nLK VG un ver 1\n", name, v.uuid, name)
		for _, l := range c.sortedLVs(v) {
			if m, held := l.holders[host]; held {
				fmt.Fprintf(&b, "LK LV %s %s\n", m, l.uuid)
			}
		}
	}
	return ok(b.String())
}

func (c *Cluster) sortedVGs() []string {
	names := make([]string, 0, len(c.vgs))
	for n := range c.vgs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (c *Cluster) sortedLVs(v *vg) []*lv {
	out := make([]*lv, 0, len(v.lvs))
	for _, l := range v.lvs {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func (c *Cluster) sanlock(host int, argv []string) executor.Result {
	if len(argv) >= 3 && argv[1] == "client" && argv[2] == "status" {
		var b strings.Builder
		fmt.Fprintf(&b, "daemon fake.host%d\np -1 helper\np -1 listener\np 100 lvmlockd\np -1 status\n", host)
		for _, name := range c.sortedVGs() {
			if c.started(host, name) {
				fmt.Fprintf(&b, "s lvm_%s:%d:/dev/mapper/%s-lvmlock:0\n", name, host, name)
			}
		}
		for _, name := range c.sortedVGs() {
			for _, l := range c.vgs[name].lvs { // resource order means nothing to sanlock's readers
				switch l.holders[host] {
				case "ex":
					fmt.Fprintf(&b, "r lvm_%s:%s:/dev/mapper/%s-lvmlock:%d:%d p 100\n", name, l.uuid, name, l.lease, l.version)
				case "sh":
					fmt.Fprintf(&b, "r lvm_%s:%s:/dev/mapper/%s-lvmlock:%d:SH p 100\n", name, l.uuid, name, l.lease)
				}
			}
		}
		return ok(b.String())
	}
	if len(argv) >= 3 && argv[1] == "client" && argv[2] == "gets" {
		var b strings.Builder
		for _, name := range c.sortedVGs() {
			if !c.started(host, name) {
				continue
			}
			fmt.Fprintf(&b, "s lvm_%s:%d:/dev/mapper/%s-lvmlock:0 \n", name, host, name)
			ids := make([]int, 0, len(c.hosts))
			for id := range c.hosts {
				ids = append(ids, id)
			}
			sort.Ints(ids)
			for _, id := range ids {
				state := "LIVE"
				switch {
				case c.hosts[id].deadIn[name] && !c.hosts[id].lockspaces[name]:
					state = "DEAD"
				case !c.hosts[id].lockspaces[name]:
					continue
				case !c.hosts[id].up:
					state = "FAIL"
				}
				fmt.Fprintf(&b, "h %d gen 1 timestamp 100 %s\n", id, state)
			}
		}
		return ok(b.String())
	}
	return fail(1, "fakelvm: sanlock command not modelled")
}

func (c *Cluster) pvmove(host int, argv []string) executor.Result {
	var path string
	var devs []string
	for i := 1; i < len(argv); i++ {
		switch argv[i] {
		case "-b":
		case "-i":
			i++
		case "-n":
			i++
			path = argv[i]
		default:
			devs = append(devs, argv[i])
		}
	}
	_, l, res, found := c.lookup(path)
	if !found {
		return res
	}
	if l.holders[host] != "ex" || othersHold(l, host, false) {
		return fail(5, fmt.Sprintf("  LV locked by other host: %s\n  pvmove in a shared VG requires exclusive lock on named LV.\n", path))
	}
	if len(devs) > 1 {
		l.devices = []string{devs[1]}
	}
	return ok("")
}

// lvs models `lvs` of some LVs (lvm.LVReportArgs: their fields and their segment's, one row
// each) and of a VG's LVs with pvmove progress.
func (c *Cluster) lvs(argv []string) executor.Result {
	if !strings.Contains(argv[len(argv)-1], "/") {
		return c.lvsMove(argv)
	}
	var rows []map[string]string
	var stderr strings.Builder
	for _, name := range argv[1:] {
		vgName, lvName, one := strings.Cut(name, "/")
		if !one || strings.HasPrefix(name, "-") {
			continue
		}
		v, exists := c.vgs[vgName]
		if !exists {
			fmt.Fprintf(&stderr, "  Volume group \"%s\" not found\n  Cannot process volume group %s\n", vgName, vgName)
			continue
		}
		l, exists := v.lvs[lvName]
		if !exists {
			fmt.Fprintf(&stderr, "  Failed to find logical volume \"%s\"\n", name)
			continue
		}
		row := lvRow(v, l)
		row["seg_start_pe"], row["devices"] = "0", strings.Join(l.devices, "(0),")+"(0)"
		rows = append(rows, row)
	}
	b, _ := json.Marshal(map[string]any{"report": []any{map[string]any{"lv": rows}}})
	if stderr.Len() > 0 {
		return executor.Result{ExitCode: 5, Stdout: b, Stderr: []byte(stderr.String())}
	}
	return ok(string(b))
}

func (c *Cluster) lvsMove(argv []string) executor.Result {
	name := argv[len(argv)-1]
	v, exists := c.vgs[name]
	if !exists {
		return fail(5, fmt.Sprintf("  Volume group \"%s\" not found\n", name))
	}
	var rows []map[string]string
	for _, l := range c.sortedLVs(v) {
		rows = append(rows, map[string]string{"lv_name": l.name, "copy_percent": "", "move_pv": "", "devices": strings.Join(l.devices, "(0),") + "(0)"})
	}
	b, _ := json.Marshal(map[string]any{"report": []any{map[string]any{"lv": rows}}})
	return ok(string(b))
}

// wipe models `blkdiscard -z` (or dd from /dev/zero) over /dev/VG/LV: needs the LV active here.
func (c *Cluster) wipe(host int, argv []string) executor.Result {
	dev := argv[len(argv)-1]
	for _, a := range argv {
		if strings.HasPrefix(a, "of=") {
			dev = strings.TrimPrefix(a, "of=")
		}
	}
	path := strings.TrimPrefix(dev, "/dev/")
	_, l, res, found := c.lookup(path)
	if !found {
		return res
	}
	if _, held := l.holders[host]; !held {
		return fail(1, fmt.Sprintf("blkdiscard: cannot open %s: No such file or directory\n", dev))
	}
	// A range starting past 0 (zeroing the tail of a copy) leaves the data before it.
	for i, a := range argv {
		if a == "--offset" && i+1 < len(argv) && argv[i+1] != "0" {
			return ok("")
		}
	}
	l.dirty, l.data = false, ""
	return ok("")
}

func (c *Cluster) fullreport(argv []string) executor.Result {
	key := strings.Join(argv, "\x00")
	c.reportMu.Lock()
	out, hit := c.reports[key]
	c.reportMu.Unlock()
	if hit {
		return executor.Result{Stdout: out}
	}
	res := c.buildFullreport(argv)
	if res.ExitCode == 0 {
		c.reportMu.Lock()
		if c.reports == nil {
			c.reports = map[string][]byte{}
		}
		c.reports[key] = res.Stdout
		c.reportMu.Unlock()
	}
	return res
}

// lvRow is one LV's row of the reports' LV fields.
func lvRow(v *vg, l *lv) map[string]string {
	return map[string]string{"lv_name": l.name, "lv_uuid": l.uuid, "lv_full_name": v.name + "/" + l.name, "lv_path": "/dev/" + v.name + "/" + l.name,
		"lv_size": i64(l.size), "lv_tags": strings.Join(l.tags, ","), "lv_lockargs": fmt.Sprintf("1.0.0:%d", l.lease),
		"lv_active": "", "lv_active_locally": "0", "lv_active_remotely": "0", "lv_active_exclusively": "0",
		"lv_attr": "-wi-------", "origin": l.origin, "lv_role": "public", "move_pv": "", "copy_percent": "", "lv_layout": "linear"}
}

func (c *Cluster) buildFullreport(argv []string) executor.Result {
	var names []string
	for i := len(argv) - 1; i > 0 && !strings.HasPrefix(argv[i], "-") && !strings.Contains(argv[i], ","); i-- {
		if argv[i-1] == "-o" || argv[i-1] == "--configreport" || argv[i-1] == "--units" || argv[i-1] == "--reportformat" {
			break
		}
		names = append(names, argv[i])
	}
	if len(names) == 0 {
		names = c.sortedVGs()
	}
	type m = map[string]string
	var reports []any
	for _, name := range names {
		v, exists := c.vgs[name]
		if !exists {
			return fail(5, fmt.Sprintf("  Volume group \"%s\" not found\n", name))
		}
		var size int64
		for _, p := range v.pvs {
			size += p.size
		}
		free := c.free(v)
		vgRow := m{"vg_name": v.name, "vg_uuid": v.uuid, "vg_size": i64(size), "vg_free": i64(free), "vg_extent_size": i64(extent),
			"vg_extent_count": i64(size / extent), "vg_free_count": i64(free / extent), "lv_count": strconv.Itoa(len(v.lvs)),
			"pv_count": strconv.Itoa(len(v.pvs)), "vg_lock_type": "sanlock", "vg_lock_args": "1.0.0:lvmlock", "vg_tags": "",
			"vg_missing_pv_count": "0", "vg_shared": "1"}
		usedOn := map[string]int64{}
		for _, l := range v.lvs {
			usedOn[l.devices[0]] += l.size
		}
		usedOn[v.pvs[0].name] += 256 << 20
		var pvRows, lvRows, segRows []m
		for _, p := range v.pvs {
			pvRows = append(pvRows, m{"pv_name": p.name, "pv_uuid": p.uuid, "pv_size": i64(p.size), "pv_free": i64(p.size - usedOn[p.name]),
				"pv_used": i64(usedOn[p.name]), "pv_missing": b2s(p.missing), "vg_name": v.name})
		}
		for _, l := range c.sortedLVs(v) {
			lvRows = append(lvRows, lvRow(v, l))
			segRows = append(segRows, m{"lv_uuid": l.uuid, "seg_start_pe": "0", "seg_size_pe": i64(l.size / extent), "devices": l.devices[0] + "(0)"})
		}
		reports = append(reports, map[string]any{"vg": []m{vgRow}, "pv": pvRows, "lv": lvRows, "seg": segRows, "pvseg": []m{}})
	}
	b, _ := json.Marshal(map[string]any{"report": reports})
	return ok(string(b))
}

func i64(n int64) string { return strconv.FormatInt(n, 10) }

func b2s(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
