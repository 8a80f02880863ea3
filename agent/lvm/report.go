package lvm

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// VG is one volume group as the report shows it. Sizes are bytes.
type VG struct {
	Name, UUID       string
	Size, Free       int64
	ExtentSize       int64
	ExtentCount      int64
	FreeExtents      int64
	LVCount, PVCount int
	LockType         string
	LockArgs         string
	Tags             []string
	MissingPVs       int
	Shared           bool
	PVs              []PV
	LVs              []LV
}

// PV is one physical volume.
type PV struct {
	Name, UUID       string
	Size, Free, Used int64
	Missing          bool
	VG               string
}

// LV is one logical volume. Active* come from this host's device-mapper view; in a shared VG
// they do not say which lock mode is held (`lvs` reports "active exclusively" after -asy):
// read the mode from lvmlockctl or sanlock instead.
type LV struct {
	Name, UUID, FullName, Path string
	Size                       int64
	Tags                       []string
	// LockArgs is lvmlockd's lock argument; for sanlock "1.0.0:<lease offset>".
	LockArgs                         string
	Active                           bool
	ActiveLocally, ActiveRemotely    bool
	ActiveExclusivelyAsReportedByLVM bool
	Attr, Origin, Role, Layout       string
	MovePV                           string
	CopyPercent                      string
	// Devices are the PVs holding the LV's extents, in segment order, without extent offsets.
	// While a pvmove runs they include the hidden pvmove LV ("pvmove0").
	Devices []string
}

// Moving reports whether a pvmove of this LV is in progress (its segments map to pvmove0).
func (l LV) Moving() bool {
	for _, d := range l.Devices {
		if strings.HasPrefix(d, "pvmove") {
			return true
		}
	}
	return l.MovePV != ""
}

// HasTag reports whether the LV carries the tag.
func (l LV) HasTag(tag string) bool {
	for _, t := range l.Tags {
		if t == tag {
			return true
		}
	}
	return false
}

// LeaseOffset is the sanlock lease offset from the LV's lock args, or -1.
func (l LV) LeaseOffset() int64 {
	_, off, ok := strings.Cut(l.LockArgs, ":")
	if !ok {
		return -1
	}
	n, err := strconv.ParseInt(off, 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// Report is the parsed output of one `lvm fullreport`.
type Report struct {
	VGs []VG
}

// VG returns the named VG.
func (r *Report) VG(name string) (*VG, bool) {
	for i := range r.VGs {
		if r.VGs[i].Name == name {
			return &r.VGs[i], true
		}
	}
	return nil, false
}

// LV returns an LV of the VG by name. A nil VG (not in the report) has none.
func (v *VG) LV(name string) (*LV, bool) {
	if v == nil {
		return nil, false
	}
	for i := range v.LVs {
		if v.LVs[i].Name == name {
			return &v.LVs[i], true
		}
	}
	return nil, false
}

// LVsWithTag returns the LVs carrying a tag.
func (v *VG) LVsWithTag(tag string) []LV {
	if v == nil {
		return nil
	}
	var out []LV
	for _, l := range v.LVs {
		if l.HasTag(tag) {
			out = append(out, l)
		}
	}
	return out
}

type rawReport struct {
	Report []struct {
		VG    []map[string]string `json:"vg"`
		PV    []map[string]string `json:"pv"`
		LV    []map[string]string `json:"lv"`
		Seg   []map[string]string `json:"seg"`
		PVSeg []map[string]string `json:"pvseg"`
	} `json:"report"`
}

type fieldReader struct {
	m   map[string]string
	err error
}

func (f *fieldReader) str(k string) string { return f.m[k] }

func (f *fieldReader) int(k string) int64 {
	v := f.m[k]
	if v == "" || f.err != nil {
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		f.err = fmt.Errorf("field %s=%q: %w", k, v, err)
	}
	return n
}

func (f *fieldReader) bool(k string) bool { return f.m[k] == "1" }

func tags(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

var extentSuffix = regexp.MustCompile(`\(\d+\)$`)

// ParseFullReport parses `lvm fullreport --reportformat json --units b --nosuffix --binary`
// with the fields of FullReportArgs. It never panics on malformed input.
func ParseFullReport(out []byte) (*Report, error) {
	var raw rawReport
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("parsing lvm report: %w", err)
	}
	rep := &Report{}
	for _, r := range raw.Report {
		if len(r.VG) == 0 {
			continue
		}
		f := &fieldReader{m: r.VG[0]}
		vg := VG{
			Name: f.str("vg_name"), UUID: f.str("vg_uuid"), Size: f.int("vg_size"), Free: f.int("vg_free"),
			ExtentSize: f.int("vg_extent_size"), ExtentCount: f.int("vg_extent_count"), FreeExtents: f.int("vg_free_count"),
			LVCount: int(f.int("lv_count")), PVCount: int(f.int("pv_count")), LockType: f.str("vg_lock_type"),
			LockArgs: f.str("vg_lock_args"), Tags: tags(f.str("vg_tags")), MissingPVs: int(f.int("vg_missing_pv_count")),
			Shared: f.bool("vg_shared"),
		}
		if f.err != nil {
			return nil, f.err
		}
		for _, m := range r.PV {
			f := &fieldReader{m: m}
			pv := PV{Name: f.str("pv_name"), UUID: f.str("pv_uuid"), Size: f.int("pv_size"), Free: f.int("pv_free"),
				Used: f.int("pv_used"), Missing: f.bool("pv_missing"), VG: f.str("vg_name")}
			if f.err != nil {
				return nil, f.err
			}
			vg.PVs = append(vg.PVs, pv)
		}
		devices := map[string][]string{}
		type seg struct {
			start int64
			devs  []string
		}
		segs := map[string][]seg{}
		for _, m := range r.Seg {
			f := &fieldReader{m: m}
			s := seg{start: f.int("seg_start_pe")}
			if f.err != nil {
				return nil, f.err
			}
			for _, d := range strings.Split(f.str("devices"), ",") {
				if d = extentSuffix.ReplaceAllString(strings.TrimSpace(d), ""); d != "" {
					s.devs = append(s.devs, d)
				}
			}
			segs[f.str("lv_uuid")] = append(segs[f.str("lv_uuid")], s)
		}
		for uuid, ss := range segs {
			sort.Slice(ss, func(i, j int) bool { return ss[i].start < ss[j].start })
			seen := map[string]bool{}
			for _, s := range ss {
				for _, d := range s.devs {
					if !seen[d] {
						seen[d] = true
						devices[uuid] = append(devices[uuid], d)
					}
				}
			}
		}
		for _, m := range r.LV {
			f := &fieldReader{m: m}
			lv := LV{
				Name: f.str("lv_name"), UUID: f.str("lv_uuid"), FullName: f.str("lv_full_name"), Path: f.str("lv_path"),
				Size: f.int("lv_size"), Tags: tags(f.str("lv_tags")), LockArgs: f.str("lv_lockargs"),
				Active: f.str("lv_active") != "" && f.str("lv_active") != "0", ActiveLocally: f.bool("lv_active_locally"),
				ActiveRemotely: f.bool("lv_active_remotely"), ActiveExclusivelyAsReportedByLVM: f.bool("lv_active_exclusively"),
				Attr: f.str("lv_attr"), Origin: f.str("origin"), Role: f.str("lv_role"), Layout: f.str("lv_layout"),
				MovePV: f.str("move_pv"), CopyPercent: f.str("copy_percent"), Devices: devices[f.str("lv_uuid")],
			}
			if f.err != nil {
				return nil, f.err
			}
			vg.LVs = append(vg.LVs, lv)
		}
		rep.VGs = append(rep.VGs, vg)
	}
	return rep, nil
}
