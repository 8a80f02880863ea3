package lvm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
	"strconv"
	"strings"

	"github.com/sharedlvm/sharedlvm-operator/agent/executor"
)

// This file reads the VG metadata an LVM command committed, straight from a PV, the way LVM
// itself finds it. lvcreate cannot print the UUID of the LV it made (the name of its sanlock
// lease, which status and attachments key on), and a second LVM command to learn it costs
// as much again as the lvcreate (process start-up, device scan, the VG lock). The committed
// text is on disk the moment lvcreate returns; reading it is two small reads in-process.
//
// On-disk layout (lvm2 lib/label/label.h, lib/format_text/layout.h; little-endian):
//   - the label, in one of the first four 512-byte sectors: "LABELONE", its sector number,
//     a CRC of the rest of the sector, the offset of the pv_header, "LVM2 001";
//   - the pv_header: PV UUID (32 bytes), device size, then two lists of {offset, size}
//     (data areas, then metadata areas), each ended by {0, 0};
//   - at each metadata area's offset, a 512-byte mda_header: CRC, magic, version, its own
//     absolute offset, the area size, then raw_locn {offset, size, CRC, flags} of the
//     committed text;
//   - the text, at area start + raw_locn offset, in a ring buffer over the rest of the
//     area: a text that runs past the end continues right after the mda_header.

const (
	labelScanSectors = 4
	sectorSize       = 512
	mdaHeaderSize    = 512
	lvmInitialCRC    = 0xf597a6cf
	mdaMagic         = " LVM2 x[5A%r0N*>"
	rawLocnIgnored   = 1
	// headRead covers the label and, where LVM puts it by default (4 KiB), the first
	// metadata area's header: one read for both.
	headRead = 8192
)

// ErrNoDeviceReader means the executor cannot read devices in-process.
var ErrNoDeviceReader = errors.New("the executor cannot read devices in-process")

// lvmCRC is LVM's calc_crc: CRC-32 (IEEE, reflected) without the pre- and post-inversion.
func lvmCRC(initial uint32, p []byte) uint32 {
	return ^crc32.Update(^initial, crc32.IEEETable, p)
}

type diskArea struct{ Offset, Size uint64 }

// pvLabel is what the label of a PV says: its UUID and where its metadata areas are.
type pvLabel struct {
	UUID string
	MDAs []diskArea
}

// parsePVLabel finds and checks the LVM2 label in the first bytes of a device.
func parsePVLabel(b []byte) (*pvLabel, error) {
	le := binary.LittleEndian
	for s := 0; s < labelScanSectors && (s+1)*sectorSize <= len(b); s++ {
		sec := b[s*sectorSize : (s+1)*sectorSize]
		if string(sec[0:8]) != "LABELONE" || le.Uint64(sec[8:16]) != uint64(s) {
			continue
		}
		if got, want := lvmCRC(lvmInitialCRC, sec[20:]), le.Uint32(sec[16:20]); got != want {
			return nil, fmt.Errorf("label in sector %d: checksum %#x, expected %#x", s, got, want)
		}
		if t := string(sec[24:32]); t != "LVM2 001" {
			return nil, fmt.Errorf("label in sector %d is of type %q, not LVM2 001", s, t)
		}
		off := int(le.Uint32(sec[20:24]))
		if off < 32 || off+40 > sectorSize {
			return nil, fmt.Errorf("label in sector %d: pv_header offset %d out of the sector", s, off)
		}
		ph := sec[off:]
		p := 40
		// list reads one {offset, size} list, ended by {0, 0}.
		list := func(what string) ([]diskArea, error) {
			var out []diskArea
			for ; p+16 <= len(ph); p += 16 {
				a := diskArea{le.Uint64(ph[p : p+8]), le.Uint64(ph[p+8 : p+16])}
				if a.Offset == 0 {
					p += 16
					return out, nil
				}
				out = append(out, a)
			}
			return nil, fmt.Errorf("pv_header: unterminated %s area list", what)
		}
		if _, err := list("data"); err != nil {
			return nil, err
		}
		mdas, err := list("metadata")
		if err != nil {
			return nil, err
		}
		return &pvLabel{UUID: string(ph[0:32]), MDAs: mdas}, nil
	}
	return nil, errors.New("no LVM2 label in the first four sectors")
}

// rawLocn is where the committed metadata text is in its area.
type rawLocn struct {
	Offset, Size uint64
	CRC, Flags   uint32
}

// parseMDAHeader checks a metadata area header read from absolute offset at and returns
// the area size and the committed text's location.
func parseMDAHeader(b []byte, at uint64) (uint64, rawLocn, error) {
	le := binary.LittleEndian
	if len(b) < mdaHeaderSize {
		return 0, rawLocn{}, fmt.Errorf("mda_header: %d bytes", len(b))
	}
	b = b[:mdaHeaderSize]
	if got, want := lvmCRC(lvmInitialCRC, b[4:]), le.Uint32(b[0:4]); got != want {
		return 0, rawLocn{}, fmt.Errorf("mda_header at %d: checksum %#x, expected %#x", at, got, want)
	}
	if string(b[4:20]) != mdaMagic {
		return 0, rawLocn{}, fmt.Errorf("mda_header at %d: bad magic", at)
	}
	if v := le.Uint32(b[20:24]); v != 1 {
		return 0, rawLocn{}, fmt.Errorf("mda_header at %d: version %d", at, v)
	}
	if start := le.Uint64(b[24:32]); start != at {
		return 0, rawLocn{}, fmt.Errorf("mda_header at %d says it is at %d", at, start)
	}
	size := le.Uint64(b[32:40])
	rl := rawLocn{le.Uint64(b[40:48]), le.Uint64(b[48:56]), le.Uint32(b[56:60]), le.Uint32(b[60:64])}
	switch {
	case rl.Offset == 0 || rl.Size == 0:
		return 0, rawLocn{}, fmt.Errorf("mda_header at %d: no committed metadata", at)
	case rl.Flags&rawLocnIgnored != 0:
		return 0, rawLocn{}, fmt.Errorf("mda_header at %d: metadata area ignored (pvchange --metadataignore)", at)
	case size <= mdaHeaderSize || rl.Offset < mdaHeaderSize || rl.Offset >= size || rl.Size > size-mdaHeaderSize:
		return 0, rawLocn{}, fmt.Errorf("mda_header at %d: text %d+%d does not fit an area of %d", at, rl.Offset, rl.Size, size)
	}
	return size, rl, nil
}

// readCommittedText reads the committed metadata text of a device's first usable metadata
// area and checks it against the header's checksum.
func readCommittedText(ctx context.Context, r executor.DeviceReader, dev string) ([]byte, error) {
	head, err := r.ReadDevice(ctx, dev, 0, headRead)
	if err != nil {
		return nil, err
	}
	label, err := parsePVLabel(head)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dev, err)
	}
	var errs []error
	for _, mda := range label.MDAs {
		hdr := []byte(nil)
		if mda.Offset+mdaHeaderSize <= uint64(len(head)) {
			hdr = head[mda.Offset : mda.Offset+mdaHeaderSize]
		} else if hdr, err = r.ReadDevice(ctx, dev, int64(mda.Offset), mdaHeaderSize); err != nil {
			errs = append(errs, err)
			continue
		}
		size, rl, err := parseMDAHeader(hdr, mda.Offset)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		text, err := readRing(ctx, r, dev, mda.Offset, size, rl)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		return text, nil
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("%s: the PV has no metadata area", dev)
	}
	return nil, fmt.Errorf("%s: %w", dev, errors.Join(errs...))
}

// readRing reads the text rl locates in the ring of the area at start, of size bytes.
func readRing(ctx context.Context, r executor.DeviceReader, dev string, start, size uint64, rl rawLocn) ([]byte, error) {
	first := min(rl.Size, size-rl.Offset)
	text, err := r.ReadDevice(ctx, dev, int64(start+rl.Offset), int64(first))
	if err != nil {
		return nil, err
	}
	if rest := rl.Size - first; rest > 0 { // wrapped: continues after the header
		more, err := r.ReadDevice(ctx, dev, int64(start+mdaHeaderSize), int64(rest))
		if err != nil {
			return nil, err
		}
		text = append(text[:len(text):len(text)], more...)
	}
	if got := lvmCRC(lvmInitialCRC, text); got != rl.CRC {
		// Another host committed (and wrapped over this text) between the two reads.
		return nil, fmt.Errorf("metadata text at %d+%d: checksum %#x, expected %#x", start+rl.Offset, rl.Size, got, rl.CRC)
	}
	return text, nil
}

// ErrForeignCommit means the last committed metadata was written by another host: its PV
// device paths are that host's, which need not be this one's.
var ErrForeignCommit = errors.New("the VG metadata was last committed by another host")

// CommittedLV reads LV vg/lv from the VG metadata last committed on disk, in-process, from
// the first of devs (PVs of the VG) that has a readable metadata area. It is for the LV
// this node's own LVM command just made: it vouches only for metadata this node wrote
// last (else ErrForeignCommit), and knows nothing of activation, so the LV's activation
// fields are zero. It is nil, nil when the metadata has no such LV. Callers fall back to
// ReportLV on any error. "This node wrote last" is judged by LVM's creation_host (the
// host name), so nodes must have distinct host names; what another host's commit could
// change is only the device paths of the placement (UUID, lease, size and tags are the
// same on every host).
func (c *Client) CommittedLV(ctx context.Context, vg, lv string, devs []string) (*LV, error) {
	if err := validatePair(vg, lv); err != nil {
		return nil, err
	}
	r, ok := c.Exec.(executor.DeviceReader)
	if !ok {
		return nil, ErrNoDeviceReader
	}
	var errs []error
	for _, dev := range devs {
		if err := validateDevice(dev); err != nil {
			return nil, err
		}
		text, err := readCommittedText(ctx, r, dev)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		return lvFromMetadata(text, vg, lv)
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("no PV of VG %s to read its metadata from", vg)
	}
	return nil, errors.Join(errs...)
}

// lvFromMetadata finds LV lvName of VG vg in committed metadata text.
func lvFromMetadata(text []byte, vg, lvName string) (*LV, error) {
	root, err := parseConfig(text)
	if err != nil {
		return nil, err
	}
	vgs := root.order
	if len(vgs) != 1 || vgs[0] != vg {
		return nil, fmt.Errorf("the metadata is of VG %v, not %s", vgs, vg)
	}
	v := root.sections[vg]
	lvs := v.sections["logical_volumes"]
	if lvs == nil || lvs.sections[lvName] == nil {
		return nil, nil
	}
	l := lvs.sections[lvName]
	if writer, creator := root.str("creation_host"), l.str("creation_host"); writer == "" || writer != creator {
		return nil, fmt.Errorf("%w (%q; LV %s was created on %q)", ErrForeignCommit, writer, lvName, creator)
	}
	extentSize, ok := v.num("extent_size") // 512-byte sectors
	if !ok || extentSize <= 0 {
		return nil, errors.New("metadata: VG without extent_size")
	}
	pvDevice := map[string]string{}
	if pvs := v.sections["physical_volumes"]; pvs != nil {
		for name, pv := range pvs.sections {
			pvDevice[name] = pv.str("device")
		}
	}
	out := &LV{Name: lvName, UUID: l.str("id"), FullName: vg + "/" + lvName, Path: "/dev/" + vg + "/" + lvName,
		LockArgs: l.str("lock_args"), Tags: l.strs("tags")}
	sort.Strings(out.Tags) // as lvs lists them
	if out.UUID == "" {
		return nil, fmt.Errorf("metadata: LV %s without id", lvName)
	}
	var place []placement
	var extents int64
	for _, name := range l.order {
		if !strings.HasPrefix(name, "segment") {
			continue
		}
		s := l.sections[name]
		if t := s.str("type"); t != "striped" {
			return nil, fmt.Errorf("metadata: LV %s segment %s is %q; only striped segments are read here", lvName, name, t)
		}
		start, ok1 := s.num("start_extent")
		count, ok2 := s.num("extent_count")
		if !ok1 || !ok2 || count <= 0 {
			return nil, fmt.Errorf("metadata: LV %s segment %s without extents", lvName, name)
		}
		extents += count
		p := placement{start: start}
		stripes := s.values["stripes"].list
		for i := 0; i+1 < len(stripes); i += 2 {
			dev := pvDevice[stripes[i].str]
			if dev == "" {
				return nil, fmt.Errorf("metadata: LV %s segment %s on unknown PV %q", lvName, name, stripes[i].str)
			}
			p.devs = append(p.devs, dev)
		}
		if len(p.devs) == 0 {
			return nil, fmt.Errorf("metadata: LV %s segment %s without stripes", lvName, name)
		}
		place = append(place, p)
	}
	if len(place) == 0 {
		return nil, fmt.Errorf("metadata: LV %s without segments", lvName)
	}
	out.Size = extents * extentSize * sectorSize
	out.Devices = devicesInOrder(place)
	return out, nil
}

// cfgValue is a value of LVM's config format: a string, a number or a list of them.
type cfgValue struct {
	str   string
	num   int64
	isNum bool
	list  []cfgValue
}

// cfgSection is a section of LVM's config format (`name { ... }`).
type cfgSection struct {
	values   map[string]cfgValue
	sections map[string]*cfgSection
	order    []string // section names as written
}

func (s *cfgSection) str(key string) string { return s.values[key].str }

func (s *cfgSection) num(key string) (int64, bool) {
	v, ok := s.values[key]
	return v.num, ok && v.isNum
}

func (s *cfgSection) strs(key string) []string {
	var out []string
	for _, v := range s.values[key].list {
		out = append(out, v.str)
	}
	return out
}

// parseConfig parses LVM's config format, as lvm2 writes VG metadata: `key = value`,
// `name { ... }`, values "strings" (with \" and \\ escapes), integers, and [lists], `#`
// comments. It never panics on malformed input.
func parseConfig(text []byte) (*cfgSection, error) {
	if i := strings.IndexByte(string(text), 0); i >= 0 {
		text = text[:i] // the text is NUL-terminated on disk
	}
	p := &cfgParser{s: string(text)}
	root, err := p.section(0)
	if err != nil {
		return nil, fmt.Errorf("metadata text at byte %d: %w", p.i, err)
	}
	return root, nil
}

type cfgParser struct {
	s string
	i int
}

const maxConfigDepth = 16

func (p *cfgParser) skip() {
	for p.i < len(p.s) {
		switch c := p.s[p.i]; {
		case c == '#':
			for p.i < len(p.s) && p.s[p.i] != '\n' {
				p.i++
			}
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			p.i++
		default:
			return
		}
	}
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_-+./", c) >= 0
}

func (p *cfgParser) word() string {
	j := p.i
	for p.i < len(p.s) && isWordByte(p.s[p.i]) {
		p.i++
	}
	return p.s[j:p.i]
}

// section parses items up to the closing brace (or the end, at depth 0).
func (p *cfgParser) section(depth int) (*cfgSection, error) {
	if depth > maxConfigDepth {
		return nil, errors.New("sections nested too deep")
	}
	sec := &cfgSection{values: map[string]cfgValue{}, sections: map[string]*cfgSection{}}
	for {
		p.skip()
		if p.i >= len(p.s) {
			if depth > 0 {
				return nil, errors.New("unterminated section")
			}
			return sec, nil
		}
		if p.s[p.i] == '}' {
			if depth == 0 {
				return nil, errors.New("unbalanced '}'")
			}
			p.i++
			return sec, nil
		}
		name := p.word()
		if name == "" {
			return nil, fmt.Errorf("unexpected %q", p.s[p.i])
		}
		p.skip()
		if p.i >= len(p.s) {
			return nil, fmt.Errorf("%s: unexpected end", name)
		}
		switch p.s[p.i] {
		case '{':
			p.i++
			sub, err := p.section(depth + 1)
			if err != nil {
				return nil, err
			}
			if _, dup := sec.sections[name]; !dup {
				sec.order = append(sec.order, name)
			}
			sec.sections[name] = sub
		case '=':
			p.i++
			v, err := p.value(true)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			sec.values[name] = v
		default:
			return nil, fmt.Errorf("%s: expected '=' or '{', found %q", name, p.s[p.i])
		}
	}
}

func (p *cfgParser) value(listOK bool) (cfgValue, error) {
	p.skip()
	if p.i >= len(p.s) {
		return cfgValue{}, errors.New("missing value")
	}
	switch c := p.s[p.i]; {
	case c == '"':
		p.i++
		var b strings.Builder
		for p.i < len(p.s) {
			switch c := p.s[p.i]; c {
			case '"':
				p.i++
				return cfgValue{str: b.String()}, nil
			case '\\':
				if p.i+1 >= len(p.s) {
					return cfgValue{}, errors.New("unterminated string")
				}
				b.WriteByte(p.s[p.i+1])
				p.i += 2
			default:
				b.WriteByte(c)
				p.i++
			}
		}
		return cfgValue{}, errors.New("unterminated string")
	case c == '[' && listOK:
		p.i++
		var v cfgValue
		for {
			p.skip()
			if p.i < len(p.s) && p.s[p.i] == ']' {
				p.i++
				return v, nil
			}
			if len(v.list) > 0 {
				if p.i >= len(p.s) || p.s[p.i] != ',' {
					return cfgValue{}, errors.New("expected ',' in list")
				}
				p.i++
			}
			e, err := p.value(false)
			if err != nil {
				return cfgValue{}, err
			}
			v.list = append(v.list, e)
		}
	default:
		w := p.word()
		if w == "" {
			return cfgValue{}, fmt.Errorf("unexpected %q", c)
		}
		if n, err := strconv.ParseInt(w, 10, 64); err == nil {
			return cfgValue{str: w, num: n, isNum: true}, nil
		}
		return cfgValue{str: w}, nil // a float or a bare word: kept as text
	}
}
