package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/datadog-csi/datadog-csi/webhook/pkg/certs"
	"k8s.io/client-go/kubernetes/fake"
)

// TestServeEndpoints runs the whole process in-process with certificates
// from files: HTTPS probes and a plain-HTTP probe port with /metrics.
func TestServeEndpoints(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.NewCA("ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := certs.NewServing(ca, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(dir, certs.CertFile), serving.CertPEM, 0o600)
	_ = os.WriteFile(filepath.Join(dir, certs.KeyFile), serving.KeyPEM, 0o600)

	cfg := DefaultConfig()
	cfg.ListenAddress, cfg.ProbeAddress = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Namespace, cfg.TLSMode, cfg.TLSCertDir = "datadog", TLSCertManager, dir
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
	pool.AppendCertsFromPEM(ca.CertPEM)
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
