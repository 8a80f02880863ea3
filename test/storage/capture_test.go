//go:build storage

package storage

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
	"github.com/sharedlvm/sharedlvm-operator/internal/testbed"
)

// TestCaptureFixtures re-records the parser fixtures from the real tools on the bed.
// It only runs when asked: SHAREDLVM_CAPTURE=1 go test -tags storage -run TestCaptureFixtures ./test/storage/
// and writes agent/lvm/testdata and agent/sanlock/testdata. SHAREDLVM_CAPTURE_ONLY=P1,P2...
// re-records only the fixtures whose names start with one of the prefixes (the others keep
// the values their tests assert).
func TestCaptureFixtures(t *testing.T) {
	if os.Getenv("SHAREDLVM_CAPTURE") == "" {
		t.Skip("set SHAREDLVM_CAPTURE=1 to re-record fixtures")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bed, err := testbed.New(ctx, testbed.Config{Name: t.Name(), Hosts: 2, LUNs: 4, LUNSize: 1 << 30, IOTimeout: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer bed.Close()
	h1, h2 := bed.Hosts[0], bed.Hosts[1]
	root := filepath.Join("..", "..", "agent")
	lvmDir, slDir := filepath.Join(root, "lvm", "testdata"), filepath.Join(root, "sanlock", "testdata")
	for _, d := range []string{lvmDir, slDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var log strings.Builder
	wanted := func(name string) bool {
		for _, p := range strings.Split(os.Getenv("SHAREDLVM_CAPTURE_ONLY"), ",") {
			if strings.HasPrefix(name, p) {
				return true
			}
		}
		return false
	}
	save := func(dir, name string, h *testbed.Host, argv ...string) string {
		r, err := h.Run(ctx, argv)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		fmt.Fprintf(&log, "[%s] $ %s\n  rc=%d %v\n", h.Name, strings.Join(argv, " "), r.ExitCode, r.Duration.Round(time.Millisecond))
		if name != "" && wanted(name) {
			if len(r.Stdout) > 0 {
				os.WriteFile(filepath.Join(dir, name+".out"), r.Stdout, 0o644)
			}
			if len(r.Stderr) > 0 || r.ExitCode != 0 {
				os.WriteFile(filepath.Join(dir, name+".err"), []byte(fmt.Sprintf("%s# exit %d\n", r.Stderr, r.ExitCode)), 0o644)
			}
		}
		return string(r.Stdout)
	}
	report := func(name string, h *testbed.Host) { save(lvmDir, name, h, lvm.FullReportArgs("vg1")...) }
	// head saves a PV's first MiB (label and first metadata area), gzipped, as read in the
	// guest daemon's process with O_DIRECT, like the agent reads committed metadata.
	head := func(name string, h *testbed.Host, dev string) []byte {
		b, err := h.ReadDevice(ctx, dev, 0, 1<<20)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		fmt.Fprintf(&log, "[%s] read %s 0+%d\n", h.Name, dev, len(b))
		if wanted(name) {
			var z bytes.Buffer
			w := gzip.NewWriter(&z)
			w.Write(b)
			w.Close()
			os.WriteFile(filepath.Join(lvmDir, name+".bin.gz"), z.Bytes(), 0o644)
		}
		return b
	}

	ver := save(lvmDir, "", h1, "lvm", "version")
	slver := save(slDir, "", h1, "sanlock", "version")
	save(lvmDir, "vgcreate", h1, "vgcreate", "--shared", "--lock-type", "sanlock", "vg1", "/dev/vda", "/dev/vdb", "/dev/vdc")
	report("report-empty-vg", h1)
	report("report-no-lockspace", h2)
	save(lvmDir, "lvcreate-lockspace-not-started", h2, "lvcreate", "-n", "x", "-L", "4m", "vg1")
	save(lvmDir, "lockstart-first", h2, "vgchange", "--lockstart", "vg1")
	save(lvmDir, "lockstart-retry", h2, "vgchange", "--lockstart", "vg1")
	save(lvmDir, "lvcreate", h1, "lvcreate", "-y", "-n", "lv1", "-L", "268435456b", "--addtag", "sharedlvm.io/uid=0a1b2c3d-0000-4000-8000-000000000001", "--addtag", "sharedlvm.io/managed", "vg1", "/dev/vdb")
	save(lvmDir, "", h1, "lvcreate", "-y", "-an", "-n", "lv2", "-L", "32m", "vg1")
	head("mda-two-lvs", h1, "/dev/vda")
	save(lvmDir, "mda-two-lvs-pvck", h1, "pvck", "--dump", "headers", "/dev/vda")
	save(lvmDir, "lvs-one-lv", h1, lvm.LVReportArgs("vg1", "lv1")...)
	save(lvmDir, "lvs-lv-not-found", h1, lvm.LVReportArgs("vg1", "nosuchlv")...)
	save(lvmDir, "lvs-two-lvs", h1, lvm.LVReportArgs("vg1", "lv1", "lv2")...)
	save(lvmDir, "lvs-one-of-two-missing", h1, lvm.LVReportArgs("vg1", "lv1", "nosuchlv")...)
	save(lvmDir, "lvs-vg-not-found", h1, lvm.LVReportArgs("nosuchvg", "lv1")...)
	report("report-two-lvs", h1)
	save(slDir, "status-exclusive", h1, "sanlock", "client", "status")
	save(lvmDir, "lvmlockctl-exclusive", h1, "lvmlockctl", "--info")
	save(lvmDir, "activate-locked-by-other", h2, "lvchange", "-aey", "vg1/lv1")
	save(lvmDir, "lvcreate-vg-not-found", h1, "lvcreate", "-n", "x", "-L", "4m", "nosuchvg")
	save(lvmDir, "lvcreate-no-space", h1, "lvcreate", "-n", "huge", "-L", "100g", "vg1")
	save(lvmDir, "lvcreate-exists", h1, "lvcreate", "-n", "lv1", "-L", "4m", "vg1")
	save(lvmDir, "lvchange-lv-not-found", h1, "lvchange", "-aey", "vg1/nosuchlv")
	save(lvmDir, "lvcreate-reserved-name", h1, "lvcreate", "-n", "snapshot1", "-L", "4m", "vg1")
	save(lvmDir, "", h1, "lvchange", "-asy", "vg1/lv1")
	save(lvmDir, "", h2, "lvchange", "-asy", "vg1/lv1")
	save(slDir, "status-shared-h1", h1, "sanlock", "client", "status")
	save(slDir, "status-shared-h2", h2, "sanlock", "client", "status")
	save(lvmDir, "lvmlockctl-shared", h2, "lvmlockctl", "--info")
	report("report-shared-lies", h1)
	save(lvmDir, "lvextend-while-shared", h1, "lvextend", "-L", "+32m", "vg1/lv1")
	save(lvmDir, "pvmove-while-shared", h1, "pvmove", "-b", "-n", "lv1", "/dev/vdb", "/dev/vdc")
	save(lvmDir, "lvremove-while-other-holds", h1, "lvremove", "-y", "vg1/lv1")
	save(lvmDir, "", h2, "lvchange", "-an", "vg1/lv1")
	save(lvmDir, "", h1, "lvchange", "-aey", "vg1/lv1")
	save(lvmDir, "lvextend-same-size", h1, "lvextend", "-L", "268435456b", "vg1/lv1")
	save(lvmDir, "pvmove-start", h1, "pvmove", "-b", "-i", "1", "-n", "lv1", "/dev/vdb", "/dev/vdc")
	time.Sleep(300 * time.Millisecond)
	report("report-mid-pvmove", h1)
	save(lvmDir, "lvs-one-lv-mid-pvmove", h1, lvm.LVReportArgs("vg1", "lv1")...)
	save(lvmDir, "pvmove-progress", h1, "lvs", "-a", "--reportformat", "json", "-o", "lv_name,copy_percent,move_pv,devices", "vg1")
	for i := 0; i < 120; i++ {
		out := save(lvmDir, "", h1, "lvs", "--noheadings", "-o", "move_pv", "vg1/lv1")
		if strings.TrimSpace(out) == "" {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	report("report-after-pvmove", h1)
	save(lvmDir, "pvmove-done", h1, "lvs", "-a", "--reportformat", "json", "-o", "lv_name,copy_percent,move_pv,devices", "vg1")
	save(slDir, "gets-hosts", h2, "sanlock", "client", "gets", "-h", "1")
	for i := 3; i <= 22; i++ {
		save(lvmDir, "", h1, "lvcreate", "-y", "-an", "-n", fmt.Sprintf("vol%02d", i), "-L", "8m", "--addtag", fmt.Sprintf("sharedlvm.io/uid=0a1b2c3d-0000-4000-8000-0000000000%02d", i), "vg1")
	}
	report("report-many-lvs", h2)
	// Shared and exclusive leases side by side on one host.
	save(lvmDir, "", h1, "lvchange", "-asy", "vg1/vol03")
	save(lvmDir, "", h1, "lvchange", "-aey", "vg1/vol04")
	save(slDir, "status-mixed", h1, "sanlock", "client", "status")
	save(lvmDir, "lvmlockctl-mixed", h1, "lvmlockctl", "--info")
	save(lvmDir, "", h1, "lvchange", "-an", "vg1/vol03", "vg1/vol04")
	save(slDir, "host-status", h2, "sanlock", "client", "host_status", "-s", "lvm_vg1", "-D")
	save(slDir, "status-D", h1, "sanlock", "client", "status", "-D")
	// Host2 commits last: host1's reads of the metadata must not vouch for its device paths.
	save(lvmDir, "", h2, "lvcreate", "-y", "-an", "-Zn", "-n", "fromhost2", "-L", "8m", "vg1")
	head("mda-foreign", h1, "/dev/vda")
	// A local VG with a 60 KiB metadata area, changed until its ring buffer comes round:
	// lvm 2.03.16 never splits a text over the end of the ring (older versions did, and
	// lvm still reads such texts); it starts again at the beginning, older texts remaining
	// after it.
	save(lvmDir, "", h1, "vgcreate", "--dataalignment", "64k", "--metadatasize", "32k", "vgw", "/dev/vdd")
	var last uint64
	for i := 0; ; i++ {
		save(lvmDir, "", h1, "lvcreate", "-y", "-an", "-Zn", "-n", fmt.Sprintf("w%d", i%4), "-L", "4m", "--addtag", "sharedlvm.io/uid=0a1b2c3d-0000-4000-8000-0000000000ff", "vgw")
		b, err := h1.ReadDevice(ctx, "/dev/vdd", 4096, 512)
		if err != nil {
			t.Fatal(err)
		}
		le := binary.LittleEndian
		if off := le.Uint64(b[40:48]); off < last {
			t.Logf("vgw's ring came round after %d commits: text at %d, the previous one at %d, area %d", i+1, off, last, le.Uint64(b[32:40]))
			break
		} else {
			last = off
		}
		if i > 400 {
			t.Fatal("vgw's metadata ring never came round")
		}
		if i%4 == 3 {
			save(lvmDir, "", h1, "lvremove", "-y", "vgw")
		}
	}
	head("mda-ring-restarted", h1, "/dev/vdd")
	save(lvmDir, "mda-ring-restarted-pvck", h1, "pvck", "--dump", "headers", "/dev/vdd")
	save(lvmDir, "lockstop-active", h1, "vgchange", "--lockstop", "vg1")
	// A failed PV: wipe vdc's label from host2 (vdc holds no extents after the move back
	// is not done, lv1 lives on vdc now; so wipe vda's neighbour instead: the unused space
	// of vdc is fine to lose for the fixture).
	save(lvmDir, "", h2, "dd", "if=/dev/zero", "of=/dev/vdc", "bs=4096", "count=1", "oflag=direct")
	report("report-missing-pv", h2)
	os.WriteFile(filepath.Join(lvmDir, "VERSIONS"), []byte("Captured on the test bed by TestCaptureFixtures.\n"+ver+"\n"), 0o644)
	os.WriteFile(filepath.Join(slDir, "VERSIONS"), []byte("Captured on the test bed by TestCaptureFixtures.\n"+slver+"\n"), 0o644)
	t.Log(log.String())
}
