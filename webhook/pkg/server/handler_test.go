package server

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
	"github.com/datadog-csi/datadog-csi/webhook/pkg/certs"
	"github.com/datadog-csi/datadog-csi/webhook/pkg/certs/certstest"
	"github.com/datadog-csi/datadog-csi/webhook/pkg/mutate"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func newInject(t testing.TB, mode datadog.Mode) *Inject {
	t.Helper()
	m, err := mutate.New(mutate.Config{Mode: mode,
		APMSocketPath: datadog.DefaultAPMSocketPath, DSDSocketPath: datadog.DefaultDSDSocketPath,
		AgentServiceName: "datadog-agent", AgentServiceNamespace: "datadog", ClusterDomain: "cluster.local",
		ExcludedNamespaces: []string{"kube-system"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &Inject{Mutator: m, Logger: slog.New(slog.DiscardHandler), Metrics: NewMetrics(prometheus.NewRegistry())}
}

func reviewBody(t testing.TB, pod *corev1.Pod, namespace string) []byte {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return reviewBodyRaw(t, raw, namespace)
}

func reviewBodyRaw(t testing.TB, rawPod []byte, namespace string) []byte {
	t.Helper()
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID("req-1"),
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: namespace,
			Operation: admissionv1.Create,
		},
	}
	review.Request.Object.Raw = rawPod
	body, err := json.Marshal(review)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func labelledPod() *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{GenerateName: "app-", Labels: map[string]string{datadog.LabelEnabled: "true", datadog.LabelMode: "nonsense"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "app", Image: "app:1", Env: []corev1.EnvVar{{Name: "A", Value: "1"}}},
			{Name: "sidecar", Image: "sidecar:1"},
		}},
	}
}

func post(t testing.TB, h http.Handler, body []byte) *admissionv1.AdmissionReview {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, PathInject, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	if out.Response == nil || out.Response.UID != "req-1" || !out.Response.Allowed {
		t.Fatalf("bad response %+v", out.Response)
	}
	if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" {
		t.Fatalf("bad type meta %+v", out.TypeMeta)
	}
	return &out
}

func TestInjectPatchesAndWarns(t *testing.T) {
	h := newInject(t, datadog.ModeCSI)
	out := post(t, h, reviewBody(t, labelledPod(), "apps"))
	if out.Response.PatchType == nil || *out.Response.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patch type %v", out.Response.PatchType)
	}
	if !bytes.Contains(out.Response.Patch, []byte(datadog.DriverName)) {
		t.Fatalf("patch lacks the CSI volume: %s", out.Response.Patch)
	}
	if len(out.Response.Warnings) != 1 || !strings.Contains(out.Response.Warnings[0], datadog.LabelMode) {
		t.Fatalf("warnings %q", out.Response.Warnings)
	}
	if got := testutil.ToFloat64(h.Metrics.Admissions.WithLabelValues("csi", OutcomeMutated)); got != 1 {
		t.Fatalf("mutated counter %v", got)
	}
}

func TestInjectSkipsExcludedAndNonPods(t *testing.T) {
	h := newInject(t, datadog.ModeCSI)
	if out := post(t, h, reviewBody(t, labelledPod(), "kube-system")); out.Response.Patch != nil {
		t.Fatalf("patched a kube-system pod: %s", out.Response.Patch)
	}
	body := bytes.Replace(reviewBody(t, labelledPod(), "apps"), []byte(`"operation":"CREATE"`), []byte(`"operation":"UPDATE"`), 1)
	if out := post(t, h, body); out.Response.Patch != nil {
		t.Fatalf("patched an UPDATE: %s", out.Response.Patch)
	}
}

// TestInjectFailsOpen: a pod that cannot be decoded is allowed unchanged,
// counted and logged, never rejected.
func TestInjectFailsOpen(t *testing.T) {
	h := newInject(t, datadog.ModeCSI)
	out := post(t, h, reviewBodyRaw(t, []byte(`{"spec":{"containers":"not-a-list"}}`), "apps"))
	if out.Response.Patch != nil {
		t.Fatalf("patch on error: %s", out.Response.Patch)
	}
	if got := testutil.ToFloat64(h.Metrics.Admissions.WithLabelValues("", OutcomeError)); got != 1 {
		t.Fatalf("error counter %v", got)
	}
}

// TestInjectSurvivesPanic: a panic while mutating (here from the cluster
// state that mode auto asks) allows the pod unchanged, counted as an error
// and logged at error level with the stack, and the handler keeps serving.
func TestInjectSurvivesPanic(t *testing.T) {
	var logs bytes.Buffer // post calls the handler in this goroutine
	m, err := mutate.New(mutate.Config{Mode: datadog.ModeAuto,
		APMSocketPath: datadog.DefaultAPMSocketPath, DSDSocketPath: datadog.DefaultDSDSocketPath,
		AgentServiceName: "datadog-agent", AgentServiceNamespace: "datadog", ClusterDomain: "cluster.local"}, panickingState{})
	if err != nil {
		t.Fatal(err)
	}
	h := &Inject{Mutator: m, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Metrics: NewMetrics(prometheus.NewRegistry())}
	for i := 1; i <= 2; i++ {
		out := post(t, h, reviewBody(t, labelledPod(), "apps"))
		if !out.Response.Allowed || out.Response.Patch != nil {
			t.Fatalf("review %d: allowed=%v patch=%s, want allowed without patch", i, out.Response.Allowed, out.Response.Patch)
		}
		if got := testutil.ToFloat64(h.Metrics.Admissions.WithLabelValues("", OutcomeError)); got != float64(i) {
			t.Fatalf("review %d: error counter %v", i, got)
		}
	}
	if l := logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "cluster state exploded") || !strings.Contains(l, "goroutine") {
		t.Fatalf("panic not logged at error level with its stack:\n%s", l)
	}
}

type panickingState struct{}

func (panickingState) CSIDriverInstalled() bool { panic("cluster state exploded") }
func (panickingState) NamespaceLabels(string) (map[string]string, bool) {
	panic("cluster state exploded")
}

func TestInjectRejectsNonReviews(t *testing.T) {
	h := newInject(t, datadog.ModeCSI)
	for name, req := range map[string]*http.Request{
		"GET":          httptest.NewRequest(http.MethodGet, PathInject, nil),
		"content type": httptest.NewRequest(http.MethodPost, PathInject, strings.NewReader("{}")),
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code < 400 {
			t.Errorf("%s: status %d", name, rec.Code)
		}
	}
	req := httptest.NewRequest(http.MethodPost, PathInject, strings.NewReader(`{"kind":"AdmissionReview"}`))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusBadRequest {
		t.Errorf("review without request: status %d", rec.Code)
	}
}

// loopbackServer serves h over real HTTPS on 127.0.0.1 with a certificate
// signed by a fresh CA, and returns a keep-alive client trusting that CA,
// as the apiserver's webhook client is.
func loopbackServer(tb testing.TB, h http.Handler) (url string, client *http.Client) {
	tb.Helper()
	serving, caPEM := certstest.LoopbackPair(tb)
	holder := &certs.Holder{}
	if _, err := holder.Set(serving.CertPEM, serving.KeyPEM); err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: h, TLSConfig: holder.TLSConfig()}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	tb.Cleanup(func() { _ = srv.Close() })
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client = &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool},
		MaxIdleConnsPerHost: 64,
		// Like the apiserver's webhook client: a few long-lived
		// connections, not a handshake storm when a request queues.
		MaxConnsPerHost: 16,
	}, Timeout: 10 * time.Second}
	return "https://" + ln.Addr().String() + PathInject, client
}

func roundTrip(tb testing.TB, client *http.Client, url string, body []byte) {
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("status %d", resp.StatusCode)
	}
}

// comparedHandler is one of the handlers the admission benchmarks run
// side by side.
type comparedHandler struct {
	name string
	h    http.Handler
}

// comparedHandlers are a no-op AdmissionReview handler and /injectconfig
// in csi mode.
func comparedHandlers(b *testing.B) []comparedHandler {
	return []comparedHandler{{"noop", NoOp}, {"injectconfig", newInject(b, datadog.ModeCSI)}}
}

// BenchmarkAdmission compares /injectconfig with a no-op AdmissionReview
// handler (decode, allow, encode) over loopback HTTPS with keep-alive, in
// the same run. The ratio of their ns/op is the overhead of the mutation.
func BenchmarkAdmission(b *testing.B) {
	body := reviewBody(b, labelledPod(), "apps")
	for _, c := range comparedHandlers(b) {
		b.Run(c.name, func(b *testing.B) {
			url, client := loopbackServer(b, c.h)
			roundTrip(b, client, url, body)
			b.ReportAllocs()
			cpu0 := processCPU(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					roundTrip(b, client, url, body)
				}
			})
			b.StopTimer()
			// CPU per operation (client and server: one process) is what a
			// shared, loaded machine disturbs least.
			b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

// processCPU is the user+system CPU time this process has used.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMutate is the mutation alone, without HTTP or TLS.
func BenchmarkMutate(b *testing.B) {
	h := newInject(b, datadog.ModeCSI)
	raw, _ := json.Marshal(labelledPod())
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := h.Mutator.Patch(raw, "apps"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLatencyAt1000RPS drives /injectconfig over loopback HTTPS at a
// fixed 1000 requests/s with GOMAXPROCS=1 (one core for client and server
// together, a harsher setting than production) and reports the p50/p99
// latency and the heap in use under that load.
func BenchmarkLatencyAt1000RPS(b *testing.B) {
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	body := reviewBody(b, labelledPod(), "apps")
	for _, c := range comparedHandlers(b) {
		b.Run(c.name, func(b *testing.B) {
			url, client := loopbackServer(b, c.h)
			roundTrip(b, client, url, body)
			const rate = 1000
			n := max(b.N, 2000) // at least 2 s of load for a meaningful p99
			latencies := make([]time.Duration, n)
			var failures atomic.Int64
			var wg sync.WaitGroup
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			b.ResetTimer()
			start := time.Now()
			for i := range n {
				if d := time.Until(start.Add(time.Duration(i) * time.Second / rate)); d > 0 {
					time.Sleep(d)
				}
				wg.Go(func() {
					t0 := time.Now()
					resp, err := client.Post(url, "application/json", bytes.NewReader(body))
					if err != nil {
						failures.Add(1)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					latencies[i] = time.Since(t0)
				})
			}
			wg.Wait()
			b.StopTimer()
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if failures.Load() > 0 {
				b.Fatalf("%d requests failed", failures.Load())
			}
			sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
			b.ReportMetric(float64(latencies[n/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(latencies[n*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(after.HeapInuse)/(1<<20), "heap-MiB")
			b.ReportMetric(float64(after.Sys)/(1<<20), "sys-MiB")
		})
	}
}
