package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

func runCmd(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestServeNamesTheBadFlag(t *testing.T) {
	for flagName, args := range map[string][]string{
		"--mode":                {"--namespace=dd", "--mode=udp", "--tls-mode=existingSecret"},
		"--tls-mode":            {"--namespace=dd", "--tls-mode=vault"},
		"--namespace":           {"--namespace=", "--tls-mode=existingSecret"},
		"--tls-secret-name":     {"--namespace=dd", "--webhook-config-name=w", "--service-name=s"},
		"--log-format":          {"--namespace=dd", "--tls-mode=existingSecret", "--log-format=xml"},
		"--apm-socket-path":     {"--namespace=dd", "--tls-mode=existingSecret", "--apm-socket-path=apm.socket"},
		"--excluded-namespaces": {"--namespace=dd", "--tls-mode=existingSecret", "--excluded-namespaces=kube-system,Not_A_Name"},
	} {
		t.Setenv("POD_NAMESPACE", "")
		code, _, stderr := runCmd(t, "", append([]string{"serve"}, args...)...)
		if code == 0 || !strings.Contains(stderr, flagName+":") {
			t.Errorf("%v: exit %d, stderr %q; want non-zero naming %s", args, code, stderr, flagName)
		}
	}
}

func TestUsage(t *testing.T) {
	if code, _, _ := runCmd(t, ""); code != 2 {
		t.Fatalf("no command: exit %d", code)
	}
	if code, _, stderr := runCmd(t, "", "bogus"); code != 2 || !strings.Contains(stderr, "unknown command") {
		t.Fatalf("bogus command: exit %d %q", code, stderr)
	}
}

const podYAML = `apiVersion: v1
kind: Pod
metadata:
  name: app
  labels:
    admission.datadoghq.com/enabled: "true"
spec:
  containers:
  - name: app
    image: app:1
`

func TestInjectPrintsMutatedPodAndVerdicts(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pod.yaml")
	if err := os.WriteFile(file, []byte(podYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCmd(t, "", "inject", "-f", file, "--mode", "socket")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict([]byte(stdout), &pod); err != nil {
		t.Fatalf("stdout is not a pod: %v\n%s", err, stdout)
	}
	if len(pod.Spec.Volumes) != 1 || pod.Spec.Volumes[0].HostPath == nil {
		t.Fatalf("socket mode: volumes %+v", pod.Spec.Volumes)
	}
	if !strings.Contains(stderr, "baseline: forbidden: hostPath volumes") {
		t.Fatalf("stderr lacks the baseline verdict: %s", stderr)
	}

	// auto in a baseline namespace without the driver: hostip, admitted.
	code, stdout, stderr = runCmd(t, podYAML, "inject", "-f", "-", "--csi-driver-installed=false",
		"--namespace-labels", "pod-security.kubernetes.io/enforce=baseline")
	if code != 0 || !strings.Contains(stdout, "status.hostIP") || !strings.Contains(stderr, "baseline: allowed") {
		t.Fatalf("auto/baseline: exit %d\n%s\n%s", code, stdout, stderr)
	}
	// Excluded namespaces, as the webhook excludes them: kube-system always.
	for _, args := range [][]string{{"--namespace", "kube-system"}, {"--namespace", "infra", "--excluded-namespaces", "ops,infra"}} {
		code, stdout, stderr = runCmd(t, podYAML, append([]string{"inject", "-f", "-", "--mode", "csi"}, args...)...)
		if code != 0 || strings.Contains(stdout, "volumes:") || !strings.Contains(stderr, "not mutated") {
			t.Fatalf("%v: exit %d, want the pod unchanged\n%s\n%s", args, code, stdout, stderr)
		}
	}
	code, _, stderr = runCmd(t, "", "inject", "-f", file, "--mode", "bogus")
	if code == 0 || !strings.Contains(stderr, "--mode") {
		t.Fatalf("bad mode accepted: %d %s", code, stderr)
	}
}
