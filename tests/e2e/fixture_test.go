package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gruntwork-io/terratest/modules/helm"
	"github.com/gruntwork-io/terratest/modules/logger"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
)

// fixture is one test's view of the cluster: what it created, removed in a
// safe order when the test ends, and what a person needs to see when it failed.
type fixture struct {
	*clusterHandle
	t   testing.TB
	ctx context.Context
	*resources
}

// resources are what a test created, shared by its subtests.
type resources struct {
	// appNamespaces hold pods with CSI volumes: deleted first, while the
	// driver still runs to unpublish their volumes.
	appNamespaces []string
	releases      []*release
	agents        []*agent
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	h := connect(t)
	ctx, cancel := context.WithCancel(context.Background())
	f := &fixture{clusterHandle: h, t: t, ctx: ctx, resources: &resources{}}
	t.Cleanup(func() {
		defer cancel()
		if t.Failed() || os.Getenv("E2E_DUMP_ALWAYS") != "" {
			f.dumpDiagnostics()
		}
		f.teardown()
	})
	return f
}

func (f *fixture) teardown() {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	defer func() { f.t.Logf("cleanup took %s", time.Since(start).Round(time.Millisecond)) }()
	// App pods first, while the driver still runs to unpublish their volumes.
	for _, ns := range f.appNamespaces {
		f.deleteNamespace(ctx, ns)
	}
	for _, ns := range f.appNamespaces {
		f.waitPodsGone(ctx, ns)
	}
	f.checkNoCSIMountsLeft(ctx)
	for _, a := range f.agents {
		f.deleteNamespace(ctx, a.namespace)
	}
	for i := len(f.releases) - 1; i >= 0; i-- {
		f.uninstall(ctx, f.releases[i])
	}
	for _, r := range f.releases {
		f.waitPodsGone(ctx, r.namespace)
	}
	for _, a := range f.agents {
		f.waitPodsGone(ctx, a.namespace)
	}
}

// checkNoCSIMountsLeft fails the test if, its pods gone, the node still has
// CSI volume mounts: the kubelet removes a pod only after NodeUnpublishVolume
// succeeded, so a leftover is a driver that reported an unmount it did not do.
func (f *fixture) checkNoCSIMountsLeft(ctx context.Context) {
	err := poll(ctx, 30*time.Second, 500*time.Millisecond, func(context.Context) (bool, string, error) {
		mi, err := f.nodeMountInfo()
		if err != nil {
			return false, err.Error(), nil
		}
		var left []string
		for _, l := range strings.Split(mi, "\n") {
			if strings.Contains(l, "/volumes/kubernetes.io~csi/") {
				left = append(left, l)
			}
		}
		return len(left) == 0, "CSI mounts left on the node:\n" + strings.Join(left, "\n"), nil
	})
	if err != nil {
		f.t.Errorf("cleanup: %v", err)
	}
}

func (f *fixture) deleteNamespace(ctx context.Context, ns string) {
	err := f.client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		f.t.Errorf("cleanup: deleting namespace %s: %v", ns, err)
	}
}

// waitPodsGone waits until the pods of a deleted namespace are gone: a
// terminating driver or agent pod could otherwise remove a socket that its
// successor in the next test just created, and a pod with CSI volumes must be
// unpublished before the driver goes.
func (f *fixture) waitPodsGone(ctx context.Context, ns string) {
	err := poll(ctx, 2*time.Minute, 500*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		pods, err := f.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		return len(pods.Items) == 0, fmt.Sprintf("%d pods left", len(pods.Items)), nil
	})
	if err != nil {
		f.t.Errorf("cleanup: pods of namespace %s not gone: %v", ns, err)
	}
}

// sub is the fixture for a subtest: failures go to t, resources are shared.
func (f *fixture) sub(t *testing.T) *fixture {
	return &fixture{clusterHandle: f.clusterHandle, t: t, ctx: f.ctx, resources: f.resources}
}

// subB is the fixture for a sub-benchmark.
func (f *fixture) subB(b *testing.B) *fixture {
	return &fixture{clusterHandle: f.clusterHandle, t: b, ctx: f.ctx, resources: f.resources}
}

// namespace creates a namespace for this test with the given labels (Pod
// Security levels, say); it is deleted when the test ends.
func (f *fixture) namespace(prefix string, labels map[string]string) string {
	f.t.Helper()
	name := f.createNamespace(prefix, labels)
	f.appNamespaces = append(f.appNamespaces, name)
	return name
}

func (f *fixture) createNamespace(prefix string, labels map[string]string) string {
	f.t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: uniqueName(prefix), Labels: map[string]string{labelE2E: sanitizeLabel(f.t.Name())}}}
	for k, v := range labels {
		ns.Labels[k] = v
	}
	if _, err := f.client.CoreV1().Namespaces().Create(f.ctx, ns, metav1.CreateOptions{}); err != nil {
		f.t.Fatalf("creating namespace %s: %v", ns.Name, err)
	}
	f.waitDefaultServiceAccount(ns.Name)
	return ns.Name
}

// waitDefaultServiceAccount waits until the controller-manager created the
// namespace's ServiceAccount default: the ServiceAccount admission plugin
// rejects a pod without it after retrying for only a second or two.
func (f *fixture) waitDefaultServiceAccount(ns string) {
	f.t.Helper()
	err := poll(f.ctx, time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		_, err := f.client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		return true, "", nil
	})
	if err != nil {
		f.t.Fatalf("namespace %s has no ServiceAccount default (the controller-manager creates it): %v", ns, err)
	}
}

// sanitizeLabel makes a test name a valid label value.
func sanitizeLabel(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i] = '_'
		}
	}
	s = strings.Trim(string(b), "_-.")
	if len(s) > 63 {
		s = strings.Trim(s[:63], "_-.")
	}
	return s
}

// Pod Security labels.
const (
	psaEnforce = "pod-security.kubernetes.io/enforce"
	psaWarn    = "pod-security.kubernetes.io/warn"
)

// release is one install of a chart by this test.
type release struct {
	name      string
	namespace string
	chart     string
	opts      *helm.Options
}

var umbrellaChart = filepath.Join(repoRoot, "charts", "datadog-csi")

var depsOnce sync.Once

// buildUmbrellaDependencies packages the subcharts into the umbrella chart
// (file:// dependencies), from the working tree, without touching any repository.
func buildUmbrellaDependencies(h *clusterHandle) error {
	var err error
	depsOnce.Do(func() {
		cmd := exec.Command("helm", "dependency", "update", "--skip-refresh", umbrellaChart)
		cmd.Env = os.Environ()
		for k, v := range h.helmEnv {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		if out, e := cmd.CombinedOutput(); e != nil {
			err = fmt.Errorf("helm dependency update %s: %v\n%s", umbrellaChart, e, out)
		}
	})
	return err
}

// umbrellaValues are the --set values of an e2e install of the umbrella chart
// with the webhook in the given mode.
func umbrellaValues(mode datadog.Mode) map[string]string {
	v := map[string]string{
		"datadog-csi-driver.image.repository":        imagePrefix + "/datadog-csi-driver",
		"datadog-csi-driver.image.tag":               imageTag,
		"datadog-csi-driver.image.pullPolicy":        "IfNotPresent",
		"datadog-csi-driver.registrar.enabled":       fmt.Sprint(registrarMode == "sidecar"),
		"datadog-csi-driver.logLevel":                "debug",
		"datadog-csi-webhook.image.repository":       imagePrefix + "/datadog-csi-webhook",
		"datadog-csi-webhook.image.tag":              imageTag,
		"datadog-csi-webhook.image.pullPolicy":       "IfNotPresent",
		"datadog-csi-webhook.agentCommunicationMode": string(mode),
		"datadog-csi-webhook.logLevel":               "debug",
	}
	if img := envOr("E2E_REGISTRAR_IMAGE", ""); img != "" && registrarMode == "sidecar" {
		repo, tag, _ := strings.Cut(img, ":")
		v["datadog-csi-driver.registrar.image.repository"] = repo
		v["datadog-csi-driver.registrar.image.tag"] = tag
	}
	// E2E_HELM_SET: extra values, "key=value,key=value", applied last.
	for _, kv := range strings.Split(os.Getenv("E2E_HELM_SET"), ",") {
		if k, val, ok := strings.Cut(kv, "="); ok {
			v[k] = val
		}
	}
	return v
}

// install installs chart (a directory or repo/name) as a new release in its
// own privileged namespace and waits for its pods. The release is
// uninstalled when the test ends.
func (f *fixture) install(chart string, values map[string]string) *release {
	f.t.Helper()
	r := &release{name: uniqueName(releasePrefix + "rel"), chart: chart}
	// The driver's pods are privileged.
	r.namespace = f.createNamespace("e2e-system", map[string]string{psaEnforce: "privileged"})
	r.opts = f.helmOptions(r.namespace, values)
	f.releases = append(f.releases, r)
	start := time.Now()
	if err := helm.InstallContextE(f.t, f.ctx, r.opts, chart, r.name); err != nil {
		f.t.Fatalf("helm install %s %s: %v", r.name, chart, err)
	}
	f.t.Logf("helm install %s took %s", r.name, time.Since(start).Round(time.Millisecond))
	f.waitDriverRegistered(r)
	return r
}

func (f *fixture) helmOptions(ns string, values map[string]string) *helm.Options {
	opts := &helm.Options{
		KubectlOptions: f.kubectl,
		SetValues:      values,
		EnvVars:        f.helmEnv,
		ExtraArgs: map[string][]string{
			"install": {"--namespace", ns, "--wait", "--timeout", "3m"},
			"upgrade": {"--namespace", ns, "--wait", "--timeout", "3m"},
		},
		Logger: logger.Default,
	}
	return opts
}

// upgrade runs `helm upgrade` with new values (every --set again: nothing reused).
func (f *fixture) upgrade(r *release, values map[string]string) {
	f.t.Helper()
	r.opts.SetValues = values
	start := time.Now()
	if err := helm.UpgradeContextE(f.t, f.ctx, r.opts, r.chart, r.name); err != nil {
		f.t.Fatalf("helm upgrade %s: %v", r.name, err)
	}
	f.t.Logf("helm upgrade %s took %s", r.name, time.Since(start).Round(time.Millisecond))
}

func (f *fixture) uninstall(ctx context.Context, r *release) {
	out, err := exec.CommandContext(ctx, "helm", "--kubeconfig", kubeconfigPath, "uninstall", r.name,
		"--namespace", r.namespace, "--wait", "--timeout", "2m").CombinedOutput()
	if err != nil {
		f.t.Errorf("cleanup: helm uninstall %s: %v\n%s", r.name, err, out)
	}
	f.deleteNamespace(ctx, r.namespace)
}

// releasePods lists the release's pods whose app.kubernetes.io/name is name.
func (f *fixture) releasePods(ctx context.Context, r *release, name string) ([]corev1.Pod, error) {
	pods, err := f.client.CoreV1().Pods(r.namespace).List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=" + name + ",app.kubernetes.io/instance=" + r.name,
	})
	if err != nil {
		return nil, err
	}
	return pods.Items, nil
}

// waitDriverRegistered waits until the kubelet lists our driver on the node:
// only then can a pod with its volumes start. (helm --wait does not wait for
// a one-node DaemonSet whose maxUnavailable rounds up to 1.) A driver image
// that is not on the node fails at once.
func (f *fixture) waitDriverRegistered(r *release) {
	f.t.Helper()
	err := poll(f.ctx, 2*time.Minute, 500*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		if pods, err := f.releasePods(ctx, r, driverChartName); err == nil {
			for _, p := range pods {
				for _, cs := range p.Status.ContainerStatuses {
					if w := cs.State.Waiting; w != nil && imagePullFailures[w.Reason] {
						return false, "", fmt.Errorf("driver pod %s: image %s is not on the node (%s): run `make images`", p.Name, cs.Image, w.Reason)
					}
				}
			}
		}
		csiNode, err := f.client.StorageV1().CSINodes().Get(ctx, f.nodeName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		var names []string
		for _, d := range csiNode.Spec.Drivers {
			if d.Name == datadog.DriverName {
				return true, "", nil
			}
			names = append(names, d.Name)
		}
		return false, fmt.Sprintf("CSINode %s lists drivers %v", f.nodeName, names), nil
	})
	if err != nil {
		f.t.Fatalf("driver %s not registered with the kubelet (registration: %s): %v", datadog.DriverName, registrarMode, err)
	}
}

// dumpDiagnostics prints what a person needs to understand a failure:
// events, pod states and logs of the test's namespaces, the driver, the
// webhook and the agent, and the node's CSI mounts.
func (f *fixture) dumpDiagnostics() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var b strings.Builder
	fmt.Fprintf(&b, "\n======== diagnostics of %s ========\n", f.t.Name())
	var nss []string
	nss = append(nss, f.appNamespaces...)
	for _, r := range f.releases {
		nss = append(nss, r.namespace)
	}
	for _, a := range f.agents {
		nss = append(nss, a.namespace)
	}
	for _, ns := range nss {
		f.dumpNamespace(ctx, &b, ns)
	}
	if csiNode, err := f.client.StorageV1().CSINodes().Get(ctx, f.nodeName, metav1.GetOptions{}); err == nil {
		fmt.Fprintf(&b, "--- CSINode %s drivers:", f.nodeName)
		for _, d := range csiNode.Spec.Drivers {
			fmt.Fprintf(&b, " %s", d.Name)
		}
		b.WriteString("\n")
	}
	if mi, err := f.nodeMountInfo(); err != nil {
		fmt.Fprintf(&b, "--- node mountinfo: %v\n", err)
	} else {
		b.WriteString("--- node mountinfo (CSI volumes and the agent's socket directory):\n")
		for _, l := range strings.Split(mi, "\n") {
			if agentOrCSIMount(l) {
				b.WriteString(l + "\n")
			}
		}
	}
	for _, a := range f.agents {
		if rec, err := f.agentRecords(ctx, a); err == nil {
			fmt.Fprintf(&b, "--- dummy agent records (%s): %s\n", a.namespace, rec)
		}
	}
	b.WriteString("======== end of diagnostics ========\n")
	f.t.Log(b.String())
}

func (f *fixture) dumpNamespace(ctx context.Context, b *strings.Builder, ns string) {
	fmt.Fprintf(b, "--- namespace %s\n", ns)
	events, err := f.client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Fprintf(b, "  events: %v\n", err)
	} else {
		sort.Slice(events.Items, func(i, j int) bool {
			return eventTime(&events.Items[i]).Before(eventTime(&events.Items[j]))
		})
		for _, e := range events.Items {
			fmt.Fprintf(b, "  event %s %s %s/%s: %s: %s (x%d)\n", eventTime(&e).Format("15:04:05"), e.Type,
				e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message, max(e.Count, 1))
		}
	}
	pods, err := f.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Fprintf(b, "  pods: %v\n", err)
		return
	}
	for _, p := range pods.Items {
		fmt.Fprintf(b, "  pod %s uid=%s phase=%s node=%s volumes=%s\n", p.Name, p.UID, p.Status.Phase, p.Spec.NodeName, describeVolumes(&p))
		for _, cs := range p.Status.ContainerStatuses {
			fmt.Fprintf(b, "    container %s ready=%v restarts=%d state=%s\n", cs.Name, cs.Ready, cs.RestartCount, describeState(cs.State))
		}
		for _, c := range p.Spec.Containers {
			tail := int64(60)
			raw, err := f.client.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: c.Name, TailLines: &tail}).DoRaw(ctx)
			if err != nil {
				fmt.Fprintf(b, "    logs of %s: %v\n", c.Name, err)
				continue
			}
			fmt.Fprintf(b, "    logs of %s (last %d lines):\n", c.Name, tail)
			for _, l := range strings.Split(strings.TrimRight(string(raw), "\n"), "\n") {
				fmt.Fprintf(b, "      %s\n", l)
			}
		}
	}
}

// agentOrCSIMount tells whether a mountinfo line is a CSI volume mount or has
// the agent's socket directory as its source or mount point.
func agentOrCSIMount(line string) bool {
	fields := strings.Fields(line)
	if len(fields) < 5 {
		return false
	}
	root, mountPoint := fields[3], fields[4]
	return strings.Contains(mountPoint, "kubernetes.io~csi") ||
		strings.HasSuffix(root, "/datadog") || strings.Contains(root, "/datadog/") || strings.HasSuffix(mountPoint, "/run/datadog")
}

func eventTime(e *corev1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

func describeState(s corev1.ContainerState) string {
	switch {
	case s.Running != nil:
		return "running since " + s.Running.StartedAt.Format("15:04:05")
	case s.Waiting != nil:
		return "waiting " + s.Waiting.Reason + ": " + s.Waiting.Message
	case s.Terminated != nil:
		return fmt.Sprintf("terminated %s exit=%d: %s", s.Terminated.Reason, s.Terminated.ExitCode, s.Terminated.Message)
	}
	return "unknown"
}

// describeVolumes summarizes a pod's volumes: name=csi(type) or name=hostPath(path).
func describeVolumes(p *corev1.Pod) string {
	var parts []string
	for _, v := range p.Spec.Volumes {
		switch {
		case v.CSI != nil:
			parts = append(parts, fmt.Sprintf("%s=csi(%s %v)", v.Name, v.CSI.Driver, v.CSI.VolumeAttributes))
		case v.HostPath != nil:
			parts = append(parts, fmt.Sprintf("%s=hostPath(%s)", v.Name, v.HostPath.Path))
		case v.Projected != nil:
			// the API token: not interesting here
		default:
			parts = append(parts, v.Name)
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}
