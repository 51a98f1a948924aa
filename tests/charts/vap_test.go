package charts

import (
	"context"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/cel/environment"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
)

// compilePolicy compiles a ValidatingAdmissionPolicy the way the API
// server's admission plugin does (k8s.io/apiserver's validating.compilePolicy,
// which is unexported), with the same CEL environment.
func compilePolicy(t *testing.T, p *admissionregistrationv1.ValidatingAdmissionPolicy) validating.Validator {
	t.Helper()
	compiler, err := cel.NewCompositedCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
	if err != nil {
		t.Fatal(err)
	}
	vars := cel.OptionalVariableDeclarations{HasAuthorizer: true}
	var variables []cel.NamedExpressionAccessor
	for _, v := range p.Spec.Variables {
		variables = append(variables, &validating.Variable{Name: v.Name, Expression: v.Expression})
	}
	compiler.CompileAndStoreVariables(variables, vars, environment.StoredExpressions)
	var validations, messages []cel.ExpressionAccessor
	for _, v := range p.Spec.Validations {
		validations = append(validations, &validating.ValidationCondition{Expression: v.Expression, Message: v.Message, Reason: v.Reason})
		var message cel.ExpressionAccessor
		if v.MessageExpression != "" {
			message = &validating.MessageExpressionCondition{MessageExpression: v.MessageExpression}
		}
		messages = append(messages, message)
	}
	validator := validating.NewValidator(
		compiler.CompileCondition(validations, vars, environment.StoredExpressions),
		nil,
		compiler.CompileCondition(nil, vars, environment.StoredExpressions),
		compiler.CompileCondition(messages, cel.OptionalVariableDeclarations{}, environment.StoredExpressions),
		p.Spec.FailurePolicy,
		nil,
	)
	return validator
}

// The umbrella's volume policy compiles with the API server's CEL
// environment and admits exactly the pods it should, with messages that name
// the offending volumes.
func TestVolumePolicy(t *testing.T) {
	r := mustRender(t, umbrellaChart, nil, renderOptions{apiVersions: []string{vapAPI}})
	policy := only[*admissionregistrationv1.ValidatingAdmissionPolicy](t, r)
	validator := compilePolicy(t, policy)

	csiVolume := func(name string, readOnly *bool, attrs map[string]string) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
			Driver: datadog.DriverName, ReadOnly: readOnly, VolumeAttributes: attrs}}}
	}
	yes, no := true, false
	typed := func(t datadog.VolumeType) map[string]string { return map[string]string{datadog.AttrType: string(t)} }

	cases := []struct {
		name    string
		volumes []corev1.Volume
		deny    []string // substrings of the denial message; nil means admitted
	}{
		{"no volumes", nil, nil},
		{"other volumes", []corev1.Volume{
			{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "other-csi", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "secrets-store.csi.k8s.io"}}},
		}, nil},
		{"legacy mode/path form", []corev1.Volume{csiVolume("legacy", &yes, map[string]string{datadog.AttrMode: datadog.LegacyModeLocal, datadog.AttrPath: datadog.SocketDir})}, nil},
		{"not read-only", []corev1.Volume{csiVolume("dsd", &no, typed(datadog.DSDSocketDirectory))}, []string{"readOnly", "dsd"}},
		{"readOnly unset", []corev1.Volume{csiVolume("apm", nil, typed(datadog.APMSocket))}, []string{"readOnly", "apm"}},
		{"unknown type", []corev1.Volume{csiVolume("lib", &yes, map[string]string{datadog.AttrType: "DatadogLibrary"})}, []string{"type", "lib"}},
		{"no attributes", []corev1.Volume{csiVolume("bare", &yes, nil)}, []string{"type", "bare"}},
		{"unknown legacy mode", []corev1.Volume{csiVolume("odd", &yes, map[string]string{datadog.AttrMode: "host"})}, []string{"type", "odd"}},
	}
	for _, typ := range datadog.VolumeTypes {
		cases = append(cases, struct {
			name    string
			volumes []corev1.Volume
			deny    []string
		}{"type " + string(typ), []corev1.Volume{csiVolume("v", &yes, typed(typ))}, nil})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{
				TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
				ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "apps"},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}, Volumes: tc.volumes},
			}
			gvk := schema.GroupVersionKind{Version: "v1", Kind: "Pod"}
			gvr := schema.GroupVersionResource{Version: "v1", Resource: "pods"}
			attrs := admission.NewAttributesRecord(pod, nil, gvk, "apps", "app", gvr, "", admission.Create, &metav1.CreateOptions{}, false, &user.DefaultInfo{Name: "test"})
			result := validator.Validate(context.Background(), gvr, &admission.VersionedAttributes{Attributes: attrs, VersionedKind: gvk, VersionedObject: admission.NewLazyObject(pod)},
				runtime.Object(nil), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}}, 1_000_000, nil)
			var denied []string
			for _, d := range result.Decisions {
				switch d.Action {
				case validating.ActionDeny:
					denied = append(denied, d.Message)
				case validating.ActionAdmit:
				default:
					t.Errorf("decision %+v", d)
				}
				if d.Evaluation == validating.EvalError {
					t.Errorf("evaluation error: %s", d.Message)
				}
			}
			if tc.deny == nil {
				if len(denied) > 0 {
					t.Errorf("denied: %v", denied)
				}
				return
			}
			if len(denied) != 1 {
				t.Fatalf("want one denial naming %v, got %v", tc.deny, denied)
			}
			for _, want := range tc.deny {
				if !strings.Contains(denied[0], want) {
					t.Errorf("denial %q does not mention %q", denied[0], want)
				}
			}
		})
	}
}
