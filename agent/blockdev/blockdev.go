// Package blockdev copies and zeroes byte ranges of block devices through an executor (so
// that it runs on the node, in the host's namespaces when the agent uses nsenter). Ranges
// keep each command short, so callers report progress and honour cancellation between them.
package blockdev

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
)

// Client runs block-device commands on one node.
type Client struct {
	Exec executor.Executor
}

// Error is a failed block-device command with its stderr.
type Error struct {
	Argv     []string
	ExitCode int
	Stderr   string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: exit %d: %s", strings.Join(e.Argv, " "), e.ExitCode, strings.TrimSpace(e.Stderr))
}

// ValidateDevice is the one device-path check of the project (the LVM wrapper uses it for
// PVs, these commands for the devices they write): an absolute, normalised path under /dev
// with no blanks. It enforces what the DevicePath type's CEL rules say at admission, with
// the same messages, so a path the apiserver accepted is refused here only for blanks.
func ValidateDevice(dev string) error {
	if !strings.HasPrefix(dev, "/dev/") || len(dev) <= len("/dev/") {
		return fmt.Errorf("%q: %s", dev, MsgDeviceUnderDev)
	}
	for _, c := range strings.Split(dev[len("/dev/"):], "/") {
		if c == "" || c == "." || c == ".." {
			return fmt.Errorf("%q: %s", dev, MsgDeviceNormalised)
		}
	}
	if strings.ContainsAny(dev, " \t\n\r\x00") {
		return fmt.Errorf("%q: a device path must not contain blanks or NUL", dev)
	}
	return nil
}

// The messages the DevicePath type's CEL rules also give (api/v1alpha1/names.go; a test
// there checks they agree).
const (
	MsgDeviceUnderDev   = "a PV must be an absolute device path under /dev, for example /dev/disk/by-id/wwn-0x600..."
	MsgDeviceNormalised = "a PV path must be normalised (no '.', '..' or '//' components): write the device's canonical path"
)

func checkRange(off, n int64) error {
	if off < 0 || n <= 0 || off%512 != 0 || n%512 != 0 {
		return fmt.Errorf("range offset %d length %d must be non-negative multiples of 512 bytes", off, n)
	}
	return nil
}

func (c *Client) run(ctx context.Context, argv []string) error {
	res, err := c.Exec.Run(ctx, argv)
	if err != nil {
		return fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	if res.ExitCode != 0 {
		return &Error{Argv: argv, ExitCode: res.ExitCode, Stderr: string(res.Stderr)}
	}
	return nil
}

// CopyArgs is the argv that copies n bytes at offset off from src to the same offset of
// dst: direct I/O both ways (no page cache on either node, which matters on shared storage
// where another node reads the LV next), flushed before it returns.
func CopyArgs(src, dst string, off, n int64) []string {
	return []string{"dd", "if=" + src, "of=" + dst, "bs=1M",
		"iflag=direct,skip_bytes,count_bytes", "oflag=direct,seek_bytes",
		"skip=" + strconv.FormatInt(off, 10), "seek=" + strconv.FormatInt(off, 10),
		"count=" + strconv.FormatInt(n, 10), "conv=notrunc,fsync", "status=none"}
}

// CopyRange copies n bytes at offset off from src to dst.
func (c *Client) CopyRange(ctx context.Context, src, dst string, off, n int64) error {
	for _, d := range []string{src, dst} {
		if err := ValidateDevice(d); err != nil {
			return err
		}
	}
	if src == dst {
		return fmt.Errorf("copy source and target are the same device %s", src)
	}
	if err := checkRange(off, n); err != nil {
		return err
	}
	return c.run(ctx, CopyArgs(src, dst, off, n))
}

// ZeroRange zeroes n bytes at offset off: `blkdiscard --zeroout` lets the array offload it
// (WRITE SAME / WRITE ZEROES) where it can.
func (c *Client) ZeroRange(ctx context.Context, dev string, off, n int64) error {
	if err := ValidateDevice(dev); err != nil {
		return err
	}
	if err := checkRange(off, n); err != nil {
		return err
	}
	return c.run(ctx, []string{"blkdiscard", "--zeroout", "--offset", strconv.FormatInt(off, 10), "--length", strconv.FormatInt(n, 10), dev})
}

// Chunks calls f for each consecutive range of at most chunk bytes covering [from, size),
// stopping at the first error or when ctx is done.
func Chunks(ctx context.Context, from, size, chunk int64, f func(off, n int64) error) error {
	for off := from; off < size; off += chunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := f(off, min(chunk, size-off)); err != nil {
			return err
		}
	}
	return nil
}
