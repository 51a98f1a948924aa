package e2e

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
)

// BenchmarkPodStartOverhead measures what the CSI volumes cost a pod's start:
// E2E_BENCH_PODS (default 20) labelled pods in csi mode and as many in hostip
// mode (no agent volume, DD_AGENT_HOST only), alternating so that drift hits
// both alike, each timed from the create call to the watch event that shows it
// Ready. Reported: the medians and their difference. Run by `make bench-e2e`
// (ci/e2e.sh -bench), with -benchtime=1x: one iteration is 2×N pods.
//
// Two pod shapes. "token-volume" is an ordinary pod: it has the projected
// service account token volume, so in both modes the kubelet waits for
// volumes to be mounted, and the difference is the CSI mount itself.
// "no-other-volume" has no volume but ours: in hostip mode the kubelet then
// skips its wait for volumes altogether, while in csi mode it polls for the
// mount every 300 ms (kubelet's podAttachAndMountRetryInterval), so the
// difference there is mostly that polling interval, whatever the driver does.
func BenchmarkPodStartOverhead(b *testing.B) {
	f := newFixture(b)
	f.install(umbrellaChart, umbrellaValues(datadog.ModeCSI))
	ns := f.namespace("e2e-bench", nil)
	f.waitWebhookMode(ns, datadog.ModeCSI)
	n, err := strconv.Atoi(envOr("E2E_BENCH_PODS", "20"))
	if err != nil || n < 1 {
		b.Fatalf("E2E_BENCH_PODS=%q: want a positive count", envOr("E2E_BENCH_PODS", ""))
	}
	for _, shape := range []struct {
		name  string
		token bool
	}{{"token-volume", true}, {"no-other-volume", false}} {
		b.Run(shape.name, func(b *testing.B) {
			f := f.subB(b)
			modes := []datadog.Mode{datadog.ModeCSI, datadog.ModeHostIP}
			// One warm-up pod per mode: the first pod of a shape pays for
			// setup that later pods do not.
			for _, m := range modes {
				f.timePodStart(ns, m, fmt.Sprintf("warmup-%s-%s", shape.name, m), shape.token)
			}
			times := map[datadog.Mode][]time.Duration{}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for j := 0; j < n; j++ {
					order := modes
					if j%2 == 1 {
						order = []datadog.Mode{modes[1], modes[0]}
					}
					for _, m := range order {
						d := f.timePodStart(ns, m, fmt.Sprintf("%s-%s-%d-%d", shape.name, m, i, j), shape.token)
						times[m] = append(times[m], d)
					}
				}
			}
			b.StopTimer()
			csi, hostip := median(times[datadog.ModeCSI]), median(times[datadog.ModeHostIP])
			b.ReportMetric(float64(csi.Microseconds())/1000, "csi-ms/pod")
			b.ReportMetric(float64(hostip.Microseconds())/1000, "hostip-ms/pod")
			b.ReportMetric(float64((csi-hostip).Microseconds())/1000, "overhead-ms/pod")
			b.Logf("%s: create→Ready over %d pods per mode: median csi %s, hostip %s, overhead %s (goal ≤ 50ms)", shape.name,
				len(times[datadog.ModeCSI]), csi.Round(time.Millisecond), hostip.Round(time.Millisecond), (csi - hostip).Round(time.Millisecond))
			b.Logf("csi:    %v", roundAll(times[datadog.ModeCSI]))
			b.Logf("hostip: %v", roundAll(times[datadog.ModeHostIP]))
		})
	}
}

// timePodStart creates a labelled pod in the given mode and returns the time
// from the create call until a watch event shows it Ready.
func (f *fixture) timePodStart(ns string, mode datadog.Mode, name string, token bool) time.Duration {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(f.ctx, 2*time.Minute)
	defer cancel()
	w, err := f.client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String(),
	})
	if err != nil {
		f.t.Fatal(err)
	}
	defer w.Stop()
	pod := optIn(appPod(name), datadog.LabelMode, string(mode))
	if token {
		pod.Spec.AutomountServiceAccountToken = nil // the default: a projected token volume
	}
	start := time.Now()
	created := f.createPod(ns, pod)
	if got := injectedMode(created); got != mode {
		f.t.Fatalf("pod %s came out of admission in mode %q, want %q", name, got, mode)
	}
	for ev := range w.ResultChan() {
		if ev.Type == watch.Error {
			f.t.Fatalf("watching pod %s: %v", name, ev.Object)
		}
		if p, ok := ev.Object.(*corev1.Pod); ok && podReady(p) {
			return time.Since(start)
		}
	}
	f.t.Fatalf("pod %s not Ready within 2m", name)
	return 0
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}
