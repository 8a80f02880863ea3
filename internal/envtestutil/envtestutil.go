// Package envtestutil starts a real kube-apiserver + etcd (envtest) with the project's CRDs,
// using binaries that hack/envtest-binaries.sh builds from the Go module proxy and caches.
// Tests and the local run harness share it, so both run against the same control plane.
package envtestutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// RepoRoot is the repository root, found from this source file's location.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// AssetsDir returns the directory holding kube-apiserver, etcd and kubectl: KUBEBUILDER_ASSETS
// if set, otherwise whatever hack/envtest-binaries.sh prints (building them on first use).
func AssetsDir() (string, error) {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d, nil
	}
	cmd := exec.Command("bash", filepath.Join(RepoRoot(), "hack", "envtest-binaries.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/envtest-binaries.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Env is a running control plane.
type Env struct {
	*envtest.Environment
	Config *rest.Config
	// Kubeconfig is a file with cluster-admin credentials, for kubectl.
	Kubeconfig string
	// Kubectl is the path of the kubectl built with the control plane.
	Kubectl string
}

// Start starts kube-apiserver and etcd and installs the CRDs of config/crd/bases.
func Start() (*Env, error) {
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	te := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	cfg, err := te.Start()
	if err != nil {
		return nil, fmt.Errorf("starting envtest: %w", err)
	}
	env := &Env{Environment: te, Config: cfg, Kubectl: filepath.Join(assets, "kubectl")}
	user, err := te.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		_ = te.Stop()
		return nil, err
	}
	kc, err := user.KubeConfig()
	if err != nil {
		_ = te.Stop()
		return nil, err
	}
	f, err := os.CreateTemp("", "sharedlvm-kubeconfig-*")
	if err != nil {
		_ = te.Stop()
		return nil, err
	}
	if _, err := f.Write(kc); err != nil {
		_ = te.Stop()
		return nil, err
	}
	_ = f.Close()
	env.Kubeconfig = f.Name()
	return env, nil
}

// KubectlCmd returns a kubectl command against the control plane.
func (e *Env) KubectlCmd(args ...string) *exec.Cmd {
	return exec.Command(e.Kubectl, append([]string{"--kubeconfig", e.Kubeconfig}, args...)...)
}

// TableRow runs `kubectl get RESOURCE NAME` (the table the apiserver prints from the CRD's
// columns, what an admin sees) and returns the row keyed by column header. Cells are split
// on blanks, so it suits columns whose values have none.
func (e *Env) TableRow(resource, namespace, name string) (map[string]string, error) {
	args := []string{"get", resource, name}
	if namespace != "" {
		args = append(args, "-n", namespace)
	}
	out, err := e.KubectlCmd(args...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 {
		return nil, fmt.Errorf("kubectl %s printed %d lines, want a header and one row: %s", strings.Join(args, " "), len(lines), out)
	}
	head, cells := strings.Fields(lines[0]), strings.Fields(lines[1])
	if len(head) != len(cells) {
		return nil, fmt.Errorf("kubectl %s: %d headers, %d cells (a cell with blanks?): %s", strings.Join(args, " "), len(head), len(cells), out)
	}
	row := map[string]string{}
	for i, h := range head {
		row[h] = cells[i]
	}
	return row, nil
}

// Stop stops the control plane and removes the kubeconfig.
func (e *Env) Stop() error {
	if e.Kubeconfig != "" {
		_ = os.Remove(e.Kubeconfig)
	}
	return e.Environment.Stop()
}

// EventNotes returns the notes of the Events (events.k8s.io) about an object, optionally only
// those with a reason ("" for all), as "Reason: note".
func EventNotes(ctx context.Context, c client.Client, o client.Object, reason string) []string {
	var list eventsv1.EventList
	if err := c.List(ctx, &list, client.InNamespace(o.GetNamespace())); err != nil {
		return nil
	}
	var out []string
	for _, e := range list.Items {
		if e.Regarding.UID == o.GetUID() && (reason == "" || e.Reason == reason) {
			out = append(out, e.Reason+": "+e.Note)
		}
	}
	return out
}

// EventReasons returns the reasons of the Events about an object.
func EventReasons(ctx context.Context, c client.Client, o client.Object) []string {
	var out []string
	for _, n := range EventNotes(ctx, c, o, "") {
		r, _, _ := strings.Cut(n, ":")
		out = append(out, r)
	}
	return out
}
