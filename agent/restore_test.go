package agent

import (
	"testing"
	"time"
)

// The report cycle yields to the boot restore only while an attempt needs the node's LVM, and
// never longer than restoreYieldMax per attempt.
func TestRestorerRestoring(t *testing.T) {
	var r Restorer
	if !r.Restoring() {
		t.Fatal("before the first attempt: the restore owns the node's LVM")
	}
	r.attemptStart.Store(time.Now().UnixNano())
	if !r.Restoring() {
		t.Fatal("attempt just started: yielded to")
	}
	r.released.Store(true)
	if r.Restoring() {
		t.Fatal("daemons awaited, re-activations ended, or between attempts: the report cycle runs")
	}
	r.released.Store(false)
	r.attemptStart.Store(time.Now().Add(-restoreYieldMax - time.Second).UnixNano())
	if r.Restoring() {
		t.Fatal("an attempt older than restoreYieldMax: the report cycle runs again")
	}
	r.attemptStart.Store(time.Now().UnixNano())
	r.done.Store(true)
	if r.Restoring() {
		t.Fatal("restored: never")
	}
}
