package lvm

import (
	"bufio"
	"bytes"
	"strings"
)

// LockdMode is the lock lvmlockd holds on an LV on this host: "ex", "sh" or "un" (none).
type LockdMode string

const (
	LockdExclusive LockdMode = "ex"
	LockdShared    LockdMode = "sh"
	LockdUnlocked  LockdMode = "un"
)

// LockdVG is one VG in `lvmlockctl --info`.
type LockdVG struct {
	Name, LockType, UUID string
	// Lockspace is the lock manager's lockspace name ("lvm_<vg>").
	Lockspace string
	// LVs maps LV UUID to the mode held on this host.
	LVs map[string]LockdMode
}

// ParseLockdInfo parses `lvmlockctl --info`: this host's lockd view, which (unlike `lvs`)
// tells exclusive from shared.
func ParseLockdInfo(out []byte) []LockdVG {
	var vgs []LockdVG
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 2 && f[0] == "VG":
			vg := LockdVG{Name: f[1], LVs: map[string]LockdMode{}}
			for _, x := range f[2:] {
				if v, ok := strings.CutPrefix(x, "lock_type="); ok {
					vg.LockType = v
				} else {
					vg.UUID = x
				}
			}
			vgs = append(vgs, vg)
		case len(f) >= 3 && f[0] == "LS" && len(vgs) > 0:
			vgs[len(vgs)-1].Lockspace = f[2]
		case len(f) >= 4 && f[0] == "LK" && f[1] == "LV" && len(vgs) > 0:
			vgs[len(vgs)-1].LVs[f[3]] = LockdMode(f[2])
		}
	}
	return vgs
}
