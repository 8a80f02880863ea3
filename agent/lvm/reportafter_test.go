package lvm

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
)

// slowReports answers every command with a captured report after a delay, counting them.
type slowReports struct {
	out   []byte
	calls atomic.Int32
	delay time.Duration
}

func (s *slowReports) Run(ctx context.Context, argv []string) (executor.Result, error) {
	s.calls.Add(1)
	time.Sleep(s.delay)
	return executor.Result{Stdout: s.out}, nil
}

// Creates finishing while a report waits for (or holds) the VG's mutex share it; a create
// finishing after a report began gets a new one.
func TestReportAfterSharesReports(t *testing.T) {
	out, err := os.ReadFile("testdata/report-two-lvs.out")
	if err != nil {
		t.Fatal(err)
	}
	ex := &slowReports{out: out, delay: 50 * time.Millisecond}
	c := New(ex)
	ctx := context.Background()

	// A metadata change holds the VG mutex; five creators finish before it is released.
	m := c.vgLock("vg1")
	m.Lock()
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.ReportAfter(ctx, "vg1", time.Now()); err != nil {
				t.Error(err)
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	m.Unlock()
	wg.Wait()
	if n := ex.calls.Load(); n != 1 {
		t.Fatalf("%d reports for 5 creates finished before any report began, want 1", n)
	}

	// After that report began: a new one.
	if _, err := c.ReportAfter(ctx, "vg1", time.Now()); err != nil {
		t.Fatal(err)
	}
	if n := ex.calls.Load(); n != 2 {
		t.Fatalf("%d reports, want 2: a change after a report began needs a new one", n)
	}
	if _, err := c.ReportAfter(ctx, "bad name!", time.Now()); KindOf(err) != KindInvalidName {
		t.Fatalf("invalid VG name: %v", err)
	}
}
