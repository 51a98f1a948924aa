package integration

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
	"github.com/datadog-csi/datadog-csi/tests/internal/controlplane"
	"github.com/datadog-csi/datadog-csi/webhook/pkg/certs/certstest"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// rssBenchRate, rssBenchConns: the load BenchmarkServeRSS drives, a fixed
// request rate over at most this many keep-alive connections (like the
// apiserver's webhook client: a few long-lived connections).
const (
	rssBenchRate  = 1000
	rssBenchConns = 16
)

// BenchmarkServeRSS measures the memory of the real webhook process: it
// builds `datadog-csi-webhook` as the image build does, runs `serve` as a
// child process (csi mode, certificate from files as with
// --tls-mode=existingSecret, caches from the real test apiserver), drives
// /injectconfig over TLS at a fixed 1000 requests/s with at most 16
// keep-alive connections, and reads the child's /proc/<pid>/status. Each
// iteration is one load of RSS_BENCH_SECONDS (default 10); run it with
// -benchtime=1x.
//
// Metrics: idle-RSS-MiB (VmRSS once ready, before any load), RSS-MiB and
// anon-RSS-MiB (VmRSS and RssAnon at the end of the last load), peak-RSS-MiB
// (VmHWM, the high-water mark since the process started), p50-µs and p99-µs
// (latency of each request from its send), req/s (answered requests over
// the load's wall time). Every response must allow the pod, echo its UID and
// carry a JSON patch of CSI volumes, or the benchmark fails.
//
// The child gets an empty environment (as a scratch image without env:
// GOMAXPROCS is the machine's CPUs, GOGC 100, no GOMEMLIMIT), except
// GOMAXPROCS=$RSS_BENCH_GOMAXPROCS when that is set, to see a node with more
// cores than this machine. RSS_BENCH_NAMESPACES=n creates n more namespaces
// first, for the namespace cache of a large cluster. The client speaks
// HTTP/1.1 (at most 16 connections), as a kube-apiserver calls webhooks
// (k8s.io/apiserver/pkg/util/webhook pins ALPN to http/1.1 so that calls
// spread over the Service's pods), unless RSS_BENCH_HTTP2=1: then HTTP/2
// over one connection, as other clients could.
func BenchmarkServeRSS(b *testing.B) {
	seconds := 10
	if s := os.Getenv("RSS_BENCH_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			b.Fatalf("RSS_BENCH_SECONDS=%q: want a positive whole number of seconds", s)
		}
		seconds = n
	}
	duration := time.Duration(seconds) * time.Second

	bin := buildWebhookBinary(b)

	cp := controlplane.Start(b)
	cp.CreateNamespace(b, webhookNamespace, nil)
	cp.CreateNamespace(b, "apps", nil)
	createExtraNamespaces(b, cp)
	kubeconfig := writeKubeconfig(b, cp.Admin)
	body, uidAt := rssReviewBody(b, cp)

	dir := b.TempDir()
	certDir := filepath.Join(dir, "certs")
	if err := os.Mkdir(certDir, 0o700); err != nil {
		b.Fatal(err)
	}
	caPEM := certstest.WriteLoopbackPair(b, certDir)

	// The flags the chart passes by default, but on loopback port 0: the
	// process logs the addresses it bound ("serving"), so no port can be
	// taken between picking and binding it.
	child := startServeProcess(b, bin, dir,
		"serve",
		"--listen-address=127.0.0.1:0",
		"--probe-address=127.0.0.1:0",
		"--mode=csi",
		"--namespace="+webhookNamespace,
		"--tls-mode=existingSecret",
		"--tls-cert-dir="+certDir,
		"--kubeconfig="+kubeconfig,
		"--log-level=info",
		"--log-format=json",
	)
	child.waitReady(b, 30*time.Second)

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"},
		MaxConnsPerHost:     rssBenchConns,
		MaxIdleConnsPerHost: rssBenchConns,
		IdleConnTimeout:     time.Minute,
		// Off by default: the apiserver calls webhooks over HTTP/1.1.
		ForceAttemptHTTP2: os.Getenv("RSS_BENCH_HTTP2") == "1",
	}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	url := "https://" + child.injectAddr + "/injectconfig"

	// Idle: ready, caches synced, nothing answered yet.
	idle := readProcStatus(b, child.pid())
	// One admission before the load checks the whole path, so a broken
	// setup fails here with its cause rather than as 10,000 failures.
	proto, err := rssAdmit(client, url, body, uidAt, "warmup")
	if err != nil {
		b.Fatalf("first admission: %v\nwebhook log tail:\n%s", err, child.logTail())
	}

	var latencies []time.Duration
	var answered int
	var loadTime time.Duration
	b.ResetTimer()
	for i := range b.N {
		lat, elapsed, errs := rssLoad(client, url, body, uidAt, i, duration)
		if len(errs) > 0 {
			b.StopTimer()
			b.Fatalf("%d of %d admissions failed or were not mutated; first: %v\nwebhook log tail:\n%s", len(errs), len(lat), errs[0], child.logTail())
		}
		latencies = append(latencies, lat...)
		answered += len(lat)
		loadTime += elapsed
	}
	b.StopTimer()
	end := readProcStatus(b, child.pid())
	if err := child.exitedErr(); err != nil {
		b.Fatalf("webhook exited during the load: %v\nwebhook log tail:\n%s", err, child.logTail())
	}

	slices.Sort(latencies)
	mib := func(kB int64) float64 { return float64(kB) / 1024 }
	b.ReportMetric(mib(idle["VmRSS"]), "idle-RSS-MiB")
	b.ReportMetric(mib(end["VmRSS"]), "RSS-MiB")
	b.ReportMetric(mib(end["VmHWM"]), "peak-RSS-MiB")
	b.ReportMetric(mib(end["RssAnon"]), "anon-RSS-MiB")
	b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(answered)/loadTime.Seconds(), "req/s")
	b.Logf("%d admissions in %v at a target %d/s over ≤ %d connections (%s); child /proc status idle: %s; end: %s; runtime (/metrics): %s",
		answered, loadTime.Round(time.Millisecond), rssBenchRate, rssBenchConns, proto,
		formatStatus(idle), formatStatus(end), child.goMemstats(b))
}

// createExtraNamespaces creates $RSS_BENCH_NAMESPACES namespaces (default
// none), labelled as namespaces of a real cluster often are, to see what the
// webhook's namespace cache costs in a large cluster: the test control plane
// has only a handful.
func createExtraNamespaces(b *testing.B, cp *controlplane.ControlPlane) {
	b.Helper()
	s := os.Getenv("RSS_BENCH_NAMESPACES")
	if s == "" {
		return
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		b.Fatalf("RSS_BENCH_NAMESPACES=%q: want a whole number", s)
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
					Name: fmt.Sprintf("team-%04d", i),
					Labels: map[string]string{
						"pod-security.kubernetes.io/enforce": "baseline",
						"pod-security.kubernetes.io/warn":    "restricted",
						"team":                               fmt.Sprintf("team-%d", i%50),
					},
					Annotations: map[string]string{"owner": fmt.Sprintf("team-%d@example.com", i%50)},
				}}
				if _, err := cp.Client.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
					mu.Lock()
					firstErr = cmp.Or(firstErr, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		b.Fatalf("create %d namespaces: %v", n, firstErr)
	}
	b.Logf("%d extra namespaces", n)
}

// buildWebhookBinary builds the webhook as ci/images.sh does (static,
// trimmed, stripped).
func buildWebhookBinary(b *testing.B) string {
	b.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := filepath.Join(b.TempDir(), "datadog-csi-webhook")
	cmd := exec.Command(goBin, "build", "-trimpath", "-tags", "grpcnotrace", "-ldflags=-s -w", "-o", out, "./webhook/cmd/datadog-csi-webhook")
	cmd.Dir = filepath.Join("..", "..") // the product module, from tests/integration
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build ./webhook/cmd/datadog-csi-webhook: %v\n%s", err, msg)
	}
	return out
}

// writeKubeconfig writes the admin rest.Config as a kubeconfig file.
func writeKubeconfig(b *testing.B, cfg *rest.Config) string {
	b.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["integration"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData}
	kc.Contexts["integration"] = &clientcmdapi.Context{Cluster: "integration", AuthInfo: "admin"}
	kc.CurrentContext = "integration"
	path := filepath.Join(b.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		b.Fatal(err)
	}
	return path
}

// rssUIDTemplate is the request UID in the body; each request overwrites
// it with one of the same length, so the response's UID is checked.
const rssUIDTemplate = "00000000-0000-4000-8000-000000000000"

// rssReviewBody returns an AdmissionReview like the one a kube-apiserver
// sends when a ReplicaSet creates a labelled pod: the object is what the
// real test apiserver makes of the pod on a dry-run create (defaults and the
// ServiceAccount plugin's token volume), minus what it sets only after
// admission. It also returns the offset of the UID in the body.
func rssReviewBody(b *testing.B, cp *controlplane.ControlPlane) ([]byte, int) {
	b.Helper()
	yes := true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "checkout-7d9c6b5f4-",
			Labels: map[string]string{
				datadog.LabelEnabled:        "true",
				"app.kubernetes.io/name":    "checkout",
				"app.kubernetes.io/part-of": "shop",
				"pod-template-hash":         "7d9c6b5f4",
			},
			Annotations: map[string]string{"kubectl.kubernetes.io/restartedAt": "2026-11-25T10:00:00Z"},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "checkout-7d9c6b5f4",
				UID: "5c3b8f7e-1d2a-4b6c-9e0f-a1b2c3d4e5f6", Controller: &yes, BlockOwnerDeletion: &yes,
			}},
		},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{
				Name: "migrate", Image: "registry.example/shop/checkout:1.42.0", Command: []string{"/checkout", "migrate"},
				Env: []corev1.EnvVar{{Name: "DB_HOST", Value: "postgres.shop.svc"}},
			}},
			Containers: []corev1.Container{
				{
					Name: "checkout", Image: "registry.example/shop/checkout:1.42.0",
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
					Env: []corev1.EnvVar{
						{Name: "DB_HOST", Value: "postgres.shop.svc"},
						{Name: "LOG_FORMAT", Value: "json"},
						{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					},
					Resources: corev1.ResourceRequirements{
						Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
						Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
					},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("http")}}},
					VolumeMounts:   []corev1.VolumeMount{{Name: "config", MountPath: "/etc/checkout", ReadOnly: true}},
				},
				{
					Name: "proxy", Image: "registry.example/envoy:1.30",
					Ports: []corev1.ContainerPort{{Name: "admin", ContainerPort: 9901}},
				},
			},
			Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "checkout"}}}}},
		},
	}
	got, err := cp.Client.CoreV1().Pods("apps").Create(context.Background(), pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		b.Fatalf("dry-run create of the benchmark pod: %v", err)
	}
	// Set by the registry after admission: not in the reviewed object.
	got.Name, got.UID, got.ResourceVersion, got.CreationTimestamp = "", "", "", metav1.Time{}
	got.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
	raw, err := json.Marshal(got)
	if err != nil {
		b.Fatal(err)
	}
	options, _ := json.Marshal(metav1.CreateOptions{TypeMeta: metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "CreateOptions"}})
	dryRun := false
	gvk := metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}
	gvr := metav1.GroupVersionResource{Version: "v1", Resource: "pods"}
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: types.UID(rssUIDTemplate), Kind: gvk, Resource: gvr, RequestKind: &gvk, RequestResource: &gvr,
			Namespace: "apps", Operation: admissionv1.Create,
			UserInfo: authenticationv1.UserInfo{
				Username: "system:serviceaccount:kube-system:replicaset-controller",
				UID:      "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
				Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"},
			},
			Object:  k8sruntime.RawExtension{Raw: raw},
			DryRun:  &dryRun,
			Options: k8sruntime.RawExtension{Raw: options},
		},
	}
	body, err := json.Marshal(review)
	if err != nil {
		b.Fatal(err)
	}
	at := bytes.Index(body, []byte(rssUIDTemplate))
	if at < 0 || bytes.Count(body, []byte(rssUIDTemplate)) != 1 {
		b.Fatalf("UID not found once in the review body")
	}
	b.Logf("AdmissionReview body: %d bytes", len(body))
	return body, at
}

// rssAdmit sends one review with the given UID suffix and checks that the
// response allows the pod, echoes the UID and carries a CSI patch. It
// returns the response's protocol.
func rssAdmit(client *http.Client, url string, template []byte, uidAt int, tag string) (string, error) {
	body := slices.Clone(template)
	uid := rssUIDTemplate[:len(rssUIDTemplate)-len(tag)] + tag
	copy(body[uidAt:], uid)
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	out, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return resp.Proto, err
	}
	if resp.StatusCode != http.StatusOK {
		return resp.Proto, fmt.Errorf("HTTP %s: %.200s", resp.Status, out)
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(out, &review); err != nil {
		return resp.Proto, fmt.Errorf("response is not an AdmissionReview: %v: %.200s", err, out)
	}
	r := review.Response
	switch {
	case r == nil:
		err = errors.New("AdmissionReview without a response")
	case string(r.UID) != uid:
		err = fmt.Errorf("response UID %q, sent %q", r.UID, uid)
	case !r.Allowed:
		err = fmt.Errorf("pod not allowed: %+v", r.Result)
	case len(r.Patch) == 0 || r.PatchType == nil || *r.PatchType != admissionv1.PatchTypeJSONPatch:
		err = fmt.Errorf("pod allowed without a JSON patch (warnings %q)", r.Warnings)
	case !bytes.Contains(r.Patch, []byte(datadog.DriverName)):
		err = fmt.Errorf("patch without a CSI volume of %s: %.300s", datadog.DriverName, r.Patch)
	}
	return resp.Proto, err
}

// rssLoad sends rssBenchRate requests a second for d, each from its own
// goroutine at its scheduled time (the rate does not slow down when the
// server does), and returns every request's latency, the time until the
// last answer, and the failures.
func rssLoad(client *http.Client, url string, body []byte, uidAt, run int, d time.Duration) ([]time.Duration, time.Duration, []error) {
	n := int(d.Seconds() * rssBenchRate)
	latencies := make([]time.Duration, n)
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	start := time.Now()
	for i := range n {
		if wait := time.Until(start.Add(time.Duration(i) * time.Second / rssBenchRate)); wait > 0 {
			time.Sleep(wait)
		}
		wg.Go(func() {
			t0 := time.Now()
			_, err := rssAdmit(client, url, body, uidAt, fmt.Sprintf("%04x%08x", run, i))
			latencies[i] = time.Since(t0)
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return latencies, time.Since(start), errs
}

// serveProcess is the webhook binary running as a child process.
type serveProcess struct {
	cmd        *exec.Cmd
	logPath    string
	exited     chan struct{}
	waitErr    error
	injectAddr string
	probeAddr  string
}

// startServeProcess starts the binary, its stdout and stderr to a file,
// and kills it when the benchmark ends.
func startServeProcess(b *testing.B, bin, dir string, args ...string) *serveProcess {
	b.Helper()
	p := &serveProcess{logPath: filepath.Join(dir, "webhook.log"), exited: make(chan struct{})}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		b.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.Env = []string{}
	if n := os.Getenv("RSS_BENCH_GOMAXPROCS"); n != "" {
		p.cmd.Env = append(p.cmd.Env, "GOMAXPROCS="+n)
	}
	// Killed with the test binary even if it dies without cleaning up.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		b.Fatalf("start %s: %v", bin, err)
	}
	go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()
	b.Cleanup(func() {
		// Nothing is measured after the load: no graceful shutdown to wait for.
		_ = p.cmd.Process.Kill()
		<-p.exited
		logFile.Close()
	})
	return p
}

func (p *serveProcess) pid() int { return p.cmd.Process.Pid }

// exitedErr says whether the process has exited, and how.
func (p *serveProcess) exitedErr() error {
	select {
	case <-p.exited:
		if p.waitErr == nil {
			return errors.New("exited with status 0")
		}
		return p.waitErr
	default:
		return nil
	}
}

// waitReady reads the bound addresses from the "serving" log line, then
// waits for /readyz on the probe address (certificate loaded, namespace and
// CSIDriver caches synced from the apiserver).
func (p *serveProcess) waitReady(b *testing.B, timeout time.Duration) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if err := p.exitedErr(); err != nil {
			b.Fatalf("webhook exited before it was ready (%v)\nwebhook log tail:\n%s", err, p.logTail())
		}
		last = p.checkReady()
		if last == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatalf("webhook not ready after %v: %v\nwebhook log tail:\n%s", timeout, last, p.logTail())
}

func (p *serveProcess) checkReady() error {
	if p.probeAddr == "" {
		if err := p.readAddrs(); err != nil {
			return err
		}
	}
	resp, err := http.Get("http://" + p.probeAddr + "/readyz")
	if err != nil {
		return fmt.Errorf("/readyz: %w", err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/readyz: %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// readAddrs finds {"msg":"serving","inject":...,"probe":...} in the log.
func (p *serveProcess) readAddrs() error {
	f, err := os.Open(p.logPath)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var line struct{ Msg, Inject, Probe string }
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "serving" && line.Inject != "" && line.Probe != "" {
			p.injectAddr, p.probeAddr = line.Inject, line.Probe
			return nil
		}
	}
	return errors.New(`no "serving" line in the log yet`)
}

func (p *serveProcess) logTail() string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-40):], "\n")
}

// goMemstats summarizes the Go runtime's own view, from /metrics.
func (p *serveProcess) goMemstats(b *testing.B) string {
	b.Helper()
	resp, err := http.Get("http://" + p.probeAddr + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	want := []string{"go_memstats_heap_inuse_bytes", "go_memstats_heap_idle_bytes", "go_memstats_heap_released_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_sys_bytes", "go_goroutines", "go_threads"}
	got := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if ok && slices.Contains(want, name) {
			if v, err := strconv.ParseFloat(value, 64); err == nil && strings.HasSuffix(name, "_bytes") {
				value = fmt.Sprintf("%.1fMiB", v/(1<<20))
			}
			got[name] = value
		}
	}
	var out []string
	for _, name := range want {
		out = append(out, strings.TrimPrefix(name, "go_memstats_")+"="+got[name])
	}
	return strings.Join(out, " ")
}

// readProcStatus returns the kB figures of /proc/<pid>/status.
func readProcStatus(b *testing.B, pid int) map[string]int64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatalf("read the webhook's /proc status: %v", err)
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(data), "\n") {
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		fields := strings.Fields(value)
		if len(fields) == 2 && fields[1] == "kB" || len(fields) == 1 && key == "Threads" {
			if n, err := strconv.ParseInt(fields[0], 10, 64); err == nil {
				out[key] = n
			}
		}
	}
	for _, key := range []string{"VmRSS", "VmHWM", "RssAnon"} {
		if _, ok := out[key]; !ok {
			b.Fatalf("/proc/%d/status has no %s", pid, key)
		}
	}
	return out
}

func formatStatus(s map[string]int64) string {
	var out []string
	for _, key := range []string{"VmRSS", "VmHWM", "RssAnon", "RssFile"} {
		out = append(out, fmt.Sprintf("%s=%.1fMiB", key, float64(s[key])/1024))
	}
	return strings.Join(out, " ") + fmt.Sprintf(" Threads=%d", s["Threads"])
}
