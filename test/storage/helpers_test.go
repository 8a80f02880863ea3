//go:build storage

// Package storage holds the storage tier: tests on real lvm2 + lvmlockd + sanlock in VMs that
// share LUN images (internal/testbed). Run alone with:
//
//	go test -tags storage -v ./test/storage/
package storage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
	"github.com/sharedlvm/sharedlvm-operator/agent/sanlock"
	"github.com/sharedlvm/sharedlvm-operator/internal/testbed"
)

// node is one bed host seen through the product's command layer.
type node struct {
	*testbed.Host
	LVM     *lvm.Client
	Sanlock *sanlock.Client
}

func nodes(b *testbed.Bed) []*node {
	var out []*node
	for _, h := range b.Hosts {
		out = append(out, &node{Host: h, LVM: &lvm.Client{Exec: h, LockstartRetryDelay: time.Second}, Sanlock: &sanlock.Client{Exec: h}})
	}
	return out
}

// newBed boots a bed for a test; on failure it says where the console logs are.
func newBed(t *testing.T, cfg testbed.Config) *testbed.Bed {
	t.Helper()
	cfg.Name = t.Name()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b, err := testbed.New(ctx, cfg)
	if err != nil {
		t.Fatalf("booting the bed: %v", err)
	}
	t.Cleanup(func() {
		b.Close()
		if t.Failed() {
			t.Logf("VM console logs and LUN images kept in %s", b.Dir)
		} else {
			for _, l := range b.LUNs {
				_ = os.Remove(l) // keep the logs, drop the GBs
			}
		}
	})
	return b
}

// timings records how long each real operation took, for the closing table.
type timings struct {
	mu   sync.Mutex
	rows []string
	dir  string
}

func (tm *timings) add(op string, d time.Duration) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	tm.rows = append(tm.rows, fmt.Sprintf("| %s | %.2f s |", op, d.Seconds()))
}

func (tm *timings) time(op string, f func() error) error {
	start := time.Now()
	err := f()
	tm.add(op, time.Since(start))
	return err
}

func (tm *timings) report(t *testing.T) {
	table := "| operation | time |\n|---|---|\n" + strings.Join(tm.rows, "\n") + "\n"
	t.Logf("timings on the bed:\n%s", table)
	if tm.dir != "" {
		_ = os.WriteFile(filepath.Join(tm.dir, "timings.md"), []byte(table), 0o644)
	}
}

// lease returns the sanlock lease a host holds on an LV (by UUID), read from its own sanlock.
func lease(ctx context.Context, t *testing.T, n *node, vg, uuid string) (sanlock.Resource, bool) {
	t.Helper()
	st, err := n.Sanlock.Status(ctx)
	if err != nil {
		t.Fatalf("%s: sanlock status: %v", n.Name, err)
	}
	return st.Lease(vg, uuid)
}

func mustLease(ctx context.Context, t *testing.T, n *node, vg, uuid string, shared bool) {
	t.Helper()
	r, ok := lease(ctx, t, n, vg, uuid)
	if !ok {
		t.Fatalf("%s holds no lease on %s", n.Name, uuid)
	}
	if r.Shared != shared {
		t.Fatalf("%s holds %s lease, want shared=%v", n.Name, map[bool]string{true: "a shared", false: "an exclusive"}[r.Shared], shared)
	}
}

func mustNoLease(ctx context.Context, t *testing.T, n *node, vg, uuid string) {
	t.Helper()
	if r, ok := lease(ctx, t, n, vg, uuid); ok {
		t.Fatalf("%s still holds a lease on %s: %+v", n.Name, uuid, r)
	}
}

func lockdMode(ctx context.Context, t *testing.T, n *node, vg, uuid string) lvm.LockdMode {
	t.Helper()
	info, err := n.LVM.LockdInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range info {
		if v.Name == vg {
			if m, ok := v.LVs[uuid]; ok {
				return m
			}
		}
	}
	return lvm.LockdUnlocked
}

func run(ctx context.Context, t *testing.T, n *node, argv ...string) string {
	t.Helper()
	out, err := n.MustRun(ctx, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func md5(ctx context.Context, t *testing.T, n *node, file string) string {
	t.Helper()
	return strings.Fields(run(ctx, t, n, "md5sum", file))[0]
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// verdicts records when one node's own sanlock first reports a host_id FAIL and DEAD in
// the VG's lockspace, counted from a moment (the fault).
type verdicts struct {
	mu         sync.Mutex
	fail, dead time.Duration
}

// observe reads the node's `sanlock client gets -h 1` once.
func (v *verdicts) observe(ctx context.Context, n *node, hostID int32, since time.Time) {
	hosts, err := n.Sanlock.Hosts(ctx)
	if err != nil {
		return
	}
	for _, ls := range hosts {
		for _, h := range ls.Hosts {
			if ls.Lockspace.Name != "lvm_"+vg || int32(h.ID) != hostID {
				continue
			}
			v.mu.Lock()
			if h.State == sanlock.HostFail && v.fail == 0 {
				v.fail = time.Since(since)
			}
			if h.State == sanlock.HostDead && v.dead == 0 {
				v.dead = time.Since(since)
			}
			v.mu.Unlock()
		}
	}
}

// get returns when FAIL and DEAD were first seen (0: not yet).
func (v *verdicts) get() (fail, dead time.Duration) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.fail, v.dead
}

// waitDead waits up to bound for DEAD to have been seen: the watcher reads sanlock every
// second through the VM (a command takes seconds under TCG), and the agents, reading it
// too, can act on the verdict within less than one watcher period.
func (v *verdicts) waitDead(bound time.Duration) {
	for end := time.Now().Add(bound); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if _, d := v.get(); d != 0 {
			return
		}
	}
}
