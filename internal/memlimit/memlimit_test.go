package memlimit

import "testing"

func TestDecide(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want int64
	}{
		{"chart default 300Mi", map[string]string{Env: "314572800"}, 283115520},
		{"explicit GOMEMLIMIT wins", map[string]string{Env: "314572800", "GOMEMLIMIT": "150MiB"}, 0},
		{"unset", map[string]string{}, 0},
		{"not a number", map[string]string{Env: "300Mi"}, 0},
		{"zero", map[string]string{Env: "0"}, 0},
		{"negative", map[string]string{Env: "-5"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, why := Decide(func(k string) string { return tc.env[k] })
			if got != tc.want || why == "" {
				t.Fatalf("Decide = %d (%s), want %d", got, why, tc.want)
			}
		})
	}
}
