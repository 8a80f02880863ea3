package agent

import (
	"reflect"
	"testing"

	"github.com/sharedlvm/sharedlvm-operator/agent/lvm"
	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

func TestPlanMove(t *testing.T) {
	vgPVs := []v1.DevicePath{"/dev/vda", "/dev/vdb", "/dev/vdc"}
	cases := []struct {
		name             string
		spec             []v1.DevicePath
		devices          []string
		targets, sources []string
		bad              bool
	}{
		{"onto one PV from another", []v1.DevicePath{"/dev/vdb"}, []string{"/dev/vda"}, []string{"/dev/vdb"}, []string{"/dev/vda"}, false},
		{"already there: nothing to move", []v1.DevicePath{"/dev/vdb"}, []string{"/dev/vdb"}, []string{"/dev/vdb"}, nil, false},
		{"spread over two, one to move", []v1.DevicePath{"/dev/vdb", "/dev/vdc"}, []string{"/dev/vda", "/dev/vdc"}, []string{"/dev/vdb", "/dev/vdc"}, []string{"/dev/vda"}, false},
		{"pvmove's temporary LV is not a source", []v1.DevicePath{"/dev/vdb"}, []string{"pvmove0"}, []string{"/dev/vdb"}, nil, false},
		{"a PV outside the VolumeGroup is refused", []v1.DevicePath{"/dev/sdz"}, []string{"/dev/vda"}, nil, nil, true},
	}
	for _, c := range cases {
		targets, sources, err := PlanMove("vg", vgPVs, c.spec, c.devices)
		if c.bad {
			if lvm.KindOf(err) != lvm.KindInvalidName {
				t.Errorf("%s: error %v, want an invalid-name error", c.name, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(targets, c.targets) || !reflect.DeepEqual(sources, c.sources) {
			t.Errorf("%s: targets %v sources %v err %v, want %v %v", c.name, targets, sources, err, c.targets, c.sources)
		}
	}
}
