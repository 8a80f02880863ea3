package lvm

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strings"
)

// LockLVName is the hidden LV of a sanlock VG that holds its leases.
const LockLVName = "lvmlock"

// DMDevice is one device-mapper device of an LVM LV, as `dmsetup info` names it.
type DMDevice struct {
	Name, UUID, VG, LV, Layer string
}

// DMInfoArgs lists every device-mapper device with its LVM name components.
var DMInfoArgs = []string{"dmsetup", "info", "-c", "--noheadings", "--separator", "|", "-o", "name,uuid,vg_name,lv_name,lv_layer"}

// ParseDMInfo parses the output of DMInfoArgs. Devices not made by LVM (no "LVM-" UUID)
// are left out.
func ParseDMInfo(out []byte) ([]DMDevice, error) {
	var devs []DMDevice
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line == "No devices found" {
			continue
		}
		f := strings.Split(line, "|")
		if len(f) != 5 {
			return nil, fmt.Errorf("dmsetup info: %d fields in %q, want 5", len(f), line)
		}
		d := DMDevice{Name: f[0], UUID: f[1], VG: f[2], LV: f[3], Layer: f[4]}
		if d.Name == "" {
			return nil, fmt.Errorf("dmsetup info: a device without a name in %q", line)
		}
		if !strings.HasPrefix(d.UUID, "LVM-") {
			continue
		}
		devs = append(devs, d)
	}
	return devs, sc.Err()
}

// killTargets are the devices KillVG takes offline: the VG's top-level LVs (the devices
// users open), not their sub-layers, and not the lease LV, which lvmlockd needs to rejoin
// once the storage is back.
func killTargets(devs []DMDevice, vg string) []string {
	var names []string
	for _, d := range devs {
		if d.VG == vg && d.Layer == "" && d.LV != LockLVName {
			names = append(names, d.Name)
		}
	}
	return names
}

// KillVG forces the VG's LVs offline on this host after it lost the VG's lease storage:
// each top-level LV's device-mapper table is replaced by the error target, once the I/O in
// flight completes (`dmsetup wipe_table`), so that nothing on this host writes to the LVs
// once sanlock's leases expire and other hosts may take them. It is what lvmlockd(8) asks
// of lvm.conf's lvmlockctl_kill_command, run by `lvmlockctl --kill VG` from sanlock; on
// success lvmlockctl drops the VG's locks, and no watchdog reset is needed. It returns the
// devices it took offline, and fails unless every one of them now has the error target.
func (c *Client) KillVG(ctx context.Context, vg string) ([]string, error) {
	if err := ValidateVGName(vg); err != nil {
		return nil, &Error{Kind: KindInvalidName, Err: err}
	}
	res, err := c.run(ctx, DMInfoArgs)
	if err != nil {
		return nil, err
	}
	devs, err := ParseDMInfo(res.Stdout)
	if err != nil {
		return nil, err
	}
	names := killTargets(devs, vg)
	var failed []string
	for _, n := range names {
		if _, err := c.run(ctx, []string{"dmsetup", "wipe_table", n}); err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", n, err))
			continue
		}
		res, err := c.run(ctx, []string{"dmsetup", "table", n})
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", n, err))
			continue
		}
		if !onlyErrorTarget(res.Stdout) {
			failed = append(failed, fmt.Sprintf("%s: table is still %q", n, strings.TrimSpace(string(res.Stdout))))
		}
	}
	if len(failed) > 0 {
		return names, fmt.Errorf("VG %s: %d of %d LV(s) not taken offline: %s", vg, len(failed), len(names), strings.Join(failed, "; "))
	}
	return names, nil
}

// DMName is the device-mapper name LVM gives VG/LV (hyphens doubled, joined by one).
func DMName(vg, lv string) string {
	return strings.ReplaceAll(vg, "-", "--") + "-" + strings.ReplaceAll(lv, "-", "--")
}

// TakenOffline reports whether the LV's device on this host has only the error target: it
// was taken offline by KillVG (or by hand the same way), and nothing can use it.
func (c *Client) TakenOffline(ctx context.Context, vg, lv string) (bool, error) {
	if err := validatePair(vg, lv); err != nil {
		return false, err
	}
	res, err := c.run(ctx, []string{"dmsetup", "table", DMName(vg, lv)})
	if err != nil {
		return false, err
	}
	return onlyErrorTarget(res.Stdout), nil
}

// OfflineArgs lists the error-target segments of every device-mapper device, one line
// each, "NAME: START LENGTH error" (the name is printed when there are several devices).
var OfflineArgs = []string{"dmsetup", "table", "--target", "error"}

// ParseOffline returns the names of the devices in OfflineArgs' output.
func ParseOffline(out []byte) map[string]bool {
	names := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(l), ": ")
		if !ok || name == "" {
			continue
		}
		if f := strings.Fields(rest); len(f) >= 3 && f[2] == "error" {
			names[name] = true
		}
	}
	return names
}

// OfflineDevices returns the device-mapper devices on this host with an error-target
// segment (one command for all): what KillVG leaves. LVM's own LVs never have one.
func (c *Client) OfflineDevices(ctx context.Context) (map[string]bool, error) {
	res, err := c.run(ctx, OfflineArgs)
	if err != nil {
		return nil, err
	}
	return ParseOffline(res.Stdout), nil
}

// onlyErrorTarget reports whether a `dmsetup table NAME` output has only error segments
// ("START LENGTH error").
func onlyErrorTarget(out []byte) bool {
	lines := 0
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 || f[2] != "error" {
			return false
		}
		lines++
	}
	return lines > 0
}
