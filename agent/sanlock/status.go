// Package sanlock wraps the sanlock client commands the agent needs (`sanlock client
// status`, `sanlock client host_status`) and parses their output. No Kubernetes imports.
package sanlock

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Lockspace is an `s` line: a lockspace this host has joined (or is joining/leaving).
type Lockspace struct {
	// Name, for LVM "lvm_<vg>".
	Name string
	// HostID this host uses in the lockspace.
	HostID int
	// Path of the lease area, for LVM /dev/mapper/<vg>-lvmlock.
	Path string
	// Offset of the lockspace's delta leases in Path.
	Offset int64
	// Adding is true while the join is in progress ("ADD"), Removing while leaving ("REM").
	Adding, Removing bool
}

// VG returns the LVM VG name of an lvmlockd lockspace ("lvm_<vg>"), or "".
func (l Lockspace) VG() string { return cut(l.Name, "lvm_") }

func cut(s, prefix string) string {
	if strings.HasPrefix(s, prefix) {
		return s[len(prefix):]
	}
	return ""
}

// Resource is an `r` line: a lease this host holds. lvmlockd names LV leases by LV UUID.
type Resource struct {
	// Lockspace the lease belongs to.
	Lockspace string
	// Name of the resource: the LV UUID for LV locks ("VGLK"/"GLLK" for VG/global locks).
	Name string
	// Path and Offset of the lease on disk.
	Path   string
	Offset int64
	// Shared is true for a shared lease (":SH"); otherwise exclusive.
	Shared bool
	// Version is the lease version of an exclusive lease (0 for shared).
	Version int64
	// PID of the process holding it (lvmlockd).
	PID int
	// Orphan: its holder died and sanlock kept it (a persistent lease, "ORPHAN"): nothing
	// on this host serves it until a process adopts or releases it.
	Orphan bool
}

// Status is parsed `sanlock client status`.
type Status struct {
	// Daemon is the daemon's name (host name or UUID).
	Daemon     string
	Lockspaces []Lockspace
	Resources  []Resource
}

// Lockspace returns the lockspace of a VG, if joined.
func (s *Status) Lockspace(vg string) (Lockspace, bool) {
	for _, l := range s.Lockspaces {
		if l.Name == "lvm_"+vg {
			return l, true
		}
	}
	return Lockspace{}, false
}

// Lease returns the lease held on an LV (by UUID) in a VG's lockspace, if any.
func (s *Status) Lease(vg, lvUUID string) (Resource, bool) {
	for _, r := range s.Resources {
		if r.Lockspace == "lvm_"+vg && r.Name == lvUUID {
			return r, true
		}
	}
	return Resource{}, false
}

// ParseStatus parses the output of `sanlock client status`. Unknown line kinds are ignored
// (sanlock adds some with -D); malformed s/r lines are errors, never panics.
func ParseStatus(out []byte) (*Status, error) {
	st := &Status{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		kind, rest, _ := strings.Cut(line, " ")
		var err error
		switch kind {
		case "daemon":
			st.Daemon = rest
		case "s":
			var ls Lockspace
			ls, err = parseLockspace(rest)
			st.Lockspaces = append(st.Lockspaces, ls)
		case "r":
			var r Resource
			r, err = parseResource(rest)
			st.Resources = append(st.Resources, r)
		}
		if err != nil {
			return nil, fmt.Errorf("sanlock status line %d %q: %w", n, line, err)
		}
	}
	return st, sc.Err()
}

// parseLockspace parses "lvm_vg1:1:/dev/mapper/vg1-lvmlock:0 [ADD|REM]".
func parseLockspace(s string) (Lockspace, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return Lockspace{}, fmt.Errorf("empty lockspace")
	}
	parts := strings.Split(fields[0], ":")
	if len(parts) < 4 {
		return Lockspace{}, fmt.Errorf("want name:host_id:path:offset")
	}
	hostID, err := strconv.Atoi(parts[1])
	if err != nil {
		return Lockspace{}, fmt.Errorf("host_id: %w", err)
	}
	// The path itself may contain ':' (sanlock escapes it as "\:" but be liberal).
	path := strings.Join(parts[2:len(parts)-1], ":")
	off, err := strconv.ParseInt(parts[len(parts)-1], 10, 64)
	if err != nil {
		return Lockspace{}, fmt.Errorf("offset: %w", err)
	}
	ls := Lockspace{Name: parts[0], HostID: hostID, Path: path, Offset: off}
	for _, f := range fields[1:] {
		switch f {
		case "ADD":
			ls.Adding = true
		case "REM":
			ls.Removing = true
		}
	}
	return ls, nil
}

// parseResource parses "lvm_vg1:<uuid>:/dev/mapper/vg1-lvmlock:70254592:3 p 122" where the
// last colon field is the lease version, or "SH" for a shared lease.
func parseResource(s string) (Resource, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return Resource{}, fmt.Errorf("empty resource")
	}
	parts := strings.Split(fields[0], ":")
	if len(parts) < 5 {
		return Resource{}, fmt.Errorf("want lockspace:name:path:offset:version")
	}
	r := Resource{Lockspace: parts[0], Name: parts[1], Path: strings.Join(parts[2:len(parts)-2], ":")}
	var err error
	if r.Offset, err = strconv.ParseInt(parts[len(parts)-2], 10, 64); err != nil {
		return Resource{}, fmt.Errorf("offset: %w", err)
	}
	if v := parts[len(parts)-1]; v == "SH" {
		r.Shared = true
	} else if r.Version, err = strconv.ParseInt(v, 10, 64); err != nil {
		return Resource{}, fmt.Errorf("lease version: %w", err)
	}
	for i := 1; i < len(fields); i++ {
		if fields[i] == "ORPHAN" {
			r.Orphan = true
		}
		if fields[i] == "p" && i+1 < len(fields) {
			if r.PID, err = strconv.Atoi(fields[i+1]); err != nil {
				return Resource{}, fmt.Errorf("pid: %w", err)
			}
		}
	}
	return r, nil
}
