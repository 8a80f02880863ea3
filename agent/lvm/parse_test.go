package lvm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
)

// Fixtures in testdata/ were captured from the real tools on the test bed (see VERSIONS and
// test/storage/capture_test.go); *.out is stdout, *.err is stderr plus "# exit N".
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseFullReport(t *testing.T) {
	tests := []struct {
		file    string
		lvs     int
		missing int
		check   func(t *testing.T, vg *VG)
	}{
		{"report-empty-vg.out", 0, 0, func(t *testing.T, vg *VG) {
			if vg.Size != 3208642560 || vg.ExtentSize != 4194304 || !vg.Shared || vg.LockType != "sanlock" || len(vg.PVs) != 3 {
				t.Fatalf("%+v", vg)
			}
			if vg.PVs[0].Name != "/dev/vda" || vg.PVs[0].Size != 1069547520 || vg.PVs[0].Used+vg.PVs[0].Free != vg.PVs[0].Size {
				t.Fatalf("%+v", vg.PVs[0])
			}
		}},
		{"report-no-lockspace.out", 0, 0, nil},
		{"report-two-lvs.out", 2, 0, func(t *testing.T, vg *VG) {
			lv, ok := vg.LV("lv1")
			if !ok || lv.Size != 268435456 || !lv.HasTag("sharedlvm.io/uid=0a1b2c3d-0000-4000-8000-000000000001") || !lv.HasTag("sharedlvm.io/managed") {
				t.Fatalf("%+v", lv)
			}
			if lv.LeaseOffset() != 70254592 || !lv.Active || !lv.ActiveLocally || lv.Path != "/dev/vg1/lv1" {
				t.Fatalf("%+v", lv)
			}
			if len(lv.Devices) != 1 || lv.Devices[0] != "/dev/vdb" || lv.Moving() {
				t.Fatalf("devices %v", lv.Devices)
			}
			lv2, _ := vg.LV("lv2")
			if lv2.Active || len(lv2.Tags) != 0 {
				t.Fatalf("%+v", lv2)
			}
			if got := vg.LVsWithTag("sharedlvm.io/managed"); len(got) != 1 || got[0].Name != "lv1" {
				t.Fatalf("%v", got)
			}
		}},
		{"report-shared-lies.out", 2, 0, func(t *testing.T, vg *VG) {
			// Held shared on this host, and yet LVM says "exclusively": never read the mode here.
			lv, _ := vg.LV("lv1")
			if !lv.ActiveExclusivelyAsReportedByLVM {
				t.Fatal("the fixture no longer shows lvs lying about the lock mode")
			}
		}},
		{"report-mid-pvmove.out", 2, 0, func(t *testing.T, vg *VG) {
			lv, _ := vg.LV("lv1")
			if !lv.Moving() || lv.Devices[0] != "pvmove0" {
				t.Fatalf("%+v", lv)
			}
		}},
		{"report-after-pvmove.out", 2, 0, func(t *testing.T, vg *VG) {
			lv, _ := vg.LV("lv1")
			if lv.Moving() || lv.Devices[0] != "/dev/vdc" {
				t.Fatalf("%+v", lv)
			}
		}},
		{"report-many-lvs.out", 22, 0, nil},
		{"report-missing-pv.out", 22, 1, func(t *testing.T, vg *VG) {
			var missing []PV
			for _, p := range vg.PVs {
				if p.Missing {
					missing = append(missing, p)
				}
			}
			if len(missing) != 1 || missing[0].Name != "[unknown]" {
				t.Fatalf("%+v", vg.PVs)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			rep, err := ParseFullReport(fixture(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			vg, ok := rep.VG("vg1")
			if !ok {
				t.Fatal("vg1 missing")
			}
			if len(vg.LVs) != tt.lvs || vg.LVCount != tt.lvs || vg.MissingPVs != tt.missing {
				t.Fatalf("lvs %d (count %d) missing %d", len(vg.LVs), vg.LVCount, vg.MissingPVs)
			}
			if tt.check != nil {
				tt.check(t, vg)
			}
		})
	}
}

func TestParseFullReportErrors(t *testing.T) {
	for _, bad := range []string{"", "{", `{"report":[{"vg":[{"vg_size":"x"}]}]}`, `{"report":[{"vg":[{"vg_name":"a"}],"lv":[{"lv_size":"1.5"}]}]}`} {
		if _, err := ParseFullReport([]byte(bad)); err == nil {
			t.Errorf("%q: want error", bad)
		}
	}
	rep, err := ParseFullReport([]byte(`{"report":[]}`))
	if err != nil || len(rep.VGs) != 0 {
		t.Fatal(err)
	}
}

func TestParseLockdInfo(t *testing.T) {
	vgs := ParseLockdInfo(fixture(t, "lvmlockctl-exclusive.out"))
	if len(vgs) != 1 || vgs[0].Name != "vg1" || vgs[0].LockType != "sanlock" || vgs[0].Lockspace != "lvm_vg1" {
		t.Fatalf("%+v", vgs)
	}
	modes := map[LockdMode]int{}
	for _, m := range vgs[0].LVs {
		modes[m]++
	}
	if modes[LockdExclusive] != 1 {
		t.Fatalf("%+v", vgs[0].LVs)
	}
	sh := ParseLockdInfo(fixture(t, "lvmlockctl-shared.out"))
	if len(sh) != 1 || len(sh[0].LVs) != 1 {
		t.Fatalf("%+v", sh)
	}
	for _, m := range sh[0].LVs {
		if m != LockdShared {
			t.Fatalf("%+v", sh)
		}
	}
}

func TestParsePVMoveProgress(t *testing.T) {
	pct, running, err := parsePVMoveProgress(fixture(t, "pvmove-progress.out"), "lv1")
	if err != nil || !running || pct != 100 {
		t.Fatalf("%v %v %v", pct, running, err)
	}
	pct, running, err = parsePVMoveProgress(fixture(t, "pvmove-done.out"), "lv1")
	if err != nil || running || pct != 100 {
		t.Fatalf("%v %v %v", pct, running, err)
	}
	if _, _, err := parsePVMoveProgress(fixture(t, "pvmove-done.out"), "nope"); !errors.Is(err, ErrLVNotFound) {
		t.Fatalf("%v", err)
	}
}

// Every captured failure is classified to the kind a controller acts on, and keeps the
// tool's own message.
func TestClassifyCapturedErrors(t *testing.T) {
	tests := map[string]Kind{
		"activate-locked-by-other.err":       KindLockHeldByOther,
		"lvremove-while-other-holds.err":     KindLockHeldByOther,
		"lockstart-first.err":                KindLockspaceStartRetry,
		"lockstop-active.err":                KindLockspaceBusy,
		"lvchange-lv-not-found.err":          KindLVNotFound,
		"lvcreate-exists.err":                KindAlreadyExists,
		"lvcreate-lockspace-not-started.err": KindLockspaceNotStarted,
		"lvcreate-no-space.err":              KindInsufficientSpace,
		"lvcreate-reserved-name.err":         KindInvalidName,
		"lvcreate-vg-not-found.err":          KindVGNotFound,
		"lvextend-same-size.err":             KindSizeUnchanged,
		"lvextend-while-shared.err":          KindIncompatibleMode,
		"pvmove-while-shared.err":            KindLockHeldByOther,
	}
	for file, want := range tests {
		t.Run(file, func(t *testing.T) {
			raw := string(fixture(t, file))
			stderr, code := splitErr(t, raw)
			err := classify([]string{"lvm"}, code, []byte(stderr), nil)
			if KindOf(err) != want {
				t.Fatalf("kind %v, want %v: %v", KindOf(err), want, err)
			}
			first := strings.TrimSpace(strings.Split(strings.TrimSpace(stderr), "\n")[0])
			if !strings.Contains(err.Error(), first) && !strings.Contains(first, "Skipping global lock") {
				t.Fatalf("message %q lost from %v", first, err)
			}
			if errors.Is(err, &Error{Kind: KindUnknown}) {
				t.Fatal("unknown matches nothing")
			}
			if !errors.Is(err, &Error{Kind: want}) {
				t.Fatal("errors.Is by kind")
			}
		})
	}
	if err := classify([]string{"x"}, 0, []byte("WARNING: This metadata update is NOT backed up."), nil); err != nil {
		t.Fatal("success classified as error")
	}
}

func splitErr(t *testing.T, raw string) (string, int) {
	i := strings.LastIndex(raw, "# exit ")
	if i < 0 {
		t.Fatal("no exit line")
	}
	var code int
	for _, c := range strings.TrimSpace(raw[i+7:]) {
		code = code*10 + int(c-'0')
	}
	return raw[:i], code
}

func TestValidateNames(t *testing.T) {
	good := []string{"vg1", "volume-3f1c2a9e-6b0d-4c51-9d1e-2f7e8a0b4c11", "a+b_c.d-e"}
	for _, n := range good {
		if ValidateLVName(n) != nil || ValidateVGName(n) != nil {
			t.Errorf("%q rejected", n)
		}
	}
	badLV := []string{"", "-x", ".", "..", "snapshot1", "pvmove0", "lvmlock", "x_tmeta", "a b", "a/b", "a;rm -rf", strings.Repeat("x", 64), "äö"}
	for _, n := range badLV {
		if ValidateLVName(n) == nil {
			t.Errorf("LV %q accepted", n)
		}
	}
	if ValidateVGName("snapshot") != nil {
		t.Error("VG names may start with snapshot")
	}
	if ValidateDMName(strings.Repeat("a-", 31), strings.Repeat("b-", 31)) == nil {
		t.Error("over-long dm name accepted")
	}
	if validateTag("sharedlvm.io/uid=0a1b2c3d-0000-4000-8000-000000000001") != nil || validateTag("a b") == nil || validateTag("-x") == nil {
		t.Error("tag validation")
	}
}

func FuzzParseFullReport(f *testing.F) {
	for _, n := range []string{"report-two-lvs.out", "report-mid-pvmove.out", "report-missing-pv.out", "report-empty-vg.out"} {
		f.Add(fixture(f, n))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r1, err1 := ParseFullReport(b)
		r2, err2 := ParseFullReport(b)
		if (err1 == nil) != (err2 == nil) || !reflect.DeepEqual(r1, r2) {
			t.Fatal("two parses of one report differ")
		}
		if err1 != nil {
			return
		}
		// No more VGs, PVs or LVs than the report has rows of each.
		vgs, pvs, lvs := 0, 0, 0
		for _, vg := range r1.VGs {
			vgs++
			pvs += len(vg.PVs)
			lvs += len(vg.LVs)
		}
		for key, n := range map[string]int{`"vg_name"`: vgs, `"pv_name"`: pvs, `"lv_name"`: lvs} {
			if rows := bytes.Count(b, []byte(key)); n > rows && !bytes.Contains(b, []byte(`\u`)) {
				t.Fatalf("%d entries from %d %s keys", n, rows, key)
			}
		}
	})
}

func FuzzParseLockdInfo(f *testing.F) {
	f.Add(fixture(f, "lvmlockctl-exclusive.out"))
	f.Add([]byte("LK LV\nLS\nVG\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, vg := range ParseLockdInfo(b) {
			for _, s := range []string{vg.Name, vg.UUID, vg.Lockspace} {
				if s != "" && !bytes.Contains(b, []byte(s)) {
					t.Fatalf("parsed %q, which the input does not contain", s)
				}
			}
			for uuid, mode := range vg.LVs {
				if !bytes.Contains(b, []byte(uuid)) || (mode != LockdExclusive && mode != LockdShared && mode != LockdUnlocked && !bytes.Contains(b, []byte(mode))) {
					t.Fatalf("parsed LV %q mode %q, which the input does not say", uuid, mode)
				}
			}
		}
	})
}

func FuzzParsePVMoveProgress(f *testing.F) {
	f.Add(fixture(f, "pvmove-progress.out"), "lv1")
	f.Add(fixture(f, "pvmove-done.out"), "lv1")
	f.Fuzz(func(t *testing.T, b []byte, lv string) { _, _, _ = parsePVMoveProgress(b, lv) })
}

func FuzzClassify(f *testing.F) {
	f.Add(fixture(f, "activate-locked-by-other.err"), 5)
	f.Fuzz(func(t *testing.T, b []byte, code int) { _ = classify([]string{"lvm"}, code, b, nil) })
}

// A one-LV report reads like the LV's entry in the full report, placement included, also in
// the middle of a pvmove; a missing LV is nil, a missing VG an error.
func TestReportLV(t *testing.T) {
	lv, err := ParseLVReport(fixture(t, "lvs-one-lv.out"))
	if err != nil || lv == nil {
		t.Fatalf("%v %v", lv, err)
	}
	// The same LV as lv1 of report-two-lvs.out (another capture, so another UUID).
	if lv.Name != "lv1" || lv.UUID == "" || lv.Size != 268435456 || lv.LeaseOffset() != 70254592 || lv.Path != "/dev/vg1/lv1" ||
		!lv.HasTag("sharedlvm.io/uid=0a1b2c3d-0000-4000-8000-000000000001") || !lv.HasTag("sharedlvm.io/managed") ||
		len(lv.Devices) != 1 || lv.Devices[0] != "/dev/vdb" || lv.Moving() {
		t.Fatalf("%+v", lv)
	}
	moving, err := ParseLVReport(fixture(t, "lvs-one-lv-mid-pvmove.out"))
	if err != nil || moving == nil || !moving.Moving() {
		t.Fatalf("mid-pvmove %+v %v", moving, err)
	}

	for file, want := range map[string]Kind{"lvs-lv-not-found.err": KindLVNotFound, "lvs-vg-not-found.err": KindVGNotFound} {
		stderr, code := splitErr(t, string(fixture(t, file)))
		if k := KindOf(classify([]string{"lvs"}, code, []byte(stderr), nil)); k != want {
			t.Errorf("%s: kind %v, want %v", file, k, want)
		}
	}
	ex := &fixedResult{res: executor.Result{ExitCode: 5, Stderr: []byte(strings.SplitN(string(fixture(t, "lvs-lv-not-found.err")), "# exit", 2)[0]),
		Stdout: fixture(t, "lvs-lv-not-found.out")}}
	if lv, err := New(ex).ReportLV(context.Background(), "vg1", "nosuchlv"); lv != nil || err != nil {
		t.Fatalf("missing LV: %v %v", lv, err)
	}
	if _, err := New(ex).ReportLV(context.Background(), "vg1", "-bad"); KindOf(err) != KindInvalidName {
		t.Fatalf("bad name: %v", err)
	}
	for _, bad := range []string{"", "{", `{"report":[{"lv":[{"lv_uuid":"a","lv_size":"x"}]}]}`, `{"report":[{"lv":[{"lv_uuid":"a"},{"lv_uuid":"b"}]}]}`} {
		if _, err := ParseLVReport([]byte(bad)); err == nil {
			t.Errorf("%q: want error", bad)
		}
	}
}

type fixedResult struct{ res executor.Result }

func (f *fixedResult) Run(context.Context, []string) (executor.Result, error) { return f.res, nil }

func TestStripExtent(t *testing.T) {
	for in, want := range map[string]string{"/dev/vdb(64)": "/dev/vdb", "pvmove0(0)": "pvmove0", "/dev/vdb": "/dev/vdb", "a()": "a()", "a(1x)": "a(1x)", "(": "(", "": ""} {
		if got := stripExtent(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

// One `lvs` of several LVs (a batch of creates): every LV by name; a missing one makes LVM
// exit 5 but still report the others.
func TestReportLVs(t *testing.T) {
	lvs, err := ParseLVsReport(fixture(t, "lvs-two-lvs.out"))
	if err != nil || len(lvs) != 2 || lvs["lv1"] == nil || lvs["lv2"] == nil || lvs["lv1"].UUID == lvs["lv2"].UUID ||
		lvs["lv2"].Size != 32<<20 || len(lvs["lv2"].Devices) != 1 {
		t.Fatalf("%+v %v", lvs, err)
	}
	if _, err := ParseLVReport(fixture(t, "lvs-two-lvs.out")); err == nil {
		t.Fatal("two LVs where one was asked for: want an error")
	}
	stderr, code := splitErr(t, string(fixture(t, "lvs-one-of-two-missing.err")))
	ex := &fixedResult{res: executor.Result{ExitCode: code, Stderr: []byte(stderr), Stdout: fixture(t, "lvs-one-of-two-missing.out")}}
	got, err := New(ex).reportLVs(context.Background(), "vg1", []string{"lv1", "nosuchlv"})
	if err != nil || len(got) != 1 || got["lv1"] == nil || got["nosuchlv"] != nil {
		t.Fatalf("%+v %v", got, err)
	}
}
