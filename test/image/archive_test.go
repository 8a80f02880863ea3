package image_test

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sharedlvm/sharedlvm-operator/internal/envtestutil"
)

// archive is a docker-archive read back: its config and the files of all its layers.
type archive struct {
	RepoTags []string
	Config   struct {
		Config struct {
			Entrypoint []string
			User       string
			Env        []string
		} `json:"config"`
	}
	files map[string]*tar.Header
	data  map[string][]byte
}

func readArchive(t *testing.T, path string) *archive {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	entries := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		entries[h.Name] = b
	}
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(entries["manifest.json"], &manifest); err != nil || len(manifest) != 1 {
		t.Fatalf("%s: manifest.json: %v %s", path, err, entries["manifest.json"])
	}
	a := &archive{RepoTags: manifest[0].RepoTags, files: map[string]*tar.Header{}, data: map[string][]byte{}}
	if err := json.Unmarshal(entries[manifest[0].Config], &a.Config); err != nil {
		t.Fatalf("%s: config: %v", path, err)
	}
	for _, l := range manifest[0].Layers {
		lr := tar.NewReader(bytes.NewReader(entries[l]))
		for {
			h, err := lr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: layer %s: %v", path, l, err)
			}
			name := "/" + strings.TrimSuffix(h.Name, "/")
			a.files[name] = h
			if h.Typeflag == tar.TypeReg {
				a.data[name], _ = io.ReadAll(lr)
			}
		}
	}
	return a
}

// resolve follows symlinks inside the image (absolute and relative) to a regular file.
func (a *archive) resolve(p string) (string, bool) {
	for i := 0; i < 10; i++ {
		// Resolve the directories on the way too (/lib64 -> ...).
		parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
		cur := ""
		for j, part := range parts {
			cur += "/" + part
			h, ok := a.files[cur]
			if !ok {
				return "", false
			}
			if h.Typeflag == tar.TypeSymlink {
				target := h.Linkname
				if !strings.HasPrefix(target, "/") {
					target = filepath.Join(filepath.Dir(cur), target)
				}
				p = filepath.Join(append([]string{target}, parts[j+1:]...)...)
				goto next
			}
		}
		return cur, a.files[cur].Typeflag == tar.TypeReg
	next:
	}
	return "", false
}

// TestImages builds the images with hack/images.sh (no container engine) and checks that
// they hold what the Dockerfile's stages produce: hack/build.sh's binary, the same
// entrypoints, a non-root operator, and an agent that can run nsenter and install(1) (the
// chart's init container) with every library they load.
func TestImages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the images")
	}
	// Into the project's cache (the unpacked Debian packages are worth keeping).
	out, err := exec.Command(filepath.Join(envtestutil.RepoRoot(), "hack", "images.sh"), "v0.0.0-image").Output()
	if err != nil {
		t.Fatalf("hack/images.sh: %v", err)
	}
	dir := strings.TrimSpace(string(out))
	want, err := os.ReadFile(buildBinary(t, "v0.0.0-image"))
	if err != nil {
		t.Fatal(err)
	}

	op := readArchive(t, filepath.Join(dir, "operator.tar"))
	if got := strings.Join(op.Config.Config.Entrypoint, " "); got != "/sharedlvm operator" {
		t.Errorf("operator entrypoint %q", got)
	}
	if op.Config.Config.User != "65532:65532" {
		t.Errorf("operator user %q: the Dockerfile's operator is non-root (65532)", op.Config.Config.User)
	}
	if !bytes.Equal(op.data["/sharedlvm"], want) {
		t.Error("the operator image's /sharedlvm is not hack/build.sh's binary")
	}
	if len(op.RepoTags) != 1 || !strings.HasSuffix(op.RepoTags[0], "/sharedlvm-operator:v0.0.0-image") {
		t.Errorf("operator tags %v", op.RepoTags)
	}

	ag := readArchive(t, filepath.Join(dir, "agent.tar"))
	if got := strings.Join(ag.Config.Config.Entrypoint, " "); got != "/usr/local/bin/sharedlvm agent" {
		t.Errorf("agent entrypoint %q", got)
	}
	if !bytes.Equal(ag.data["/usr/local/bin/sharedlvm"], want) {
		t.Error("the agent image's /usr/local/bin/sharedlvm is not hack/build.sh's binary")
	}
	if p, ok := ag.resolve("/usr/local/bin/kubectl-sharedlvm"); !ok || p != "/usr/local/bin/sharedlvm" {
		t.Errorf("kubectl-sharedlvm resolves to %q", p)
	}
	for _, prog := range []string{"nsenter", "install"} {
		var path string
		for _, d := range []string{"/usr/bin/", "/bin/", "/usr/sbin/", "/sbin/"} {
			if p, ok := ag.resolve(d + prog); ok {
				path = p
				break
			}
		}
		if path == "" {
			t.Errorf("the agent image has no %s on its PATH", prog)
			continue
		}
		f, err := elf.NewFile(bytes.NewReader(ag.data[path]))
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		libs, _ := f.ImportedLibraries()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				b := make([]byte, p.Filesz)
				_, _ = p.ReadAt(b, 0)
				interp := strings.TrimRight(string(b), "\x00")
				if _, ok := ag.resolve(interp); !ok {
					t.Errorf("%s: interpreter %s missing", path, interp)
				}
			}
		}
		for _, l := range libs {
			found := false
			for _, d := range []string{"/lib/x86_64-linux-gnu/", "/usr/lib/x86_64-linux-gnu/"} {
				if _, ok := ag.resolve(d + l); ok {
					found = true
				}
			}
			if !found {
				t.Errorf("%s loads %s, which the agent image lacks", path, l)
			}
		}
	}
}
