// Package memlimit gives the Go runtime a soft memory limit below the container's.
//
// Without one, the runtime lets its heap grow to twice the live heap before collecting
// (GOGC=100) and keeps freed pages mapped for a while: at 10,000 volumes and 20,000
// attachments the operator's live heap is ~87 MiB and its RSS peaked at 179–202 MiB. With
// a soft limit the runtime collects sooner only when the heap nears it, and returns freed
// pages to stay under it (runtime/debug.SetMemoryLimit). The limit is a fraction of the
// container's memory limit (passed by the chart through the downward API), so that raising
// the container's limit for a larger cloud raises it too, and the live heap keeps room
// above it before the kernel's OOM killer would act. An explicit GOMEMLIMIT wins.
package memlimit

import (
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// Env holds the container's memory limit in bytes (the chart sets it from
// resources.limits.memory through the downward API).
const Env = "SHAREDLVM_MEMORY_LIMIT"

// Fraction of the container's memory limit the runtime's soft limit is set to. The
// operator at 10,000 volumes and 20,000 attachments (live heap ~87 MiB) stays under 200 MiB
// with the chart's 300 MiB limit, and a live heap that outgrows the soft limit (the runtime
// then spends at most half the CPU on collection, and lets the heap grow) still has 120 MiB
// before the container's limit.
const Fraction = 0.6

// Decide returns the soft limit for the environment (getenv), or 0 and why none is set.
func Decide(getenv func(string) string) (int64, string) {
	if v := getenv("GOMEMLIMIT"); v != "" {
		return 0, "GOMEMLIMIT=" + v + " set explicitly"
	}
	v := strings.TrimSpace(getenv(Env))
	if v == "" {
		return 0, Env + " not set"
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Sprintf("%s=%q is not a positive byte count", Env, v)
	}
	return int64(float64(n) * Fraction), fmt.Sprintf("%.0f%% of the container's %d MiB", Fraction*100, n>>20)
}

// Apply sets the runtime's soft memory limit from the environment and says what it did.
func Apply() string {
	lim, why := Decide(os.Getenv)
	if lim == 0 {
		return "soft memory limit: none from " + Env + " (" + why + ")"
	}
	debug.SetMemoryLimit(lim)
	return fmt.Sprintf("soft memory limit %d MiB (%s)", lim>>20, why)
}
