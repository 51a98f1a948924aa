package e2e

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
)

// Chart names, the app.kubernetes.io/name of their pods.
const (
	driverChartName  = "datadog-csi-driver"
	webhookChartName = "datadog-csi-webhook"
)

// TestFaults breaks things while app pods run: the driver pod is deleted
// (apps keep sending; a pod deleted afterwards is unpublished by the new
// driver, leaving no mount on the node), the agent restarts and recreates its
// sockets (directory volumes follow without a pod restart), the webhook rolls
// over (no admission meanwhile goes unmutated), and the webhook goes away
// (labelled pods are still created, unmutated).
func TestFaults(t *testing.T) {
	f := newFixture(t)
	a := f.installAgent()
	rel := f.install(umbrellaChart, umbrellaValues(datadog.ModeCSI))
	t.Logf("driver registration: %s", registrarMode)
	ns := f.namespace("e2e-faults", map[string]string{psaEnforce: "restricted"})
	f.waitWebhookMode(ns, datadog.ModeCSI)

	apps := []string{"dirs-1", "dirs-2"}
	for _, name := range apps {
		f.createPod(ns, optIn(appPod(name)))
	}
	f.createPod(ns, optIn(appPod("sockets"), datadog.LabelTypeSocketVolumes, "true"))
	uids := map[string]string{}
	for _, name := range append(apps, "sockets") {
		uids[name] = string(f.waitPodReady(ns, name, 2*time.Minute).UID)
	}
	all := []want{{"dirs-1", true, true}, {"dirs-2", true, true}, {"sockets", true, true}}
	f.waitTraffic(a, all, 2, 90*time.Second, nil)

	t.Run("driver pod deleted: apps keep sending, with no driver and with its replacement", func(t *testing.T) {
		f := f.sub(t)
		drivers, err := f.releasePods(f.ctx, rel, driverChartName)
		if err != nil || len(drivers) != 1 {
			t.Fatalf("want 1 driver pod, got %d (%v)", len(drivers), err)
		}
		mounts := func() map[string]int {
			mi, err := f.nodeMountInfo()
			if err != nil {
				t.Fatal(err)
			}
			n := map[string]int{}
			for name, uid := range uids {
				n[name] = len(csiMountLines(mi, uid))
			}
			return n
		}
		mountsBefore := mounts()
		for name, n := range mountsBefore {
			if n < 2 {
				t.Fatalf("pod %s has %d CSI mounts on the node before the restart, want 2", name, n)
			}
		}
		// Mounts are the kernel's: once the old driver process is gone,
		// before or while its replacement starts, traffic goes on.
		f.deletePodAndWait(rel.namespace, drivers[0].Name, 2*time.Minute)
		t.Logf("driver pod %s deleted and gone", drivers[0].Name)
		gone, err := f.agentRecords(f.ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		f.waitTraffic(a, all, 3, time.Minute, &gone)
		f.waitReplacedReady(rel, driverChartName, drivers[0].Name)
		f.waitDriverRegistered(rel)
		replaced, err := f.agentRecords(f.ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		f.waitTraffic(a, all, 3, time.Minute, &replaced)
		if after := mounts(); !reflect.DeepEqual(after, mountsBefore) {
			t.Fatalf("CSI mounts of the app pods on the node changed across the driver restart: %v, then %v", mountsBefore, after)
		}
	})

	t.Run("app pod deleted after the driver restart: no leftover mount", func(t *testing.T) {
		f := f.sub(t)
		uid := uids["dirs-2"]
		mi, err := f.nodeMountInfo()
		if err != nil {
			t.Fatal(err)
		}
		if n := len(csiMountLines(mi, uid)); n < 2 {
			t.Fatalf("before deletion the node has %d CSI mounts of pod dirs-2 (uid %s), want 2", n, uid)
		}
		f.deletePodAndWait(ns, "dirs-2", 2*time.Minute)
		err = poll(f.ctx, 30*time.Second, 500*time.Millisecond, func(context.Context) (bool, string, error) {
			mi, err := f.nodeMountInfo()
			if err != nil {
				return false, "", err
			}
			left := csiMountLines(mi, uid)
			return len(left) == 0, fmt.Sprintf("mounts left on the node:\n%s", strings.Join(left, "\n")), nil
		})
		if err != nil {
			t.Errorf("pod dirs-2 (uid %s) deleted: %v", uid, err)
		}
	})

	t.Run("agent restarted: directory volumes follow its new socket", func(t *testing.T) {
		f := f.sub(t)
		before, err := f.agentRecords(f.ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		old, err := f.agentPod(f.ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.client.CoreV1().Pods(a.namespace).Delete(f.ctx, old.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		f.waitAgentReady(a, old.Name)
		rec := f.waitTraffic(a, []want{{"dirs-1", true, true}}, 3, time.Minute, nil)
		if rec.Instance == before.Instance {
			t.Fatalf("the agent's instance did not change (%s): it was not restarted", rec.Instance)
		}
		p, err := f.client.CoreV1().Pods(ns).Get(f.ctx, "dirs-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if string(p.UID) != uids["dirs-1"] || restarts(p) != 0 {
			t.Errorf("pod dirs-1 was restarted (uid %s, restarts %d): directory volumes must not need it", p.UID, restarts(p))
		}
		// A socket-file volume is a bind mount of the old socket's inode: it
		// cannot see the new one. That is why directories are the default.
		if s := rec.Senders["sockets"]; s != nil && (s.APM > 0 || s.DSD > 0) {
			t.Logf("note: the socket-file pod reached the restarted agent too (%+v)", *s)
		} else {
			t.Logf("as expected, the socket-file pod does not reach the restarted agent (its mount holds the old socket)")
		}
	})

	t.Run("webhook rolling restart: every admission meanwhile is mutated", func(t *testing.T) {
		f := f.sub(t)
		dep := f.webhookDeployment(rel)
		old, err := f.releasePods(f.ctx, rel, webhookChartName)
		if err != nil || len(old) == 0 {
			t.Fatalf("want webhook pods, got %d (%v)", len(old), err)
		}
		// What `kubectl rollout restart` does.
		patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"e2e.datadog-csi.io/restartedAt":%q}}}}}`, time.Now().Format(time.RFC3339Nano))
		if _, err := f.client.AppsV1().Deployments(rel.namespace).Patch(f.ctx, dep, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		// Admit a labelled pod again and again until every old pod is gone
		// and a little longer (kube-proxy lags the endpoints): the old pods
		// keep answering for --shutdown-delay after SIGTERM, so the API
		// server, which reaches them through the Service, never finds a
		// closed port and never falls back to failurePolicy Ignore.
		probe := optIn(appPod("rollout-probe"))
		oldNames := map[string]bool{}
		for _, p := range old {
			oldNames[p.Name] = true
		}
		var total, unmutated int
		var goneAt time.Time
		// The pods' states over the rollout, logged when an admission fails.
		var timeline []string
		states := map[string]string{}
		start := time.Now()
		deadline := start.Add(3 * time.Minute)
		for goneAt.IsZero() || time.Since(goneAt) < 5*time.Second {
			if time.Now().After(deadline) {
				t.Fatalf("old webhook pods not gone after 3 minutes")
			}
			p, err := f.dryRunPod(f.ctx, ns, probe)
			total++
			if err != nil || injectedMode(p) != datadog.ModeCSI {
				unmutated++
				why := fmt.Sprint(err)
				if err == nil {
					why = "mode " + string(injectedMode(p))
				}
				t.Logf("admission %d at +%s during the rollout not mutated: %s", total, time.Since(start).Round(time.Millisecond), why)
			}
			if total%5 == 0 {
				pods, err := f.releasePods(f.ctx, rel, webhookChartName)
				if err != nil {
					t.Fatal(err)
				}
				left, seen := 0, map[string]bool{}
				for _, p := range pods {
					seen[p.Name] = true
					if oldNames[p.Name] {
						left++
					}
					state := fmt.Sprintf("ready=%v terminating=%v", podReady(&p), p.DeletionTimestamp != nil)
					if states[p.Name] != state {
						states[p.Name] = state
						timeline = append(timeline, fmt.Sprintf("+%s %s %s", time.Since(start).Round(time.Millisecond), p.Name, state))
					}
				}
				for name := range states {
					if !seen[name] {
						delete(states, name)
						timeline = append(timeline, fmt.Sprintf("+%s %s gone", time.Since(start).Round(time.Millisecond), name))
					}
				}
				if left == 0 && goneAt.IsZero() {
					goneAt = time.Now()
				}
			}
		}
		t.Logf("%d admissions during the rolling restart of %d webhook pods, %d not mutated", total, len(old), unmutated)
		if unmutated != 0 {
			t.Logf("webhook pods during the rollout:\n%s", strings.Join(timeline, "\n"))
			t.Fatalf("%d of %d admissions during a webhook rolling restart were not mutated", unmutated, total)
		}
		if total < 50 {
			t.Fatalf("only %d admissions during the rollout: it did not exercise it", total)
		}
	})

	t.Run("webhook scaled to zero: labelled pods are created unmutated", func(t *testing.T) {
		f := f.sub(t)
		dep := f.webhookDeployment(rel)
		scale, err := f.client.AppsV1().Deployments(rel.namespace).GetScale(f.ctx, dep, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		scale.Spec.Replicas = 0
		if _, err := f.client.AppsV1().Deployments(rel.namespace).UpdateScale(f.ctx, dep, scale, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		err = poll(f.ctx, time.Minute, 500*time.Millisecond, func(ctx context.Context) (bool, string, error) {
			pods, err := f.releasePods(ctx, rel, webhookChartName)
			if err != nil {
				return false, err.Error(), nil
			}
			return len(pods) == 0, fmt.Sprintf("%d webhook pods left", len(pods)), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		p := f.createPod(ns, optIn(appPod("webhook-down")))
		t.Logf("pod created in %s with the webhook down", time.Since(start).Round(time.Millisecond))
		if mode := injectedMode(p); mode != "" {
			t.Errorf("pod created with the webhook down was mutated (%s): %s", mode, describeVolumes(p))
		}
		for _, e := range p.Spec.Containers[0].Env {
			if strings.HasPrefix(e.Name, "DD_") {
				t.Errorf("pod created with the webhook down has %s", e.Name)
			}
		}
		f.waitPodReady(ns, p.Name, 2*time.Minute)
	})
}

// webhookDeployment names the release's webhook Deployment.
func (f *fixture) webhookDeployment(r *release) string {
	f.t.Helper()
	deps, err := f.client.AppsV1().Deployments(r.namespace).List(f.ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=" + webhookChartName + ",app.kubernetes.io/instance=" + r.name,
	})
	if err != nil || len(deps.Items) != 1 {
		f.t.Fatalf("want the webhook Deployment, got %v (%v)", deps, err)
	}
	return deps.Items[0].Name
}

// waitReplacedReady waits until the release's pod of chart is ready and is
// not oldName.
func (f *fixture) waitReplacedReady(r *release, chart, oldName string) {
	f.t.Helper()
	err := poll(f.ctx, 2*time.Minute, 500*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		pods, err := f.releasePods(ctx, r, chart)
		if err != nil {
			return false, err.Error(), nil
		}
		for _, p := range pods {
			if p.Name != oldName && p.DeletionTimestamp == nil && podReady(&p) {
				return true, "", nil
			}
		}
		return false, fmt.Sprintf("%d pods, none ready but %s", len(pods), oldName), nil
	})
	if err != nil {
		f.t.Fatalf("%s pod not replaced: %v", chart, err)
	}
}

func restarts(p *corev1.Pod) int32 {
	var n int32
	for _, cs := range p.Status.ContainerStatuses {
		n += cs.RestartCount
	}
	return n
}
