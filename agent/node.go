package agent

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sharedlvm/sharedlvm-operator/agent/blockdev"
	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
	"github.com/sharedlvm/sharedlvm-operator/agent/sanlock"
)

// Node is this node's storage, seen through the command layer: LVM, lvmlockd and sanlock,
// run through one executor (the host itself, or a test-bed VM).
type Node struct {
	Name    string
	LVM     *lvm.Client
	Sanlock *sanlock.Client
	Block   *blockdev.Client
	exec    executor.Executor

	mu   sync.Mutex
	busy map[string]*sync.Mutex // per LV UUID (or vg/lv): one lock change at a time

	localHostID int32
	localKnown  bool

	snapMu   sync.Mutex
	snap     *sanlock.Status
	snapTime time.Time

	lockdMu   sync.Mutex
	lockd     []lvm.LockdVG
	lockdTime time.Time

	probeMu sync.Mutex
	probing map[string]time.Time // devices whose probe read has not returned, since when
}

// NewNode returns a Node running commands through e.
func NewNode(name string, e executor.Executor) *Node {
	return &Node{Name: name, LVM: lvm.New(e), Sanlock: &sanlock.Client{Exec: e}, Block: &blockdev.Client{Exec: e}, exec: e, busy: map[string]*sync.Mutex{}}
}

// LockLV serializes this agent's work on one LV (attach, detach, drift repair, create,
// copy, extend, move, wipe); it returns the unlock function. The key is the LV's name in
// its VG, the one identity every operation knows (a new LV has no UUID until lvcreate
// returns): a key by UUID in one place and by name in another let the drift repair release
// a copy's target in the middle of its dd (seen on the bed).
func (n *Node) LockLV(vg, lv string) func() {
	key := vg + "/" + lv
	n.mu.Lock()
	m, ok := n.busy[key]
	if !ok {
		m = &sync.Mutex{}
		n.busy[key] = m
	}
	n.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// TryLockLV is LockLV without waiting: false when another lock change on the LV is running.
func (n *Node) TryLockLV(vg, lv string) (func(), bool) {
	key := vg + "/" + lv
	n.mu.Lock()
	m, ok := n.busy[key]
	if !ok {
		m = &sync.Mutex{}
		n.busy[key] = m
	}
	n.mu.Unlock()
	if !m.TryLock() {
		return nil, false
	}
	return m.Unlock, true
}

// LocalHostID reads the sanlock host_id set in this node's LVM configuration (lvmlocal.conf),
// 0 when it sets none. It is only the node's preference and a check: lockspaces start with
// the host_id the operator allocated (HostIDs). A reading is cached until
// ForgetLocalHostID; a failure is not.
func (n *Node) LocalHostID(ctx context.Context) (int32, error) {
	n.mu.Lock()
	id, known := n.localHostID, n.localKnown
	n.mu.Unlock()
	if known {
		return id, nil
	}
	res, err := n.exec.Run(ctx, []string{"lvmconfig", "--typeconfig", "full", "local/host_id"})
	if err != nil {
		return 0, err
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(string(res.Stdout)), "host_id=")
	parsed, convErr := strconv.Atoi(v)
	if res.ExitCode != 0 || !ok || convErr != nil || parsed < 0 || parsed > 2000 {
		return 0, fmt.Errorf("lvmconfig local/host_id: want 0..2000, got %q (exit %d) %s", strings.TrimSpace(string(res.Stdout)), res.ExitCode, strings.TrimSpace(string(res.Stderr)))
	}
	n.mu.Lock()
	n.localHostID, n.localKnown = int32(parsed), true
	n.mu.Unlock()
	return int32(parsed), nil
}

// ForgetLocalHostID makes the next LocalHostID read the configuration again (after it
// disagreed with the allocated id: the administrator may have fixed lvmlocal.conf).
func (n *Node) ForgetLocalHostID() {
	n.mu.Lock()
	n.localKnown = false
	n.mu.Unlock()
}

// SanlockStatus returns `sanlock client status`, reusing a reading younger than maxAge so
// that many reconciles in one burst cost one command. Lock changes call Invalidate.
func (n *Node) SanlockStatus(ctx context.Context, maxAge time.Duration) (*sanlock.Status, error) {
	n.snapMu.Lock()
	defer n.snapMu.Unlock()
	if n.snap != nil && time.Since(n.snapTime) < maxAge {
		return n.snap, nil
	}
	dctx, cancel := context.WithTimeout(ctx, daemonAskTimeout)
	defer cancel()
	st, err := n.Sanlock.Status(dctx)
	if err != nil {
		return nil, err
	}
	n.snap, n.snapTime = st, time.Now()
	return st, nil
}

// daemonAskTimeout bounds one `sanlock client status` or `lvmlockctl --info` behind the
// node's shared readings: every VG's report cycle waits on the one in flight, so a daemon that
// does not answer must fail them (said as not answering), not hold them.
const daemonAskTimeout = 20 * time.Second

// probeTimeout bounds one probe read: a path that does not answer within it is lost for
// this node's purposes (sanlock's own lease I/O times out after io_timeout, 10 s default).
const probeTimeout = 10 * time.Second

// ProbeDevices reads the first 4 KiB of each device past the page cache and returns the
// first that cannot be read, with why: the node's path to that storage is lost (EIO), or
// the read does not return (a path that queues I/O). A read that never returns is not
// started again while it hangs; the device is reported as blocked since then.
func (n *Node) ProbeDevices(ctx context.Context, paths []string) (string, error) {
	for _, p := range paths {
		if err := n.probe(ctx, p); err != nil {
			return p, err
		}
	}
	return "", nil
}

func (n *Node) probe(ctx context.Context, path string) error {
	if err := blockdev.ValidateDevice(path); err != nil {
		return err
	}
	n.probeMu.Lock()
	if since, ok := n.probing[path]; ok {
		n.probeMu.Unlock()
		return fmt.Errorf("a read of it has not returned since %s", since.UTC().Format(time.RFC3339))
	}
	if n.probing == nil {
		n.probing = map[string]time.Time{}
	}
	n.probing[path] = time.Now()
	n.probeMu.Unlock()
	done := make(chan error, 1)
	go func() {
		var err error
		if r, ok := n.exec.(executor.DeviceReader); ok {
			_, err = r.ReadDevice(context.WithoutCancel(ctx), path, 0, 4096)
		} else {
			var res executor.Result
			res, err = n.exec.Run(context.WithoutCancel(ctx), []string{"dd", "if=" + path, "of=/dev/null", "bs=4096", "count=1", "iflag=direct", "status=none"})
			if err == nil && res.ExitCode != 0 {
				err = fmt.Errorf("%s", strings.TrimSpace(string(res.Stderr)))
			}
		}
		n.probeMu.Lock()
		delete(n.probing, path)
		n.probeMu.Unlock()
		done <- err
	}()
	t := time.NewTimer(probeTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("a read of it did not return within %v", probeTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// LockdInfo returns `lvmlockctl --info`, reusing a reading younger than maxAge: the report
// cycles of a node's VGs run together, and one reading serves them all.
func (n *Node) LockdInfo(ctx context.Context, maxAge time.Duration) ([]lvm.LockdVG, error) {
	n.lockdMu.Lock()
	defer n.lockdMu.Unlock()
	if n.lockd != nil && time.Since(n.lockdTime) < maxAge {
		return n.lockd, nil
	}
	dctx, cancel := context.WithTimeout(ctx, daemonAskTimeout)
	defer cancel()
	info, err := n.LVM.LockdInfo(dctx)
	if err != nil {
		return nil, err
	}
	if info == nil {
		info = []lvm.LockdVG{}
	}
	n.lockd, n.lockdTime = info, time.Now()
	return info, nil
}

// Invalidate drops the cached sanlock and lvmlockd readings after this node changed a lock
// or a lockspace.
func (n *Node) Invalidate() {
	n.snapMu.Lock()
	n.snap = nil
	n.snapMu.Unlock()
	n.lockdMu.Lock()
	n.lockd = nil
	n.lockdMu.Unlock()
}

// LeaseMode returns the lock this node holds on an LV, read from sanlock (never from lvs).
func LeaseMode(st *sanlock.Status, vg, lvUUID string) lvm.ActivationMode {
	r, ok := st.Lease(vg, lvUUID)
	switch {
	case !ok:
		return lvm.Deactivate
	case r.Shared:
		return lvm.Shared
	}
	return lvm.Exclusive
}
