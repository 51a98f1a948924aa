package certs

import (
	"context"
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestFileSourceReloadsAndKeepsOldOnHalfWrite(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA("ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	write := func(kp KeyPair) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, CertFile), kp.CertPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, KeyFile), kp.KeyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	first, _ := NewServing(ca, []string{"a"}, nil, time.Hour)
	write(first)
	h := &Holder{}
	s := &FileSource{Dir: dir, Holder: h}
	if err := s.Load(); err != nil {
		t.Fatal(err)
	}
	firstLeaf := h.Leaf()
	second, _ := NewServing(ca, []string{"b"}, nil, time.Hour)
	// Certificate written, key not yet: the old pair stays served.
	if err := os.WriteFile(filepath.Join(dir, CertFile), second.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Load(); err == nil {
		t.Fatal("mismatched pair accepted")
	}
	if !h.Leaf().Equal(firstLeaf) {
		t.Fatal("half-written pair replaced the certificate")
	}
	write(second)
	if err := s.Load(); err != nil {
		t.Fatal(err)
	}
	if h.Leaf().DNSNames[0] != "b" {
		t.Fatalf("not reloaded: %v", h.Leaf().DNSNames)
	}
}

func newFakeCluster() *fake.Clientset {
	return fake.NewClientset(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "certs", Namespace: "dd"}},
		&admissionregistrationv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: "hook"},
			Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "a.datadoghq.com"}, {Name: "b.datadoghq.com"}},
		})
}

func newSelfManaged(client *fake.Clientset) *SelfManaged {
	return &SelfManaged{Client: client, Namespace: "dd", SecretName: "certs", WebhookConfigName: "hook",
		DNSNames: []string{"svc.dd.svc"}, Holder: &Holder{}, Logger: slog.New(slog.DiscardHandler)}
}

// TestSelfManagedReplicasAgree: several replicas reconciling one Secret at
// once end up serving the same certificate, trusted by the caBundle.
func TestSelfManagedReplicasAgree(t *testing.T) {
	client := newFakeCluster()
	ctx := context.Background()
	replicas := make([]*SelfManaged, 4)
	var wg sync.WaitGroup
	for i := range replicas {
		replicas[i] = newSelfManaged(client)
		wg.Go(func() {
			if err := replicas[i].Reconcile(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// A second round adopts whatever won the first.
	for _, r := range replicas {
		if err := r.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
	}
	leaf := replicas[0].Holder.Leaf()
	for i, r := range replicas {
		if !r.Holder.Leaf().Equal(leaf) {
			t.Fatalf("replica %d serves another certificate", i)
		}
	}
	cfg, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "hook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range cfg.Webhooks {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(w.ClientConfig.CABundle) {
			t.Fatalf("webhook %s: no caBundle", w.Name)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "svc.dd.svc"}); err != nil {
			t.Fatalf("webhook %s: caBundle does not trust the served certificate: %v", w.Name, err)
		}
	}
}

// TestSelfManagedRenewsBeforeExpiry keeps the CA and replaces the serving
// certificate once less than a third of its validity is left.
func TestSelfManagedRenewsBeforeExpiry(t *testing.T) {
	client := newFakeCluster()
	sm := newSelfManaged(client)
	sm.CertValidity = 3 * time.Second
	ctx := context.Background()
	if err := sm.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	first := sm.Holder.Leaf()
	if err := sm.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if !sm.Holder.Leaf().Equal(first) {
		t.Fatal("renewed a fresh certificate")
	}
	time.Sleep(2100 * time.Millisecond)
	if err := sm.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if sm.Holder.Leaf().Equal(first) {
		t.Fatal("certificate not renewed with under a third of its validity left")
	}
	if sm.Holder.Leaf().Issuer.String() != first.Issuer.String() {
		t.Fatal("CA changed on a serving certificate renewal")
	}
}

func TestSelfManagedCreatesMissingSecret(t *testing.T) {
	client := fake.NewClientset(&admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "hook"}, Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: "a"}}})
	sm := newSelfManaged(client)
	if err := sm.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	s, err := client.CoreV1().Secrets("dd").Get(context.Background(), "certs", metav1.GetOptions{})
	if err != nil || len(s.Data[SecretKeyCert]) == 0 {
		t.Fatalf("secret not created: %v", err)
	}
}
