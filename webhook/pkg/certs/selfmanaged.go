package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Keys of the self-managed Secret.
const (
	SecretKeyCACert   = "ca.crt"
	SecretKeyCAKey    = "ca.key"
	SecretKeyCABundle = "ca-bundle.crt" // the CAs the webhook configuration trusts
	SecretKeyCert     = "tls.crt"
	SecretKeyKey      = "tls.key"
	// A renewed CA waits here, already in the bundle, until every
	// apiserver has had time to trust it; then it replaces ca.crt/ca.key.
	SecretKeyNextCACert = "next-ca.crt"
	SecretKeyNextCAKey  = "next-ca.key"
)

// SelfManaged keeps a CA and a serving certificate in a Secret, renews them
// before they expire, and keeps the caBundle of every webhook of a
// MutatingWebhookConfiguration equal to the Secret's CA bundle.
//
// A CA is renewed in two steps, because an apiserver sees a new caBundle
// only some time after the webhook configuration is written: first the new
// CA joins the bundle beside the current one while the current one still
// signs; only once this replica has seen the webhook configuration trust
// the new CA for TrustPropagation does the new CA start signing. The old CA
// stays in the bundle until the next renewal, so a replica still serving a
// certificate it signed keeps working until it re-reads the Secret.
//
// Replicas coordinate without a leader: every write is an Update carrying
// the resourceVersion that was read, so when two replicas renew at once the
// apiserver accepts one and answers Conflict to the other, which re-reads
// the Secret and adopts the winner's certificate. The RBAC this needs is
// get/update on the one Secret (create only if it may not exist yet) and
// get/update on the one MutatingWebhookConfiguration.
type SelfManaged struct {
	Client            kubernetes.Interface
	Namespace         string
	SecretName        string
	WebhookConfigName string
	// DNSNames and IPs are the serving certificate's subject names.
	DNSNames []string
	IPs      []net.IP
	// CAValidity and CertValidity default to 10 years and 1 year. A
	// certificate is renewed when less than a third of its validity is left.
	CAValidity   time.Duration
	CertValidity time.Duration
	// Interval is how often the Secret and webhook configuration are
	// checked (default 1 minute); other replicas' renewals are picked up
	// within it.
	Interval time.Duration
	// TrustPropagation is how long the webhook configuration must have
	// trusted a renewed CA before certificates it signs are served
	// (default 1 minute): the time every apiserver needs to load the new
	// caBundle.
	TrustPropagation time.Duration
	Holder           *Holder
	Logger           *slog.Logger

	// now is a seam: tests step a clock through a CA renewal instead of
	// sleeping, so no assertion rides on scheduling delays.
	now func() time.Time

	mu sync.Mutex
	// trusted is the bundle this replica last saw in the webhook
	// configuration, and since when.
	trusted      string
	trustedSince time.Time
}

func (s *SelfManaged) defaults() {
	if s.CAValidity <= 0 {
		s.CAValidity = 10 * 365 * 24 * time.Hour
	}
	if s.CertValidity <= 0 {
		s.CertValidity = 365 * 24 * time.Hour
	}
	if s.Interval <= 0 {
		s.Interval = time.Minute
	}
	if s.TrustPropagation <= 0 {
		s.TrustPropagation = time.Minute
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
}

// Run reconciles until ctx ends, logging failures and retrying.
func (s *SelfManaged) Run(ctx context.Context) {
	s.defaults()
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.Reconcile(ctx); err != nil {
				s.Logger.Error("self-managed certificate reconcile failed; will retry", "err", err)
			}
		}
	}
}

// Reconcile makes the Secret hold a valid CA and serving certificate, the
// webhook configuration trust that CA, and the Holder serve the certificate.
func (s *SelfManaged) Reconcile(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.defaults()
	for attempt := 0; ; attempt++ {
		err := s.reconcileOnce(ctx)
		if err == nil || !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) || attempt >= 5 {
			return err
		}
		// Another replica wrote first: read its result and go again.
	}
}

func (s *SelfManaged) reconcileOnce(ctx context.Context) error {
	secrets := s.Client.CoreV1().Secrets(s.Namespace)
	secret, err := secrets.Get(ctx, s.SecretName, metav1.GetOptions{})
	create := apierrors.IsNotFound(err)
	if err != nil && !create {
		return fmt.Errorf("get secret %s/%s: %w", s.Namespace, s.SecretName, err)
	}
	if create {
		secret = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: s.SecretName, Namespace: s.Namespace}, Type: corev1.SecretTypeOpaque}
	}
	data := secret.Data
	if data == nil {
		data = map[string][]byte{}
	}
	now := s.now()
	changed := false
	var renewal string // what happened to the CAs, logged once written

	// 1. The CAs: the one that signs, the renewed one waiting to, and the
	// bundle the webhook configuration trusts.
	ca := KeyPair{CertPEM: data[SecretKeyCACert], KeyPEM: data[SecretKeyCAKey]}
	next := KeyPair{CertPEM: data[SecretKeyNextCACert], KeyPEM: data[SecretKeyNextCAKey]}
	bundle := data[SecretKeyCABundle]
	hasNext := usable(next, now)
	switch {
	case !usable(ca, now) && hasNext:
		// The signing CA expired while its successor waited: nothing it
		// signed verifies any more, so waiting longer gains nothing.
		ca, next, hasNext = next, KeyPair{}, false
		renewal = "self-managed CA renewal finished early: the current CA expired before the new one was trusted for the propagation time"
		changed = true
	case !usable(ca, now):
		// First start, or everything expired while no replica ran:
		// nothing is trusted yet, so the new CA signs at once.
		if ca, err = newCA(now, "datadog-csi-webhook-ca", s.CAValidity); err != nil {
			return err
		}
		next, hasNext, bundle = KeyPair{}, false, ca.CertPEM
		changed = true
	case !fresh(ca, now, s.CAValidity) && !hasNext:
		if next, err = newCA(now, "datadog-csi-webhook-ca", s.CAValidity); err != nil {
			return err
		}
		hasNext, bundle = true, concat(next.CertPEM, ca.CertPEM)
		renewal = "self-managed CA renewal started: the new CA is trusted, the current one still signs"
		changed = true
	case hasNext && s.trusted == string(bundle) && now.Sub(s.trustedSince) >= s.TrustPropagation:
		ca, next, hasNext = next, KeyPair{}, false
		renewal = "self-managed CA renewal finished: the new CA signs"
		changed = true
	}
	// The bundle must hold every CA in use; one edited by hand or left
	// empty is rebuilt.
	if !bundleHolds(bundle, ca) || hasNext && !bundleHolds(bundle, next) {
		bundle = ca.CertPEM
		if hasNext {
			bundle = concat(next.CertPEM, ca.CertPEM)
		}
		changed = true
	}
	data[SecretKeyCACert], data[SecretKeyCAKey], data[SecretKeyCABundle] = ca.CertPEM, ca.KeyPEM, bundle
	if hasNext {
		data[SecretKeyNextCACert], data[SecretKeyNextCAKey] = next.CertPEM, next.KeyPEM
	} else if _, ok := data[SecretKeyNextCACert]; ok {
		delete(data, SecretKeyNextCACert)
		delete(data, SecretKeyNextCAKey)
		changed = true
	}

	// 2. The serving certificate, reissued when old, signed by another CA
	// or for other names.
	serving := KeyPair{CertPEM: data[SecretKeyCert], KeyPEM: data[SecretKeyKey]}
	reissued := false
	if !fresh(serving, now, s.CertValidity) || !s.matches(serving, ca) {
		serving, err = newServing(now, ca, s.DNSNames, s.IPs, s.CertValidity)
		if err != nil {
			return err
		}
		data[SecretKeyCert], data[SecretKeyKey] = serving.CertPEM, serving.KeyPEM
		changed, reissued = true, true
	}

	if changed {
		secret.Data = data
		if create {
			secret, err = secrets.Create(ctx, secret, metav1.CreateOptions{})
		} else {
			secret, err = secrets.Update(ctx, secret, metav1.UpdateOptions{})
		}
		if err != nil {
			return fmt.Errorf("write secret %s/%s: %w", s.Namespace, s.SecretName, err)
		}
		if renewal != "" {
			s.Logger.Info(renewal, "secret", s.SecretName)
		}
		if reissued {
			leaf, _ := serving.Leaf()
			s.Logger.Info("self-managed certificate renewed", "secret", s.SecretName, "notAfter", leaf.NotAfter)
		}
	}

	// 3. Trust before use: the webhook configuration must trust the CA
	// before this replica serves a certificate it signed.
	bundle = secret.Data[SecretKeyCABundle]
	if err := s.patchCABundle(ctx, bundle); err != nil {
		return err
	}
	if s.trusted != string(bundle) {
		s.trusted, s.trustedSince = string(bundle), s.now()
	}
	_, err = s.Holder.Set(secret.Data[SecretKeyCert], secret.Data[SecretKeyKey])
	return err
}

// usable reports whether kp parses and is within its validity.
func usable(kp KeyPair, now time.Time) bool {
	if _, _, err := kp.parse(); err != nil {
		return false
	}
	leaf, err := kp.Leaf()
	return err == nil && now.Before(leaf.NotAfter)
}

func bundleHolds(bundle []byte, ca KeyPair) bool {
	leaf, err := ca.Leaf()
	if err != nil {
		return false
	}
	certs, err := parseBundle(bundle)
	if err != nil {
		return false
	}
	for _, c := range certs {
		if c.Equal(leaf) {
			return true
		}
	}
	return false
}

func concat(a, b []byte) []byte {
	return append(append([]byte{}, a...), b...)
}

// fresh reports whether kp parses and has more than a third of validity left.
func fresh(kp KeyPair, now time.Time, validity time.Duration) bool {
	if _, _, err := kp.parse(); err != nil {
		return false
	}
	leaf, err := kp.Leaf()
	if err != nil {
		return false
	}
	return leaf.NotAfter.Sub(now) > validity/3
}

func (s *SelfManaged) matches(serving, ca KeyPair) bool {
	leaf, err := serving.Leaf()
	if err != nil {
		return false
	}
	caLeaf, err := ca.Leaf()
	if err != nil || leaf.CheckSignatureFrom(caLeaf) != nil {
		return false
	}
	want := map[string]bool{}
	for _, n := range s.DNSNames {
		want[n] = true
	}
	for _, ip := range s.IPs {
		want[ip.String()] = true
	}
	have := map[string]bool{}
	for _, n := range leaf.DNSNames {
		have[n] = true
	}
	for _, ip := range leaf.IPAddresses {
		have[ip.String()] = true
	}
	if len(want) != len(have) {
		return false
	}
	for n := range want {
		if !have[n] {
			return false
		}
	}
	return true
}

func (s *SelfManaged) patchCABundle(ctx context.Context, bundle []byte) error {
	if len(bundle) == 0 {
		return errors.New("empty CA bundle")
	}
	if _, err := parseBundle(bundle); err != nil {
		return err
	}
	configs := s.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cfg, err := configs.Get(ctx, s.WebhookConfigName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get mutatingwebhookconfiguration %s: %w", s.WebhookConfigName, err)
	}
	changed := false
	for i := range cfg.Webhooks {
		if !bytes.Equal(cfg.Webhooks[i].ClientConfig.CABundle, bundle) {
			cfg.Webhooks[i].ClientConfig.CABundle = bundle
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if _, err := configs.Update(ctx, cfg, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update caBundle of mutatingwebhookconfiguration %s: %w", s.WebhookConfigName, err)
	}
	s.Logger.Info("caBundle patched", "mutatingwebhookconfiguration", s.WebhookConfigName)
	return nil
}

func parseBundle(bundle []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for rest := bundle; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA bundle: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("CA bundle holds no certificate")
	}
	return out, nil
}
