package executor

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Unaligned ranges come back exact: the aligned window around them is the reader's business.
func TestReadDirect(t *testing.T) {
	f := filepath.Join(t.TempDir(), "lun")
	data := make([]byte, 3*directAlign+100)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(f, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadDirect(f, 0, 1); errors.Is(err, syscall.EINVAL) {
		t.Skipf("the filesystem of %s refuses O_DIRECT", f)
	}
	for _, r := range [][2]int64{{0, 1}, {0, 8192}, {512, 512}, {4095, 2}, {100, 3 * directAlign}, {int64(len(data)) - 10, 10}} {
		got, err := Local{}.ReadDevice(context.Background(), f, r[0], r[1])
		if err != nil || !bytes.Equal(got, data[r[0]:r[0]+r[1]]) {
			t.Errorf("%d+%d: %d bytes, %v", r[0], r[1], len(got), err)
		}
	}
	for _, r := range [][2]int64{{int64(len(data)) - 10, 11}, {-1, 1}, {0, maxDeviceRead + 1}} {
		if _, err := ReadDirect(f, r[0], r[1]); err == nil {
			t.Errorf("%d+%d: want an error", r[0], r[1])
		}
	}
	if _, err := ReadDirect(filepath.Join(t.TempDir(), "none"), 0, 1); err == nil {
		t.Error("missing device: want an error")
	}
}
