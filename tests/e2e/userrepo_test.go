package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gruntwork-io/terratest/modules/helm"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
)

// chartRepoDir is what `make chart-repo` writes: packaged charts and index.yaml.
var chartRepoDir = envOr("E2E_CHART_REPO_DIR", filepath.Join(repoRoot, "dist", "charts"))

// TestUserHelmRepo runs the user's commands against our chart repository,
// served on 127.0.0.1: `helm repo add datadog http://127.0.0.1:<port>` and
// `helm install datadog/datadog-csi-driver`; then a pod with one of the
// driver's inline volumes starts in a baseline namespace.
func TestUserHelmRepo(t *testing.T) {
	f := newFixture(t)
	if _, err := os.Stat(filepath.Join(chartRepoDir, "index.yaml")); err != nil {
		t.Fatalf("no chart repository at %s: run `make chart-repo`", chartRepoDir)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(chartRepoDir)))
	defer srv.Close()

	opts := f.helmOptions("", nil)
	if err := helm.AddRepoContextE(t, f.ctx, opts, "datadog", srv.URL); err != nil {
		t.Fatalf("helm repo add datadog %s: %v", srv.URL, err)
	}
	f.install("datadog/datadog-csi-driver", map[string]string{
		"image.repository":  imagePrefix + "/datadog-csi-driver",
		"image.tag":         imageTag,
		"image.pullPolicy":  "IfNotPresent",
		"registrar.enabled": fmt.Sprint(registrarMode == "sidecar"),
	})

	ns := f.namespace("e2e-user", map[string]string{psaEnforce: "baseline"})
	p := withCSIVolume(appPod("app"), "datadog-dsd", datadog.PodDSDSocketDirectory,
		map[string]string{datadog.AttrType: string(datadog.DSDSocketDirectory)})
	f.createPod(ns, p)
	f.waitPodReady(ns, p.Name, 2*time.Minute)
}
