package charts

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/releaseutil"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Chart names, as directories under chartsDir.
const (
	driverChart   = "datadog-csi-driver"
	webhookChart  = "datadog-csi-webhook"
	umbrellaChart = "datadog-csi"
)

var allCharts = []string{driverChart, webhookChart, umbrellaChart}

const (
	chartsDir        = "../../charts"
	releaseName      = "dd"
	releaseNamespace = "datadog-csi"
)

// vapAPI is the capability the umbrella's ValidatingAdmissionPolicy needs.
const vapAPI = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"

// loadChart loads a chart from its source directory. The umbrella's file://
// dependencies are loaded from their directories too, replacing any packaged
// copies in charts/datadog-csi/charts, so the tests always see the sources.
func loadChart(t *testing.T, name string) *chart.Chart {
	t.Helper()
	ch, err := loader.LoadDir(filepath.Join(chartsDir, name))
	if err != nil {
		t.Fatalf("load chart %s: %v", name, err)
	}
	if len(ch.Metadata.Dependencies) > 0 {
		var deps []*chart.Chart
		for _, dep := range ch.Metadata.Dependencies {
			dir, ok := strings.CutPrefix(dep.Repository, "file://")
			if !ok {
				t.Fatalf("chart %s: dependency %s is not file://: %s", name, dep.Name, dep.Repository)
			}
			sub, err := loader.LoadDir(filepath.Join(chartsDir, name, dir))
			if err != nil {
				t.Fatalf("load dependency %s of %s: %v", dep.Name, name, err)
			}
			if sub.Metadata.Version != dep.Version {
				t.Fatalf("chart %s wants %s %s, the source is %s: bump Chart.yaml", name, dep.Name, dep.Version, sub.Metadata.Version)
			}
			deps = append(deps, sub)
		}
		ch.SetDependencies(deps...)
	}
	return ch
}

// renderOptions vary how a chart is rendered.
type renderOptions struct {
	apiVersions          []string // extra capabilities, e.g. vapAPI
	skipSchemaValidation bool     // to reach the templates' own fail checks
}

// rendered is one chart render: its manifests, parsed, and its NOTES.
type rendered struct {
	docs  []document
	notes string
}

// document is one rendered object, kept as YAML and as a generic map.
type document struct {
	source string // template file
	yaml   string
	obj    map[string]any
	kind   string
	name   string
}

// render renders a chart as `helm template` (helm install --dry-run=client) does.
func render(t *testing.T, ch *chart.Chart, vals map[string]any, opts renderOptions) (rendered, error) {
	t.Helper()
	install := action.NewInstall(&action.Configuration{})
	install.DryRun = true
	install.DryRunOption = "client"
	install.ClientOnly = true
	install.Replace = true
	install.ReleaseName = releaseName
	install.Namespace = releaseNamespace
	install.KubeVersion = &chartutil.KubeVersion{Version: "v1.37.2", Major: "1", Minor: "37"}
	install.APIVersions = opts.apiVersions
	install.SkipSchemaValidation = opts.skipSchemaValidation
	if vals == nil {
		vals = map[string]any{}
	}
	rel, err := install.Run(ch, vals)
	if err != nil {
		return rendered{}, err
	}
	out := rendered{}
	for _, hook := range rel.Hooks {
		t.Errorf("unexpected hook %s in %s: the charts use no hooks", hook.Name, ch.Name())
	}
	out.notes = rel.Info.Notes
	for _, manifest := range releaseutil.SplitManifests(rel.Manifest) {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(manifest), &obj); err != nil {
			return rendered{}, fmt.Errorf("rendered YAML does not parse: %v\n%s", err, manifest)
		}
		if obj == nil {
			continue
		}
		d := document{yaml: manifest, obj: obj, source: sourceOf(manifest)}
		d.kind, _ = obj["kind"].(string)
		if md, ok := obj["metadata"].(map[string]any); ok {
			d.name, _ = md["name"].(string)
		}
		out.docs = append(out.docs, d)
	}
	sort.Slice(out.docs, func(i, j int) bool {
		if out.docs[i].kind != out.docs[j].kind {
			return out.docs[i].kind < out.docs[j].kind
		}
		return out.docs[i].name < out.docs[j].name
	})
	return out, nil
}

func sourceOf(manifest string) string {
	for _, line := range strings.Split(manifest, "\n") {
		if s, ok := strings.CutPrefix(line, "# Source: "); ok {
			return s
		}
	}
	return "?"
}

// mustRender renders and fails the test on error.
func mustRender(t *testing.T, name string, vals map[string]any, opts renderOptions) rendered {
	t.Helper()
	r, err := render(t, loadChart(t, name), vals, opts)
	if err != nil {
		t.Fatalf("render %s: %v", name, err)
	}
	return r
}

// valuesFile reads a values file.
func valuesFile(t *testing.T, path string) map[string]any {
	t.Helper()
	vals, err := chartutil.ReadValuesFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return vals.AsMap()
}

// ciValuesFiles lists a chart's ci/*-values.yaml files.
func ciValuesFiles(t *testing.T, name string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartsDir, name, "ci", "*-values.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("chart %s has no ci/*-values.yaml (chart-testing needs them): %v", name, err)
	}
	return files
}

// strictTypes maps each kind the charts may render to its API type.
// Objects of other kinds fail the tests.
var strictTypes = map[string]func() any{
	"ServiceAccount":                   func() any { return &corev1.ServiceAccount{} },
	"Secret":                           func() any { return &corev1.Secret{} },
	"Service":                          func() any { return &corev1.Service{} },
	"DaemonSet":                        func() any { return &appsv1.DaemonSet{} },
	"Deployment":                       func() any { return &appsv1.Deployment{} },
	"PodDisruptionBudget":              func() any { return &policyv1.PodDisruptionBudget{} },
	"CSIDriver":                        func() any { return &storagev1.CSIDriver{} },
	"ClusterRole":                      func() any { return &rbacv1.ClusterRole{} },
	"ClusterRoleBinding":               func() any { return &rbacv1.ClusterRoleBinding{} },
	"Role":                             func() any { return &rbacv1.Role{} },
	"RoleBinding":                      func() any { return &rbacv1.RoleBinding{} },
	"MutatingWebhookConfiguration":     func() any { return &admissionregistrationv1.MutatingWebhookConfiguration{} },
	"ValidatingAdmissionPolicy":        func() any { return &admissionregistrationv1.ValidatingAdmissionPolicy{} },
	"ValidatingAdmissionPolicyBinding": func() any { return &admissionregistrationv1.ValidatingAdmissionPolicyBinding{} },
	"Certificate":                      func() any { return &certificate{} },
	"Issuer":                           func() any { return &issuer{} },
}

// certificate and issuer are the cert-manager.io/v1 fields the webhook chart
// uses; cert-manager's Go types are not a dependency of this module.
type certificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SecretName string   `json:"secretName"`
		DNSNames   []string `json:"dnsNames"`
		IssuerRef  struct {
			Name  string `json:"name"`
			Kind  string `json:"kind,omitempty"`
			Group string `json:"group,omitempty"`
		} `json:"issuerRef"`
	} `json:"spec"`
}

type issuer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SelfSigned *struct{} `json:"selfSigned,omitempty"`
	} `json:"spec"`
}

// decodeStrict decodes a document into its API type; unknown fields fail.
func decodeStrict(d document) (any, error) {
	newObj, ok := strictTypes[d.kind]
	if !ok {
		return nil, fmt.Errorf("%s %q (%s): kind not expected from these charts", d.kind, d.name, d.source)
	}
	obj := newObj()
	if err := yaml.UnmarshalStrict([]byte(d.yaml), obj); err != nil {
		return nil, fmt.Errorf("%s %q (%s) does not decode strictly: %v", d.kind, d.name, d.source, err)
	}
	return obj, nil
}

// objects decodes every document strictly, failing the test on error.
func (r rendered) objects(t *testing.T) []any {
	t.Helper()
	var out []any
	for _, d := range r.docs {
		obj, err := decodeStrict(d)
		if err != nil {
			t.Error(err)
			continue
		}
		out = append(out, obj)
	}
	return out
}

// only returns the single object of type T, failing if there is not exactly one.
func only[T any](t *testing.T, r rendered) T {
	t.Helper()
	found := all[T](t, r)
	if len(found) != 1 {
		var zero T
		t.Fatalf("want exactly one %T, got %d", zero, len(found))
	}
	return found[0]
}

// all returns every object of type T.
func all[T any](t *testing.T, r rendered) []T {
	t.Helper()
	var found []T
	for _, obj := range r.objects(t) {
		if v, ok := obj.(T); ok {
			found = append(found, v)
		}
	}
	return found
}

// renderError renders values expected to fail and returns the error text.
func renderError(t *testing.T, name string, vals map[string]any, opts renderOptions) string {
	t.Helper()
	_, err := render(t, loadChart(t, name), vals, opts)
	if err == nil {
		t.Fatalf("chart %s rendered with bad values %v; want an error", name, vals)
	}
	return err.Error()
}

// repoRoot is the checkout's root, for bin/ and dist/.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "charts")); err != nil {
		t.Fatalf("%s is not the repository root: %v", root, err)
	}
	return root
}

// container returns the named container of a pod spec.
func container(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q in the pod spec", name)
	return corev1.Container{}
}

// env returns a container's env var value, and whether it is set.
func env(c corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

// argValue returns the value of --name=value in args.
func argValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}
