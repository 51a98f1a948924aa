package server

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
	"github.com/datadog-csi/datadog-csi/webhook/pkg/mutate/jsonscan/jsonscantest"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// oracleReview is the part of an AdmissionReview podReview reads, as
// encoding/json decodes it into the API types.
type oracleReview struct {
	Request *struct {
		UID         types.UID               `json:"uid"`
		Kind        metav1.GroupVersionKind `json:"kind"`
		SubResource string                  `json:"subResource"`
		Name        string                  `json:"name"`
		Namespace   string                  `json:"namespace"`
		Operation   admissionv1.Operation   `json:"operation"`
		Object      runtime.RawExtension    `json:"object"`
	} `json:"request"`
}

// FuzzPodReviewDecode compares podReview.decode with encoding/json into
// the API types (oracleReview): the same request fields and pod bytes,
// and an error for every document encoding/json rejects. As in FuzzDecodePodFields,
// documents whose keys encoding/json might match case-insensitively are
// checked for errors alone.
func FuzzPodReviewDecode(f *testing.F) {
	f.Add(reviewBody(f, labelledPod(), "apps"))
	for _, s := range []string{
		`{"request":null}`, `{}`, `{"request":{}}`, `[]`, `{"request":{"uid":"u"}} x`,
		`{"request":{"object":{"spec":{}},"operation":"CREATE","kind":{"kind":"Pod","version":"v1","group":""},"uid":"u\"1","namespace":"n","name":"p","subResource":"","oldObject":null,"dryRun":false,"options":{"kind":"CreateOptions"}},"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}`,
		`{"request":{"uid":"u","object":null}}`, `{"request":{"uid":"u","object":[1,2.5e3,"x",true,false,null,{}]}}`,
		`{"request":{"uid":"u","object":{"a":}}}`, `{"request":{"uid":7}}`, `{"request":{"kind":"Pod"}}`,
	} {
		f.Add([]byte(s))
	}
	keys := []string{`"request"`, `"uid"`, `"kind"`, `"group"`, `"version"`, `"subResource"`, `"name"`, `"namespace"`, `"operation"`, `"object"`}
	f.Fuzz(func(t *testing.T, data []byte) {
		var got podReview
		err := got.decode(data)
		if !jsonscantest.Comparable(t, data, err, keys) {
			return
		}
		var want oracleReview
		wantErr := json.Unmarshal(data, &want)
		if wantErr != nil {
			if err == nil {
				t.Fatalf("%q: accepted; encoding/json: %v", data, wantErr)
			}
			return
		}
		if err != nil {
			t.Fatalf("%q: %v; encoding/json accepts it", data, err)
		}
		if got.present != (want.Request != nil) {
			t.Fatalf("%q: request present %t", data, got.present)
		}
		if want.Request == nil {
			return
		}
		r := want.Request
		if got.UID != r.UID || got.Kind != r.Kind || got.SubResource != r.SubResource || got.Name != r.Name ||
			got.Namespace != r.Namespace || got.Operation != r.Operation {
			t.Fatalf("%q:\n got %+v\nwant %+v", data, got, r)
		}
		if wantObject := r.Object.Raw; !bytes.Equal(got.Object, wantObject) && !(got.Object == nil && string(wantObject) == "null") {
			t.Fatalf("%q: object %q, want %q", data, got.Object, wantObject)
		}
	})
}

// TestInjectMatchesRepeatedRequests: pooled buffers carry nothing from
// one review to the next.
func TestInjectMatchesRepeatedRequests(t *testing.T) {
	h := newInject(t, datadog.ModeCSI)
	mutated := reviewBody(t, labelledPod(), "apps")
	skipped := reviewBody(t, labelledPod(), "kube-system")
	first := post(t, h, mutated)
	for range 5 {
		if out := post(t, h, skipped); out.Response.Patch != nil {
			t.Fatalf("patch for a skipped pod: %s", out.Response.Patch)
		}
		if out := post(t, h, mutated); !bytes.Equal(out.Response.Patch, first.Response.Patch) {
			t.Fatalf("patch changed between identical reviews:\n%s\n%s", out.Response.Patch, first.Response.Patch)
		}
	}
}
