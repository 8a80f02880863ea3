// Package protocol is the framing of the test bed's command channel: one JSON object per
// line over a virtio-serial port. Requests carry an argument vector (never a shell string);
// responses carry stdout, stderr and the exit code. Bytes are base64 (encoding/json).
package protocol

// Request asks the guest to run one command.
type Request struct {
	ID   uint64   `json:"id"`
	Argv []string `json:"argv"`
	// TimeoutMS kills the command after this long (0: no limit).
	TimeoutMS int64 `json:"timeoutMs,omitempty"`
}

// Response is the result of one Request.
type Response struct {
	ID     uint64 `json:"id"`
	Stdout []byte `json:"stdout,omitempty"`
	Stderr []byte `json:"stderr,omitempty"`
	Exit   int    `json:"exit"`
	// Error is set when the command could not be run (not found, timeout).
	Error string `json:"error,omitempty"`
	// DurationMS is how long the command ran inside the guest.
	DurationMS int64 `json:"durationMs"`
}

// Built-in commands handled by the guest daemon itself.
const (
	// Ping answers once the guest's daemons are up; stdout is the guest's uptime.
	Ping = "@ping"
	// PowerOff syncs and powers the guest off at once.
	PowerOff = "@poweroff"
	// StartDaemons starts sanlock, lvmlockd and lvmpolld (for guests booted without them).
	StartDaemons = "@start-daemons"
	// KillDaemons SIGKILLs sanlock, lvmlockd and lvmpolld (a daemon crash, not a node crash).
	KillDaemons = "@kill-daemons"
	// ReadDevice ("@pread PATH OFFSET LENGTH") reads a byte range of a device in the guest
	// daemon's own process with O_DIRECT, like an agent's in-process read on a node; stdout
	// is the bytes.
	ReadDevice = "@pread"
)
