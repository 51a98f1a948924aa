package contract

import (
	"os"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// driverOptions is the driver's table of flags and env vars. The driver's
// config package is internal to the driver, so this test reads its source:
// each flag and env var the chart sets must be declared there.
const driverOptions = "../../../driver/internal/config/config.go"

func TestDriverDeclaresChartFlagsAndEnv(t *testing.T) {
	src, err := os.ReadFile(driverOptions)
	if err != nil {
		t.Fatalf("read the driver's options: %v", err)
	}
	for _, vals := range []map[string]any{{}, {"registrar": map[string]any{"enabled": false}}} {
		ch, err := loader.LoadDir("../../../charts/datadog-csi-driver")
		if err != nil {
			t.Fatal(err)
		}
		install := action.NewInstall(&action.Configuration{})
		install.DryRun, install.DryRunOption, install.ClientOnly, install.Replace = true, "client", true, true
		install.ReleaseName, install.Namespace = "dd", namespace
		rel, err := install.Run(ch, vals)
		if err != nil {
			t.Fatal(err)
		}
		var ds appsv1.DaemonSet
		for _, m := range releaseutil.SplitManifests(rel.Manifest) {
			if strings.Contains(m, "\nkind: DaemonSet\n") {
				if err := yaml.UnmarshalStrict([]byte(m), &ds); err != nil {
					t.Fatal(err)
				}
			}
		}
		driver := ds.Spec.Template.Spec.Containers[0]
		if driver.Name != "csi-node-driver" {
			t.Fatalf("first container is %s", driver.Name)
		}
		for _, a := range driver.Args {
			name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			if !strings.Contains(string(src), `{"`+name+`", `) {
				t.Errorf("the chart passes --%s, which %s does not declare", name, driverOptions)
			}
		}
		for _, e := range driver.Env {
			if !strings.Contains(string(src), `"`+e.Name+`"`) {
				t.Errorf("the chart sets env %s, which %s does not declare", e.Name, driverOptions)
			}
		}
	}
}
