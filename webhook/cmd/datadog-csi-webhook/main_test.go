package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/datadog-csi/datadog-csi/webhook/pkg/certs/certstest"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// childEnv makes the test binary run as `datadog-csi-webhook` with its
// arguments instead of the tests, so a test can signal a real webhook
// process.
const childEnv = "DATADOG_CSI_WEBHOOK_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

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
		"--shutdown-delay":      {"--namespace=dd", "--tls-mode=existingSecret", "--shutdown-delay=-1s"},
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

// SIGTERM, as the kubelet sends it, starts --shutdown-delay: the process
// logs it, fails /readyz, keeps serving, and exits 0 after the delay. A
// second SIGTERM during the delay ends the process at once.
func TestSIGTERMStartsShutdownDelay(t *testing.T) {
	dir := t.TempDir()
	certstest.WriteLoopbackPair(t, dir)
	// An apiserver that refuses connections: the caches never sync, which
	// does not stop the webhook from serving.
	kubeconfig := filepath.Join(dir, "kubeconfig")
	_ = os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600)

	start := func(t *testing.T, delay string) (*exec.Cmd, <-chan map[string]any, string) {
		t.Helper()
		args := []string{"serve", "--namespace=dd", "--tls-mode=existingSecret", "--tls-cert-dir=" + dir,
			"--listen-address=127.0.0.1:0", "--probe-address=127.0.0.1:0", "--kubeconfig=" + kubeconfig,
			"--shutdown-delay=" + delay}
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), childEnv+"=1")
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		// The webhook's JSON log lines; client-go's klog lines are not JSON.
		logs := make(chan map[string]any, 100)
		go func() {
			defer close(logs)
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				var line map[string]any
				if json.Unmarshal(sc.Bytes(), &line) == nil {
					logs <- line
				}
			}
		}()
		serving := waitLog(t, logs, "serving")
		probe, _ := serving["probe"].(string)
		return cmd, logs, probe
	}

	t.Run("one SIGTERM", func(t *testing.T) {
		const delay = 500 * time.Millisecond
		cmd, logs, probe := start(t, delay.String())
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		signalled := time.Now()
		line := waitLog(t, logs, "shutting down: still serving for 500ms while endpoints drop this pod")
		if line["level"] != "INFO" {
			t.Errorf("shutdown logged at %v, want INFO", line["level"])
		}
		if code, body := get(t, "http://"+probe+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "shutting down") {
			t.Errorf("/readyz during the delay: %d %q", code, body)
		}
		if code, _ := get(t, "http://"+probe+"/healthz"); code != http.StatusOK {
			t.Errorf("/healthz during the delay: %d", code)
		}
		exited := make(chan error, 1)
		go func() {
			for range logs { // drain, so the child never blocks on stderr
			}
			exited <- cmd.Wait()
		}()
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("exit after SIGTERM: %v", err)
			}
		case <-time.After(delay + 15*time.Second):
			t.Fatal("no exit after the delay")
		}
		if elapsed := time.Since(signalled); elapsed < delay {
			t.Errorf("exited %v after SIGTERM, before the %v delay", elapsed, delay)
		}
	})

	t.Run("second SIGTERM", func(t *testing.T) {
		cmd, logs, _ := start(t, "1h")
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		waitLog(t, logs, "shutting down: still serving for 1h0m0s while endpoints drop this pod")
		exited := make(chan error, 1)
		go func() {
			for range logs {
			}
			exited <- cmd.Wait()
		}()
		// The first signal restores the default handling just after it
		// cancels Serve's context: repeat the second until it lands.
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case <-exited:
				ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
				if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
					t.Fatalf("exit %v, want killed by the second SIGTERM", cmd.ProcessState)
				}
				return
			case <-tick.C:
				_ = cmd.Process.Signal(syscall.SIGTERM)
			case <-deadline:
				t.Fatal("a second SIGTERM did not end the process during the delay")
			}
		}
	})
}

func waitLog(t *testing.T, logs <-chan map[string]any, msg string) map[string]any {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case line, ok := <-logs:
			if !ok {
				t.Fatalf("the webhook exited before logging %q", msg)
			}
			if line["msg"] == msg {
				return line
			}
		case <-timeout:
			t.Fatalf("the webhook did not log %q", msg)
		}
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
