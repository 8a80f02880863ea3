package lvm

import "testing"

func TestWhyNotActivated(t *testing.T) {
	err := &Error{Argv: []string{"lvchange", "-aey", "vg1/lv1", "vg1/lv10"}, Kind: KindLockHeldByOther,
		Stderr: "LV locked by other host: vg1/lv10; Failed to lock logical volume vg1/lv10.; LV locked by other host: vg1/lv1"}
	for lv, want := range map[string]string{
		"lv10": "LV locked by other host: vg1/lv10",
		"lv1":  "LV locked by other host: vg1/lv1",
		"lv2":  "not active after lvchange, which failed: LV locked by other host: vg1/lv10",
	} {
		if got := WhyNotActivated(err, "vg1", lv); got != want {
			t.Errorf("%s: got %q, want %q", lv, got, want)
		}
	}
}
