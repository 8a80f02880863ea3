//go:build storage

package storage

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sharedlvm/sharedlvm-operator/internal/envtestutil"
)

// TestRunCommandDemo runs the README's run command's demo (hack/local --storage=vms) to the
// end and checks that it showed each step's lock state.
func TestRunCommandDemo(t *testing.T) {
	start := time.Now()
	c := exec.Command("go", "run", "./hack/local", "--storage=vms", "--exit-when-done")
	c.Dir = envtestutil.RepoRoot()
	out, err := c.CombinedOutput()
	t.Logf("demo output:\n%s", out)
	if err != nil {
		t.Fatalf("demo failed after %v: %v", time.Since(start), err)
	}
	t.Logf("demo took %.1fs (including go build)", time.Since(start).Seconds())
	text := string(out)
	for _, want := range []string{
		"VG created, lockspaces joined: done",
		"compute-0  openstack/volume-1  cinder-volumes/volume-1",
		"Shared  compute-0,compute-1",
		"compute-1  openstack/volume-1  cinder-volumes/volume-1",
		"demo done",
		"LUN image removed",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
}
