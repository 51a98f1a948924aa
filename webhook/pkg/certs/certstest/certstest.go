// Package certstest writes throwaway certificates for tests that serve the
// webhook on loopback from files, as --tls-mode=existingSecret does.
package certstest

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/datadog-csi/datadog-csi/webhook/pkg/certs"
)

// LoopbackPair returns a serving certificate and key for localhost and
// 127.0.0.1, signed by a new CA valid for an hour, and that CA's PEM for
// clients to trust.
func LoopbackPair(t testing.TB) (serving certs.KeyPair, caPEM []byte) {
	t.Helper()
	ca, err := certs.NewCA("test-webhook-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serving, err = certs.NewServing(ca, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return serving, ca.CertPEM
}

// WriteLoopbackPair writes LoopbackPair's certificate and key into dir
// (certs.CertFile, certs.KeyFile) and returns the CA's PEM.
func WriteLoopbackPair(t testing.TB, dir string) (caPEM []byte) {
	t.Helper()
	serving, caPEM := LoopbackPair(t)
	for name, data := range map[string][]byte{certs.CertFile: serving.CertPEM, certs.KeyFile: serving.KeyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caPEM
}
