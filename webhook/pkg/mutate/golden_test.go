package mutate

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
	"github.com/datadog-csi/datadog-csi/webhook/pkg/podsecurity"
	jsonpatch "github.com/evanphx/json-patch"
	corev1 "k8s.io/api/core/v1"
	psaapi "k8s.io/pod-security-admission/api"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.yaml from the current output")

// caseSettings is the first document of a testdata/<case>.yaml.
type caseSettings struct {
	Mode               datadog.Mode      `json:"mode"`
	TypeSocketVolumes  bool              `json:"typeSocketVolumes"`
	MutateUnlabelled   bool              `json:"mutateUnlabelled"`
	Namespace          string            `json:"namespace"`
	NamespaceLabels    map[string]string `json:"namespaceLabels"`
	NamespaceUnknown   bool              `json:"namespaceUnknown"`
	CSIDriverInstalled bool              `json:"csiDriverInstalled"`
	APMSocketPath      string            `json:"apmSocketPath"`
	DSDSocketPath      string            `json:"dsdSocketPath"`
}

// goldenOutcome is the first document of a <case>.golden.yaml.
type goldenOutcome struct {
	Mutated         bool         `json:"mutated"`
	Skipped         string       `json:"skipped,omitempty"`
	Mode            datadog.Mode `json:"mode,omitempty"`
	Warnings        []string     `json:"warnings,omitempty"`
	InjectedVolumes []string     `json:"injectedVolumes,omitempty"`
}

type testCase struct {
	name     string
	settings caseSettings
	podJSON  []byte
	mutator  *Mutator
}

func loadCases(t testing.TB) []testCase {
	t.Helper()
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cases []testCase
	for _, f := range files {
		if strings.HasSuffix(f, ".golden.yaml") {
			continue
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs := strings.SplitN(string(raw), "\n---\n", 2)
		if len(docs) != 2 {
			t.Fatalf("%s: want two YAML documents (settings, pod)", f)
		}
		var s caseSettings
		if err := yaml.UnmarshalStrict([]byte(docs[0]), &s); err != nil {
			t.Fatalf("%s settings: %v", f, err)
		}
		podJSON, err := yaml.YAMLToJSON([]byte(docs[1]))
		if err != nil {
			t.Fatalf("%s pod: %v", f, err)
		}
		cases = append(cases, testCase{
			name:     strings.TrimSuffix(filepath.Base(f), ".yaml"),
			settings: s,
			podJSON:  podJSON,
			mutator:  newCaseMutator(t, s),
		})
	}
	if len(cases) < 30 {
		t.Fatalf("found only %d cases in testdata", len(cases))
	}
	return cases
}

func newCaseMutator(t testing.TB, s caseSettings) *Mutator {
	t.Helper()
	cfg := Config{
		Mode:                  s.Mode,
		TypeSocketVolumes:     s.TypeSocketVolumes,
		MutateUnlabelled:      s.MutateUnlabelled,
		APMSocketPath:         datadog.DefaultAPMSocketPath,
		DSDSocketPath:         datadog.DefaultDSDSocketPath,
		AgentServiceName:      "datadog-agent",
		AgentServiceNamespace: "datadog",
		ClusterDomain:         "cluster.local",
		ExcludedNamespaces:    []string{"kube-system", "datadog"},
	}
	if s.APMSocketPath != "" {
		cfg.APMSocketPath = s.APMSocketPath
	}
	if s.DSDSocketPath != "" {
		cfg.DSDSocketPath = s.DSDSocketPath
	}
	state := StaticClusterState{CSIDriver: s.CSIDriverInstalled, Namespaces: map[string]map[string]string{}}
	if !s.NamespaceUnknown {
		state.Namespaces[s.Namespace] = s.NamespaceLabels
	}
	m, err := New(cfg, state)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func decodePod(t testing.TB, raw []byte) *corev1.Pod {
	t.Helper()
	var pod corev1.Pod
	if err := json.Unmarshal(raw, &pod); err != nil {
		t.Fatal(err)
	}
	return &pod
}

// TestGolden mutates every testdata case and compares the outcome and the
// mutated pod with <case>.golden.yaml. It also checks that the JSON patch
// the webhook would send turns the input into exactly that pod, and that a
// second pass yields no patch.
func TestGolden(t *testing.T) {
	for _, c := range loadCases(t) {
		t.Run(c.name, func(t *testing.T) {
			pod := decodePod(t, c.podJSON)
			out := c.mutator.MutatePod(pod, c.settings.Namespace)
			podYAML, err := yaml.Marshal(pod)
			if err != nil {
				t.Fatal(err)
			}
			outYAML, err := yaml.Marshal(goldenOutcome{out.Mutated, out.Skipped, out.Mode, out.Warnings, out.InjectedVolumes})
			if err != nil {
				t.Fatal(err)
			}
			got := "# outcome\n" + string(outYAML) + "---\n# mutated pod\n" + string(podYAML)
			goldenPath := filepath.Join("testdata", c.name+".golden.yaml")
			if *update {
				if err := os.WriteFile(goldenPath, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(goldenPath)
			if err != nil {
				t.Fatalf("%v (run: go test ./webhook/... -update)", err)
			}
			if got != string(want) {
				t.Errorf("mutated pod differs from %s (run with -update after checking):\n--- got\n%s\n--- want\n%s", goldenPath, got, want)
			}

			patch, _, err := c.mutator.Patch(c.podJSON, c.settings.Namespace)
			if err != nil {
				t.Fatal(err)
			}
			if (patch != nil) != out.Mutated {
				t.Fatalf("patch present=%t but mutated=%t", patch != nil, out.Mutated)
			}
			applied := applyPatch(t, c.podJSON, patch)
			if !reflect.DeepEqual(decodePod(t, applied), pod) {
				t.Errorf("patch %s does not produce the mutated pod", patch)
			}
			again, _, err := c.mutator.Patch(applied, c.settings.Namespace)
			if err != nil {
				t.Fatal(err)
			}
			if again != nil {
				t.Errorf("second pass not idempotent: patch %s", again)
			}
		})
	}
}

func applyPatch(t testing.TB, doc, patch []byte) []byte {
	t.Helper()
	if patch == nil {
		return doc
	}
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatalf("decode patch %s: %v", patch, err)
	}
	out, err := p.Apply(doc)
	if err != nil {
		t.Fatalf("apply patch %s: %v", patch, err)
	}
	return out
}

// TestPodSecurity runs the Pod Security admission's own evaluator on every
// golden output: csi outputs pass baseline (and restricted when the input
// did), socket outputs fail baseline because of hostPath, so the check is
// shown to be able to fail.
func TestPodSecurity(t *testing.T) {
	var sawCSI, sawSocket, sawRestricted int
	for _, c := range loadCases(t) {
		t.Run(c.name, func(t *testing.T) {
			before := decodePod(t, c.podJSON)
			restrictedBefore := mustEvaluate(t, before, psaapi.LevelRestricted).Allowed
			pod := decodePod(t, c.podJSON)
			out := c.mutator.MutatePod(pod, c.settings.Namespace)
			if !out.Mutated {
				return
			}
			baseline := mustEvaluate(t, pod, psaapi.LevelBaseline)
			switch out.Mode {
			case datadog.ModeCSI, datadog.ModeHostIP, datadog.ModeService:
				sawCSI++
				if !baseline.Allowed {
					t.Errorf("%s output rejected by baseline: %s", out.Mode, baseline)
				}
				if restrictedBefore {
					sawRestricted++
					if r := mustEvaluate(t, pod, psaapi.LevelRestricted); !r.Allowed {
						t.Errorf("pod was restricted before, %s output is not: %s", out.Mode, r)
					}
				}
			case datadog.ModeSocket:
				if len(out.InjectedVolumes) == 0 {
					return // the pod already had the volumes; nothing of ours to reject
				}
				sawSocket++
				if baseline.Allowed || baseline.Reason != "hostPath volumes" {
					t.Errorf("socket output: want baseline forbidden for \"hostPath volumes\", got %s", baseline)
				}
				for _, v := range out.InjectedVolumes {
					if !strings.Contains(baseline.Detail, v) {
						t.Errorf("baseline detail %q does not name injected volume %q", baseline.Detail, v)
					}
				}
			}
		})
	}
	if sawCSI == 0 || sawSocket == 0 || sawRestricted == 0 {
		t.Fatalf("cases cover too little: %d pass-baseline, %d socket, %d restricted", sawCSI, sawSocket, sawRestricted)
	}
}

func mustEvaluate(t testing.TB, pod *corev1.Pod, level psaapi.Level) podsecurity.Verdict {
	t.Helper()
	v, err := podsecurity.Evaluate(pod, level)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestNewRejectsBadConfig(t *testing.T) {
	good := Config{Mode: datadog.ModeCSI, APMSocketPath: "/a/apm.socket", DSDSocketPath: "/a/dsd.socket",
		AgentServiceName: "s", AgentServiceNamespace: "n", ClusterDomain: "cluster.local"}
	if _, err := New(good, nil); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Config){
		"mode":     func(c *Config) { c.Mode = "udp" },
		"apm path": func(c *Config) { c.APMSocketPath = "relative.socket" },
		"dsd path": func(c *Config) { c.DSDSocketPath = "/a/../dsd.socket" },
		"service":  func(c *Config) { c.AgentServiceName = "" },
	} {
		c := good
		mut(&c)
		if _, err := New(c, nil); err == nil {
			t.Errorf("%s: bad config accepted", name)
		}
	}
}

// TestEnvOrderMatchesClusterAgent pins the env order the Cluster Agent
// produces; DD_EXTERNAL_ENV must come after the variable it references.
func TestEnvOrderMatchesClusterAgent(t *testing.T) {
	m := newCaseMutator(t, caseSettings{Mode: datadog.ModeCSI, Namespace: "apps"})
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Env: []corev1.EnvVar{{Name: "MINE", Value: "1"}}}}}}
	pod.Labels = map[string]string{datadog.LabelEnabled: "true"}
	m.MutatePod(pod, "apps")
	var names []string
	for _, e := range pod.Spec.Containers[0].Env {
		names = append(names, e.Name)
	}
	want := []string{datadog.EnvInternalPodUID, datadog.EnvExternalEnv, datadog.EnvEntityID, datadog.EnvDogStatsDURL, datadog.EnvTraceAgentURL, "MINE"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("env order %v, want %v", names, want)
	}
	if !bytes.Equal([]byte(pod.Spec.Containers[0].Env[1].Value), []byte("it-false,cn-c,pu-$(DD_INTERNAL_POD_UID)")) {
		t.Fatalf("DD_EXTERNAL_ENV = %q", pod.Spec.Containers[0].Env[1].Value)
	}
}
