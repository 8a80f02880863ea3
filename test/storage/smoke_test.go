//go:build storage

package storage

import (
	"context"
	"testing"
	"time"

	"github.com/sharedlvm/sharedlvm-operator/test/testbed"
)

func TestBedBoots(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	bed, err := testbed.New(ctx, testbed.Config{Name: t.Name(), Hosts: 2, LUNs: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer bed.Close()
	t.Logf("booted 2 hosts in %v (logs in %s)", time.Since(start), bed.Dir)
	for _, h := range bed.Hosts {
		out, err := h.MustRun(ctx, "sanlock", "client", "status")
		t.Logf("%s: %s err=%v", h.Name, out, err)
		out, err = h.MustRun(ctx, "ls", "/dev/vda", "/dev/mapper")
		t.Logf("%s: %s err=%v", h.Name, out, err)
	}
}
