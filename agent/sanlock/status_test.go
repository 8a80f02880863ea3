package sanlock

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseStatusFixtures(t *testing.T) {
	const uuid = "0Lmg4d-BEKE-bsNl-0qMz-PxcS-tmnj-fBJWiw"
	tests := []struct {
		file      string
		hostID    int
		leases    int
		shared    bool
		version   int64
		daemonSub string
	}{
		{"status-exclusive.txt", 1, 1, false, 1, "b8a1d2b6"},
		{"status-shared.txt", 2, 1, true, 0, "b8c87c54"},
		{"status-no-leases.txt", 2, 0, false, 0, "b8c87c54"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			st, err := ParseStatus(fixture(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			ls, ok := st.Lockspace("vg1")
			if !ok || ls.HostID != tt.hostID || ls.Path != "/dev/mapper/vg1-lvmlock" || ls.Offset != 0 || ls.VG() != "vg1" {
				t.Fatalf("lockspace %+v ok=%v", ls, ok)
			}
			if len(st.Resources) != tt.leases {
				t.Fatalf("got %d leases", len(st.Resources))
			}
			if tt.leases == 0 {
				if _, ok := st.Lease("vg1", uuid); ok {
					t.Fatal("lease found where none is held")
				}
				return
			}
			r, ok := st.Lease("vg1", uuid)
			if !ok || r.Shared != tt.shared || r.Version != tt.version || r.Offset != 70254592 || r.PID != 122 {
				t.Fatalf("lease %+v ok=%v", r, ok)
			}
		})
	}
}

func TestParseStatusEdgeCases(t *testing.T) {
	st, err := ParseStatus([]byte("daemon x\ns lvm_vg2:7:/dev/mapper/vg2-lvmlock:0 ADD\n"))
	if err != nil {
		t.Fatal(err)
	}
	if ls, _ := st.Lockspace("vg2"); !ls.Adding || ls.HostID != 7 {
		t.Fatalf("%+v", ls)
	}
	for _, bad := range []string{"s lvm_vg1:x:/p:0", "s lvm_vg1", "r lvm_vg1:u:/p:zz:1 p 1", "r lvm_vg1:u:/p:0:v p 1", "r lvm_vg1:u:/p:0:1 p q", "s "} {
		if _, err := ParseStatus([]byte(bad)); err == nil {
			t.Errorf("%q: expected an error", bad)
		}
	}
	if st, err := ParseStatus(nil); err != nil || len(st.Lockspaces) != 0 {
		t.Fatalf("empty: %v %+v", err, st)
	}
}

func FuzzParseStatus(f *testing.F) {
	for _, name := range []string{"status-exclusive.txt", "status-shared.txt", "status-no-leases.txt"} {
		f.Add(fixture(f, name))
	}
	f.Add([]byte("s ::::\nr :::::: p\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := ParseStatus(data) // must never panic
		if err != nil {
			return
		}
		// What the parser returns is what the text says: no name or path it did not read,
		// no more entries than the text has lines of that kind.
		if n := countPrefixed(data, "s "); len(st.Lockspaces) > n {
			t.Fatalf("%d lockspaces from %d 's ' lines", len(st.Lockspaces), n)
		}
		if n := countPrefixed(data, "r "); len(st.Resources) > n {
			t.Fatalf("%d resources from %d 'r ' lines", len(st.Resources), n)
		}
		for _, l := range st.Lockspaces {
			mustContain(t, data, l.Name, l.Path)
		}
		for _, r := range st.Resources {
			mustContain(t, data, r.Lockspace, r.Name, r.Path)
			if r.Shared && !bytes.Contains(data, []byte(":SH")) {
				t.Fatalf("shared lease %+v from a text without ':SH'", r)
			}
		}
	})
}

func TestParseBedCaptures(t *testing.T) {
	h1, err := ParseStatus(fixture(t, "status-shared-h1.out"))
	if err != nil {
		t.Fatal(err)
	}
	h2, err := ParseStatus(fixture(t, "status-shared-h2.out"))
	if err != nil {
		t.Fatal(err)
	}
	l1, _ := h1.Lockspace("vg1")
	l2, _ := h2.Lockspace("vg1")
	if l1.HostID != 1 || l2.HostID != 2 {
		t.Fatalf("host ids %d %d", l1.HostID, l2.HostID)
	}
	if len(h1.Resources) != 1 || len(h2.Resources) != 1 || !h1.Resources[0].Shared || !h2.Resources[0].Shared ||
		h1.Resources[0].Name != h2.Resources[0].Name || h1.Resources[0].Offset != h2.Resources[0].Offset {
		t.Fatalf("both hosts should hold one shared lease on the same LV: %+v %+v", h1.Resources, h2.Resources)
	}
	ex, err := ParseStatus(fixture(t, "status-exclusive.out"))
	if err != nil || len(ex.Resources) != 1 || ex.Resources[0].Shared || ex.Resources[0].Version < 1 {
		t.Fatalf("%v %+v", err, ex)
	}
	// -D adds indented key=value lines under each entry; they are ignored.
	d, err := ParseStatus(fixture(t, "status-D.out"))
	if err != nil || len(d.Lockspaces) != 1 || len(d.Resources) != 1 {
		t.Fatalf("%v %+v", err, d)
	}
}

func TestParseGets(t *testing.T) {
	ls, err := ParseGets(fixture(t, "gets-hosts.out"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || ls[0].Lockspace.Name != "lvm_vg1" || ls[0].Lockspace.HostID != 2 || len(ls[0].Hosts) != 2 {
		t.Fatalf("%+v", ls)
	}
	for _, h := range ls[0].Hosts {
		if h.State != HostLive || h.Generation != 1 || h.Timestamp == 0 {
			t.Fatalf("%+v", h)
		}
	}
	for _, bad := range []string{"h 1 gen 1 timestamp 2 LIVE", "s lvm_a:1:/p:0\nh x gen 1 timestamp 2 LIVE", "s lvm_a:1:/p:0\nh 1 gen"} {
		if _, err := ParseGets([]byte(bad)); err == nil {
			t.Errorf("%q: want error", bad)
		}
	}
}

func FuzzParseGets(f *testing.F) {
	f.Add(fixture(f, "gets-hosts.out"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ls, err := ParseGets(b)
		if err != nil {
			return
		}
		hosts := 0
		for _, l := range ls {
			mustContain(t, b, l.Lockspace.Name)
			hosts += len(l.Hosts)
			for _, h := range l.Hosts {
				mustContain(t, b, strconv.Itoa(h.ID), string(h.State))
			}
		}
		if n := countPrefixed(b, "h "); hosts > n {
			t.Fatalf("%d hosts from %d 'h ' lines", hosts, n)
		}
	})
}

func TestParseMixedLeases(t *testing.T) {
	st, err := ParseStatus(fixture(t, "status-mixed.out"))
	if err != nil {
		t.Fatal(err)
	}
	shared, exclusive := 0, 0
	for _, r := range st.Resources {
		if r.Shared {
			shared++
			if r.Version != 0 {
				t.Fatalf("shared lease with a version: %+v", r)
			}
		} else {
			exclusive++
			if r.Version < 1 {
				t.Fatalf("exclusive lease without a version: %+v", r)
			}
		}
		if r.Lockspace != "lvm_vg1" || r.PID == 0 || r.Offset < 70254592 {
			t.Fatalf("%+v", r)
		}
	}
	if shared != 1 || exclusive != 2 {
		t.Fatalf("shared %d exclusive %d", shared, exclusive)
	}
}

// countPrefixed counts the lines of b (leading blanks ignored) that start with prefix.
func countPrefixed(b []byte, prefix string) int {
	n := 0
	for _, line := range bytes.Split(b, []byte("\n")) {
		if bytes.HasPrefix(bytes.TrimLeft(line, " \t"), []byte(prefix)) {
			n++
		}
	}
	return n
}

// mustContain fails unless every non-empty string is in b.
func mustContain(t *testing.T, b []byte, ss ...string) {
	t.Helper()
	for _, s := range ss {
		if s != "" && !bytes.Contains(b, []byte(s)) {
			t.Fatalf("parsed %q, which the input does not contain", s)
		}
	}
}

// An orphan (its holder died, the lease kept: sanlock(8) "Persistent and orphan resource
// leases") parses as any lease; captured on the bed (sanlock 3.8.5) after lvmlockd was
// killed while lvcreate held the VG lock.
func TestParseOrphan(t *testing.T) {
	st, err := ParseStatus([]byte("daemon d9d5ae0a.host1\np -1 helper\ns lvm_vg1:1:/dev/mapper/vg1-lvmlock:0\nr lvm_vg1:VGLK:/dev/mapper/vg1-lvmlock:69206016:8 p 128 ORPHAN\n"))
	if err != nil || len(st.Resources) != 1 {
		t.Fatalf("%v %+v", err, st)
	}
	r := st.Resources[0]
	if r.Lockspace != "lvm_vg1" || r.Name != "VGLK" || r.Path != "/dev/mapper/vg1-lvmlock" || r.Offset != 69206016 || !r.Orphan || r.PID != 128 {
		t.Fatalf("%+v", r)
	}
}
