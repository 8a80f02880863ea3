package controllers_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/sharedlvm/sharedlvm-operator/internal/envtestutil"
)

func obj(doc string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	Expect(sigsyaml.Unmarshal([]byte(doc), &u.Object)).To(Succeed())
	return u
}

func ensureNamespace(name string) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8s.Create(ctx, ns); err != nil {
		Expect(client.IgnoreAlreadyExists(err)).To(Succeed())
	}
}

var _ = Describe("CRDs", func() {
	It("installs the three CRDs, established, in the sharedlvm category", func() {
		for _, name := range []string{"volumegroups.sharedlvm.io", "sharedvolumes.sharedlvm.io", "volumeattachments.sharedlvm.io"} {
			var crd apiextensionsv1.CustomResourceDefinition
			Expect(k8s.Get(ctx, client.ObjectKey{Name: name}, &crd)).To(Succeed())
			established := false
			for _, c := range crd.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					established = true
				}
			}
			Expect(established).To(BeTrue(), name)
			Expect(crd.Spec.Names.Categories).To(ContainElement("sharedlvm"))
			Expect(crd.Spec.Versions[0].Subresources.Status).NotTo(BeNil())
		}
	})

	It("accepts every sample in config/samples", func() {
		files, err := filepath.Glob(filepath.Join(envtestutil.RepoRoot(), "config", "samples", "*.yaml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(files).NotTo(BeEmpty())
		n := 0
		for _, f := range files {
			data, err := os.ReadFile(f)
			Expect(err).NotTo(HaveOccurred())
			dec := yaml.NewYAMLOrJSONDecoder(strings.NewReader(string(data)), 4096)
			for {
				u := &unstructured.Unstructured{}
				if err := dec.Decode(&u.Object); err != nil {
					break
				}
				if len(u.Object) == 0 {
					continue
				}
				if u.GetNamespace() != "" {
					ensureNamespace(u.GetNamespace())
				}
				Expect(k8s.Create(ctx, u)).To(Succeed(), "%s: %s/%s", filepath.Base(f), u.GetKind(), u.GetName())
				n++
			}
		}
		Expect(n).To(BeNumerically(">=", 5))
	})
})

// A bad object and the substring its rejection must contain: each message says what to do.
type badCase struct {
	name   string
	create string // object to create; must be rejected (or, with update, accepted)
	update func(u *unstructured.Unstructured)
	want   string
}

const goodVG = `
apiVersion: sharedlvm.io/v1alpha1
kind: VolumeGroup
metadata: {name: %s}
spec: {vgName: vg-%s, pvs: [/dev/sdb]}`

const goodSV = `
apiVersion: sharedlvm.io/v1alpha1
kind: SharedVolume
metadata: {name: %s, namespace: validation}
spec: {volumeGroup: vg1, size: 1Gi}`

const goodVA = `
apiVersion: sharedlvm.io/v1alpha1
kind: VolumeAttachment
metadata: {name: %s, namespace: validation}
spec: {volume: vol1, node: node-a}`

// updateFresh applies mutate to the latest version and updates, retrying only on
// conflicts (the operator adds finalizers concurrently).
func updateFresh(u *unstructured.Unstructured, mutate func(*unstructured.Unstructured)) error {
	var err error
	for i := 0; i < 20; i++ {
		if err = k8s.Get(ctx, client.ObjectKeyFromObject(u), u); err != nil {
			return err
		}
		mutate(u)
		if err = k8s.Update(ctx, u); !apierrors.IsConflict(err) {
			return err
		}
	}
	return err
}

func set(path string, v any) func(u *unstructured.Unstructured) {
	return func(u *unstructured.Unstructured) {
		Expect(unstructured.SetNestedField(u.Object, v, strings.Split(path, ".")...)).To(Succeed())
	}
}

var _ = Describe("admission validation", func() {
	BeforeEach(func() { ensureNamespace("validation") })

	vg := func(spec string) string {
		return `
apiVersion: sharedlvm.io/v1alpha1
kind: VolumeGroup
metadata: {name: %s}
spec: ` + spec
	}
	sv := func(spec string) string {
		return `
apiVersion: sharedlvm.io/v1alpha1
kind: SharedVolume
metadata: {name: %s, namespace: validation}
spec: ` + spec
	}
	va := func(spec string) string {
		return `
apiVersion: sharedlvm.io/v1alpha1
kind: VolumeAttachment
metadata: {name: %s, namespace: validation}
spec: ` + spec
	}

	cases := []badCase{
		// VolumeGroup
		{name: "vg without vgName", create: vg(`{pvs: [/dev/sdb]}`), want: "spec.vgName: Required value"},
		{name: "vg name starting with a hyphen", create: vg(`{vgName: -vg, pvs: [/dev/sdb]}`), want: "VG names must not start with '-'"},
		{name: "vg name with a slash", create: vg(`{vgName: "vg/1", pvs: [/dev/sdb]}`), want: "VG names may only contain letters, digits and + _ . -"},
		{name: "vg name '..'", create: vg(`{vgName: "..", pvs: [/dev/sdb]}`), want: "'.' and '..' are not valid VG names"},
		{name: "vg name too long", create: vg(`{vgName: ` + strings.Repeat("v", 64) + `, pvs: [/dev/sdb]}`), want: "may not be more than 63"},
		{name: "vg without PVs", create: vg(`{vgName: vgx, pvs: []}`), want: "should have at least 1 items"},
		{name: "relative PV path", create: vg(`{vgName: vgx, pvs: [sdb]}`), want: "a PV must be an absolute device path under /dev"},
		{name: "PV outside /dev", create: vg(`{vgName: vgx, pvs: [/tmp/disk.img]}`), want: "a PV must be an absolute device path under /dev"},
		{name: "PV path with '..'", create: vg(`{vgName: vgx, pvs: [/dev/../etc/passwd]}`), want: "a PV path must be normalised"},
		{name: "duplicate PVs", create: vg(`{vgName: vgx, pvs: [/dev/sdb, /dev/sdb]}`), want: "Duplicate value"},
		{name: "unknown wipe policy", create: vg(`{vgName: vgx, pvs: [/dev/sdb], wipePolicy: Shred}`), want: `supported values: "Zero", "None"`},
		{name: "vgName changed", create: fmt.Sprintf(goodVG, "%s", "imm"), update: set("spec.vgName", "vg-other"), want: "spec.vgName is immutable"},
		// SharedVolume
		{name: "volume without volumeGroup", create: sv(`{size: 1Gi}`), want: "spec.volumeGroup: Required value"},
		{name: "zero size", create: sv(`{volumeGroup: vg1, size: "0"}`), want: "size must be at least 1Mi"},
		{name: "negative size", create: sv(`{volumeGroup: vg1, size: "-1Gi"}`), want: "size must be at least 1Mi"},
		{name: "size below 1Mi", create: sv(`{volumeGroup: vg1, size: 64Ki}`), want: "size must be at least 1Mi"},
		{name: "size not a multiple of 512", create: sv(`{volumeGroup: vg1, size: "1000001"}`), want: "size must be a multiple of 512 bytes"},
		{name: "fractional size", create: sv(`{volumeGroup: vg1, size: "1.5"}`), want: "size must be a whole number of bytes"},
		{name: "lvName reserved prefix snapshot", create: sv(`{volumeGroup: vg1, size: 1Gi, lvName: snapshot1}`), want: "reserved by LVM"},
		{name: "lvName reserved prefix pvmove", create: sv(`{volumeGroup: vg1, size: 1Gi, lvName: pvmove0}`), want: "reserved by LVM"},
		{name: "lvName starting with a hyphen", create: sv(`{volumeGroup: vg1, size: 1Gi, lvName: -lv}`), want: "LV names must not start with '-'"},
		{name: "lvName with an internal suffix", create: sv(`{volumeGroup: vg1, size: 1Gi, lvName: data_tmeta}`), want: "internal suffixes"},
		{name: "lvName lvmlock", create: sv(`{volumeGroup: vg1, size: 1Gi, lvName: lvmlock}`), want: "hidden lock LV"},
		{name: "lvName with a space", create: sv(`{volumeGroup: vg1, size: 1Gi, lvName: "my lv"}`), want: "LV names may only contain"},
		{name: "object name unusable as LV name", create: `
apiVersion: sharedlvm.io/v1alpha1
kind: SharedVolume
metadata: {name: snapshot-%s, namespace: validation}
spec: {volumeGroup: vg1, size: 1Gi}`, want: "set spec.lvName"},
		{name: "volumeGroup not a valid object name", create: sv(`{volumeGroup: VG_1, size: 1Gi}`), want: "must be the name of a Kubernetes object"},
		{name: "size shrinks", create: fmt.Sprintf(goodSV, "%s"), update: set("spec.size", "512Mi"), want: "size may only grow"},
		{name: "lvName changed", create: fmt.Sprintf(goodSV, "%s"), update: set("spec.lvName", "other"), want: "spec.lvName is immutable"},
		{name: "source added later", create: fmt.Sprintf(goodSV, "%s"), update: set("spec.source", map[string]any{"volume": "x"}), want: "spec.source is immutable"},
		{name: "volume copied from itself", create: `
apiVersion: sharedlvm.io/v1alpha1
kind: SharedVolume
metadata: {name: %s, namespace: validation}
spec: {volumeGroup: vg1, size: 1Gi, source: {volume: %s}}`, want: "spec.source names this volume itself"},
		// VolumeAttachment
		{name: "attachment without node", create: va(`{volume: vol1}`), want: "spec.node: Required value"},
		{name: "attachment without volume", create: va(`{node: node-a}`), want: "spec.volume: Required value"},
		{name: "unknown purpose", create: va(`{volume: vol1, node: node-a, purpose: backup}`), want: `supported values: "instance", "copy", "migration-target"`},
		{name: "node changed", create: fmt.Sprintf(goodVA, "%s"), update: set("spec.node", "node-b"), want: "spec.node is immutable"},
		{name: "volume changed", create: fmt.Sprintf(goodVA, "%s"), update: set("spec.volume", "vol2"), want: "spec.volume is immutable"},
	}

	It("has at least 20 cases", func() { Expect(len(cases)).To(BeNumerically(">=", 20)) })

	for i, tc := range cases {
		It("rejects "+tc.name, func() {
			name := fmt.Sprintf("bad-%d", i)
			doc := tc.create
			if strings.Count(doc, "%s") == 2 {
				doc = fmt.Sprintf(doc, name, name)
			} else {
				doc = fmt.Sprintf(doc, name)
			}
			u := obj(doc)
			err := k8s.Create(ctx, u)
			if tc.update == nil {
				Expect(err).To(HaveOccurred(), "object was accepted")
				Expect(err.Error()).To(ContainSubstring(tc.want))
				Expect(err.Error()).To(MatchRegexp(`(spec\.[a-zA-Z]+|metadata\.name)`), "the message names the field")
				return
			}
			Expect(err).NotTo(HaveOccurred(), "the valid starting object must be accepted")
			err = updateFresh(u, tc.update)
			Expect(err).To(HaveOccurred(), "update was accepted")
			Expect(err.Error()).To(ContainSubstring(tc.want))
			Expect(err.Error()).To(MatchRegexp(`spec\.[a-zA-Z]+`), "the message names the field")
		})
	}

	It("refuses a new spec.volumeGroup while a migration runs", func() {
		u := obj(fmt.Sprintf(goodSV, "migrating"))
		Expect(k8s.Create(ctx, u)).To(Succeed())
		// The operator rewrites the phase (vg1 does not exist): retry until the update is
		// judged against a Migrating phase.
		Eventually(func() string {
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(u), u); err != nil {
				return err.Error()
			}
			_ = unstructured.SetNestedField(u.Object, "Migrating", "status", "phase")
			if err := k8s.Status().Update(ctx, u); err != nil {
				return err.Error()
			}
			u.Object["spec"].(map[string]any)["volumeGroup"] = "vg2"
			if err := k8s.Update(ctx, u); err != nil {
				return err.Error()
			}
			return "accepted"
		}, 10*time.Second, 50*time.Millisecond).Should(ContainSubstring("cannot change while a migration runs"))
	})

	It("accepts growth, int sizes and a volume named after a Cinder volume", func() {
		u := obj(fmt.Sprintf(goodSV, "volume-3f1c2a9e-6b0d-4c51-9d1e-2f7e8a0b4c12"))
		Expect(k8s.Create(ctx, u)).To(Succeed())
		Expect(updateFresh(u, set("spec.size", "2Gi"))).To(Succeed())
		i := obj(fmt.Sprintf(sv(`{volumeGroup: vg1, size: 1048576}`), "int-size"))
		Expect(k8s.Create(ctx, i)).To(Succeed())
	})
})
