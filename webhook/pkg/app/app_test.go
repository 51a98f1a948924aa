package app

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
	"github.com/datadog-csi/datadog-csi/webhook/pkg/certs/certstest"
	"github.com/datadog-csi/datadog-csi/webhook/pkg/server"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// fileTLSConfig is a config serving on 127.0.0.1 with a certificate from
// files, and the PEM of the CA that signed it.
func fileTLSConfig(t *testing.T) (Config, []byte) {
	t.Helper()
	dir := t.TempDir()
	caPEM := certstest.WriteLoopbackPair(t, dir)

	cfg := DefaultConfig()
	cfg.ListenAddress, cfg.ProbeAddress = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Namespace, cfg.TLSMode, cfg.TLSCertDir = "datadog", TLSCertManager, dir
	return cfg, caPEM
}

// TestServeEndpoints runs the whole process in-process with certificates
// from files: HTTPS probes and a plain-HTTP probe port with /metrics.
func TestServeEndpoints(t *testing.T) {
	cfg, caPEM := fileTLSConfig(t)
	cfg.ShutdownDelay = 0
	a, err := New(cfg, fake.NewClientset(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	httpsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(c *http.Client, url string) (int, string) {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code, _ := get(http.DefaultClient, "http://"+a.ProbeAddr()+"/readyz"); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := get(httpsClient, "https://"+a.InjectAddr()+p); code != http.StatusOK {
			t.Errorf("https %s: %d", p, code)
		}
	}
	code, body := get(http.DefaultClient, "http://"+a.ProbeAddr()+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, "datadog_csi_webhook_certificate_not_after_timestamp_seconds") {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
}

// After its context ends, Serve fails /readyz and keeps answering
// admissions over new TLS connections for --shutdown-delay, telling
// clients not to reuse their connections; then it closes its listeners.
func TestServeKeepsServingDuringShutdownDelay(t *testing.T) {
	const delay = 500 * time.Millisecond
	cfg, caPEM := fileTLSConfig(t)
	cfg.Mode = string(datadog.ModeHostIP)
	cfg.ShutdownDelay = delay
	var logs syncBuffer
	a, err := New(cfg, fake.NewClientset(), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	// A new client per request: a new TCP connection and TLS handshake,
	// as the apiserver makes once its connection is closed.
	newHTTPS := func() *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	}
	readyz := func(c *http.Client, url string) (int, string, error) {
		resp, err := c.Get(url)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	probeURL := "http://" + a.ProbeAddr() + server.PathReadyz
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if code, _, _ := readyz(http.DefaultClient, probeURL); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never ready")
		}
	}

	// admit posts a review with c and reports whether it rode a reused
	// connection.
	admit := func(c *http.Client) (resp *http.Response, review admissionv1.AdmissionReview, reused bool, err error) {
		req, _ := http.NewRequest(http.MethodPost, "https://"+a.InjectAddr()+server.PathInject, bytes.NewReader(reviewBody(t)))
		req.Header.Set("Content-Type", "application/json")
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused },
		}))
		if resp, err = c.Do(req); err != nil {
			return nil, review, false, err
		}
		err = json.NewDecoder(resp.Body).Decode(&review)
		resp.Body.Close()
		return resp, review, reused, err
	}
	// The apiserver's connection: HTTP/1.1 (as the apiserver calls
	// webhooks), kept alive, idle in the pool when shutdown begins.
	apiserver := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}}}}
	if resp, _, _, err := admit(apiserver); err != nil || resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("admission before the shutdown on a keep-alive connection: %v %v", resp, err)
	}

	cancel()
	cancelled := time.Now()
	// /readyz fails as soon as Serve sees the cancel, on both ports.
	for {
		code, body, err := readyz(http.DefaultClient, probeURL)
		if err != nil {
			t.Fatalf("probe port closed during the delay: %v", err)
		}
		if code == http.StatusServiceUnavailable {
			if !strings.Contains(body, "shutting down") {
				t.Errorf("/readyz during the delay: %q, want the reason", body)
			}
			break
		}
		if time.Since(cancelled) > delay/2 {
			t.Fatalf("/readyz still %d %v after the cancel", code, time.Since(cancelled))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if code, body, err := readyz(newHTTPS(), "https://"+a.InjectAddr()+server.PathReadyz); err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("https /readyz during the delay: %d %q %v", code, body, err)
	}

	// The idle keep-alive connection was not closed under the apiserver:
	// its next admission rides it, is answered, and closes it after.
	resp, review, reused, err := admit(apiserver)
	if err != nil || resp.StatusCode != http.StatusOK || review.Response == nil || !review.Response.Allowed {
		t.Fatalf("admission on the kept-alive connection during the delay: %v %v", resp, err)
	}
	if !reused {
		t.Error("the idle keep-alive connection was closed when shutdown began; an admission written on it at that moment fails with EOF")
	}
	if !resp.Close {
		t.Error("the admission on the kept-alive connection during the delay did not close it (Connection: close)")
	}

	// An admission on a new TLS connection is still answered, and mutated.
	resp, review, _, err = admit(newHTTPS())
	if err != nil || resp.StatusCode != http.StatusOK || review.Response == nil || review.Response.UID != "uid-1" ||
		!review.Response.Allowed || len(review.Response.Patch) == 0 {
		t.Fatalf("admission during the delay: %d %+v %v", resp.StatusCode, review.Response, err)
	}
	if !resp.Close {
		t.Error("an admission answered during the delay must close its connection (Connection: close)")
	}
	answered := time.Since(cancelled)
	select {
	case err := <-done:
		t.Fatalf("Serve returned %v after %v, before the %v delay", err, time.Since(cancelled), delay)
	default:
	}

	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(delay + 10*time.Second):
		t.Fatal("Serve did not return after the delay")
	}
	if elapsed := time.Since(cancelled); elapsed < delay {
		t.Errorf("Serve returned %v after the cancel, before the %v delay", elapsed, delay)
	}
	t.Logf("admission answered %v after the cancel", answered)
	if _, err := net.DialTimeout("tcp", a.InjectAddr(), time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("inject listener after Serve: %v, want connection refused", err)
	}
	if n := strings.Count(logs.String(), "shutting down: still serving for 500ms while endpoints drop this pod"); n != 1 {
		t.Errorf("shutdown message logged %d times, want once:\n%s", n, logs.String())
	}
}

// A server that fails makes Serve return its error at once, without a
// shutdown delay and without waiting for a context that never ends.
func TestServeReturnsWhenAServerFails(t *testing.T) {
	cfg, _ := fileTLSConfig(t)
	cfg.ShutdownDelay = time.Hour
	a, err := New(cfg, fake.NewClientset(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Listen(); err != nil {
		t.Fatal(err)
	}
	a.probeLn.Close()
	done := make(chan error, 1)
	go func() { done <- a.Serve(context.Background()) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Serve returned nil after its probe listener failed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its probe listener failed")
	}
}

func reviewBody(t *testing.T) []byte {
	t.Helper()
	pod := corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "app", Labels: map[string]string{datadog.LabelEnabled: "true"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
	}
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "uid-1",
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: "apps",
			Operation: admissionv1.Create,
		},
	}
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	review.Request.Object.Raw = raw
	body, err := json.Marshal(review)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
