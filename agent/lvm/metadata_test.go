package lvm

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
)

// pvImage is a PV's first MiB as captured on the bed (testdata/mda-*.bin.gz): a device the
// client reads through executor.DeviceReader. It runs no command.
type pvImage struct {
	dev   string
	b     []byte
	reads int
}

func loadPV(t testing.TB, name, dev string) *pvImage {
	t.Helper()
	z, err := gzip.NewReader(bytes.NewReader(fixture(t, name)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return &pvImage{dev: dev, b: b}
}

func (p *pvImage) Run(_ context.Context, argv []string) (executor.Result, error) {
	return executor.Result{}, fmt.Errorf("no command runs here: %v", argv)
}

func (p *pvImage) ReadDevice(_ context.Context, dev string, off, n int64) ([]byte, error) {
	p.reads++
	if dev != p.dev {
		return nil, fmt.Errorf("open %s: no such device", dev)
	}
	if off < 0 || off+n > int64(len(p.b)) {
		return nil, fmt.Errorf("read %s: %d+%d past the image", dev, off, n)
	}
	return append([]byte(nil), p.b[off:off+n]...), nil
}

// The LV read from the metadata lvcreate committed is the LV `lvs` reports in the same
// state (both captured after lv2's lvcreate), but for the activation fields, which the
// metadata does not have: UUID, size, lease offset, tags and placement.
func TestCommittedLVMatchesLVs(t *testing.T) {
	pv := loadPV(t, "mda-two-lvs.bin.gz", "/dev/vda")
	c := New(pv)
	fromLVs, err := ParseLVsReport(fixture(t, "lvs-two-lvs.out"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"lv1", "lv2"} {
		got, err := c.CommittedLV(context.Background(), "vg1", name, []string{"/dev/nosuchdev", "/dev/vda"})
		if err != nil || got == nil {
			t.Fatalf("%s: %v %v", name, got, err)
		}
		want := *fromLVs[name]
		want.Active, want.ActiveLocally, want.ActiveRemotely, want.ActiveExclusivelyAsReportedByLVM = false, false, false, false
		want.Attr, want.Role, want.Layout = "", "", ""
		if !reflect.DeepEqual(*got, want) {
			t.Errorf("%s:\n metadata %+v\n lvs      %+v", name, *got, want)
		}
	}
	if pv.reads != 2*3 {
		t.Errorf("%d device reads for two LVs, want three each (the missing device, then label + header, text)", pv.reads)
	}
	if lv, err := c.CommittedLV(context.Background(), "vg1", "nosuchlv", []string{"/dev/vda"}); lv != nil || err != nil {
		t.Fatalf("missing LV: %v %v", lv, err)
	}
	if _, err := c.CommittedLV(context.Background(), "othervg", "lv1", []string{"/dev/vda"}); err == nil || !strings.Contains(err.Error(), "not othervg") {
		t.Fatalf("another VG's PV: %v", err)
	}
	if _, err := c.CommittedLV(context.Background(), "vg1", "lv1", []string{"/dev/../etc/passwd"}); KindOf(err) != KindInvalidName {
		t.Fatalf("bad device: %v", err)
	}
	if _, err := New(&fixedResult{}).CommittedLV(context.Background(), "vg1", "lv1", []string{"/dev/vda"}); !errors.Is(err, ErrNoDeviceReader) {
		t.Fatalf("executor without reads: %v", err)
	}
}

// The binary parsers agree with what `pvck --dump headers` printed for the same PV.
func TestPVHeadersMatchPvck(t *testing.T) {
	for _, name := range []string{"mda-two-lvs", "mda-ring-restarted"} {
		pv := loadPV(t, name+".bin.gz", "/dev/x")
		label, err := parsePVLabel(pv.b[:headRead])
		if err != nil || len(label.MDAs) != 1 {
			t.Fatalf("%s: %+v %v", name, label, err)
		}
		mda := label.MDAs[0]
		size, rl, err := parseMDAHeader(pv.b[mda.Offset:], mda.Offset)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out := string(fixture(t, name+"-pvck.out"))
		for _, want := range []string{
			"pv_header.pv_uuid " + label.UUID + "\n",
			fmt.Sprintf("mda_header_1.start %d\n", mda.Offset),
			fmt.Sprintf("mda_header_1.size %d\n", size),
			fmt.Sprintf("mda_header_1.raw_locn[0].offset %d\n", rl.Offset),
			fmt.Sprintf("mda_header_1.raw_locn[0].size %d\n", rl.Size),
			fmt.Sprintf("mda_header_1.raw_locn[0].checksum 0x%x\n", rl.CRC),
		} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: pvck output lacks %q:\n%s", name, want, out)
			}
		}
	}
}

// The ring came round: the committed text is back at the start of the area, older texts
// after it. Only the header says which one is current.
func TestCommittedLVRingCameRound(t *testing.T) {
	pv := loadPV(t, "mda-ring-restarted.bin.gz", "/dev/vdd")
	label, _ := parsePVLabel(pv.b[:headRead])
	at := label.MDAs[0].Offset
	_, rl, err := parseMDAHeader(pv.b[at:], at)
	if err != nil || rl.Offset > 4096 {
		t.Fatalf("the fixture's text is not at the start of its ring: %+v (%v)", rl, err)
	}
	lv, err := New(pv).CommittedLV(context.Background(), "vgw", "w0", []string{"/dev/vdd"})
	if err != nil || lv == nil || lv.UUID == "" || lv.Size != 4<<20 || lv.LockArgs != "" ||
		!lv.HasTag("sharedlvm.io/uid=0a1b2c3d-0000-4000-8000-0000000000ff") || !reflect.DeepEqual(lv.Devices, []string{"/dev/vdd"}) {
		t.Fatalf("%+v %v", lv, err)
	}
}

// A text that runs past the end of its area continues after the header. lvm 2.03.16 never
// writes one (it starts again at the beginning: TestCommittedLVRingCameRound), but older
// versions did and lvm still reads them: the captured text, moved to straddle the end of
// its ring, reads in two parts to the same LV, its checksum covering both.
func TestCommittedLVWrappedText(t *testing.T) {
	orig := loadPV(t, "mda-ring-restarted.bin.gz", "/dev/vdd")
	want, err := New(orig).CommittedLV(context.Background(), "vgw", "w0", []string{"/dev/vdd"})
	if err != nil {
		t.Fatal(err)
	}
	label, _ := parsePVLabel(orig.b[:headRead])
	at := label.MDAs[0].Offset
	size, rl, _ := parseMDAHeader(orig.b[at:], at)
	text := append([]byte(nil), orig.b[at+rl.Offset:at+rl.Offset+rl.Size]...)

	pv := &pvImage{dev: "/dev/vdd", b: append([]byte(nil), orig.b...)}
	clear(pv.b[at+mdaHeaderSize : at+size])
	off := size - rl.Size/2 - 3 // not sector-aligned either: the reader aligns its reads
	first := size - off
	copy(pv.b[at+off:at+size], text[:first])
	copy(pv.b[at+mdaHeaderSize:], text[first:])
	le := binary.LittleEndian
	le.PutUint64(pv.b[at+40:], off)
	le.PutUint32(pv.b[at:], lvmCRC(lvmInitialCRC, pv.b[at+4:at+mdaHeaderSize]))

	got, err := New(pv).CommittedLV(context.Background(), "vgw", "w0", []string{"/dev/vdd"})
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("wrapped: %+v %v, want %+v", got, err, want)
	}
	if pv.reads != 3 {
		t.Errorf("%d reads, want 3 (label + header, text to the end, the rest)", pv.reads)
	}
	pv.b[at+mdaHeaderSize+5] ^= 1 // the second part is covered by the checksum too
	if _, err := New(pv).CommittedLV(context.Background(), "vgw", "w0", []string{"/dev/vdd"}); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("damaged second part: %v", err)
	}
}

// After another host's commit, the text's device paths are that host's: the client does not
// vouch for them (the caller asks LVM instead), but an LV that host created reads fine.
func TestCommittedLVForeignCommit(t *testing.T) {
	c := New(loadPV(t, "mda-foreign.bin.gz", "/dev/vda"))
	if _, err := c.CommittedLV(context.Background(), "vg1", "lv1", []string{"/dev/vda"}); !errors.Is(err, ErrForeignCommit) {
		t.Fatalf("LV of host1 after host2's commit: %v", err)
	}
	if lv, err := c.CommittedLV(context.Background(), "vg1", "fromhost2", []string{"/dev/vda"}); err != nil || lv == nil || lv.Size != 8<<20 {
		t.Fatalf("host2's own LV: %+v %v", lv, err)
	}
}

// Damage anywhere is an error, never a wrong LV: a flipped byte in the label, the header or
// the text, or a text that was overwritten between the two reads.
func TestCommittedLVDamaged(t *testing.T) {
	orig := loadPV(t, "mda-two-lvs.bin.gz", "/dev/vda")
	label, _ := parsePVLabel(orig.b[:headRead])
	mdaAt := int(label.MDAs[0].Offset)
	_, rl, _ := parseMDAHeader(orig.b[mdaAt:], uint64(mdaAt))
	textAt := mdaAt + int(rl.Offset)
	for what, at := range map[string]int{"label": 512 + 40, "header": mdaAt + 44, "text": textAt + int(rl.Size)/2} {
		pv := &pvImage{dev: "/dev/vda", b: append([]byte(nil), orig.b...)}
		pv.b[at] ^= 0x20
		if lv, err := New(pv).CommittedLV(context.Background(), "vg1", "lv1", []string{"/dev/vda"}); err == nil {
			t.Errorf("%s damaged: %+v, want an error", what, lv)
		}
	}
	blank := &pvImage{dev: "/dev/vda", b: make([]byte, len(orig.b))}
	if _, err := New(blank).CommittedLV(context.Background(), "vg1", "lv1", []string{"/dev/vda"}); err == nil || !strings.Contains(err.Error(), "no LVM2 label") {
		t.Fatalf("blank device: %v", err)
	}
	le := binary.LittleEndian
	le.PutUint32(orig.b[mdaAt+60:], rawLocnIgnored) // raw_locn flags, with a valid header checksum
	le.PutUint32(orig.b[mdaAt:], lvmCRC(lvmInitialCRC, orig.b[mdaAt+4:mdaAt+mdaHeaderSize]))
	if _, err := New(orig).CommittedLV(context.Background(), "vg1", "lv1", []string{"/dev/vda"}); err == nil || !strings.Contains(err.Error(), "ignored") {
		t.Fatalf("ignored metadata area: %v", err)
	}
}

func TestParseConfig(t *testing.T) {
	root, err := parseConfig([]byte("# c\nvg { a = \"x\\\"y\" # c2\n n = -3 l = [\"p\", 7] s { } f = 1.5 }\ncontents = \"Text\"\x00garbage"))
	if err != nil {
		t.Fatal(err)
	}
	vg := root.sections["vg"]
	if vg.str("a") != `x"y` || vg.strs("l")[0] != "p" || vg.values["l"].list[1].num != 7 || vg.sections["s"] == nil || vg.str("f") != "1.5" || root.str("contents") != "Text" {
		t.Fatalf("%+v", vg)
	}
	if n, ok := vg.num("n"); !ok || n != -3 {
		t.Fatalf("n = %d %v", n, ok)
	}
	for _, bad := range []string{"a {", "}", "a = ", "a = \"x", "a = [1 2]", "a = [1,", "a b", "= 1", "a = [[1]]", strings.Repeat("a {", 40) + strings.Repeat("}", 40)} {
		if _, err := parseConfig([]byte(bad)); err == nil {
			t.Errorf("%q: want error", bad)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	pv := loadPV(f, "mda-two-lvs.bin.gz", "/dev/vda")
	text, err := readCommittedText(context.Background(), pv, "/dev/vda")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(text)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = lvFromMetadata(b, "vg1", "lv1")
	})
}

func FuzzPVHeaders(f *testing.F) {
	pv := loadPV(f, "mda-two-lvs.bin.gz", "/dev/vda")
	f.Add(pv.b[:headRead])
	f.Fuzz(func(t *testing.T, b []byte) {
		if l, err := parsePVLabel(b); err == nil {
			for _, m := range l.MDAs {
				if m.Offset < uint64(len(b)) {
					_, _, _ = parseMDAHeader(b[m.Offset:], m.Offset)
				}
			}
		}
	})
}
