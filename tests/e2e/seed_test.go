package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gruntwork-io/terratest/modules/k8s"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
)

// TestSeedScenario is the user's proof. In csi mode a labelled pod named nginx
// gets two read-only CSI volumes of our driver and no hostPath, runs, and its
// namespace can enforce Pod Security baseline without a warning. In socket
// mode (what Datadog's Cluster Agent does) the same pod gets a hostPath, the
// same label warns "hostPath volumes", and under enforce the pod is rejected.
func TestSeedScenario(t *testing.T) {
	f := newFixture(t)
	rel := f.install(umbrellaChart, umbrellaValues(datadog.ModeCSI))

	t.Run("csi mode: CSI volumes, no hostPath, baseline admits", func(t *testing.T) {
		f := f.sub(t)
		ns := f.namespace("e2e-seed", nil)
		f.waitWebhookMode(ns, datadog.ModeCSI)
		pod := f.createPod(ns, seedPod())
		t.Logf("nginx's volumes as admitted: %s", describeVolumes(pod))

		if hp := hostPathVolumes(pod); len(hp) > 0 {
			t.Errorf("pod nginx has hostPath volumes %v; want none", hp)
		}
		vols := ourVolumes(pod)
		for _, typ := range []datadog.VolumeType{datadog.DSDSocketDirectory, datadog.APMSocketDirectory} {
			v, ok := vols[string(typ)]
			if !ok {
				t.Errorf("pod nginx has no %s volume of driver %s; volumes: %s", typ, datadog.DriverName, describeVolumes(pod))
				continue
			}
			if v.CSI.ReadOnly == nil || !*v.CSI.ReadOnly {
				t.Errorf("volume %s (%s) is not readOnly", v.Name, typ)
			}
		}
		if len(vols) != 2 {
			t.Errorf("pod nginx has %d volumes of our driver, want 2: %s", len(vols), describeVolumes(pod))
		}
		pod = f.waitPodReady(ns, "nginx", 2*time.Minute)

		// The driver really published: the pod's CSI volumes are read-only
		// mounts on the node.
		mi, err := f.nodeMountInfo()
		if err != nil {
			t.Fatal(err)
		}
		lines := csiMountLines(mi, string(pod.UID))
		if len(lines) < 2 {
			t.Errorf("node has %d CSI mounts for nginx (uid %s), want 2:\n%s", len(lines), pod.UID, strings.Join(lines, "\n"))
		}
		for _, l := range lines {
			if !mountReadOnly(l) {
				t.Errorf("CSI mount is not read-only: %s", l)
			}
		}

		out := f.labelNamespaceDryRun(ns, "baseline")
		if strings.Contains(out, "Warning") {
			t.Errorf("labelling %s enforce=baseline warned; want no warning:\n%s", ns, out)
		}
		// And for real: a second labelled pod is admitted under enforce.
		f.labelNamespace(ns, psaEnforce, "baseline")
		p2 := seedPod()
		p2.Name = "nginx-2"
		f.createPod(ns, p2)
	})

	t.Run("socket mode: hostPath, baseline warns and rejects", func(t *testing.T) {
		f := f.sub(t)
		f.upgrade(rel, umbrellaValues(datadog.ModeSocket))
		ns := f.namespace("e2e-seed-socket", nil)
		f.waitWebhookMode(ns, datadog.ModeSocket)
		pod := f.createPod(ns, seedPod())
		t.Logf("nginx's volumes as admitted: %s", describeVolumes(pod))
		if len(hostPathVolumes(pod)) == 0 {
			t.Errorf("socket mode: pod nginx has no hostPath volume: %s", describeVolumes(pod))
		}
		if len(ourVolumes(pod)) != 0 {
			t.Errorf("socket mode: pod nginx has CSI volumes: %s", describeVolumes(pod))
		}

		// Pod Security checks the namespace's pods from its informer
		// cache, which may not have nginx yet: wait for the warning.
		f.waitLabelDryRunWarns(ns, "baseline", "hostPath volumes", 30*time.Second)
		f.labelNamespace(ns, psaEnforce, "baseline")
		p2 := seedPod()
		p2.Name = "nginx-2"
		// Pod Security reads the namespace's labels from its informer
		// cache too: wait until a dry run is rejected, then for real.
		f.waitPodSecurityRejects(ns, p2, "hostPath volumes", 30*time.Second)
		_, err := f.client.CoreV1().Pods(ns).Create(f.ctx, p2, metav1.CreateOptions{})
		if err == nil {
			t.Fatalf("socket mode under enforce=baseline: pod nginx-2 was admitted; want it rejected for its hostPath volume")
		}
		if !strings.Contains(err.Error(), "hostPath volumes") {
			t.Errorf("rejection does not name hostPath volumes: %v", err)
		}
		t.Logf("rejected as expected: %v", err)
	})
}

// labelNamespaceDryRun runs the user's command
// `kubectl label ns <ns> pod-security.kubernetes.io/enforce=<level> --dry-run=server`
// and returns its combined output (warnings included).
func (f *fixture) labelNamespaceDryRun(ns, level string) string {
	f.t.Helper()
	out, err := k8s.RunKubectlAndGetOutputContextE(f.t, f.ctx, f.kubectl,
		"label", "namespace", ns, psaEnforce+"="+level, "--dry-run=server")
	if err != nil {
		f.t.Fatalf("kubectl label --dry-run=server: %v\n%s", err, out)
	}
	if !strings.Contains(out, "labeled") {
		f.t.Fatalf("kubectl label --dry-run=server printed no result:\n%s", out)
	}
	return out
}

// waitLabelDryRunWarns repeats labelNamespaceDryRun every 200ms until its
// output contains want; if it does not within timeout, the test fails with
// the last output. Pod Security evaluates the namespace's pods as its
// informer cache has them: a pod just created may not be there yet.
func (f *fixture) waitLabelDryRunWarns(ns, level, want string, timeout time.Duration) {
	f.t.Helper()
	err := poll(f.ctx, timeout, 200*time.Millisecond, func(context.Context) (bool, string, error) {
		out := f.labelNamespaceDryRun(ns, level)
		return strings.Contains(out, want), "last output:\n" + out, nil
	})
	if err != nil {
		f.t.Errorf("labelling %s %s=%s (dry run) did not warn about %s: %v", ns, psaEnforce, level, want, err)
	}
}

// waitPodSecurityRejects dry-runs creating p in ns every 200ms until Pod
// Security rejects it (Forbidden, naming want), and fails the test if it
// does not within timeout. Pod Security reads the namespace's labels from
// its informer cache: an enforce label just set may not be there yet.
func (f *fixture) waitPodSecurityRejects(ns string, p *corev1.Pod, want string, timeout time.Duration) {
	f.t.Helper()
	err := poll(f.ctx, timeout, 200*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		_, err := f.dryRunPod(ctx, ns, p)
		switch {
		case err == nil:
			return false, "a dry run admitted pod " + p.Name, nil
		case apierrors.IsForbidden(err) && strings.Contains(err.Error(), want):
			return true, "", nil
		default:
			return false, "dry run: " + err.Error(), nil
		}
	})
	if err != nil {
		f.t.Fatalf("namespace %s: Pod Security did not start rejecting pod %s for %s: %v", ns, p.Name, want, err)
	}
}

func (f *fixture) labelNamespace(ns, key, value string) {
	f.t.Helper()
	out, err := k8s.RunKubectlAndGetOutputContextE(f.t, f.ctx, f.kubectl, "label", "--overwrite", "namespace", ns, key+"="+value)
	if err != nil {
		f.t.Fatalf("kubectl label namespace %s %s=%s: %v\n%s", ns, key, value, err, out)
	}
}

// mountReadOnly tells whether a mountinfo line's per-mount options say ro.
func mountReadOnly(line string) bool {
	fields := strings.Fields(line)
	if len(fields) < 6 {
		return false
	}
	for _, o := range strings.Split(fields[5], ",") {
		if o == "ro" {
			return true
		}
	}
	return false
}
