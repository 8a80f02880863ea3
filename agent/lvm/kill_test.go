package lvm

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
)

// killExec plays dmsetup for KillVG: info from the captured fixture, wipe_table recorded,
// table answering with the error target once wiped (or never, with stuck).
type killExec struct {
	info  []byte
	wiped map[string]bool
	calls [][]string
	stuck string
}

func (k *killExec) Run(_ context.Context, argv []string) (executor.Result, error) {
	k.calls = append(k.calls, argv)
	switch {
	case reflect.DeepEqual(argv, DMInfoArgs):
		return executor.Result{Stdout: k.info}, nil
	case len(argv) == 3 && argv[1] == "wipe_table":
		k.wiped[argv[2]] = true
		return executor.Result{}, nil
	case len(argv) == 3 && argv[1] == "table":
		if k.wiped[argv[2]] && argv[2] != k.stuck {
			return executor.Result{Stdout: []byte("0 131072 error \n")}, nil
		}
		return executor.Result{Stdout: []byte("0 131072 linear 253:0 526336\n")}, nil
	}
	return executor.Result{ExitCode: 1, Stderr: []byte("unexpected")}, nil
}

func TestParseDMInfo(t *testing.T) {
	devs, err := ParseDMInfo(fixture(t, "dmsetup-info.out"))
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]DMDevice{}
	for _, d := range devs {
		byName[d.Name] = d
		if !strings.HasPrefix(d.UUID, "LVM-") {
			t.Fatalf("non-LVM device kept: %+v", d)
		}
	}
	if _, ok := byName["lun0"]; ok {
		t.Fatalf("the PV's own device (not LVM's) was kept: %+v", devs)
	}
	if d := byName["vg1-stranded"]; d.VG != "vg1" || d.LV != "stranded" || d.Layer != "" {
		t.Fatalf("vg1-stranded parsed as %+v", d)
	}
	if d := byName["vg1-lvmlock"]; d.LV != "lvmlock" {
		t.Fatalf("vg1-lvmlock parsed as %+v", d)
	}
	for _, bad := range []string{"a|b|c\n", "|LVM-x|vg|lv|\n"} {
		if _, err := ParseDMInfo([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if devs, err := ParseDMInfo([]byte("No devices found\n")); err != nil || len(devs) != 0 {
		t.Fatalf("no devices: %v %v", devs, err)
	}
}

func TestKillVG(t *testing.T) {
	k := &killExec{info: fixture(t, "dmsetup-info.out"), wiped: map[string]bool{}}
	names, err := New(k).KillVG(context.Background(), "vg1")
	if err != nil {
		t.Fatal(err)
	}
	// The user-facing LV goes offline; the lease LV stays for lvmlockd's rejoin.
	if !reflect.DeepEqual(names, []string{"vg1-stranded"}) || k.wiped["vg1-lvmlock"] {
		t.Fatalf("took offline %v (wiped %v)", names, k.wiped)
	}
	// Another VG's LVs are not touched.
	k2 := &killExec{info: fixture(t, "dmsetup-info.out"), wiped: map[string]bool{}}
	if names, err := New(k2).KillVG(context.Background(), "vg2"); err != nil || len(names) != 0 || len(k2.wiped) != 0 {
		t.Fatalf("vg2: %v %v %v", names, err, k2.wiped)
	}
	// A table that did not change is a failure (lvmlockctl then leaves the locks, and the
	// watchdog resets the node).
	k3 := &killExec{info: fixture(t, "dmsetup-info.out"), wiped: map[string]bool{}, stuck: "vg1-stranded"}
	if _, err := New(k3).KillVG(context.Background(), "vg1"); err == nil || !strings.Contains(err.Error(), "still") {
		t.Fatalf("stuck table: %v", err)
	}
	// Names are validated before anything runs.
	k4 := &killExec{wiped: map[string]bool{}}
	if _, err := New(k4).KillVG(context.Background(), "-rf"); err == nil || len(k4.calls) != 0 {
		t.Fatalf("bad name: %v, calls %v", err, k4.calls)
	}
}

func TestDMName(t *testing.T) {
	if got := DMName("vg-a", "lv-b"); got != "vg--a-lv--b" {
		t.Fatal(got)
	}
	for _, tc := range []struct {
		out  string
		want bool
	}{{"0 131072 error \n", true}, {"0 10 error\n10 20 error\n", true}, {"0 131072 linear 253:0 2048\n", false}, {"", false}, {"0 10 error\n10 20 linear 253:0 0\n", false}} {
		if got := onlyErrorTarget([]byte(tc.out)); got != tc.want {
			t.Errorf("%q: %v", tc.out, got)
		}
	}
}

// FuzzParseDMInfo: from the captured output, whatever the bytes, every device parsed is a
// line of the input with an LVM UUID, and the kill targets are devices of the VG asked for.
func FuzzParseDMInfo(f *testing.F) {
	f.Add(fixture(f, "dmsetup-info.out"))
	f.Fuzz(func(t *testing.T, b []byte) {
		devs, err := ParseDMInfo(b)
		if err != nil {
			return
		}
		for _, d := range devs {
			line := strings.Join([]string{d.Name, d.UUID, d.VG, d.LV, d.Layer}, "|")
			if !strings.Contains(string(b), line) || !strings.HasPrefix(d.UUID, "LVM-") || d.Name == "" {
				t.Fatalf("device %+v is not a line of the input", d)
			}
		}
		for _, n := range killTargets(devs, "vg1") {
			found := false
			for _, d := range devs {
				found = found || (d.Name == n && d.VG == "vg1" && d.Layer == "" && d.LV != LockLVName)
			}
			if !found {
				t.Fatalf("kill target %q is not a top-level LV of vg1", n)
			}
		}
	})
}

func TestParseOffline(t *testing.T) {
	// Captured on the bed after a kill, the path still failed (TestPathLossOnRealSharedLVM):
	// the LV the kill took offline and the bed's failed path device (lun0, the error
	// target loaded under the PV); lvmlock keeps its table.
	got := ParseOffline(fixture(t, "dmsetup-table-error.out"))
	if !reflect.DeepEqual(got, map[string]bool{"vg1-stranded": true, "lun0": true}) {
		t.Fatalf("offline devices %v", got)
	}
	for _, tc := range []struct {
		out  string
		want map[string]bool
	}{
		{"No devices found\n", map[string]bool{}},
		{"", map[string]bool{}},
		{"vg1-a: 0 8192 error \nvg1-b: 0 8192 error \n", map[string]bool{"vg1-a": true, "vg1-b": true}},
		{"vg1-a: 0 8192 linear 253:0 2048\n", map[string]bool{}},
	} {
		if got := ParseOffline([]byte(tc.out)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: %v, want %v", tc.out, got, tc.want)
		}
	}
}
