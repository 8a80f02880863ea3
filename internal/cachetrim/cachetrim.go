// Package cachetrim shrinks the objects the operator's and the agents' informer caches keep.
// The operator caches every SharedVolume and VolumeAttachment of the cloud (10,000 volumes
// and 20,000 attachments at the scale harness's top), so what each cached object costs is
// most of its memory. Transform:
//   - drops metadata.managedFields (several field managers per object; never read: an update
//     without them keeps the server's). Annotations are kept, kubectl's last-applied copy
//     included: the reconcilers add and remove their finalizer with an update of the cached
//     object, which would drop any annotation missing from it;
//   - drops a Node's status.images (the kubelet lists up to 50 images, several KiB; nothing
//     here reads them);
//   - makes the strings that repeat across objects (API version, kind, namespace, finalizers,
//     node and VG names, phases, lock modes, condition types, statuses and reasons, an
//     attachment's LockApplied message) share one copy (unique.Make): JSON decoding
//     allocates each afresh in every object; an attachment's status.lvUUID shares its
//     status.lv.lvUUID.
//
// Strings are immutable, so sharing them cannot let one object's change show in another.
package cachetrim

import (
	"unique"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"

	v1 "github.com/sharedlvm/sharedlvm-operator/api/v1alpha1"
)

// Transform returns the cache transform (cache.Options.DefaultTransform).
func Transform() toolscache.TransformFunc {
	return func(in any) (any, error) {
		// A delete's final state unknown (DeletedFinalStateUnknown) is passed through.
		if o, ok := in.(metav1.Object); ok {
			trimMeta(o)
		}
		switch o := in.(type) {
		case *v1.VolumeAttachment:
			trimAttachment(o)
		case *v1.SharedVolume:
			trimVolume(o)
		case *v1.VolumeGroup:
			conditions(o.Status.Conditions)
		case *corev1.Node:
			o.Status.Images = nil
			for i := range o.Status.Conditions {
				c := &o.Status.Conditions[i]
				c.Type, c.Status, c.Reason = corev1.NodeConditionType(in1(string(c.Type))), corev1.ConditionStatus(in1(string(c.Status))), in1(c.Reason)
			}
		}
		return in, nil
	}
}

// in1 returns the one shared copy of s.
func in1(s string) string {
	if s == "" {
		return s
	}
	return unique.Make(s).Value()
}

// in1T is in1 for the API's string types.
func in1T[T ~string](s T) T { return T(in1(string(s))) }

func trimMeta(o metav1.Object) {
	o.SetManagedFields(nil)
	if ns := o.GetNamespace(); ns != "" {
		o.SetNamespace(in1(ns))
	}
	f := o.GetFinalizers()
	for i := range f {
		f[i] = in1(f[i])
	}
}

func typeMeta(t *metav1.TypeMeta) {
	t.APIVersion, t.Kind = in1(t.APIVersion), in1(t.Kind)
}

func conditions(cs []metav1.Condition) {
	for i := range cs {
		c := &cs[i]
		c.Type, c.Status, c.Reason = in1(c.Type), in1T(c.Status), in1(c.Reason)
	}
}

func trimAttachment(a *v1.VolumeAttachment) {
	typeMeta(&a.TypeMeta)
	a.Spec.Node, a.Spec.Purpose = in1T(a.Spec.Node), in1T(a.Spec.Purpose)
	st := &a.Status
	st.Phase, st.DesiredLock, st.AppliedLock = in1T(st.Phase), in1T(st.DesiredLock), in1T(st.AppliedLock)
	if st.LV != nil {
		st.LV.VGName = in1(st.LV.VGName)
		if st.LVUUID == st.LV.LVUUID {
			st.LVUUID = st.LV.LVUUID // the agent's report of the LV the operator named: one copy
		}
	}
	conditions(st.Conditions)
	for i := range st.Conditions {
		if c := &st.Conditions[i]; c.Type == v1.ConditionLockApplied {
			// The agent's "node N holds MODE (…)": the same for every attachment of a node
			// in one mode, 20,000 copies of ~100 bytes at the scale harness's top.
			c.Message = in1(c.Message)
		}
	}
}

func trimVolume(v *v1.SharedVolume) {
	typeMeta(&v.TypeMeta)
	v.Spec.VolumeGroup = in1T(v.Spec.VolumeGroup)
	for i := range v.Spec.PVs {
		v.Spec.PVs[i] = in1T(v.Spec.PVs[i])
	}
	st := &v.Status
	st.Phase, st.VolumeGroup, st.VGName, st.ExecutorNode = in1T(st.Phase), in1(st.VolumeGroup), in1(st.VGName), in1(st.ExecutorNode)
	for i := range st.PVs {
		st.PVs[i] = in1(st.PVs[i])
	}
	st.Lock.Mode = in1T(st.Lock.Mode)
	for i := range st.Lock.Holders {
		st.Lock.Holders[i] = in1(st.Lock.Holders[i])
	}
	st.Lock.HolderList = in1(st.Lock.HolderList)
	conditions(st.Conditions)
}
