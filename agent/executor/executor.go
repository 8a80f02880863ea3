// Package executor runs argument vectors on a node: the local host (optionally entering the
// host's namespaces through nsenter, for a containerized agent) or, in tests, a test-bed VM.
// It never builds shell strings.
package executor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
	"unsafe"
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

// DeviceReader is implemented by executors that can read a node's block devices in their
// own process. A read costs no process start-up (hundreds of milliseconds for an LVM
// command), so callers use it, where they can, to read what an LVM command they just ran
// committed to disk. Executors without it make those callers run the LVM command instead.
type DeviceReader interface {
	// ReadDevice returns n bytes of the device at off, read past the page cache (O_DIRECT):
	// another host may have written the LUN since this one last read it.
	ReadDevice(ctx context.Context, path string, off, n int64) ([]byte, error)
}

// ReadDevice implements DeviceReader. A containerized agent sees the host's devices in its
// own /dev (the chart mounts it), so no namespace is entered for a read.
func (l Local) ReadDevice(ctx context.Context, path string, off, n int64) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return ReadDirect(path, off, n)
}

// directAlign is the alignment O_DIRECT needs of offsets, lengths and buffers on any
// logical block size up to 4 KiB.
const directAlign = 4096

// maxDeviceRead bounds one read: VG metadata areas are at most a few MiB.
const maxDeviceRead = 64 << 20

// ReadDirect reads n bytes at off of a file or block device with O_DIRECT, through an
// aligned window around the range. It is shared with the test bed's guest daemon.
func ReadDirect(path string, off, n int64) ([]byte, error) {
	if off < 0 || n < 0 || n > maxDeviceRead {
		return nil, fmt.Errorf("read %s: bad range %d+%d", path, off, n)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	start := off &^ (directAlign - 1)
	end := (off + n + directAlign - 1) &^ (directAlign - 1)
	raw := make([]byte, end-start+directAlign)
	pad := 0
	if r := int(uintptr(unsafe.Pointer(&raw[0])) & (directAlign - 1)); r != 0 {
		pad = directAlign - r
	}
	buf := raw[pad : pad+int(end-start)]
	got := 0
	for got < len(buf) {
		m, err := f.ReadAt(buf[got:], start+int64(got))
		got += m
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read %s at %d: %w", path, start+int64(got), err)
		}
	}
	lo := int(off - start)
	if got < lo+int(n) {
		return nil, fmt.Errorf("read %s: %d bytes at %d past the end", path, n, off)
	}
	return buf[lo : lo+int(n)], nil
}
