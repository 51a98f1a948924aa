// Package controlplane starts a real etcd and kube-apiserver as processes on
// loopback, from the binaries `make k8s-bins` builds, for integration tests.
// There is no controller-manager or scheduler: what those would create (a
// namespace's default ServiceAccount and kube-root-ca.crt) is created by
// CreateNamespace, and pods are only admitted, never run.
package controlplane

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// EnvBinDir names the directory holding the etcd and kube-apiserver binaries.
const EnvBinDir = "K8S_BIN_DIR"

// ControlPlane is a running etcd + kube-apiserver.
type ControlPlane struct {
	// Admin is a rest.Config with system:masters rights.
	Admin  *rest.Config
	Client kubernetes.Interface
	// Dir holds certificates, data and the processes' logs.
	Dir string
	// CACert is the PEM CA that signed the apiserver's certificate.
	CACert []byte
}

// BinDir returns $K8S_BIN_DIR, failing the test (never skipping it) with
// the make target to run when the binaries are missing.
func BinDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(EnvBinDir)
	if dir == "" {
		t.Fatalf("%s is not set: run `make integration` (it runs `make k8s-bins` and sets it) or export %s=$(ci/k8s-build.sh --print-bin-dir) after `make k8s-bins`", EnvBinDir, EnvBinDir)
	}
	for _, bin := range []string{"etcd", "kube-apiserver"} {
		if fi, err := os.Stat(filepath.Join(dir, bin)); err != nil || fi.Mode()&0o111 == 0 {
			t.Fatalf("%s/%s is missing or not executable: run `make k8s-bins`", dir, bin)
		}
	}
	return dir
}

// Start runs etcd and kube-apiserver until the test ends.
func Start(t testing.TB) *ControlPlane {
	t.Helper()
	bin := BinDir(t)
	dir := t.TempDir()
	pki := newPKI(t, dir)

	// The ports are free when picked but not held: another process may bind
	// one before etcd or kube-apiserver does. Such a start is retried on new
	// ports (waitFor tells it from other failures by the log's "address
	// already in use").
	var etcdURL string
	for attempt := 1; ; attempt++ {
		ports := freePorts(t, 2)
		etcdURL = "http://127.0.0.1:" + strconv.Itoa(ports[0])
		peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
		name := attemptName("etcd", attempt)
		dataDir := filepath.Join(dir, "etcd-data")
		if err := os.RemoveAll(dataDir); err != nil {
			t.Fatal(err)
		}
		exited := startProcess(t, dir, name, filepath.Join(bin, "etcd"),
			"--name=default",
			"--data-dir="+dataDir,
			"--listen-client-urls="+etcdURL,
			"--advertise-client-urls="+etcdURL,
			"--listen-peer-urls="+peerURL,
			"--initial-advertise-peer-urls="+peerURL,
			"--initial-cluster=default="+peerURL,
			"--log-level=warn",
			// A test's data dies with it; fsync only makes every write
			// wait on a busy CI disk, stretching timing-sensitive tests.
			"--unsafe-no-fsync",
		)
		if waitFor(t, dir, name, exited, attempt < startAttempts, 30*time.Second, func() error {
			resp, err := http.Get(etcdURL + "/health")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("etcd /health: %s", resp.Status)
			}
			return nil
		}) {
			break
		}
	}

	var (
		admin  *rest.Config
		client kubernetes.Interface
	)
	for attempt := 1; ; attempt++ {
		apiPort := freePorts(t, 1)[0]
		name := attemptName("kube-apiserver", attempt)
		exited := startProcess(t, dir, name, filepath.Join(bin, "kube-apiserver"),
			"--etcd-servers="+etcdURL,
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			"--secure-port="+strconv.Itoa(apiPort),
			"--cert-dir="+filepath.Join(dir, "apiserver-certs"),
			"--tls-cert-file="+pki.servingCert,
			"--tls-private-key-file="+pki.servingKey,
			"--client-ca-file="+pki.caCert,
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file="+pki.saPub,
			"--service-account-signing-key-file="+pki.saKey,
			"--service-cluster-ip-range=10.96.0.0/16",
			"--authorization-mode=RBAC",
			// As kubeadm sets it: the driver's DaemonSet is privileged.
			"--allow-privileged=true",
			// Loopback cannot be the kubernetes Service's endpoint.
			"--endpoint-reconciler-type=none",
			// The default admission plugins, which include PodSecurity,
			// ServiceAccount and MutatingAdmissionWebhook; nothing disabled.
			"--profiling=false",
			"--v=1",
		)
		admin = &rest.Config{
			Host: "https://127.0.0.1:" + strconv.Itoa(apiPort),
			TLSClientConfig: rest.TLSClientConfig{
				CAData:   pki.caPEM,
				CertData: pki.adminCertPEM,
				KeyData:  pki.adminKeyPEM,
			},
			QPS:   200,
			Burst: 400,
		}
		var err error
		client, err = kubernetes.NewForConfig(admin)
		if err != nil {
			t.Fatal(err)
		}
		if waitFor(t, dir, name, exited, attempt < startAttempts, 90*time.Second, func() error {
			body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(context.Background())
			if err != nil {
				return fmt.Errorf("%v: %s", err, body)
			}
			return nil
		}) {
			break
		}
	}
	return &ControlPlane{Admin: admin, Client: client, Dir: dir, CACert: pki.caPEM}
}

// CreateNamespace creates a namespace with labels, its default
// ServiceAccount and its kube-root-ca.crt ConfigMap (the controller-manager's
// job in a real cluster; the ServiceAccount admission plugin rejects pods
// without the ServiceAccount).
func (cp *ControlPlane) CreateNamespace(t testing.TB, name string, labels map[string]string) {
	t.Helper()
	ctx := context.Background()
	_, err := cp.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	_, err = cp.Client.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create default serviceaccount in %s: %v", name, err)
	}
	_, err = cp.Client.CoreV1().ConfigMaps(name).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt"},
		Data:       map[string]string{"ca.crt": string(cp.CACert)},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create kube-root-ca.crt in %s: %v", name, err)
	}
}

// startAttempts bounds how often Start picks new ports for a process that
// could not bind one of them.
const startAttempts = 3

// attemptName names a process's log: etcd.log, then etcd-attempt2.log, ...
func attemptName(name string, attempt int) string {
	if attempt == 1 {
		return name
	}
	return name + "-attempt" + strconv.Itoa(attempt)
}

// freePorts returns n distinct loopback ports nothing listens on right now.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		// Held until all are picked, so the n ports differ.
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// startProcess runs a binary until the test ends; the returned channel is
// closed if it exits.
func startProcess(t testing.TB, dir, name, path string, args ...string) <-chan struct{} {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group, so a crashed test run cannot leave it
	// attached to our terminal's signals.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logFile.Close()
		if t.Failed() {
			t.Logf("%s log tail:\n%s", name, tail(logPath, 40))
		}
	})
	return exited
}

// waitFor waits until check passes and returns true. If the process exits
// first, it fails the test, unless retry is set and the process's log says
// a port it was given was taken meanwhile: then it returns false, for the
// caller to start it again on new ports.
func waitFor(t testing.TB, dir, name string, exited <-chan struct{}, retry bool, timeout time.Duration, check func() error) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = check(); err == nil {
			return true
		}
		select {
		case <-exited:
			log := tail(filepath.Join(dir, name+".log"), 40)
			if retry && strings.Contains(log, "address already in use") {
				t.Logf("%s exited: a port it was given was taken meanwhile; retrying on new ports\nlog tail:\n%s", name, log)
				return false
			}
			t.Fatalf("%s exited before it was ready\nlog tail:\n%s", name, log)
		case <-time.After(250 * time.Millisecond):
		}
	}
	t.Fatalf("%s not ready after %s: %v\nlog tail:\n%s", name, timeout, err, tail(filepath.Join(dir, name+".log"), 40))
	return false
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	all := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return string(bytes.Join(all, []byte("\n")))
}

type pki struct {
	caCert, servingCert, servingKey, saPub, saKey string
	caPEM, adminCertPEM, adminKeyPEM              []byte
}

// newPKI writes a CA, the apiserver's serving certificate, an admin client
// certificate (group system:masters) and the service-account key pair.
func newPKI(t testing.TB, dir string) pki {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "integration-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, tmpl *x509.Certificate) (certPEM, keyPEM []byte) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	}
	servingCert, servingKey := issue(2, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	adminCert, adminKey := issue(3, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "integration-admin", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	saPubDER, _ := x509.MarshalPKIXPublicKey(&saKey.PublicKey)

	p := pki{
		caCert:       filepath.Join(dir, "ca.crt"),
		servingCert:  filepath.Join(dir, "apiserver.crt"),
		servingKey:   filepath.Join(dir, "apiserver.key"),
		saPub:        filepath.Join(dir, "sa.pub"),
		saKey:        filepath.Join(dir, "sa.key"),
		caPEM:        pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		adminCertPEM: adminCert,
		adminKeyPEM:  adminKey,
	}
	for path, data := range map[string][]byte{
		p.caCert:      p.caPEM,
		p.servingCert: servingCert,
		p.servingKey:  servingKey,
		p.saPub:       pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER}),
		p.saKey:       pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tls.X509KeyPair(adminCert, adminKey); err != nil {
		t.Fatal(err)
	}
	return p
}
