// Package integration runs the webhook in-process against a real
// kube-apiserver and etcd started as processes (tests/internal/controlplane):
// the apiserver calls the webhook over loopback HTTPS and its own PodSecurity
// admission judges the result.
package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
	"github.com/datadog-csi/datadog-csi/tests/internal/controlplane"
	"github.com/datadog-csi/datadog-csi/webhook/pkg/app"
	"github.com/datadog-csi/datadog-csi/webhook/pkg/certs"
	"github.com/datadog-csi/datadog-csi/webhook/pkg/certs/certstest"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const (
	webhookNamespace   = "datadog-csi"
	webhookConfigName  = "datadog-csi-webhook"
	webhookSA          = "datadog-csi-webhook"
	webhookSecret      = "datadog-csi-webhook-tls"
	webhookServiceName = "datadog-csi-webhook"
)

// TestWebhookAgainstAPIServer: one control plane, the scenarios in order.
func TestWebhookAgainstAPIServer(t *testing.T) {
	cp := controlplane.Start(t)
	cp.CreateNamespace(t, webhookNamespace, nil)
	cp.CreateNamespace(t, "apps-baseline", map[string]string{"pod-security.kubernetes.io/enforce": "baseline"})
	grantWebhookRBAC(t, cp)
	client := webhookClient(t, cp)

	t.Run("csi mode: admitted by baseline with CSI volumes, no hostPath", func(t *testing.T) {
		w := startFileTLSWebhook(t, cp, client, "csi")
		registerWebhook(t, cp, w.url, w.caPEM)
		waitMutating(t, cp, "apps-baseline")
		pod := createPod(t, cp, "apps-baseline", "csi-app")
		assertCSIPod(t, pod)
	})

	t.Run("socket mode: rejected by Pod Security naming hostPath", func(t *testing.T) {
		w := startFileTLSWebhook(t, cp, client, "socket")
		registerWebhook(t, cp, w.url, w.caPEM)
		// Wait until the apiserver calls this webhook: in a privileged
		// namespace the socket pod is admitted with its hostPath volume.
		cp.CreateNamespace(t, "apps-privileged", nil)
		waitFor(t, 30*time.Second, func() error {
			p, err := dryRunPod(cp, "apps-privileged")
			if err != nil {
				return err
			}
			if !hasVolume(p, datadog.VolumeSocketDir) {
				return errors.New("not yet mutated in socket mode")
			}
			return nil
		})
		_, err := cp.Client.CoreV1().Pods("apps-baseline").Create(context.Background(), labelledPod("socket-app"), metav1.CreateOptions{})
		if err == nil {
			t.Fatal("socket-mode pod admitted in a baseline namespace")
		}
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "hostPath") || !strings.Contains(err.Error(), "PodSecurity") {
			t.Fatalf("want a PodSecurity rejection naming hostPath, got: %v", err)
		}
	})

	t.Run("auto mode follows the CSIDriver object", func(t *testing.T) {
		w := startFileTLSWebhook(t, cp, client, "auto")
		registerWebhook(t, cp, w.url, w.caPEM)
		waitMutating(t, cp, "apps-baseline")
		p, err := dryRunPod(cp, "apps-baseline")
		if err != nil {
			t.Fatal(err)
		}
		if !hasEnv(p, datadog.EnvAgentHost) || len(p.Spec.Volumes) != 0 {
			t.Fatalf("auto without the driver in a baseline namespace: want hostip, got env %v volumes %v", p.Spec.Containers[0].Env, p.Spec.Volumes)
		}
		_, err = cp.Client.StorageV1().CSIDrivers().Create(context.Background(), &storagev1.CSIDriver{
			ObjectMeta: metav1.ObjectMeta{Name: datadog.DriverName},
			Spec:       storagev1.CSIDriverSpec{VolumeLifecycleModes: []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecycleEphemeral}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer cp.Client.StorageV1().CSIDrivers().Delete(context.Background(), datadog.DriverName, metav1.DeleteOptions{})
		waitFor(t, 30*time.Second, func() error {
			p, err := dryRunPod(cp, "apps-baseline")
			if err != nil {
				return err
			}
			if !hasVolume(p, datadog.VolumeDSDDir) {
				return errors.New("auto has not switched to csi yet")
			}
			return nil
		})
		assertCSIPod(t, createPod(t, cp, "apps-baseline", "auto-app"))
	})

	t.Run("webhook down: admitted unmutated (failurePolicy Ignore)", func(t *testing.T) {
		w := startFileTLSWebhook(t, cp, client, "csi")
		registerWebhook(t, cp, w.url, w.caPEM)
		waitMutating(t, cp, "apps-baseline")
		w.stop()
		pod := createPod(t, cp, "apps-baseline", "unmutated-app")
		if hasEnv(pod, datadog.EnvEntityID) || hasVolume(pod, datadog.VolumeDSDDir) {
			t.Fatalf("pod mutated with the webhook down: %+v", pod.Spec)
		}
	})

	t.Run("shutdown delay: admissions keep being mutated while the webhook shuts down", func(t *testing.T) {
		const delay = 3 * time.Second
		w := startFileTLSWebhook(t, cp, client, "csi", func(c *app.Config) { c.ShutdownDelay = delay })
		registerWebhook(t, cp, w.url, w.caPEM)
		waitMutating(t, cp, "apps-baseline")
		stopped := make(chan time.Time, 1)
		time.AfterFunc(time.Second, func() {
			w.stop()
			stopped <- time.Now()
		})
		// Keep admitting until shortly before the delay ends: the apiserver
		// reuses its connection to the webhook, which must not be closed
		// under a request (an EOF there means failurePolicy Ignore).
		var total, failures int
		cancelled := time.Now().Add(time.Second)
		for time.Since(cancelled) < delay-500*time.Millisecond {
			p, err := dryRunPod(cp, "apps-baseline")
			total++
			if err != nil || !hasVolume(p, datadog.VolumeDSDDir) {
				failures++
				t.Logf("admission %d, %s after shutdown began, not mutated: %v", total, time.Since(cancelled).Round(time.Millisecond), err)
			}
		}
		t.Logf("%d admissions across the start of shutdown, %d not mutated", total, failures)
		if failures != 0 {
			t.Fatalf("%d of %d admissions were not mutated while the webhook shut down", failures, total)
		}
		if took := (<-stopped).Sub(cancelled); took < delay-100*time.Millisecond {
			t.Fatalf("the webhook stopped %s after shutdown began, before its %s delay", took, delay)
		}
		if total < 20 {
			t.Fatalf("only %d admissions", total)
		}
	})

	t.Run("selfManaged TLS: Secret and caBundle managed, CA and certificate rotation during a stream of admissions has 0 failures", func(t *testing.T) {
		ctx := context.Background()
		// The chart pre-creates the Secret empty so the webhook needs no
		// create permission.
		_, err := cp.Client.CoreV1().Secrets(webhookNamespace).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: webhookSecret}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cfg := baseConfig("csi")
		cfg.TLSMode = app.TLSSelfManaged
		cfg.TLSSecretName = webhookSecret
		cfg.WebhookConfigName = webhookConfigName
		cfg.ServiceName = webhookServiceName
		cfg.ExtraIPs = []net.IP{net.IPv4(127, 0, 0, 1)}
		// Certificates keep whole seconds, so each lives up to 1 s less than
		// its validity; every margin below is still over a second.
		cfg.CertValidity = 6 * time.Second // renewed with 2 s left, every ~4 s
		cfg.CAValidity = 12 * time.Second  // renewal starts with 4 s left: the old CA stays in the bundle
		cfg.CATrustPropagation = time.Second
		cfg.CertCheckInterval = 200 * time.Millisecond
		cfg.DisableKeepAlives = true // every admission handshakes: rotations are really used
		// No caBundle: the webhook patches it in. The URL is set once the
		// replicas listen; they are not ready before the caBundle is patched.
		registerWebhook(t, cp, "https://127.0.0.1:1/injectconfig", nil)
		// Two replicas sharing the Secret, as a Deployment with 2 replicas.
		w1 := startWebhook(t, client, cfg)
		w2 := startWebhook(t, client, cfg)
		setWebhookURL(t, cp, w1.url)
		waitFor(t, 30*time.Second, func() error {
			mwc, err := cp.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, webhookConfigName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if len(mwc.Webhooks[0].ClientConfig.CABundle) == 0 {
				return errors.New("caBundle not patched yet")
			}
			return nil
		})
		waitMutating(t, cp, "apps-baseline")
		secret, err := cp.Client.CoreV1().Secrets(webhookNamespace).Get(ctx, webhookSecret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{certs.SecretKeyCACert, certs.SecretKeyCAKey, certs.SecretKeyCert, certs.SecretKeyKey} {
			if len(secret.Data[k]) == 0 {
				t.Fatalf("secret lacks %s", k)
			}
		}

		// Alternate the two replicas' URLs in the configuration too, so
		// the apiserver handshakes with both while they rotate.
		serials, bundles := map[string]bool{}, map[string]int{} // bundle → number of CAs in it
		var mu sync.Mutex
		watchCtx, stopWatch := context.WithCancel(ctx)
		defer stopWatch()
		go func() {
			for i := 0; watchCtx.Err() == nil; i++ {
				for _, w := range []*runningWebhook{w1, w2} {
					if leaf := w.app.ServingCertificate(); leaf != nil {
						mu.Lock()
						serials[leaf.SerialNumber.String()] = true
						mu.Unlock()
					}
				}
				if i%4 == 0 {
					if mwc, err := cp.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(watchCtx, webhookConfigName, metav1.GetOptions{}); err == nil {
						bundle := mwc.Webhooks[0].ClientConfig.CABundle
						mu.Lock()
						bundles[string(bundle)] = bytes.Count(bundle, []byte("BEGIN CERTIFICATE"))
						mu.Unlock()
					}
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		var total, failures int
		deadline := time.Now().Add(12 * time.Second) // past the first CA renewal's two steps
		for i := 0; time.Now().Before(deadline); i++ {
			if i%20 == 10 {
				url := w1.url
				if i%40 == 10 {
					url = w2.url
				}
				setWebhookURL(t, cp, url)
			}
			p, err := dryRunPod(cp, "apps-baseline")
			total++
			if err != nil || !hasVolume(p, datadog.VolumeDSDDir) {
				failures++
				t.Logf("admission %d not mutated: %v", i, err)
			}
		}
		stopWatch()
		mu.Lock()
		rotations, caRotations, bundleOfTwo := len(serials)-1, len(bundles)-1, false
		for _, n := range bundles {
			bundleOfTwo = bundleOfTwo || n == 2
		}
		mu.Unlock()
		t.Logf("%d admissions, %d failures, %d certificate rotations, %d CA bundle changes", total, failures, rotations, caRotations)
		if failures != 0 {
			t.Fatalf("%d of %d admissions failed during rotation", failures, total)
		}
		if rotations < 2 {
			t.Fatalf("only %d certificate rotations in the stream; the test did not exercise rotation", rotations)
		}
		if caRotations < 1 || !bundleOfTwo {
			t.Fatalf("%d CA bundle changes, a bundle with the old and the new CA seen: %v; the test did not exercise CA rotation", caRotations, bundleOfTwo)
		}
		if total < 50 {
			t.Fatalf("only %d admissions in the stream", total)
		}
	})
}

// grantWebhookRBAC creates exactly the RBAC the chart grants, so the
// webhook runs with no more than that.
func grantWebhookRBAC(t *testing.T, cp *controlplane.ControlPlane) {
	ctx := context.Background()
	rbac := cp.Client.RbacV1()
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: webhookSA, Namespace: webhookNamespace}}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cp.Client.CoreV1().ServiceAccounts(webhookNamespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: webhookSA}}, metav1.CreateOptions{}))
	must(rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: webhookSA},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"}, ResourceNames: []string{webhookConfigName}, Verbs: []string{"get", "update", "patch"}},
			{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"storage.k8s.io"}, Resources: []string{"csidrivers"}, Verbs: []string{"get", "list", "watch"}},
		},
	}, metav1.CreateOptions{}))
	must(rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: webhookSA},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: webhookSA},
		Subjects:   subject,
	}, metav1.CreateOptions{}))
	must(rbac.Roles(webhookNamespace).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: webhookSA},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{webhookSecret}, Verbs: []string{"get", "update", "patch"}},
		},
	}, metav1.CreateOptions{}))
	must(rbac.RoleBindings(webhookNamespace).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: webhookSA},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: webhookSA},
		Subjects:   subject,
	}, metav1.CreateOptions{}))
}

// webhookClient acts as the webhook's ServiceAccount.
func webhookClient(t *testing.T, cp *controlplane.ControlPlane) kubernetes.Interface {
	cfg := rest.CopyConfig(cp.Admin)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + webhookNamespace + ":" + webhookSA}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type runningWebhook struct {
	app   *app.App
	url   string
	caPEM []byte
	stop  func()
}

func baseConfig(mode string) app.Config {
	cfg := app.DefaultConfig()
	cfg.ListenAddress = "127.0.0.1:0"
	cfg.ProbeAddress = "127.0.0.1:0"
	cfg.Namespace = webhookNamespace
	cfg.Mode = mode
	cfg.LogLevel = "debug"
	// Stop at once: the tests stop webhooks and expect them gone, and no
	// Service endpoints need time to drop them.
	cfg.ShutdownDelay = 0
	return cfg
}

// startFileTLSWebhook runs the webhook with a certificate from files, as
// with --tls-mode=existingSecret.
func startFileTLSWebhook(t *testing.T, cp *controlplane.ControlPlane, client kubernetes.Interface, mode string, opts ...func(*app.Config)) *runningWebhook {
	dir := t.TempDir()
	caPEM := certstest.WriteLoopbackPair(t, dir)
	cfg := baseConfig(mode)
	cfg.TLSMode = app.TLSExistingSecret
	cfg.TLSCertDir = dir
	for _, o := range opts {
		o(&cfg)
	}
	w := startWebhook(t, client, cfg)
	w.caPEM = caPEM
	return w
}

func startWebhook(t *testing.T, client kubernetes.Interface, cfg app.Config) *runningWebhook {
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a, err := app.New(cfg, client, logger)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("webhook: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	waitFor(t, 30*time.Second, a.Ready)
	return &runningWebhook{app: a, url: "https://" + a.InjectAddr() + "/injectconfig", stop: stop}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// registerWebhook creates or replaces the MutatingWebhookConfiguration, as
// the chart renders it but with a URL on loopback.
func registerWebhook(t *testing.T, cp *controlplane.ControlPlane, url string, caBundle []byte) {
	ctx := context.Background()
	ignore := admissionregistrationv1.Ignore
	none := admissionregistrationv1.SideEffectClassNone
	ifNeeded := admissionregistrationv1.IfNeededReinvocationPolicy
	timeout := int32(5)
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: webhookConfigName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "injectconfig.datadog-csi.datadoghq.com",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caBundle},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			FailurePolicy:           &ignore,
			SideEffects:             &none,
			ReinvocationPolicy:      &ifNeeded,
			TimeoutSeconds:          &timeout,
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
	configs := cp.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	_ = configs.Delete(ctx, webhookConfigName, metav1.DeleteOptions{})
	waitFor(t, 10*time.Second, func() error {
		_, err := configs.Create(ctx, mwc, metav1.CreateOptions{})
		return err
	})
}

func setWebhookURL(t *testing.T, cp *controlplane.ControlPlane, url string) {
	configs := cp.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	for range 5 {
		mwc, err := configs.Get(context.Background(), webhookConfigName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mwc.Webhooks[0].ClientConfig.URL = &url
		if _, err = configs.Update(context.Background(), mwc, metav1.UpdateOptions{}); err == nil {
			return
		} else if !apierrors.IsConflict(err) {
			t.Fatal(err)
		}
	}
	t.Fatal("could not update the webhook URL")
}

func labelledPod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{datadog.LabelEnabled: "true"}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: new(bool),
			Containers:                   []corev1.Container{{Name: "app", Image: "registry.example/app:1.0"}},
			InitContainers:               []corev1.Container{{Name: "setup", Image: "registry.example/app:1.0"}},
		},
	}
}

func createPod(t *testing.T, cp *controlplane.ControlPlane, ns, name string) *corev1.Pod {
	p, err := cp.Client.CoreV1().Pods(ns).Create(context.Background(), labelledPod(name), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
	return p
}

var dryRunSeq struct {
	sync.Mutex
	n int
}

func dryRunPod(cp *controlplane.ControlPlane, ns string) (*corev1.Pod, error) {
	dryRunSeq.Lock()
	dryRunSeq.n++
	name := fmt.Sprintf("dry-run-%d", dryRunSeq.n)
	dryRunSeq.Unlock()
	return cp.Client.CoreV1().Pods(ns).Create(context.Background(), labelledPod(name), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
}

// waitMutating waits until the apiserver's webhook configuration cache
// has caught up and pods in ns come back mutated.
func waitMutating(t *testing.T, cp *controlplane.ControlPlane, ns string) {
	waitFor(t, 30*time.Second, func() error {
		p, err := dryRunPod(cp, ns)
		if err != nil {
			return err
		}
		if !hasEnv(p, datadog.EnvEntityID) {
			return errors.New("pod not mutated yet")
		}
		return nil
	})
}

func assertCSIPod(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	for _, v := range pod.Spec.Volumes {
		if v.HostPath != nil {
			t.Errorf("hostPath volume %q injected", v.Name)
		}
	}
	for _, name := range []string{datadog.VolumeDSDDir, datadog.VolumeAPMDir} {
		var vol *corev1.Volume
		for i := range pod.Spec.Volumes {
			if pod.Spec.Volumes[i].Name == name {
				vol = &pod.Spec.Volumes[i]
			}
		}
		if vol == nil || vol.CSI == nil || vol.CSI.Driver != datadog.DriverName || vol.CSI.ReadOnly == nil || !*vol.CSI.ReadOnly {
			t.Errorf("volume %s: want a read-only CSI volume of %s, got %+v", name, datadog.DriverName, vol)
		}
	}
	for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		if env[datadog.EnvDogStatsDURL] != "unix:///var/run/datadog/dsd/dsd.socket" || env[datadog.EnvTraceAgentURL] != "unix:///var/run/datadog/apm/apm.socket" {
			t.Errorf("container %s: socket URLs %q %q", c.Name, env[datadog.EnvDogStatsDURL], env[datadog.EnvTraceAgentURL])
		}
	}
	if got := pod.Annotations[datadog.AnnotationSafeToEvictLocalVolumes]; got != "datadog-dsd,datadog-apm" {
		t.Errorf("safe-to-evict annotation %q", got)
	}
}

func hasVolume(pod *corev1.Pod, name string) bool {
	for _, v := range pod.Spec.Volumes {
		if v.Name == name {
			return true
		}
	}
	return false
}

func hasEnv(pod *corev1.Pod, name string) bool {
	for _, e := range pod.Spec.Containers[0].Env {
		if e.Name == name {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = check(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("not true after %s: %v", timeout, err)
}
