package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gruntwork-io/terratest/modules/k8s"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/kind/pkg/cluster"
	"sigs.k8s.io/kind/pkg/cluster/nodes"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
)

// Parameters, from the environment (ci/e2e.sh passes them through).
var (
	// repoRoot is the checkout; the tests run in tests/e2e.
	repoRoot = mustAbs("../..")
	// clusterName is the kind cluster `make cluster` creates.
	clusterName = envOr("CLUSTER_NAME", "datadog-csi")
	// kubeconfigPath is where `make cluster` writes the kubeconfig.
	kubeconfigPath = envOr("KUBECONFIG", filepath.Join(repoRoot, ".cache", "kubeconfig"))
	// offline: no registry, so every image must be preloaded (see ci/cluster.sh).
	offline = os.Getenv("KIND_NODE_IMAGE") == ""
	// imageTag and imagePrefix name the images `make images` builds.
	imageTag    = envOr("IMAGE_TAG", "dev")
	imagePrefix = envOr("IMAGE_PREFIX", "ghcr.io/datadog-csi")
	// testAppImage sends traffic; appImage is the seed scenario's "nginx":
	// the real nginx where a registry is reachable, our test app offline.
	testAppImage = imagePrefix + "/test-app:" + imageTag
	appImage     = envOr("E2E_APP_IMAGE", offlineOr(testAppImage, "nginx"))
	// registrarMode chooses how the driver registers with the kubelet:
	// "in-process" (the driver itself) or "sidecar" (node-driver-registrar,
	// whose image needs a registry or a preloaded copy).
	registrarMode = envOr("E2E_REGISTRAR", offlineOr("in-process", "sidecar"))
)

// The project's images; each must be on the node (kind load) before a test.
var (
	driverImage     = imagePrefix + "/datadog-csi-driver:" + imageTag
	webhookImage    = imagePrefix + "/datadog-csi-webhook:" + imageTag
	dummyAgentImage = imagePrefix + "/dummy-agent:" + imageTag
)

// Labels of everything the tests create, so that a later run can remove the
// leftovers of a killed one.
const (
	labelE2E      = "e2e.datadog-csi.io/test"
	releasePrefix = "e2e-"
)

// offlineOr picks the default for the offline cluster or for one with a registry.
func offlineOr(offlineValue, registryValue string) string {
	if offline {
		return offlineValue
	}
	return registryValue
}

func mustAbs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		panic(err)
	}
	return a
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func TestMain(m *testing.M) {
	// terratest runs helm and kubectl from PATH: use the pinned ones in bin/.
	_ = os.Setenv("PATH", filepath.Join(repoRoot, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	_ = os.Setenv("KUBECONFIG", kubeconfigPath)
	os.Exit(m.Run())
}

// clusterHandle is what every test shares: clients, the node, and a once-per-run
// preflight (cluster reachable, images loaded, no leftovers).
type clusterHandle struct {
	config   *rest.Config
	client   *kubernetes.Clientset
	kubectl  *k8s.KubectlOptions
	kind     *cluster.Provider
	nodeName string
	node     nodes.Node
	helmEnv  map[string]string
}

var (
	sharedOnce    sync.Once
	sharedCluster *clusterHandle
	sharedErr     error
)

// connect returns the cluster, or fails the test saying which make target
// provides what is missing. The preflight runs once per test binary.
func connect(t testing.TB) *clusterHandle {
	t.Helper()
	sharedOnce.Do(func() { sharedCluster, sharedErr = preflight() })
	if sharedErr != nil {
		t.Fatalf("e2e preflight: %v", sharedErr)
	}
	return sharedCluster
}

func preflight() (*clusterHandle, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := os.Stat(kubeconfigPath); err != nil {
		return nil, fmt.Errorf("no kubeconfig at %s: run `make cluster` (or `make e2e`, which creates the cluster)", kubeconfigPath)
	}
	for _, tool := range []string{"helm", "kubectl"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s not found in bin/ or PATH: run `make tools`", tool)
		}
	}
	provider := cluster.NewProvider(cluster.ProviderWithDocker())
	kindNodes, err := provider.ListNodes(clusterName)
	if err != nil || len(kindNodes) == 0 {
		return nil, fmt.Errorf("kind cluster %q has no node containers (err %v; DOCKER_HOST=%q): run `make cluster`, "+
			"and run the tests with `make e2e` or after `eval \"$(ci/cluster.sh env)\"`", clusterName, err, os.Getenv("DOCKER_HOST"))
	}
	config, err := clientcmd.BuildConfigFromFlags("", kubeconfigPath)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %v: run `make cluster`", kubeconfigPath, err)
	}
	config.QPS, config.Burst = 50, 100
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return nil, err
	}
	nodeList, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("API server of %s not reachable: %v: run `make cluster`", kubeconfigPath, err)
	}
	if len(nodeList.Items) != 1 {
		return nil, fmt.Errorf("want the one-node cluster of `make cluster`, found %d nodes", len(nodeList.Items))
	}
	node := nodeList.Items[0]
	if !nodeReady(&node) {
		return nil, fmt.Errorf("node %s is not Ready: run `make cluster` (it repairs or recreates the cluster)", node.Name)
	}
	h := &clusterHandle{
		config:   config,
		client:   client,
		kubectl:  k8s.NewKubectlOptions("", kubeconfigPath, ""),
		kind:     provider,
		nodeName: node.Name,
	}
	for _, n := range kindNodes {
		if n.String() == node.Name {
			h.node = n
		}
	}
	if h.node == nil {
		return nil, fmt.Errorf("node %s has no kind container in cluster %q: KUBECONFIG points elsewhere? run `make cluster`", node.Name, clusterName)
	}
	images := []string{driverImage, webhookImage, dummyAgentImage, testAppImage}
	if offline && appImage != testAppImage {
		images = append(images, appImage)
	}
	switch registrarMode {
	case "in-process":
	case "sidecar":
		if offline {
			img := envOr("E2E_REGISTRAR_IMAGE", "")
			if img == "" {
				return nil, fmt.Errorf("E2E_REGISTRAR=sidecar on the offline cluster: set E2E_REGISTRAR_IMAGE=<repo:tag> " +
					"of a node-driver-registrar image loaded with `bin/kind load docker-image`, or use a registry (KIND_NODE_IMAGE)")
			}
			images = append(images, img)
		}
	default:
		return nil, fmt.Errorf("E2E_REGISTRAR=%q: want in-process or sidecar", registrarMode)
	}
	for _, image := range images {
		if err := h.node.Command("crictl", "inspecti", "-q", image).Run(); err != nil {
			return nil, fmt.Errorf("image %s is not on node %s (the cluster cannot pull): run `make images`", image, node.Name)
		}
	}
	if h.helmEnv, err = helmHome(); err != nil {
		return nil, err
	}
	if err := removeLeftovers(ctx, h); err != nil {
		return nil, err
	}
	if err := buildUmbrellaDependencies(h); err != nil {
		return nil, err
	}
	return h, nil
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// helmHome isolates helm's config, cache and repositories from the user's.
func helmHome() (map[string]string, error) {
	dir, err := os.MkdirTemp("", "e2e-helm-")
	if err != nil {
		return nil, err
	}
	return map[string]string{
		"HELM_CONFIG_HOME":       filepath.Join(dir, "config"),
		"HELM_CACHE_HOME":        filepath.Join(dir, "cache"),
		"HELM_DATA_HOME":         filepath.Join(dir, "data"),
		"HELM_REPOSITORY_CONFIG": filepath.Join(dir, "config", "repositories.yaml"),
		"HELM_REPOSITORY_CACHE":  filepath.Join(dir, "cache", "repository"),
	}, nil
}

// removeLeftovers deletes what a killed run left: its releases (they own the
// cluster-wide CSIDriver and webhook configuration, so a new install would
// fail or be mutated twice) and its namespaces. Another owner of the CSIDriver
// (the demo, a user's install) is not ours to remove: that is an error.
func removeLeftovers(ctx context.Context, h *clusterHandle) error {
	nss, err := h.client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: labelE2E})
	if err != nil {
		return err
	}
	releases := map[string][]string{} // namespace -> releases
	for _, ns := range nss.Items {
		out, _ := exec.CommandContext(ctx, "helm", "--kubeconfig", kubeconfigPath, "list", "-q", "-n", ns.Name).Output()
		releases[ns.Name] = strings.Fields(string(out))
	}
	// Pods with CSI volumes first, while a driver still runs to unpublish them.
	var app []string
	for _, ns := range nss.Items {
		if len(releases[ns.Name]) == 0 {
			app = append(app, ns.Name)
			_ = h.client.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{})
		}
	}
	for _, ns := range app {
		_ = poll(ctx, time.Minute, time.Second, func(ctx context.Context) (bool, string, error) {
			pods, err := h.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			return err == nil && len(pods.Items) == 0, "pods left", nil
		})
	}
	for ns, rels := range releases {
		for _, rel := range rels {
			_ = exec.CommandContext(ctx, "helm", "--kubeconfig", kubeconfigPath, "uninstall", rel, "-n", ns, "--wait", "--timeout", "60s").Run()
		}
		if len(rels) > 0 {
			_ = h.client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
		}
	}
	drv, err := h.client.StorageV1().CSIDrivers().Get(ctx, datadog.DriverName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return err
	}
	rel, relNS := drv.Annotations["meta.helm.sh/release-name"], drv.Annotations["meta.helm.sh/release-namespace"]
	if strings.HasPrefix(rel, releasePrefix) {
		_ = exec.CommandContext(ctx, "helm", "--kubeconfig", kubeconfigPath, "uninstall", rel, "-n", relNS, "--wait", "--timeout", "60s").Run()
		return nil
	}
	return fmt.Errorf("CSIDriver %s already installed by release %q in namespace %q: the e2e tests install their own; "+
		"remove it first (`make demo-down` if it is the demo's, or `helm uninstall %s -n %s`)", datadog.DriverName, rel, relNS, rel, relNS)
}

// uniqueName returns prefix-<6 hex>, for release and namespace names.
func uniqueName(prefix string) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// nodeMountInfo is the node container's mount table, where the kubelet's and
// the driver's (propagated) mounts appear.
func (h *clusterHandle) nodeMountInfo() (string, error) {
	var out strings.Builder
	cmd := h.node.Command("cat", "/proc/self/mountinfo")
	cmd.SetStdout(&out)
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("reading mountinfo of node %s: %w", h.node.String(), err)
	}
	return out.String(), nil
}

// csiMountLines returns the node's mounts in pod volume directories of our driver's volumes.
func csiMountLines(mountinfo, podUID string) []string {
	var lines []string
	for _, l := range strings.Split(mountinfo, "\n") {
		if strings.Contains(l, "/pods/"+podUID+"/volumes/kubernetes.io~csi/") {
			lines = append(lines, l)
		}
	}
	return lines
}

var errTimeout = errors.New("timed out")

// poll calls f every interval until it returns true, an error, or timeout.
// The last "not yet" reason is returned with the timeout so failures say why.
func poll(ctx context.Context, timeout, interval time.Duration, f func(ctx context.Context) (bool, string, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	for {
		done, why, err := f(ctx)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		last = why
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w after %s: %s", errTimeout, timeout, last)
		case <-time.After(interval):
		}
	}
}
