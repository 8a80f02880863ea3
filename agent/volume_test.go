package agent

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

func TestPlanVolumeWork(t *testing.T) {
	gi, two := resource.MustParse("1Gi"), resource.MustParse("2Gi")
	vol := func(mut func(*v1.SharedVolume)) *v1.SharedVolume {
		v := &v1.SharedVolume{Spec: v1.SharedVolumeSpec{VolumeGroup: "vg1", Size: gi},
			Status: v1.SharedVolumeStatus{ExecutorNode: "n1", LVUUID: "u", VolumeGroup: "vg1", AllocatedSize: &gi}}
		mut(v)
		return v
	}
	now := metav1.Now()
	cases := []struct {
		name string
		v    *v1.SharedVolume
		want VolumeWork
	}{
		{"another node's work", vol(func(v *v1.SharedVolume) { v.Status.ExecutorNode = "n2" }), WorkNone},
		{"settled", vol(func(*v1.SharedVolume) {}), WorkNone},
		{"deleting, phase Deleting", vol(func(v *v1.SharedVolume) { v.DeletionTimestamp, v.Status.Phase = &now, v1.VolumeDeleting }), WorkDelete},
		{"deleting, not yet Deleting (still attached)", vol(func(v *v1.SharedVolume) { v.DeletionTimestamp = &now }), WorkNone},
		{"a retired LV", vol(func(v *v1.SharedVolume) { v.Status.RetiredLV = &v1.RetiredLV{VGName: "vg0", LVName: "v"} }), WorkRemoveRetired},
		{"new", vol(func(v *v1.SharedVolume) { v.Status.LVUUID = "" }), WorkCreate},
		{"new copy", vol(func(v *v1.SharedVolume) { v.Status.LVUUID, v.Spec.Source = "", &v1.VolumeSource{Volume: "src"} }), WorkCopy},
		{"to another VG", vol(func(v *v1.SharedVolume) { v.Spec.VolumeGroup = "vg2" }), WorkMigrate},
		{"larger", vol(func(v *v1.SharedVolume) { v.Spec.Size = two }), WorkExtend},
		{"onto other PVs", vol(func(v *v1.SharedVolume) { v.Spec.PVs, v.Status.PVs = []v1.DevicePath{"/dev/vdb"}, []string{"/dev/vda"} }), WorkMove},
	}
	for _, c := range cases {
		if got := PlanVolumeWork(c.v, "n1"); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}
