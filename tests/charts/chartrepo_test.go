package charts

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/repo"
)

// The user's commands against the packaged repository in dist/charts,
// served on 127.0.0.1: helm repo add, helm template and
// helm install --dry-run=client of datadog/datadog-csi-driver (and the
// umbrella), with Helm v3 and v4.
func TestChartRepository(t *testing.T) {
	root := repoRoot(t)
	dist := filepath.Join(root, "dist", "charts")
	if _, err := os.Stat(filepath.Join(dist, "index.yaml")); err != nil {
		t.Fatalf("no chart repository in %s (%v): run 'make chart-repo'", dist, err)
	}
	checkRepositoryIsCurrent(t, dist)

	server := httptest.NewServer(http.FileServer(http.Dir(dist)))
	defer server.Close()
	// A stand-in API server for Helm v3, whose install --dry-run=client still
	// checks that a cluster is reachable and reads its discovery API.
	api := httptest.NewServer(fakeDiscovery())
	defer api.Close()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	writeKubeconfig(t, kubeconfig, api.URL)

	for _, helm := range []string{"helm", "helm4"} {
		t.Run(helm, func(t *testing.T) {
			bin := filepath.Join(root, "bin", helm)
			if _, err := os.Stat(bin); err != nil {
				t.Fatalf("%s is missing (%v): run 'make tools'", bin, err)
			}
			home := t.TempDir()
			run := func(args ...string) string {
				t.Helper()
				cmd := exec.Command(bin, args...)
				cmd.Env = append(os.Environ(),
					"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
					"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
					"HELM_DATA_HOME="+filepath.Join(home, "data"),
					"KUBECONFIG="+kubeconfig,
				)
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				if err := cmd.Run(); err != nil {
					t.Fatalf("%s %s: %v\n%s%s", helm, strings.Join(args, " "), err, stdout.String(), stderr.String())
				}
				return stdout.String()
			}

			run("repo", "add", "datadog", server.URL)
			if out := run("search", "repo", "datadog/"); !strings.Contains(out, "datadog/datadog-csi-driver") ||
				!strings.Contains(out, "datadog/datadog-csi-webhook") || !strings.Contains(out, "datadog/datadog-csi ") {
				t.Errorf("helm search repo does not list the three charts:\n%s", out)
			}

			manifest := run("template", "datadog-csi-driver", "datadog/datadog-csi-driver", "--namespace", "datadog-csi")
			for _, want := range []string{"kind: DaemonSet", "kind: CSIDriver", "name: k8s.csi.datadoghq.com"} {
				if !strings.Contains(manifest, want) {
					t.Errorf("helm template datadog/datadog-csi-driver lacks %q", want)
				}
			}
			installArgs := []string{"install", "datadog-csi-driver", "datadog/datadog-csi-driver", "--namespace", "datadog-csi", "--dry-run=client"}
			if helm == "helm" {
				// Helm v3 validates against the cluster's OpenAPI document, which
				// the stand-in API server does not serve; the strict decoding in
				// TestChartsRenderStrictly checks the same objects.
				installArgs = append(installArgs, "--disable-openapi-validation")
			}
			install := run(installArgs...)
			if !strings.Contains(install, "kind: DaemonSet") || !strings.Contains(install, "STATUS: pending-install") {
				t.Errorf("helm install --dry-run=client output:\n%s", install)
			}
			umbrella := run("template", "datadog-csi", "datadog/datadog-csi", "--namespace", "datadog-csi")
			for _, want := range []string{"kind: DaemonSet", "kind: Deployment", "kind: MutatingWebhookConfiguration"} {
				if !strings.Contains(umbrella, want) {
					t.Errorf("helm template datadog/datadog-csi lacks %q", want)
				}
			}
		})
	}
}

// checkRepositoryIsCurrent fails when a packaged chart differs from its
// source, so the test never passes on a stale dist/charts.
func checkRepositoryIsCurrent(t *testing.T, dist string) {
	t.Helper()
	index, err := repo.LoadIndexFile(filepath.Join(dist, "index.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range allCharts {
		source := loadChart(t, name)
		versions := index.Entries[name]
		if len(versions) == 0 {
			t.Fatalf("index.yaml has no chart %s: run 'make chart-repo'", name)
		}
		packaged, err := loader.Load(filepath.Join(dist, versions[0].URLs[0]))
		if err != nil {
			t.Fatal(err)
		}
		if err := sameChart(source, packaged); err != nil {
			t.Fatalf("dist/charts is stale (%s: %v): run 'make chart-repo'", name, err)
		}
	}
}

func sameChart(source, packaged *chart.Chart) error {
	files := func(c *chart.Chart) map[string]string {
		values, _ := json.Marshal(c.Values)
		metadata, _ := json.Marshal(c.Metadata)
		m := map[string]string{"values.yaml": string(values), "values.schema.json": string(c.Schema), "Chart.yaml": string(metadata)}
		for _, f := range c.Templates {
			m[f.Name] = string(f.Data)
		}
		return m
	}
	if a, b := files(source), files(packaged); !reflect.DeepEqual(a, b) {
		for k := range a {
			if a[k] != b[k] {
				return fmt.Errorf("%s differs", k)
			}
		}
		return fmt.Errorf("file lists differ")
	}
	deps := func(c *chart.Chart) map[string]*chart.Chart {
		m := map[string]*chart.Chart{}
		for _, d := range c.Dependencies() {
			m[d.Name()] = d
		}
		return m
	}
	a, b := deps(source), deps(packaged)
	if len(a) != len(b) {
		return fmt.Errorf("%d dependencies packaged, %d in the source", len(b), len(a))
	}
	for name, d := range a {
		if b[name] == nil {
			return fmt.Errorf("dependency %s not packaged", name)
		}
		if err := sameChart(d, b[name]); err != nil {
			return fmt.Errorf("dependency %s: %w", name, err)
		}
	}
	return nil
}

func writeKubeconfig(t *testing.T, path, server string) {
	t.Helper()
	config := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: %q}}]
users: [{name: fake, user: {token: fake}}]
contexts: [{name: fake, context: {cluster: fake, user: fake}}]
current-context: fake
`, server)
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
}

// fakeDiscovery answers the version and discovery requests Helm v3 makes
// before a client-side dry run, for the kinds the charts render; anything
// else is a 404, i.e. "no such object yet".
func fakeDiscovery() http.Handler {
	resources := map[string][][2]string{ // group/version -> (resource, kind), namespaced unless listed below
		"v1":                              {{"serviceaccounts", "ServiceAccount"}, {"secrets", "Secret"}, {"services", "Service"}, {"namespaces", "Namespace"}},
		"apps/v1":                         {{"daemonsets", "DaemonSet"}, {"deployments", "Deployment"}},
		"storage.k8s.io/v1":               {{"csidrivers", "CSIDriver"}},
		"policy/v1":                       {{"poddisruptionbudgets", "PodDisruptionBudget"}},
		"rbac.authorization.k8s.io/v1":    {{"clusterroles", "ClusterRole"}, {"clusterrolebindings", "ClusterRoleBinding"}, {"roles", "Role"}, {"rolebindings", "RoleBinding"}},
		"admissionregistration.k8s.io/v1": {{"mutatingwebhookconfigurations", "MutatingWebhookConfiguration"}, {"validatingadmissionpolicies", "ValidatingAdmissionPolicy"}, {"validatingadmissionpolicybindings", "ValidatingAdmissionPolicyBinding"}},
	}
	clusterScoped := map[string]bool{"namespaces": true, "csidrivers": true, "clusterroles": true, "clusterrolebindings": true,
		"mutatingwebhookconfigurations": true, "validatingadmissionpolicies": true, "validatingadmissionpolicybindings": true}
	reply := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case p == "/version":
			reply(w, 200, map[string]string{"major": "1", "minor": "37", "gitVersion": "v1.37.2"})
		case p == "/api":
			reply(w, 200, map[string]any{"kind": "APIVersions", "versions": []string{"v1"}})
		case p == "/apis":
			var groups []any
			for gv := range resources {
				if group, version, ok := strings.Cut(gv, "/"); ok {
					v := map[string]string{"groupVersion": gv, "version": version}
					groups = append(groups, map[string]any{"name": group, "versions": []any{v}, "preferredVersion": v})
				}
			}
			reply(w, 200, map[string]any{"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
		case strings.HasPrefix(p, "/api/") || strings.HasPrefix(p, "/apis/"):
			gv := strings.TrimPrefix(strings.TrimPrefix(p, "/apis/"), "/api/")
			list, ok := resources[gv]
			if !ok {
				reply(w, 404, map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})
				return
			}
			var out []any
			for _, rk := range list {
				out = append(out, map[string]any{"name": rk[0], "kind": rk[1], "namespaced": !clusterScoped[rk[0]],
					"verbs": []string{"get", "list", "create", "update", "patch", "delete"}, "singularName": ""})
			}
			reply(w, 200, map[string]any{"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out})
		default:
			reply(w, 404, map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})
		}
	})
}
