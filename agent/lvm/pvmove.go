package lvm

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// parsePVMoveProgress reads `lvs -a --reportformat json -o lv_name,copy_percent,move_pv,devices`:
// while lv is being moved its devices name a hidden "[pvmoveN]" LV whose copy_percent is the
// progress. No pvmove LV referenced means no move is running.
func parsePVMoveProgress(out []byte, lv string) (float64, bool, error) {
	var raw struct {
		Report []struct {
			LV []map[string]string `json:"lv"`
		} `json:"report"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return 0, false, fmt.Errorf("parsing lvs: %w", err)
	}
	rows := map[string]map[string]string{}
	for _, r := range raw.Report {
		for _, row := range r.LV {
			rows[strings.Trim(row["lv_name"], "[]")] = row
		}
	}
	row, ok := rows[lv]
	if !ok {
		return 0, false, &Error{Kind: KindLVNotFound, Err: fmt.Errorf("LV %s not in report", lv)}
	}
	for _, d := range strings.Split(row["devices"], ",") {
		name := strings.TrimSpace(d)
		if i := strings.IndexByte(name, '('); i >= 0 {
			name = name[:i]
		}
		if !strings.HasPrefix(name, "pvmove") {
			continue
		}
		mv, ok := rows[name]
		if !ok {
			return 0, true, nil
		}
		pct, err := strconv.ParseFloat(strings.TrimSpace(mv["copy_percent"]), 64)
		if err != nil {
			return 0, true, nil // just started: no percentage yet
		}
		return pct, true, nil
	}
	return 100, false, nil
}
