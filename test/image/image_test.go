// Package image_test checks what can be checked of the container images without a
// container runtime: the Dockerfile's structure (stages, pinned bases, the build command),
// and the binary its build stage produces, built here with the same command.
package image_test

import (
	"bufio"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sharedlvm/sharedlvm-operator/internal/envtestutil"
)

type stage struct {
	base, name string
	lines      []string
}

func parseDockerfile(t *testing.T) []stage {
	t.Helper()
	f, err := os.Open(filepath.Join(envtestutil.RepoRoot(), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages []stage
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		switch strings.ToUpper(fields[0]) {
		case "FROM":
			s := stage{base: fields[1]}
			if len(fields) == 4 && strings.EqualFold(fields[2], "AS") {
				s.name = fields[3]
			}
			stages = append(stages, s)
		default:
			if len(stages) == 0 {
				t.Fatalf("instruction before FROM: %s", line)
			}
			stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, line)
		}
	}
	return stages
}

func TestDockerfile(t *testing.T) {
	byName := map[string]stage{}
	for _, s := range parseDockerfile(t) {
		if s.name == "" {
			t.Errorf("stage FROM %s has no name: every stage is a named target", s.base)
		}
		if !strings.Contains(s.base, ":") || strings.HasSuffix(s.base, ":latest") {
			t.Errorf("base image %s is not pinned to a tag", s.base)
		}
		byName[s.name] = s
	}
	for _, n := range []string{"build", "operator", "agent"} {
		if _, ok := byName[n]; !ok {
			t.Fatalf("no %q stage", n)
		}
	}
	has := func(s stage, sub string) bool {
		for _, l := range s.lines {
			if strings.Contains(l, sub) {
				return true
			}
		}
		return false
	}
	if !has(byName["build"], "hack/build.sh /out/sharedlvm") {
		t.Error("the build stage must run hack/build.sh, the command this test runs")
	}
	if !has(byName["operator"], "USER 65532") || !strings.Contains(byName["operator"].base, "distroless/static") {
		t.Error("the operator image must be distroless/static and non-root")
	}
	if !has(byName["agent"], "util-linux") {
		t.Error("the agent image needs nsenter (util-linux) for the host-namespace mode")
	}
	for name, role := range map[string]string{"operator": `"operator"]`, "agent": `"agent"]`} {
		if !has(byName[name], "ENTRYPOINT") || !has(byName[name], role) {
			t.Errorf("%s stage's ENTRYPOINT does not run role %s", name, role)
		}
	}
}

// buildBinary runs hack/build.sh (the Dockerfile's build command) with VERSION=version.
func buildBinary(t *testing.T, version string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "sharedlvm")
	build := exec.Command(filepath.Join(envtestutil.RepoRoot(), "hack", "build.sh"), out)
	build.Env = append(os.Environ(), "VERSION="+version)
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("hack/build.sh: %v\n%s", err, b)
	}
	return out
}

func TestStaticBinary(t *testing.T) {
	out := buildBinary(t, "v0.0.0-test")
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary is dynamically linked: distroless/static cannot run it")
		}
	}
	f.Close()
	v, err := exec.Command(out, "version").Output()
	if err != nil || strings.TrimSpace(string(v)) != "v0.0.0-test" {
		t.Errorf("version: %q %v", v, err)
	}
	// The same binary is the kubectl plugin when named kubectl-sharedlvm.
	plugin := filepath.Join(filepath.Dir(out), "kubectl-sharedlvm")
	if err := os.Symlink(out, plugin); err != nil {
		t.Fatal(err)
	}
	help, err := exec.Command(plugin, "help").Output()
	if err != nil || !strings.Contains(string(help), "kubectl sharedlvm COMMAND") {
		t.Errorf("kubectl-sharedlvm help: %q %v", help, err)
	}
}
