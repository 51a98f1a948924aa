// Package podsecurity evaluates a pod against the Pod Security Standards
// with k8s.io/pod-security-admission's own evaluator, the code the
// kube-apiserver's PodSecurity admission plugin runs.
package podsecurity

import (
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

// Verdict is the outcome of one level's checks.
type Verdict struct {
	Level   psaapi.Level
	Allowed bool
	// Reason and Detail are the apiserver's wording ("hostPath volumes",
	// `volumes "datadog" ...`), empty when allowed.
	Reason string
	Detail string
}

func (v Verdict) String() string {
	if v.Allowed {
		return fmt.Sprintf("%s: allowed", v.Level)
	}
	return fmt.Sprintf("%s: forbidden: %s (%s)", v.Level, v.Reason, v.Detail)
}

var (
	evaluatorOnce sync.Once
	evaluator     policy.Evaluator
	evaluatorErr  error
)

// Evaluate checks pod against level at the latest policy version.
func Evaluate(pod *corev1.Pod, level psaapi.Level) (Verdict, error) {
	evaluatorOnce.Do(func() { evaluator, evaluatorErr = policy.NewEvaluator(policy.DefaultChecks(), nil) })
	if evaluatorErr != nil {
		return Verdict{}, fmt.Errorf("pod security evaluator: %w", evaluatorErr)
	}
	results := evaluator.EvaluatePod(psaapi.LevelVersion{Level: level, Version: psaapi.LatestVersion()}, &pod.ObjectMeta, &pod.Spec)
	agg := policy.AggregateCheckResults(results)
	return Verdict{Level: level, Allowed: agg.Allowed, Reason: agg.ForbiddenReason(), Detail: agg.ForbiddenDetail()}, nil
}

// EvaluateAll returns the verdicts for baseline and restricted.
func EvaluateAll(pod *corev1.Pod) ([]Verdict, error) {
	var out []Verdict
	for _, level := range []psaapi.Level{psaapi.LevelBaseline, psaapi.LevelRestricted} {
		v, err := Evaluate(pod, level)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}
