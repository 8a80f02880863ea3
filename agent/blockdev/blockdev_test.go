package blockdev

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
)

type recorder struct {
	calls [][]string
	exit  int
}

func (r *recorder) Run(_ context.Context, argv []string) (executor.Result, error) {
	r.calls = append(r.calls, argv)
	return executor.Result{ExitCode: r.exit, Stderr: []byte("dd: error reading '/dev/vg/a': Input/output error\n")}, nil
}

func TestValidateDevice(t *testing.T) {
	for _, ok := range []string{"/dev/vg1/lv", "/dev/vda", "/dev/mapper/vg1-lv"} {
		if err := ValidateDevice(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "vda", "/tmp/x", "/dev/../etc/passwd", "/dev/vg/..", "/dev//vda", "/dev/a b", "/dev/./vda", "-/dev/vda", "/dev/", "/dev/vda/", "/dev/vg/.", "/dev/a\x00"} {
		if ValidateDevice(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestCopyRangeArgv(t *testing.T) {
	r := &recorder{}
	c := &Client{Exec: r}
	if err := c.CopyRange(context.Background(), "/dev/vg/a", "/dev/vg2/b", 1<<20, 4<<20); err != nil {
		t.Fatal(err)
	}
	want := []string{"dd", "if=/dev/vg/a", "of=/dev/vg2/b", "bs=1M", "iflag=direct,skip_bytes,count_bytes", "oflag=direct,seek_bytes",
		"skip=1048576", "seek=1048576", "count=4194304", "conv=notrunc,fsync", "status=none"}
	if !slices.Equal(r.calls[0], want) {
		t.Fatalf("argv %v\nwant %v", r.calls[0], want)
	}
	for _, bad := range [][2]int64{{-512, 512}, {0, 0}, {100, 512}, {0, 1000}} {
		if c.CopyRange(context.Background(), "/dev/vg/a", "/dev/vg/b", bad[0], bad[1]) == nil {
			t.Errorf("range %v accepted", bad)
		}
	}
	if c.CopyRange(context.Background(), "/dev/vg/a", "/dev/vg/a", 0, 512) == nil {
		t.Error("copy onto itself accepted")
	}
	if len(r.calls) != 1 {
		t.Errorf("invalid requests ran commands: %v", r.calls[1:])
	}
}

func TestErrorsCarryStderr(t *testing.T) {
	c := &Client{Exec: &recorder{exit: 1}}
	err := c.ZeroRange(context.Background(), "/dev/vg/a", 0, 512)
	var e *Error
	if !errors.As(err, &e) || e.ExitCode != 1 || !strings.Contains(err.Error(), "Input/output error") {
		t.Fatalf("error %v does not carry the command's exit and stderr", err)
	}
}

func TestChunksCoverTheRangeOnce(t *testing.T) {
	var got [][2]int64
	err := Chunks(context.Background(), 512, 10*512, 3*512, func(off, n int64) error {
		got = append(got, [2]int64{off, n})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]int64{{512, 1536}, {2048, 1536}, {3584, 1536}}
	if !slices.Equal(got, want) {
		t.Fatalf("chunks %v, want %v", got, want)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Chunks(ctx, 0, 1024, 512, func(int64, int64) error { return nil }) == nil {
		t.Error("a cancelled context did not stop the chunks")
	}
}
