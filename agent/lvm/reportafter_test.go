package lvm

import (
	"context"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
)

// slowLVs answers every `lvs` with a captured one-LV report after a delay (renaming its LV
// to each one asked for), recording the LVs each call asked for.
type slowLVs struct {
	row   string // the captured report's row
	delay time.Duration
	mu    sync.Mutex
	calls [][]string
}

func (s *slowLVs) Run(ctx context.Context, argv []string) (executor.Result, error) {
	var names, rows []string
	for _, a := range argv {
		if vg, lv, ok := strings.Cut(a, "/"); ok && vg == "vg1" {
			names = append(names, lv)
			r := strings.ReplaceAll(s.row, `"lv_name":"lv1"`, `"lv_name":"`+lv+`"`)
			rows = append(rows, strings.ReplaceAll(r, `"lv_uuid":"`, `"lv_uuid":"`+lv))
		}
	}
	s.mu.Lock()
	s.calls = append(s.calls, names)
	s.mu.Unlock()
	time.Sleep(s.delay)
	return executor.Result{Stdout: []byte(`{"report":[{"lv":[` + strings.Join(rows, ",") + `]}]}`)}, nil
}

// Creates finishing while a report waits for (or holds) the VG's mutex share one `lvs` of
// all their LVs; a create finishing after a report began gets a new one.
func TestReportLVAfterSharesReports(t *testing.T) {
	out, err := os.ReadFile("testdata/lvs-one-lv.out")
	if err != nil {
		t.Fatal(err)
	}
	row := strings.TrimSpace(string(out))
	row = row[strings.Index(row, `{"lv_name"`):]
	row = row[:strings.Index(row, "}")+1]
	ex := &slowLVs{row: row, delay: 50 * time.Millisecond}
	c := New(ex)
	ctx := context.Background()

	// A metadata change holds the VG mutex; five creators finish before it is released.
	m := c.vgLock("vg1")
	m.Lock()
	var wg sync.WaitGroup
	names := []string{"a", "b", "c", "d", "e"}
	for _, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lv, err := c.ReportLVAfter(ctx, "vg1", n)
			if err != nil || lv == nil || lv.Name != n || !strings.HasPrefix(lv.UUID, n) || lv.Size != 268435456 {
				t.Errorf("%s: %+v %v", n, lv, err)
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	m.Unlock()
	wg.Wait()
	if len(ex.calls) != 1 {
		t.Fatalf("%d reports for 5 creates finished before any report began, want 1: %v", len(ex.calls), ex.calls)
	}
	got := slices.Clone(ex.calls[0])
	slices.Sort(got)
	if !slices.Equal(got, names) {
		t.Fatalf("the shared report asked for %v, want %v", got, names)
	}

	// After that report began: a new one, of that LV alone.
	if _, err := c.ReportLVAfter(ctx, "vg1", "f"); err != nil {
		t.Fatal(err)
	}
	if len(ex.calls) != 2 || !slices.Equal(ex.calls[1], []string{"f"}) {
		t.Fatalf("reports %v: a change after a report began needs a new one", ex.calls)
	}
	if _, err := c.ReportLVAfter(ctx, "bad name!", "a"); KindOf(err) != KindInvalidName {
		t.Fatalf("invalid VG name: %v", err)
	}
}
