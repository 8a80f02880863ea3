package lvm

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Kind classifies a failed LVM command into something a controller can act on.
type Kind int

const (
	// KindUnknown: not classified; the message says what happened.
	KindUnknown Kind = iota
	// KindLockHeldByOther: sanlock refused because another host holds the LV (or holds it in
	// a conflicting mode): "LV locked by other host".
	KindLockHeldByOther
	// KindIncompatibleMode: this host holds the LV in a mode the command cannot use
	// (for example lvextend while shared): "LV is already locked with incompatible mode".
	KindIncompatibleMode
	// KindRequiresExclusive: the operation needs the LV held exclusively (pvmove).
	KindRequiresExclusive
	// KindVGNotFound: the VG is not visible on this host.
	KindVGNotFound
	// KindLockspaceNotStarted: the VG's lockspace is not started on this host.
	KindLockspaceNotStarted
	// KindLockspaceStartRetry: a transient lockstart failure the recipe showed a retry fixes
	// (lvmlockd looks for /dev/mapper/VG-lvmlock before it exists, without udev).
	KindLockspaceStartRetry
	// KindLockspaceBusy: the lockspace cannot be stopped/removed yet (active LVs, other hosts).
	KindLockspaceBusy
	// KindInsufficientSpace: the VG has not enough free extents.
	KindInsufficientSpace
	// KindLVNotFound: no such LV.
	KindLVNotFound
	// KindAlreadyExists: an LV of that name exists.
	KindAlreadyExists
	// KindSizeUnchanged: lvextend to the size the LV already has.
	KindSizeUnchanged
	// KindInvalidName: LVM refused the name.
	KindInvalidName
	// KindTimeout: the command did not finish before its deadline.
	KindTimeout
)

var kindNames = map[Kind]string{
	KindUnknown: "Unknown", KindLockHeldByOther: "LockHeldByOtherHost", KindIncompatibleMode: "IncompatibleLockMode",
	KindRequiresExclusive: "RequiresExclusiveLock", KindVGNotFound: "VGNotFound", KindLockspaceNotStarted: "LockspaceNotStarted",
	KindLockspaceStartRetry: "LockspaceStartRetry", KindLockspaceBusy: "LockspaceBusy", KindInsufficientSpace: "InsufficientSpace",
	KindLVNotFound: "LVNotFound", KindAlreadyExists: "AlreadyExists", KindSizeUnchanged: "SizeUnchanged",
	KindInvalidName: "InvalidName", KindTimeout: "Timeout",
}

// String is the kind's name, usable as a Kubernetes condition reason.
func (k Kind) String() string { return kindNames[k] }

// Sentinel errors, for errors.Is(err, lvm.ErrLockHeldByOther) and the like.
var (
	ErrLockHeldByOther     = &Error{Kind: KindLockHeldByOther}
	ErrIncompatibleMode    = &Error{Kind: KindIncompatibleMode}
	ErrRequiresExclusive   = &Error{Kind: KindRequiresExclusive}
	ErrVGNotFound          = &Error{Kind: KindVGNotFound}
	ErrLockspaceNotStarted = &Error{Kind: KindLockspaceNotStarted}
	ErrLockspaceStartRetry = &Error{Kind: KindLockspaceStartRetry}
	ErrLockspaceBusy       = &Error{Kind: KindLockspaceBusy}
	ErrInsufficientSpace   = &Error{Kind: KindInsufficientSpace}
	ErrLVNotFound          = &Error{Kind: KindLVNotFound}
	ErrAlreadyExists       = &Error{Kind: KindAlreadyExists}
	ErrSizeUnchanged       = &Error{Kind: KindSizeUnchanged}
	ErrInvalidName         = &Error{Kind: KindInvalidName}
	ErrTimeout             = &Error{Kind: KindTimeout}
)

// Error is a failed LVM command: what ran, how it ended, the tool's own message, and its kind.
type Error struct {
	Kind     Kind
	Argv     []string
	ExitCode int
	// Stderr is the tool's message, trimmed of warnings that say nothing about the failure.
	Stderr string
	// Err is the underlying error when the command could not run or timed out.
	Err error
}

func (e *Error) Error() string {
	cmd := strings.Join(e.Argv, " ")
	if len(cmd) > 120 {
		cmd = cmd[:117] + "..."
	}
	switch {
	case e.Err != nil && cmd == "":
		return e.Err.Error()
	case e.Err != nil:
		return fmt.Sprintf("%s: %v", cmd, e.Err)
	case e.Stderr != "":
		return fmt.Sprintf("%s: %s (exit %d)", cmd, e.Stderr, e.ExitCode)
	}
	return fmt.Sprintf("%s: exit %d", cmd, e.ExitCode)
}

// Is matches errors of the same kind, so errors.Is(err, ErrLVNotFound) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Kind == e.Kind && e.Kind != KindUnknown
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the kind of an LVM error, KindUnknown for anything else.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindUnknown
}

// patterns map LVM's messages (LC_ALL=C, lvm2 2.03; see testdata/*.err, captured on the bed)
// to kinds. Order matters: the first match wins.
var patterns = []struct {
	substr string
	kind   Kind
}{
	{"LV locked by other host", KindLockHeldByOther},
	{"locked with incompatible mode", KindIncompatibleMode},
	{"requires exclusive lock", KindRequiresExclusive},
	{"Shared activation not compatible", KindRequiresExclusive}, // an origin with a thick snapshot
	{"invalid parameters for sanlock", KindLockspaceStartRetry},
	{"due to failed lock", KindLockspaceNotStarted},
	{"LVs must first be deactivated", KindLockspaceBusy},
	{"not stopped on other hosts", KindLockspaceBusy},
	{"insufficient free space", KindInsufficientSpace},
	{"Insufficient free space", KindInsufficientSpace},
	{"Failed to find logical volume", KindLVNotFound},
	{"already exists in volume group", KindAlreadyExists},
	{"matches existing size", KindSizeUnchanged},
	{"are reserved", KindInvalidName},
	{"Invalid name", KindInvalidName},
	{"not found\n", KindVGNotFound}, // "Volume group \"x\" not found"
	{"Cannot process volume group", KindVGNotFound},
}

// noise are stderr lines that accompany successes and failures alike.
var noise = []string{
	"WARNING: This metadata update is NOT backed up.",
	"Skipping global lock: lockspace not found or started",
	"Reading VG ",
	"WARNING: Activation disabled.",
}

// cleanStderr drops noise lines and trims indentation.
func cleanStderr(stderr string) string {
	var kept []string
	for _, l := range strings.Split(stderr, "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		isNoise := false
		for _, n := range noise {
			if strings.HasPrefix(l, n) {
				isNoise = true
				break
			}
		}
		if !isNoise {
			kept = append(kept, l)
		}
	}
	return strings.Join(kept, "; ")
}

// classify turns a command's outcome into an *Error (nil when it succeeded).
func classify(argv []string, exitCode int, stderr []byte, runErr error) error {
	if runErr != nil {
		kind := KindUnknown
		if errors.Is(runErr, context.DeadlineExceeded) {
			kind = KindTimeout
		}
		return &Error{Kind: kind, Argv: argv, ExitCode: -1, Err: runErr, Stderr: cleanStderr(string(stderr))}
	}
	if exitCode == 0 {
		return nil
	}
	raw := string(stderr) + "\n"
	kind := KindUnknown
	for _, p := range patterns {
		if strings.Contains(raw, p.substr) {
			kind = p.kind
			break
		}
	}
	return &Error{Kind: kind, Argv: argv, ExitCode: exitCode, Stderr: cleanStderr(string(stderr))}
}

// WhyNotActivated is the line of lvchange's error that names vg/lv ("LV locked by other
// host: vg1/lv1"), or a generic reason when LVM named it nowhere.
func WhyNotActivated(err error, vg, lv string) string {
	text := err.Error()
	var le *Error
	if errors.As(err, &le) && le.Stderr != "" {
		text = le.Stderr
	}
	path := vg + "/" + lv
	// lvm.Error keeps LVM's lines joined by "; ".
	for _, l := range strings.FieldsFunc(strings.ReplaceAll(text, "; ", "\n"), func(r rune) bool { return r == '\n' }) {
		l = strings.TrimSpace(l)
		for i := strings.Index(l, path); i >= 0; {
			rest := l[i+len(path):]
			if rest == "" || rest == "." || strings.ContainsAny(rest[:1], " :,'\"") {
				return l
			}
			j := strings.Index(rest, path)
			if j < 0 {
				break
			}
			i += len(path) + j
		}
	}
	first, _, _ := strings.Cut(strings.ReplaceAll(text, "; ", "\n"), "\n")
	return "not active after lvchange, which failed: " + strings.TrimSpace(first)
}
