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

// clock is a fake time for SelfManaged, on a whole second because
// certificates keep whole seconds.
type clock struct{ t time.Time }

func newClock() *clock                   { return &clock{t: time.Now().Truncate(time.Second)} }
func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

// TestSelfManagedRenewsBeforeExpiry keeps the CA and replaces the serving
// certificate once less than a third of its validity is left.
func TestSelfManagedRenewsBeforeExpiry(t *testing.T) {
	client := newFakeCluster()
	sm := newSelfManaged(client)
	c := newClock()
	sm.now, sm.CertValidity = c.now, 3*time.Hour
	ctx := context.Background()
	if err := sm.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	first := sm.Holder.Leaf()
	c.advance(119 * time.Minute) // 61 minutes left
	if err := sm.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if !sm.Holder.Leaf().Equal(first) {
		t.Fatal("renewed a fresh certificate")
	}
	c.advance(2 * time.Minute) // 59 minutes left
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

// TestSelfManagedRenewsCAInTwoSteps: a renewed CA is first only trusted;
// it signs once this replica has seen the webhook configuration trust it
// for TrustPropagation. A replica that only just saw it does not switch.
func TestSelfManagedRenewsCAInTwoSteps(t *testing.T) {
	client := newFakeCluster()
	ctx := context.Background()
	c := newClock()
	replica := func() *SelfManaged {
		sm := newSelfManaged(client)
		sm.now, sm.CAValidity, sm.TrustPropagation = c.now, 30*time.Hour, time.Minute
		return sm
	}
	reconcile := func(sm *SelfManaged) {
		t.Helper()
		if err := sm.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
	}
	r1 := replica()
	reconcile(r1)
	first := r1.Holder.Leaf()
	c.advance(20*time.Hour + time.Second) // under a third of the CA's validity left

	reconcile(r1)
	secret := getSecret(t, client)
	oldCA, newCA := parseCert(t, secret.Data[SecretKeyCACert]), parseCert(t, secret.Data[SecretKeyNextCACert])
	if oldCA.Equal(newCA) {
		t.Fatal("no new CA waiting after the CA went stale")
	}
	assertBundle(t, client, c.now(), r1.Holder.Leaf(), oldCA, newCA)
	c.advance(59 * time.Second)
	reconcile(r1)
	if !r1.Holder.Leaf().Equal(first) {
		t.Fatal("the new CA signed before the propagation time passed")
	}

	c.advance(time.Second)
	r2 := replica()
	reconcile(r2)
	if !r2.Holder.Leaf().Equal(first) {
		t.Fatal("a replica switched to the new CA without having seen it trusted for the propagation time")
	}
	reconcile(r1)
	served := r1.Holder.Leaf()
	if err := served.CheckSignatureFrom(newCA); err != nil {
		t.Fatalf("after the propagation time the serving certificate is not signed by the new CA: %v", err)
	}
	secret = getSecret(t, client)
	if _, ok := secret.Data[SecretKeyNextCACert]; ok {
		t.Fatal("the promoted CA is still waiting in next-ca.crt")
	}
	if !parseCert(t, secret.Data[SecretKeyCACert]).Equal(newCA) {
		t.Fatal("ca.crt is not the new CA")
	}
	// The old CA stays trusted for the replica that has not switched yet.
	assertBundle(t, client, c.now(), r2.Holder.Leaf(), oldCA, newCA)
	reconcile(r2)
	if !r2.Holder.Leaf().Equal(served) {
		t.Fatal("the other replica did not adopt the new certificate")
	}
	assertBundle(t, client, c.now(), served, oldCA, newCA)
}

// TestSelfManagedSwitchesWhenTheOldCAExpires: a propagation time longer
// than the old CA has left does not leave an expired CA signing.
func TestSelfManagedSwitchesWhenTheOldCAExpires(t *testing.T) {
	client := newFakeCluster()
	sm := newSelfManaged(client)
	c := newClock()
	sm.now, sm.CAValidity, sm.TrustPropagation = c.now, 3*time.Hour, 10*time.Hour
	reconcile := func() {
		t.Helper()
		if err := sm.Reconcile(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	reconcile()
	oldCA := parseCert(t, getSecret(t, client).Data[SecretKeyCACert])
	c.advance(2*time.Hour + time.Minute)
	reconcile()
	if err := sm.Holder.Leaf().CheckSignatureFrom(oldCA); err != nil {
		t.Fatal("the new CA signs before the old one expired or the propagation time passed")
	}
	c.advance(time.Hour)
	reconcile()
	ca := parseCert(t, getSecret(t, client).Data[SecretKeyCACert])
	if ca.Equal(oldCA) || !c.now().Before(ca.NotAfter) {
		t.Fatal("an expired CA still signs")
	}
	if err := sm.Holder.Leaf().CheckSignatureFrom(ca); err != nil {
		t.Fatalf("serving certificate not signed by the current CA: %v", err)
	}
}

func getSecret(t *testing.T, client *fake.Clientset) *corev1.Secret {
	t.Helper()
	s, err := client.CoreV1().Secrets("dd").Get(context.Background(), "certs", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func parseCert(t *testing.T, pemBytes []byte) *x509.Certificate {
	t.Helper()
	c, err := (KeyPair{CertPEM: pemBytes}).Leaf()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// assertBundle checks every webhook's caBundle holds exactly want and
// trusts the served certificate at now.
func assertBundle(t *testing.T, client *fake.Clientset, now time.Time, served *x509.Certificate, want ...*x509.Certificate) {
	t.Helper()
	cfg, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), "hook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range cfg.Webhooks {
		have, err := parseBundle(w.ClientConfig.CABundle)
		if err != nil {
			t.Fatal(err)
		}
		if len(have) != len(want) {
			t.Fatalf("webhook %s trusts %d CAs, want %d", w.Name, len(have), len(want))
		}
		for _, c := range want {
			found := false
			for _, h := range have {
				found = found || h.Equal(c)
			}
			if !found {
				t.Fatalf("webhook %s does not trust CA %s", w.Name, c.SerialNumber)
			}
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(w.ClientConfig.CABundle)
		if _, err := served.Verify(x509.VerifyOptions{Roots: pool, DNSName: "svc.dd.svc", CurrentTime: now}); err != nil {
			t.Fatalf("webhook %s does not trust the served certificate: %v", w.Name, err)
		}
	}
}
