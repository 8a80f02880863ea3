// Package executor runs argument vectors on a node: the local host (optionally entering the
// host's namespaces through nsenter, for a containerized agent) or, in tests, a test-bed VM.
// It never builds shell strings.
package executor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Result is what one command produced.
type Result struct {
	Stdout   []byte
	Stderr   []byte
	ExitCode int
	Duration time.Duration
}

// Executor runs one command given as an argument vector. A non-zero exit status is not an
// error: it is reported in Result.ExitCode, and the caller classifies it. An error means the
// command could not be run at all (not found, channel down) or the context ended.
type Executor interface {
	Run(ctx context.Context, argv []string) (Result, error)
}

// Env is the environment every LVM/sanlock command runs with: LC_ALL=C so that messages
// (which errors are classified by) are never translated, and LVM_SUPPRESS_FD_WARNINGS so
// that an inherited descriptor does not add noise to stderr.
var Env = []string{"LC_ALL=C", "LANG=C", "LVM_SUPPRESS_FD_WARNINGS=1", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

// Local runs commands on this machine. With HostNamespaces set, every command is run
// through `nsenter --target 1 --mount --uts --ipc --net --pid --`, so that an agent in a
// privileged container with hostPID uses the host's LVM configuration, devices and daemons.
type Local struct {
	HostNamespaces bool
	// NsenterPath overrides the nsenter binary (default "nsenter").
	NsenterPath string
}

// Run implements Executor.
func (l Local) Run(ctx context.Context, argv []string) (Result, error) {
	if len(argv) == 0 {
		return Result{}, errors.New("executor: empty argument vector")
	}
	if l.HostNamespaces {
		ns := l.NsenterPath
		if ns == "" {
			ns = "nsenter"
		}
		argv = append([]string{ns, "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--"}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = Env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	res := Result{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), Duration: time.Since(start)}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return res, fmt.Errorf("%s: %w", strings.Join(argv, " "), ctx.Err())
	case errors.As(err, &exitErr):
		res.ExitCode = exitErr.ExitCode()
	default:
		return res, fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	return res, nil
}

// HostRoot reports whether this process appears to run in a container that should enter
// the host namespaces (PID 1 is not in our mount namespace).
func HostRoot() bool {
	self, err1 := os.Readlink("/proc/self/ns/mnt")
	host, err2 := os.Readlink("/proc/1/ns/mnt")
	return err1 == nil && err2 == nil && self != host
}
