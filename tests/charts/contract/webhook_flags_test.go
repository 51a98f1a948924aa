package contract

import (
	"flag"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/datadog-csi/datadog-csi/webhook/pkg/app"
)

const (
	chartDir  = "../../../charts/datadog-csi-webhook"
	namespace = "datadog-csi"
)

// Every values file of the webhook chart renders args that the webhook's
// `serve` flag set parses and its Config.Validate accepts.
func TestWebhookAcceptsChartArgs(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no ci values files in %s: %v", chartDir, err)
	}
	for _, file := range append([]string{""}, files...) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			dep := renderDeployment(t, file)
			c := dep.Spec.Template.Spec.Containers[0]
			if len(c.Args) == 0 || c.Args[0] != "serve" {
				t.Fatalf("args %v: want the serve subcommand first", c.Args)
			}
			// The kubelet expands $(POD_NAMESPACE) from the env var the chart sets.
			var args []string
			for _, a := range c.Args[1:] {
				args = append(args, strings.ReplaceAll(a, "$(POD_NAMESPACE)", namespace))
			}
			var cfg app.Config
			fs := flag.NewFlagSet("serve", flag.ContinueOnError)
			cfg.RegisterFlags(fs)
			if err := fs.Parse(args); err != nil {
				t.Fatalf("the webhook rejects the chart's args %v: %v", args, err)
			}
			if fs.NArg() != 0 {
				t.Fatalf("stray arguments %v", fs.Args())
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("the webhook's validation rejects the chart's args %v: %v", args, err)
			}
			if cfg.Namespace != namespace {
				t.Errorf("--namespace resolved to %q", cfg.Namespace)
			}
		})
	}
}

func renderDeployment(t *testing.T, valuesFile string) *appsv1.Deployment {
	t.Helper()
	ch, err := loader.LoadDir(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]any{}
	if valuesFile != "" {
		v, err := chartutil.ReadValuesFile(valuesFile)
		if err != nil {
			t.Fatal(err)
		}
		vals = v.AsMap()
	}
	install := action.NewInstall(&action.Configuration{})
	install.DryRun, install.DryRunOption, install.ClientOnly, install.Replace = true, "client", true, true
	install.ReleaseName, install.Namespace = "dd", namespace
	rel, err := install.Run(ch, vals)
	if err != nil {
		t.Fatal(err)
	}
	for _, manifest := range releaseutil.SplitManifests(rel.Manifest) {
		if !strings.Contains(manifest, "\nkind: Deployment\n") {
			continue
		}
		var dep appsv1.Deployment
		if err := yaml.UnmarshalStrict([]byte(manifest), &dep); err != nil {
			t.Fatal(err)
		}
		return &dep
	}
	t.Fatal("no Deployment rendered")
	return nil
}
