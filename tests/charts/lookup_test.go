package charts

import (
	"fmt"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"sigs.k8s.io/yaml"
)

// fakeCluster serves the chart's lookup calls from a fake dynamic client.
type fakeCluster struct {
	client *dynamicfake.FakeDynamicClient
}

var lookupResources = map[string]struct {
	gvr        schema.GroupVersionResource
	namespaced bool
}{
	"v1/Secret": {schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, true},
	"admissionregistration.k8s.io/v1/MutatingWebhookConfiguration": {
		schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "mutatingwebhookconfigurations"}, false},
}

func (f fakeCluster) GetClientFor(apiVersion, kind string) (dynamic.NamespaceableResourceInterface, bool, error) {
	r, ok := lookupResources[apiVersion+"/"+kind]
	if !ok {
		return nil, false, fmt.Errorf("the chart looked up %s %s, which this test does not serve", apiVersion, kind)
	}
	return f.client.Resource(r.gvr), r.namespaced, nil
}

// A helm upgrade must not blank what the webhook stored at run time: the
// caBundle it patched into its webhook configuration and the certificate in
// its Secret. Otherwise pods created until it re-patches go unmutated.
func TestWebhookUpgradeKeepsLiveCertificate(t *testing.T) {
	const fullname = "dd-datadog-csi-webhook"
	liveMWC := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
		"metadata": map[string]any{"name": fullname},
		"webhooks": []any{map[string]any{
			"name":         fullname + ".agent-config.datadog-csi.io",
			"clientConfig": map[string]any{"caBundle": "TElWRS1DQQ=="}, // "LIVE-CA"
		}},
	}}
	liveSecret := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
		"metadata": map[string]any{"name": fullname + "-tls", "namespace": releaseNamespace},
		"data":     map[string]any{"tls.crt": "Q0VSVA==", "tls.key": "S0VZ", "ca.crt": "TElWRS1DQQ=="},
	}}

	for _, tc := range []struct {
		name     string
		objects  []runtime.Object
		caBundle string
		data     map[string]string
		typ      corev1.SecretType
	}{
		{"first install", nil, "", nil, corev1.SecretTypeOpaque},
		{"upgrade", []runtime.Object{liveMWC, liveSecret}, "LIVE-CA", map[string]string{"tls.crt": "CERT", "tls.key": "KEY", "ca.crt": "LIVE-CA"}, corev1.SecretTypeTLS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
				lookupResources["v1/Secret"].gvr: "SecretList",
				lookupResources["admissionregistration.k8s.io/v1/MutatingWebhookConfiguration"].gvr: "MutatingWebhookConfigurationList",
			}, tc.objects...)
			ch := loadChart(t, webhookChart)
			vals, err := chartutil.ToRenderValues(ch, map[string]any{}, chartutil.ReleaseOptions{
				Name: releaseName, Namespace: releaseNamespace, IsUpgrade: tc.objects != nil, IsInstall: tc.objects == nil,
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			out, err := engine.RenderWithClientProvider(ch, vals, fakeCluster{client})
			if err != nil {
				t.Fatal(err)
			}
			var mwc admissionregistrationv1.MutatingWebhookConfiguration
			if err := yaml.UnmarshalStrict([]byte(out["datadog-csi-webhook/templates/mutatingwebhookconfiguration.yaml"]), &mwc); err != nil {
				t.Fatal(err)
			}
			if got := string(mwc.Webhooks[0].ClientConfig.CABundle); got != tc.caBundle {
				t.Errorf("caBundle %q, want %q", got, tc.caBundle)
			}
			var secret corev1.Secret
			if err := yaml.UnmarshalStrict([]byte(out["datadog-csi-webhook/templates/secret.yaml"]), &secret); err != nil {
				t.Fatal(err)
			}
			if secret.Type != tc.typ || len(secret.Data) != len(tc.data) {
				t.Errorf("secret type %s data %v, want %s %v", secret.Type, secret.Data, tc.typ, tc.data)
			}
			for k, v := range tc.data {
				if string(secret.Data[k]) != v {
					t.Errorf("secret %s = %q, want %q", k, secret.Data[k], v)
				}
			}
		})
	}
}
