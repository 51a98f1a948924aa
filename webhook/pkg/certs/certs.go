// Package certs provides the webhook's serving certificate, hot-reloaded
// without a restart, from one of two sources: files in a directory (what
// cert-manager or an existing Secret mounts) or a self-managed CA and
// serving certificate kept in a Secret, whose CA is patched into the
// webhook's own MutatingWebhookConfiguration.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"sync/atomic"
	"time"
)

// Holder keeps the current serving certificate and hands it to the TLS
// stack on every handshake, which is what makes rotation restart-free.
type Holder struct {
	current atomic.Pointer[tls.Certificate]
	// OnChange, when set, is called after a new certificate is installed.
	OnChange func(leaf *x509.Certificate)
}

// GetCertificate is a tls.Config.GetCertificate.
func (h *Holder) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := h.current.Load()
	if c == nil {
		return nil, errors.New("no serving certificate loaded yet")
	}
	return c, nil
}

// Ready reports whether a certificate is loaded.
func (h *Holder) Ready() error {
	if h.current.Load() == nil {
		return errors.New("no serving certificate loaded yet")
	}
	return nil
}

// Leaf returns the current certificate, nil before the first load.
func (h *Holder) Leaf() *x509.Certificate {
	if c := h.current.Load(); c != nil {
		return c.Leaf
	}
	return nil
}

// Set installs a PEM certificate chain and key, unless it is the one
// already served. It returns whether the certificate changed.
func (h *Holder) Set(certPEM, keyPEM []byte) (bool, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return false, fmt.Errorf("load key pair: %w", err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return false, fmt.Errorf("parse certificate: %w", err)
		}
	}
	if old := h.current.Load(); old != nil && old.Leaf != nil && old.Leaf.Equal(pair.Leaf) {
		return false, nil
	}
	h.current.Store(&pair)
	if h.OnChange != nil {
		h.OnChange(pair.Leaf)
	}
	return true, nil
}

// TLSConfig returns a server TLS config that serves the holder's current
// certificate.
func (h *Holder) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: h.GetCertificate}
}

// KeyPair is a PEM certificate and its PEM private key.
type KeyPair struct {
	CertPEM, KeyPEM []byte
}

// NewCA creates a self-signed CA valid from now for validity.
func NewCA(commonName string, validity time.Duration) (KeyPair, error) {
	return newCA(time.Now(), commonName, validity)
}

func newCA(now time.Time, commonName string, validity time.Duration) (KeyPair, error) {
	return issue(now, nil, &x509.Certificate{
		Subject:               pkix.Name{CommonName: commonName},
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}, validity)
}

// NewServing creates a serving certificate for dnsNames and ips signed by ca.
func NewServing(ca KeyPair, dnsNames []string, ips []net.IP, validity time.Duration) (KeyPair, error) {
	return newServing(time.Now(), ca, dnsNames, ips, validity)
}

func newServing(now time.Time, ca KeyPair, dnsNames []string, ips []net.IP, validity time.Duration) (KeyPair, error) {
	if len(dnsNames) == 0 && len(ips) == 0 {
		return KeyPair{}, errors.New("a serving certificate needs at least one DNS name or IP")
	}
	cn := ""
	if len(dnsNames) > 0 {
		cn = dnsNames[0]
	}
	return issue(now, &ca, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		DNSNames:    dnsNames,
		IPAddresses: ips,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, validity)
}

func issue(now time.Time, parent *KeyPair, template *x509.Certificate, validity time.Duration) (KeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return KeyPair{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return KeyPair{}, err
	}
	template.SerialNumber = serial
	// Backdated a little so a replica or apiserver with a slightly slow
	// clock accepts the certificate at once.
	template.NotBefore = now.Add(-time.Minute)
	template.NotAfter = now.Add(validity)

	signerCert, signerKey := template, any(key)
	if parent != nil {
		pc, pk, err := parent.parse()
		if err != nil {
			return KeyPair{}, fmt.Errorf("CA: %w", err)
		}
		signerCert, signerKey = pc, pk
	}
	der, err := x509.CreateCertificate(rand.Reader, template, signerCert, &key.PublicKey, signerKey)
	if err != nil {
		return KeyPair{}, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return KeyPair{}, err
	}
	return KeyPair{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

func (kp KeyPair) parse() (*x509.Certificate, any, error) {
	pair, err := tls.X509KeyPair(kp.CertPEM, kp.KeyPEM)
	if err != nil {
		return nil, nil, err
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, nil, err
	}
	return leaf, pair.PrivateKey, nil
}

// Leaf parses the first certificate of kp.
func (kp KeyPair) Leaf() (*x509.Certificate, error) {
	block, _ := pem.Decode(kp.CertPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}
