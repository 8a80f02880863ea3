package lvm

import (
	"fmt"
	"strings"
)

// MaxNameLen is the longest VG or LV name the product passes to LVM. The API enforces the
// same limit at admission; the device-mapper name "<vg>-<lv>" (hyphens doubled) must fit
// in 127 bytes, which ValidateDMName checks for a pair.
const MaxNameLen = 63

var reservedLVSubstrings = []string{"_cdata", "_cmeta", "_corig", "_iorig", "_mimage", "_mlog",
	"_pmspare", "_rimage", "_rmeta", "_tdata", "_tmeta", "_vdata", "_vorigin", "_wcorig"}

func validateCommon(kind, name string) error {
	if name == "" {
		return fmt.Errorf("%s name is empty", kind)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%s name %q is longer than %d characters", kind, name, MaxNameLen)
	}
	if name[0] == '-' {
		return fmt.Errorf("%s name %q starts with '-'", kind, name)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("%s name %q is reserved", kind, name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("+_.-", c)) {
			return fmt.Errorf("%s name %q contains %q: only letters, digits and + _ . - are allowed", kind, name, c)
		}
	}
	return nil
}

// ValidateVGName checks a VG name against LVM's rules (lvm(8) VALID NAMES).
func ValidateVGName(name string) error { return validateCommon("VG", name) }

// ValidateLVName checks an LV name against LVM's rules, its reserved names and prefixes,
// and "lvmlock", the hidden lock LV of a shared VG.
func ValidateLVName(name string) error {
	if err := validateCommon("LV", name); err != nil {
		return err
	}
	if strings.HasPrefix(name, "snapshot") || strings.HasPrefix(name, "pvmove") {
		return fmt.Errorf("LV name %q starts with a prefix LVM reserves (snapshot, pvmove)", name)
	}
	if name == "lvmlock" {
		return fmt.Errorf("LV name %q is the hidden lock LV of a shared VG", name)
	}
	for _, s := range reservedLVSubstrings {
		if strings.Contains(name, s) {
			return fmt.Errorf("LV name %q contains LVM's internal suffix %q", name, s)
		}
	}
	return nil
}

// ValidateDMName checks that the device-mapper name of VG/LV fits (127 bytes, hyphens doubled,
// with room for a "-real"/"-cow" layer suffix LVM adds while snapshotting).
func ValidateDMName(vg, lv string) error {
	n := len(vg) + strings.Count(vg, "-") + 1 + len(lv) + strings.Count(lv, "-") + len("-real")
	if n > 127 {
		return fmt.Errorf("device-mapper name for %s/%s would be %d bytes, over 127: use shorter names", vg, lv, n)
	}
	return nil
}
