package lvm

import (
	"encoding/json"
	"errors"
	"fmt"
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

// Report rows as LVM prints them with --reportformat json: every value is a string. Typed
// rows decode several times faster than maps, which matters for a 10,000-LV VG that every
// node reports each cycle.
type vgRow struct {
	Name        string `json:"vg_name"`
	UUID        string `json:"vg_uuid"`
	Size        string `json:"vg_size"`
	Free        string `json:"vg_free"`
	ExtentSize  string `json:"vg_extent_size"`
	ExtentCount string `json:"vg_extent_count"`
	FreeCount   string `json:"vg_free_count"`
	LVCount     string `json:"lv_count"`
	PVCount     string `json:"pv_count"`
	LockType    string `json:"vg_lock_type"`
	LockArgs    string `json:"vg_lock_args"`
	Tags        string `json:"vg_tags"`
	MissingPVs  string `json:"vg_missing_pv_count"`
	Shared      string `json:"vg_shared"`
}

type pvRow struct {
	Name    string `json:"pv_name"`
	UUID    string `json:"pv_uuid"`
	Size    string `json:"pv_size"`
	Free    string `json:"pv_free"`
	Used    string `json:"pv_used"`
	Missing string `json:"pv_missing"`
	VG      string `json:"vg_name"`
}

type lvRow struct {
	Name              string `json:"lv_name"`
	UUID              string `json:"lv_uuid"`
	FullName          string `json:"lv_full_name"`
	Path              string `json:"lv_path"`
	Size              string `json:"lv_size"`
	Tags              string `json:"lv_tags"`
	LockArgs          string `json:"lv_lockargs"`
	Active            string `json:"lv_active"`
	ActiveLocally     string `json:"lv_active_locally"`
	ActiveRemotely    string `json:"lv_active_remotely"`
	ActiveExclusively string `json:"lv_active_exclusively"`
	Attr              string `json:"lv_attr"`
	Origin            string `json:"origin"`
	Role              string `json:"lv_role"`
	MovePV            string `json:"move_pv"`
	CopyPercent       string `json:"copy_percent"`
	Layout            string `json:"lv_layout"`
	// Segment fields: in a one-LV `lvs` (LVReportArgs) they share the LV's row.
	SegStartPE string `json:"seg_start_pe"`
	Devices    string `json:"devices"`
}

type segRow struct {
	LVUUID     string `json:"lv_uuid"`
	SegStartPE string `json:"seg_start_pe"`
	Devices    string `json:"devices"`
}

type rawReport struct {
	Report []struct {
		VG  []vgRow  `json:"vg"`
		PV  []pvRow  `json:"pv"`
		LV  []lvRow  `json:"lv"`
		Seg []segRow `json:"seg"`
	} `json:"report"`
}

// numbers parses report values, keeping the first error with the field it came from.
type numbers struct{ err error }

func (n *numbers) int(field, v string) int64 {
	if v == "" || n.err != nil {
		return 0
	}
	i, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		n.err = fmt.Errorf("field %s=%q: %w", field, v, err)
	}
	return i
}

func flag(v string) bool { return v == "1" }

func tags(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// stripExtent drops the "(N)" extent offset from a devices entry ("/dev/vdb(64)").
func stripExtent(d string) string {
	i := strings.LastIndexByte(d, '(')
	if i < 0 || !strings.HasSuffix(d, ")") || i+2 > len(d)-1 {
		return d
	}
	for _, c := range d[i+1 : len(d)-1] {
		if c < '0' || c > '9' {
			return d
		}
	}
	return d[:i]
}

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
		n := &numbers{}
		g := r.VG[0]
		if g.Name == "" {
			// A row LVM always names: anything else is not its report (fail closed).
			return nil, errors.New("parsing lvm report: a VG row without vg_name")
		}
		vg := VG{
			Name: g.Name, UUID: g.UUID, Size: n.int("vg_size", g.Size), Free: n.int("vg_free", g.Free),
			ExtentSize: n.int("vg_extent_size", g.ExtentSize), ExtentCount: n.int("vg_extent_count", g.ExtentCount),
			FreeExtents: n.int("vg_free_count", g.FreeCount), LVCount: int(n.int("lv_count", g.LVCount)),
			PVCount: int(n.int("pv_count", g.PVCount)), LockType: g.LockType, LockArgs: g.LockArgs, Tags: tags(g.Tags),
			MissingPVs: int(n.int("vg_missing_pv_count", g.MissingPVs)), Shared: flag(g.Shared),
		}
		for _, p := range r.PV {
			if p.Name == "" {
				return nil, fmt.Errorf("parsing lvm report: a PV row of VG %s without pv_name", g.Name)
			}
			vg.PVs = append(vg.PVs, PV{Name: p.Name, UUID: p.UUID, Size: n.int("pv_size", p.Size), Free: n.int("pv_free", p.Free),
				Used: n.int("pv_used", p.Used), Missing: flag(p.Missing), VG: p.VG})
		}
		segs := map[string][]placement{}
		for _, sg := range r.Seg {
			segs[sg.LVUUID] = append(segs[sg.LVUUID], placement{start: n.int("seg_start_pe", sg.SegStartPE), devs: segDevices(sg.Devices)})
		}
		vg.LVs = make([]LV, 0, len(r.LV))
		for i := range r.LV {
			lv := lvFromRow(n, &r.LV[i])
			if lv.Name == "" || lv.UUID == "" {
				return nil, fmt.Errorf("parsing lvm report: an LV row of VG %s without lv_name or lv_uuid", g.Name)
			}
			lv.Devices = devicesInOrder(segs[lv.UUID])
			vg.LVs = append(vg.LVs, lv)
		}
		if n.err != nil {
			return nil, n.err
		}
		rep.VGs = append(rep.VGs, vg)
	}
	return rep, nil
}

// placement is one segment's start extent and PVs.
type placement struct {
	start int64
	devs  []string
}

// devicesInOrder are the PVs of an LV's segments in segment order, each once.
func devicesInOrder(ss []placement) []string {
	if len(ss) == 1 {
		return ss[0].devs
	}
	sort.Slice(ss, func(i, j int) bool { return ss[i].start < ss[j].start })
	var out []string
	seen := map[string]bool{}
	for _, s := range ss {
		for _, d := range s.devs {
			if !seen[d] {
				seen[d] = true
				out = append(out, d)
			}
		}
	}
	return out
}

// lvFromRow reads the LV fields of one report row (lvFields).
func lvFromRow(n *numbers, r *lvRow) LV {
	return LV{
		Name: r.Name, UUID: r.UUID, FullName: r.FullName, Path: r.Path,
		Size: n.int("lv_size", r.Size), Tags: tags(r.Tags), LockArgs: r.LockArgs,
		Active: r.Active != "" && r.Active != "0", ActiveLocally: flag(r.ActiveLocally),
		ActiveRemotely: flag(r.ActiveRemotely), ActiveExclusivelyAsReportedByLVM: flag(r.ActiveExclusively),
		Attr: r.Attr, Origin: r.Origin, Role: r.Role, Layout: r.Layout,
		MovePV: r.MovePV, CopyPercent: r.CopyPercent,
	}
}

// segDevices are the PVs of one segment's "devices" field, without extent offsets.
func segDevices(field string) []string {
	var out []string
	for _, d := range strings.Split(field, ",") {
		if d = strings.TrimSpace(d); d != "" {
			out = append(out, stripExtent(d))
		}
	}
	return out
}

// ParseLVReport parses the `lvs` of LVReportArgs for one LV: one row per segment. No row
// (the LV does not exist) is nil. It never panics on malformed input.
func ParseLVReport(out []byte) (*LV, error) {
	lvs, err := ParseLVsReport(out)
	if err != nil || len(lvs) == 0 {
		return nil, err
	}
	if len(lvs) > 1 {
		return nil, fmt.Errorf("lvs report: %d LVs where one was asked for", len(lvs))
	}
	for _, lv := range lvs {
		return lv, nil
	}
	return nil, nil
}

// ParseLVsReport parses the `lvs` of LVReportArgs: one row per segment of each LV, by LV
// name. It never panics on malformed input.
func ParseLVsReport(out []byte) (map[string]*LV, error) {
	var raw struct {
		Report []struct {
			LV []lvRow `json:"lv"`
		} `json:"report"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("parsing lvs report: %w", err)
	}
	n := &numbers{}
	lvs := map[string]*LV{}
	segs := map[string][]placement{}
	for _, r := range raw.Report {
		for i := range r.LV {
			row := &r.LV[i]
			lv, seen := lvs[row.Name]
			if !seen {
				l := lvFromRow(n, row)
				lv = &l
				lvs[row.Name] = lv
			} else if lv.UUID != row.UUID {
				return nil, fmt.Errorf("lvs report: two LVs named %s (%s, %s)", row.Name, lv.UUID, row.UUID)
			}
			segs[row.Name] = append(segs[row.Name], placement{start: n.int("seg_start_pe", row.SegStartPE), devs: segDevices(row.Devices)})
		}
	}
	if n.err != nil {
		return nil, n.err
	}
	for name, lv := range lvs {
		lv.Devices = devicesInOrder(segs[name])
	}
	return lvs, nil
}
