package apiserver

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
	"github.com/datadog-csi/datadog-csi/tests/internal/controlplane"
)

const (
	namespace = "datadog-csi"
	release   = "datadog-csi"
	// What the chart names the webhook's objects in this release.
	webhookName = "datadog-csi-datadog-csi-webhook"
	secretName  = webhookName + "-tls"
)

func TestInstallAndUpgrade(t *testing.T) {
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	umbrella := filepath.Join(root, "dist", "charts", "datadog-csi-0.1.0.tgz")
	if _, err := os.Stat(umbrella); err != nil {
		t.Fatalf("%v: run 'make chart-repo'", err)
	}
	e2eValues := filepath.Join(root, "charts", "datadog-csi", "ci", "e2e-values.yaml")

	cp := controlplane.Start(t)
	cp.CreateNamespace(t, namespace, map[string]string{"pod-security.kubernetes.io/enforce": "privileged"})
	cp.CreateNamespace(t, "apps", map[string]string{"pod-security.kubernetes.io/enforce": "baseline"})
	kubeconfig := writeKubeconfig(t, cp)
	ctx := context.Background()

	for _, helm := range []string{"helm", "helm4"} {
		t.Run(helm, func(t *testing.T) {
			bin := filepath.Join(root, "bin", helm)
			if _, err := os.Stat(bin); err != nil {
				t.Fatalf("%v: run 'make tools'", err)
			}
			home := t.TempDir()
			run := func(args ...string) string {
				t.Helper()
				cmd := exec.Command(bin, args...)
				cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig,
					"HELM_CONFIG_HOME="+filepath.Join(home, "config"), "HELM_CACHE_HOME="+filepath.Join(home, "cache"), "HELM_DATA_HOME="+filepath.Join(home, "data"))
				var out bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &out
				if err := cmd.Run(); err != nil {
					t.Fatalf("%s %s: %v\n%s", helm, strings.Join(args, " "), err, out.String())
				}
				return out.String()
			}

			// Everything users install, the driver's privileged DaemonSet
			// included (the control plane allows privileged pods, as kubeadm does).
			run("install", release, umbrella, "--namespace", namespace, "-f", e2eValues)
			defer run("uninstall", release, "--namespace", namespace)

			// The API server accepted the driver's objects (privileged
			// DaemonSet, CSIDriver) ...
			if _, err := cp.Client.StorageV1().CSIDrivers().Get(ctx, "k8s.csi.datadoghq.com", metav1.GetOptions{}); err != nil {
				t.Fatal(err)
			}
			if dss, err := cp.Client.AppsV1().DaemonSets(namespace).List(ctx, metav1.ListOptions{}); err != nil || len(dss.Items) != 1 {
				t.Fatalf("driver DaemonSet: %v, %d found", err, len(dss.Items))
			}
			// ... and every other object, including the policy
			// (it serves the API, so the chart renders it).
			if _, err := cp.Client.AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, release+"-volumes", metav1.GetOptions{}); err != nil {
				t.Fatal(err)
			}

			// The policy rejects a writable volume of the driver and admits a read-only one.
			pod := func(name string, readOnly bool) *corev1.Pod {
				return &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: name},
					Spec: corev1.PodSpec{
						Containers: []corev1.Container{{Name: "app", Image: "app"}},
						Volumes: []corev1.Volume{{Name: "dsd", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
							Driver: datadog.DriverName, ReadOnly: &readOnly,
							VolumeAttributes: map[string]string{datadog.AttrType: string(datadog.DSDSocketDirectory)}}}}},
					},
				}
			}
			// The admission plugin learns of a new policy from an informer: wait
			// for it. Until then the pod is admitted (it is deleted for the next
			// try), or an admitted one not yet deleted makes it AlreadyExists
			// (admission runs before storage, so the policy in force denies it).
			var err error
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
				_, err = cp.Client.CoreV1().Pods("apps").Create(ctx, pod("writable", false), metav1.CreateOptions{})
				if err != nil && !apierrors.IsAlreadyExists(err) || time.Now().After(deadline) {
					break
				}
				if err := cp.Client.CoreV1().Pods("apps").Delete(ctx, "writable", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil && !apierrors.IsNotFound(err) {
					t.Fatalf("deleting pod apps/writable, admitted before the policy was in force: %v", err)
				}
			}
			if err == nil || !strings.Contains(err.Error(), "readOnly") {
				t.Errorf("writable CSI volume: want a denial naming readOnly, got %v", err)
			}
			if _, err := cp.Client.CoreV1().Pods("apps").Create(ctx, pod("readonly-"+helm, true), metav1.CreateOptions{}); err != nil {
				t.Errorf("read-only CSI volume in a baseline namespace: %v", err)
			}

			// What the webhook does at run time in selfManaged mode.
			ca := cp.CACert
			mwc, err := cp.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, webhookName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			mwc.Webhooks[0].ClientConfig.CABundle = ca
			if _, err := cp.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, mwc, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			secret, err := cp.Client.CoreV1().Secrets(namespace).Get(ctx, secretName, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("the chart must pre-create the webhook's Secret: %v", err)
			}
			secret.Data = map[string][]byte{"ca.crt": ca, "tls.crt": []byte("cert"), "tls.key": []byte("key")}
			if _, err := cp.Client.CoreV1().Secrets(namespace).Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}

			// A plain upgrade patches (v3) or applies (v4) and leaves fields it
			// never set alone; a forced one replaces the objects, so only the
			// chart's lookup of the live values keeps them.
			force := map[string][]string{"helm": {"--force"}, "helm4": {"--force-replace", "--server-side=false"}}[helm]
			for _, extra := range [][]string{{"--set=datadog-csi-webhook.logLevel=info"}, force} {
				run(append([]string{"upgrade", release, umbrella, "--namespace", namespace, "-f", e2eValues}, extra...)...)

				mwc, err = cp.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, webhookName, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(mwc.Webhooks[0].ClientConfig.CABundle, ca) {
					t.Errorf("helm upgrade %s changed the caBundle the webhook set (now %d bytes)", extra, len(mwc.Webhooks[0].ClientConfig.CABundle))
				}
				secret, err = cp.Client.CoreV1().Secrets(namespace).Get(ctx, secretName, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if string(secret.Data["tls.key"]) != "key" || !bytes.Equal(secret.Data["ca.crt"], ca) {
					t.Errorf("helm upgrade %s changed the webhook's Secret: %v", extra, secret.Data)
				}
			}
			dep, err := cp.Client.AppsV1().Deployments(namespace).Get(ctx, webhookName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(strings.Join(dep.Spec.Template.Spec.Containers[0].Args, " "), "--log-level=debug") {
				t.Errorf("the upgrade did not apply: args %v", dep.Spec.Template.Spec.Containers[0].Args)
			}
		})
	}
}

func writeKubeconfig(t *testing.T, cp *controlplane.ControlPlane) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: cp.Admin.Host, CertificateAuthorityData: cp.Admin.CAData}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cp.Admin.CertData, ClientKeyData: cp.Admin.KeyData, Token: cp.Admin.BearerToken}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "admin"}
	cfg.CurrentContext = "test"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}
