package lvm

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sharedlvm/sharedlvm-operator/agent/blockdev"
	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
)

// ActivationMode is how an LV is activated in a shared VG.
type ActivationMode string

const (
	// Exclusive: `lvchange -aey`, an exclusive sanlock lease.
	Exclusive ActivationMode = "ey"
	// Shared: `lvchange -asy`, a shared lease; converts an exclusive lease in place.
	Shared ActivationMode = "sy"
	// Deactivate: `lvchange -an`, releases the lease.
	Deactivate ActivationMode = "n"
)

// Client runs LVM commands through an executor. Metadata-changing commands are serialized
// per VG (docs/design.md §7: hundreds of parallel LVM commands contend on the VG lock for
// minutes); reports and activations run concurrently.
type Client struct {
	Exec executor.Executor
	// LockstartAttempts bounds `vgchange --lockstart` retries (default 5).
	LockstartAttempts int
	// LockstartRetryDelay between attempts (default 2 s).
	LockstartRetryDelay time.Duration

	mu      sync.Mutex
	vgLocks map[string]*sync.Mutex
	pending map[string]*lvsRun // per VG, the shared report not yet begun (ReportLVAfter)
}

// lvsRun is one `lvs` of several LVs of a VG, shared by the callers of ReportLVAfter.
type lvsRun struct {
	names []string // the LVs asked for; fixed once the run has begun
	lvs   map[string]*LV
	err   error
	done  chan struct{}
}

// New returns a client over an executor.
func New(e executor.Executor) *Client { return &Client{Exec: e} }

func (c *Client) vgLock(vg string) *sync.Mutex {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.vgLocks == nil {
		c.vgLocks = map[string]*sync.Mutex{}
	}
	m, ok := c.vgLocks[vg]
	if !ok {
		m = &sync.Mutex{}
		c.vgLocks[vg] = m
	}
	return m
}

// run runs argv and classifies failures.
func (c *Client) run(ctx context.Context, argv []string) (executor.Result, error) {
	res, err := c.Exec.Run(ctx, argv)
	return res, classify(argv, res.ExitCode, res.Stderr, err)
}

// runMeta runs a metadata-changing command under the VG's mutex.
func (c *Client) runMeta(ctx context.Context, vg string, argv []string) (executor.Result, error) {
	m := c.vgLock(vg)
	m.Lock()
	defer m.Unlock()
	return c.run(ctx, argv)
}

func lvPath(vg, lv string) string { return vg + "/" + lv }

func validatePair(vg, lv string) error {
	if err := ValidateVGName(vg); err != nil {
		return &Error{Kind: KindInvalidName, Err: err}
	}
	if err := ValidateLVName(lv); err != nil {
		return &Error{Kind: KindInvalidName, Err: err}
	}
	return nil
}

func validateDevice(d string) error {
	if err := blockdev.ValidateDevice(d); err != nil {
		return &Error{Kind: KindInvalidName, Err: err}
	}
	return nil
}

// Report runs one `lvm fullreport` for the given VGs (all VGs when none) and parses it.
func (c *Client) Report(ctx context.Context, vgs ...string) (*Report, error) {
	for _, vg := range vgs {
		if err := ValidateVGName(vg); err != nil {
			return nil, &Error{Kind: KindInvalidName, Err: err}
		}
	}
	argv := FullReportArgs(vgs...)
	res, err := c.run(ctx, argv)
	if err != nil {
		return nil, err
	}
	return ParseFullReport(res.Stdout)
}

// ReportLV reports one LV; nil when the VG has no LV of that name.
func (c *Client) ReportLV(ctx context.Context, vg, lv string) (*LV, error) {
	if err := validatePair(vg, lv); err != nil {
		return nil, err
	}
	lvs, err := c.reportLVs(ctx, vg, []string{lv})
	return lvs[lv], err
}

// reportLVs runs one `lvs` of the named LVs of vg; the ones that do not exist are missing
// from the map (LVM reports the others and exits 5).
func (c *Client) reportLVs(ctx context.Context, vg string, names []string) (map[string]*LV, error) {
	res, err := c.run(ctx, LVReportArgs(vg, names...))
	if err != nil && KindOf(err) != KindLVNotFound {
		return nil, err
	}
	return ParseLVsReport(res.Stdout)
}

// ReportLVAfter reports LV lv of vg as it is after every metadata change this client made
// before the call (nil if it does not exist). Callers that arrive while a report waits for
// the VG's metadata mutex join it: a batch of creates costs one `lvs` of their new LVs
// instead of one each (`lvcreate` cannot print the new LV's UUID, and every LVM command
// has a fixed start-up cost, ~0.2 s on the test bed), and that report's size is the
// batch's, not the VG's. It runs under the mutex, so it neither waits on the VG lock for
// this host's own lvcreate nor makes one wait.
func (c *Client) ReportLVAfter(ctx context.Context, vg, lv string) (*LV, error) {
	if err := validatePair(vg, lv); err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.pending == nil {
		c.pending = map[string]*lvsRun{}
	}
	run, owner := c.pending[vg], false
	if run == nil {
		run, owner = &lvsRun{done: make(chan struct{})}, true
		c.pending[vg] = run
	}
	if !slices.Contains(run.names, lv) {
		run.names = append(run.names, lv)
	}
	c.mu.Unlock()
	if owner {
		m := c.vgLock(vg)
		m.Lock()
		c.mu.Lock()
		delete(c.pending, vg) // from here on, callers need a run that begins after them
		names := run.names
		c.mu.Unlock()
		run.lvs, run.err = c.reportLVs(ctx, vg, names)
		m.Unlock()
		close(run.done)
	}
	select {
	case <-run.done:
		return run.lvs[lv], run.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// CreateOptions are the options of CreateLV.
type CreateOptions struct {
	// Tags to add (sharedlvm.io/uid=<CR UID> ties the LV to its owner).
	Tags []string
	// PVs restricts allocation to these devices.
	PVs []string
	// Activate: Exclusive (lvcreate's default in a shared VG; zeroes the LV's start) or
	// Deactivate (-an: no lease is taken; the LV is not zeroed).
	Activate ActivationMode
}

// CreateLV creates an LV of size bytes (LVM rounds up to whole extents).
func (c *Client) CreateLV(ctx context.Context, vg, lv string, size int64, o CreateOptions) error {
	if err := validatePair(vg, lv); err != nil {
		return err
	}
	if err := ValidateDMName(vg, lv); err != nil {
		return &Error{Kind: KindInvalidName, Err: err}
	}
	if size <= 0 {
		return &Error{Kind: KindUnknown, Err: fmt.Errorf("size %d must be positive", size)}
	}
	argv := []string{"lvcreate", "-y", "-n", lv, "-L", strconv.FormatInt(size, 10) + "b"}
	switch o.Activate {
	case "", Exclusive:
	case Deactivate:
		argv = append(argv, "-an", "-Zn")
	default:
		return &Error{Kind: KindUnknown, Err: fmt.Errorf("lvcreate cannot activate %q", o.Activate)}
	}
	for _, t := range o.Tags {
		if err := validateTag(t); err != nil {
			return err
		}
		argv = append(argv, "--addtag", t)
	}
	argv = append(argv, vg)
	for _, d := range o.PVs {
		if err := validateDevice(d); err != nil {
			return err
		}
		argv = append(argv, d)
	}
	_, err := c.runMeta(ctx, vg, argv)
	return err
}

// CreateSnapshot creates a thick (COW) snapshot `name` of origin with size bytes of COW
// space, tagged. In a shared VG the origin must be active exclusively on this host; the
// snapshot has no lease of its own (it uses the origin's), and while it exists the origin
// cannot be activated shared (lvmlockd(8)): callers drop it as soon as they are done.
func (c *Client) CreateSnapshot(ctx context.Context, vg, origin, name string, size int64, tags []string) error {
	if err := validatePair(vg, origin); err != nil {
		return err
	}
	if err := validatePair(vg, name); err != nil {
		return err
	}
	if err := ValidateDMName(vg, name); err != nil {
		return &Error{Kind: KindInvalidName, Err: err}
	}
	if size <= 0 {
		return &Error{Kind: KindUnknown, Err: fmt.Errorf("snapshot size %d must be positive", size)}
	}
	argv := []string{"lvcreate", "-y", "-s", "-n", name, "-L", strconv.FormatInt(size, 10) + "b"}
	for _, t := range tags {
		if err := validateTag(t); err != nil {
			return err
		}
		argv = append(argv, "--addtag", t)
	}
	argv = append(argv, lvPath(vg, origin))
	_, err := c.runMeta(ctx, vg, argv)
	return err
}

// AddTag adds a tag to an LV (a VG metadata change; no LV lock is needed).
func (c *Client) AddTag(ctx context.Context, vg, lv, tag string) error {
	return c.changeTag(ctx, vg, lv, "--addtag", tag)
}

// RemoveTag removes a tag from an LV (`lvchange --deltag`).
func (c *Client) RemoveTag(ctx context.Context, vg, lv, tag string) error {
	return c.changeTag(ctx, vg, lv, "--deltag", tag)
}

func (c *Client) changeTag(ctx context.Context, vg, lv, flag, tag string) error {
	if err := validatePair(vg, lv); err != nil {
		return err
	}
	if err := validateTag(tag); err != nil {
		return err
	}
	_, err := c.runMeta(ctx, vg, []string{"lvchange", flag, tag, lvPath(vg, lv)})
	return err
}

// validateTag checks LVM's tag charset: A-Z a-z 0-9 _ + . - / = ! : & #, at most 1024 chars.
func validateTag(t string) error {
	if t == "" || len(t) > 1024 || t[0] == '-' {
		return &Error{Kind: KindInvalidName, Err: fmt.Errorf("invalid LVM tag %q", t)}
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_+.-/=!:&#", r)) {
			return &Error{Kind: KindInvalidName, Err: fmt.Errorf("LVM tag %q contains %q", t, r)}
		}
	}
	return nil
}

// RemoveLV removes an LV. Callers check ownership (tags) first: see RemoveOwnedLV.
func (c *Client) RemoveLV(ctx context.Context, vg, lv string) error {
	if err := validatePair(vg, lv); err != nil {
		return err
	}
	_, err := c.runMeta(ctx, vg, []string{"lvremove", "-y", lvPath(vg, lv)})
	return err
}

// RemoveOwnedLV removes an LV only if it carries ownerTag: nothing deletes an LV it does not
// own. A missing LV is success (idempotent).
func (c *Client) RemoveOwnedLV(ctx context.Context, vg, lv, ownerTag string) error {
	l, err := c.ReportLV(ctx, vg, lv)
	if err != nil || l == nil {
		return err
	}
	if !l.HasTag(ownerTag) {
		return &Error{Kind: KindUnknown, Err: fmt.Errorf("refusing to remove %s/%s: it does not carry tag %q", vg, lv, ownerTag)}
	}
	return c.RemoveLV(ctx, vg, lv)
}

// ExtendLV grows an LV to size bytes. sharedUpdate passes `--lockopt shupdate`, which lvmlockd
// requires to extend an LV held shared; every other holder must then run RefreshLV. Extending
// to the current size succeeds (idempotent).
func (c *Client) ExtendLV(ctx context.Context, vg, lv string, size int64, sharedUpdate bool) error {
	if err := validatePair(vg, lv); err != nil {
		return err
	}
	argv := []string{"lvextend", "-L", strconv.FormatInt(size, 10) + "b"}
	if sharedUpdate {
		argv = append(argv, "--lockopt", "shupdate")
	}
	argv = append(argv, lvPath(vg, lv))
	_, err := c.runMeta(ctx, vg, argv)
	if KindOf(err) == KindSizeUnchanged {
		return nil
	}
	return err
}

// RefreshLV reloads an active LV's mapping after another host changed its size.
func (c *Client) RefreshLV(ctx context.Context, vg, lv string) error {
	if err := validatePair(vg, lv); err != nil {
		return err
	}
	_, err := c.run(ctx, []string{"lvchange", "--refresh", lvPath(vg, lv)})
	return err
}

// Activate applies a lock mode to LVs of one VG in one command (batched: a reboot restore
// re-activates many LVs at once). -aey on an LV held sh converts to ex only if no other host
// holds it; -asy on an LV held ex converts in place.
func (c *Client) Activate(ctx context.Context, vg string, mode ActivationMode, lvs ...string) error {
	if len(lvs) == 0 {
		return nil
	}
	argv := []string{"lvchange", "-a" + string(mode)}
	for _, lv := range lvs {
		if err := validatePair(vg, lv); err != nil {
			return err
		}
		argv = append(argv, lvPath(vg, lv))
	}
	switch mode {
	case Exclusive, Shared, Deactivate:
	default:
		return &Error{Kind: KindUnknown, Err: fmt.Errorf("unknown activation mode %q", mode)}
	}
	_, err := c.run(ctx, argv)
	return err
}

// RenameLV renames an LV.
func (c *Client) RenameLV(ctx context.Context, vg, from, to string) error {
	if err := validatePair(vg, from); err != nil {
		return err
	}
	if err := validatePair(vg, to); err != nil {
		return err
	}
	_, err := c.runMeta(ctx, vg, []string{"lvrename", vg, from, to})
	return err
}

// hostIDConfig is the --config that makes a command start a lockspace as hostID: lvm passes
// its local/host_id to lvmlockd with each lockspace start, so the id allocated to this node
// wins over lvmlocal.conf (docs/design.md §7, host IDs). Out of sanlock's range is refused.
func hostIDConfig(hostID int32) ([]string, error) {
	if hostID < 1 || hostID > 2000 {
		return nil, fmt.Errorf("sanlock host_id %d is out of range 1..2000: no lockspace is started without an allocated host_id", hostID)
	}
	return []string{"--config", fmt.Sprintf("local/host_id=%d", hostID)}, nil
}

// CreateSharedVG creates a shared VG with a sanlock lockspace (`vgcreate --shared`), which
// also starts the lockspace on this host as hostID.
func (c *Client) CreateSharedVG(ctx context.Context, vg string, pvs []string, hostID int32) error {
	if err := ValidateVGName(vg); err != nil {
		return &Error{Kind: KindInvalidName, Err: err}
	}
	cfg, err := hostIDConfig(hostID)
	if err != nil {
		return err
	}
	argv := append([]string{"vgcreate"}, cfg...)
	argv = append(argv, "--shared", "--lock-type", "sanlock", vg)
	for _, d := range pvs {
		if err := validateDevice(d); err != nil {
			return err
		}
		argv = append(argv, d)
	}
	_, err = c.runMeta(ctx, vg, argv)
	return err
}

// Lockstart joins the VG's lockspace as hostID, retrying the transient failures real hosts hit (the
// first start on a host without udev fails with "invalid parameters for sanlock"). It
// returns the number of attempts used.
func (c *Client) Lockstart(ctx context.Context, vg string, hostID int32) (int, error) {
	if err := ValidateVGName(vg); err != nil {
		return 0, &Error{Kind: KindInvalidName, Err: err}
	}
	cfg, err := hostIDConfig(hostID)
	if err != nil {
		return 0, err
	}
	argv := append([]string{"vgchange"}, cfg...)
	argv = append(argv, "--lockstart", vg)
	attempts, delay := c.LockstartAttempts, c.LockstartRetryDelay
	if attempts <= 0 {
		attempts = 5
	}
	if delay <= 0 {
		delay = 2 * time.Second
	}
	for i := 1; i <= attempts; i++ {
		_, err = c.run(ctx, argv)
		if err == nil || KindOf(err) != KindLockspaceStartRetry {
			return i, err
		}
		select {
		case <-ctx.Done():
			return i, ctx.Err()
		case <-time.After(delay):
		}
	}
	return attempts, err
}

// Lockstop leaves the VG's lockspace; refused (KindLockspaceBusy) while LVs are active.
func (c *Client) Lockstop(ctx context.Context, vg string) error {
	if err := ValidateVGName(vg); err != nil {
		return &Error{Kind: KindInvalidName, Err: err}
	}
	_, err := c.run(ctx, []string{"vgchange", "--lockstop", vg})
	return err
}

// LockdInfo reads this host's lvmlockd state: the real lock mode of every LV it holds.
func (c *Client) LockdInfo(ctx context.Context) ([]LockdVG, error) {
	res, err := c.run(ctx, []string{"lvmlockctl", "--info"})
	if err != nil {
		return nil, err
	}
	return ParseLockdInfo(res.Stdout), nil
}

// StartPVMove starts moving one LV's extents off `from` (onto `to`, or anywhere else when
// empty) in the background: `pvmove -b -n LV`. In a shared VG the LV must be held
// exclusively by this host, lvmpolld must run, and the move continues under lvmpolld if the
// agent dies. Watch it with PVMoveProgress.
func (c *Client) StartPVMove(ctx context.Context, vg, lv string, from []string, to []string) error {
	if err := validatePair(vg, lv); err != nil {
		return err
	}
	if len(from) == 0 {
		return &Error{Kind: KindUnknown, Err: fmt.Errorf("pvmove needs a source PV")}
	}
	// pvmove takes one source PV per command; with several, move them one after another.
	if len(from) > 1 {
		return &Error{Kind: KindUnknown, Err: fmt.Errorf("pvmove moves off one source PV at a time")}
	}
	argv := []string{"pvmove", "-b", "-i", "1", "-n", lvPath(vg, lv)}
	for _, d := range append(append([]string(nil), from...), to...) {
		if err := validateDevice(d); err != nil {
			return err
		}
		argv = append(argv, d)
	}
	_, err := c.runMeta(ctx, vg, argv)
	return err
}

// PVMoveProgress returns the copy percentage of the pvmove of an LV, and whether one is still
// running. It reads the hidden pvmove LV, which fullreport does not list.
func (c *Client) PVMoveProgress(ctx context.Context, vg, lv string) (percent float64, running bool, err error) {
	if err := validatePair(vg, lv); err != nil {
		return 0, false, err
	}
	res, err := c.run(ctx, []string{"lvs", "-a", "--reportformat", "json", "-o", "lv_name,copy_percent,move_pv,devices", vg})
	if err != nil {
		return 0, false, err
	}
	return parsePVMoveProgress(res.Stdout, lv)
}
