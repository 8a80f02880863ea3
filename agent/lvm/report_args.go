package lvm

// Fields read by the one report per cycle. Sizes are in bytes (--units b --nosuffix) and
// binary fields are 0/1 (--binary), so nothing is parsed from human-oriented text.
var (
	vgFields    = "vg_name,vg_uuid,vg_size,vg_free,vg_extent_size,vg_extent_count,vg_free_count,lv_count,pv_count,vg_lock_type,vg_lock_args,vg_tags,vg_missing_pv_count,vg_shared"
	pvFields    = "pv_name,pv_uuid,pv_size,pv_free,pv_used,pv_missing,vg_name"
	lvFields    = "lv_name,lv_uuid,lv_full_name,lv_path,lv_size,lv_tags,lv_lock_args,lv_active,lv_active_locally,lv_active_remotely,lv_active_exclusively,lv_attr,origin,lv_role,move_pv,copy_percent,lv_layout"
	segFields   = "lv_uuid,seg_start_pe,seg_size_pe,devices"
	pvsegFields = "pv_uuid,pvseg_start,pvseg_size,lv_uuid"
)

// FullReportArgs is the argv of the single `lvm fullreport` that reads VGs, PVs, LVs and
// their segments (PV placement) in one command.
func FullReportArgs(vgs ...string) []string {
	args := []string{"lvm", "fullreport", "--reportformat", "json", "--units", "b", "--nosuffix", "--binary",
		"--configreport", "vg", "-o", vgFields,
		"--configreport", "pv", "-o", pvFields,
		"--configreport", "lv", "-o", lvFields,
		"--configreport", "seg", "-o", segFields,
		"--configreport", "pvseg", "-o", pvsegFields}
	return append(args, vgs...)
}

// LVReportArgs is the argv of a report of some LVs of a VG: the full report's LV fields and
// their segments' placement, one row per segment. Operations on one volume read this
// instead of the whole VG, so their cost does not grow with the number of LVs.
func LVReportArgs(vg string, lvs ...string) []string {
	args := []string{"lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "--binary",
		"-o", lvFields + ",seg_start_pe,devices"}
	for _, lv := range lvs {
		args = append(args, vg+"/"+lv)
	}
	return args
}
