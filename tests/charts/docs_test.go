package charts

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every value has a `# --` comment: helm-docs then gives it a description in
// the README's values table, so an empty description cell means a value
// without one. (`make docs-check` keeps the README itself current.)
func TestEveryValueIsDocumented(t *testing.T) {
	for _, name := range allCharts {
		readme, err := os.ReadFile(filepath.Join(chartsDir, name, "README.md"))
		if err != nil {
			t.Fatalf("%s: %v: run 'make docs'", name, err)
		}
		rows := 0
		for _, line := range strings.Split(string(readme), "\n") {
			cells := strings.Split(line, "|")
			// | key | type | default | description |
			if len(cells) != 6 || strings.TrimSpace(cells[1]) == "Key" || strings.HasPrefix(strings.TrimSpace(cells[1]), "---") {
				continue
			}
			if strings.Contains(cells[1], "Repository") || strings.HasPrefix(strings.TrimSpace(cells[1]), "file://") {
				continue
			}
			rows++
			if strings.TrimSpace(cells[4]) == "" {
				t.Errorf("%s: value %s has no `# --` comment in values.yaml", name, strings.TrimSpace(cells[1]))
			}
		}
		if rows == 0 {
			t.Errorf("%s: README.md has no values table: run 'make docs'", name)
		}
	}
}
