// Package tree checks that the README's layout table tells the truth about the tree.
package tree

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestLayoutTableMatchesTree: every top-level entry is in the README's layout table, and
// every path the table names exists.
func TestLayoutTableMatchesTree(t *testing.T) {
	root := filepath.Join("..", "..")
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(readme), "\n## Layout\n")
	if !ok {
		t.Fatal("README has no ## Layout section")
	}
	table, _, _ = strings.Cut(table, "\n## ")
	named := map[string]bool{}
	cell := regexp.MustCompile("^\\| ([^|]+) \\|")
	path := regexp.MustCompile("`([^`]+)`")
	for _, line := range strings.Split(table, "\n") {
		m := cell.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		for _, p := range path.FindAllStringSubmatch(m[1], -1) {
			name := strings.TrimSuffix(p[1], "/")
			named[strings.SplitN(name, "/", 2)[0]] = true
			if _, err := os.Stat(filepath.Join(root, name)); err != nil {
				t.Errorf("the layout table names %s, which is not in the tree", p[1])
			}
		}
	}
	// The tree is what git tracks (build outputs and caches in a working copy are not).
	out, err := exec.Command("git", "-C", root, "ls-files").Output()
	if err != nil {
		t.Skipf("git ls-files: %v", err)
	}
	top := map[string]bool{}
	for _, f := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		top[strings.SplitN(f, "/", 2)[0]] = true
	}
	skip := map[string]bool{"README.md": true, "go.mod": true, "go.sum": true, "LICENSE": true}
	for name := range top {
		if strings.HasPrefix(name, ".") || skip[name] {
			continue
		}
		if !named[name] {
			t.Errorf("%s is in the tree but not in the README's layout table", name)
		}
	}
	project, err := os.ReadFile(filepath.Join(root, "PROJECT"))
	if err != nil {
		t.Fatal(err)
	}
	// go.kubebuilder.io/v3 puts main.go at the root and reconcilers in controllers/;
	// v4 would put them in cmd/ and internal/controller/.
	if !strings.Contains(string(project), "- go.kubebuilder.io/v3") {
		t.Errorf("PROJECT does not declare the layout the tree follows (go.kubebuilder.io/v3)")
	}
	for _, p := range []string{"main.go", "controllers", "api/v1alpha1"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("PROJECT's layout expects %s", p)
		}
	}
}

// TestNothingOutsideTestNeedsTest: the product, its run command and its tools never import
// a package under test/ (tests only live there).
func TestNothingOutsideTestNeedsTest(t *testing.T) {
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() && (rel == "test" || rel == "vendor" || strings.HasPrefix(d.Name(), ".") && rel != ".") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), `"github.com/sharedlvm/sharedlvm-operator/test/`) {
			t.Errorf("%s imports a package under test/", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
