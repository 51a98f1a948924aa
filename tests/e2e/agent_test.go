package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// agentManifest is the dummy agent's Namespace and DaemonSet, shared with `make demo`.
var agentManifest = filepath.Join(repoRoot, "tests", "images", "dummy-agent", "manifest.yaml")

// agentRecordsPort serves the dummy agent's GET /records.
const agentRecordsPort = "5000"

// agent is a dummy agent DaemonSet installed by a test.
type agent struct {
	namespace string
	name      string
	selector  string
}

// Sender and Records mirror the JSON of the dummy agent's GET /records
// (tests/images/dummy-agent).
type Sender struct {
	APM     int       `json:"apm"`
	DSD     int       `json:"dsd"`
	LastAPM time.Time `json:"lastAPM"`
	LastDSD time.Time `json:"lastDSD"`
	Seen    []string  `json:"seen"`
}

type Records struct {
	Instance string             `json:"instance"`
	Started  time.Time          `json:"started"`
	Senders  map[string]*Sender `json:"senders"`
}

func (r Records) String() string {
	var names []string
	for n := range r.Senders {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	fmt.Fprintf(&b, "instance %s started %s:", r.Instance, r.Started.Format("15:04:05"))
	for _, n := range names {
		s := r.Senders[n]
		fmt.Fprintf(&b, " %s{apm:%d dsd:%d}", n, s.APM, s.DSD)
	}
	return b.String()
}

// installAgent runs the dummy agent in its own privileged namespace and waits
// until its sockets exist on the node.
func (f *fixture) installAgent() *agent {
	f.t.Helper()
	raw, err := os.ReadFile(agentManifest)
	if err != nil {
		f.t.Fatalf("dummy agent manifest: %v", err)
	}
	var ns corev1.Namespace
	var ds appsv1.DaemonSet
	for _, doc := range strings.Split(string(raw), "\n---") {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			f.t.Fatalf("%s: %v", agentManifest, err)
		}
		switch meta.Kind {
		case "Namespace":
			err = yaml.UnmarshalStrict([]byte(doc), &ns)
		case "DaemonSet":
			err = yaml.UnmarshalStrict([]byte(doc), &ds)
		}
		if err != nil {
			f.t.Fatalf("%s: %s: %v", agentManifest, meta.Kind, err)
		}
	}
	a := &agent{name: ds.Name, selector: metav1.FormatLabelSelector(ds.Spec.Selector)}
	a.namespace = f.createNamespace("e2e-agent", ns.Labels)
	f.agents = append(f.agents, a)
	ds.Namespace = a.namespace
	ds.Spec.Template.Spec.Containers[0].Image = dummyAgentImage
	if _, err := f.client.AppsV1().DaemonSets(a.namespace).Create(f.ctx, &ds, metav1.CreateOptions{}); err != nil {
		f.t.Fatalf("creating the dummy agent: %v", err)
	}
	f.waitAgentReady(a, "")
	return a
}

// agentPod returns the agent's running (not terminating) pod on the node.
func (f *fixture) agentPod(ctx context.Context, a *agent) (*corev1.Pod, error) {
	pods, err := f.client.CoreV1().Pods(a.namespace).List(ctx, metav1.ListOptions{LabelSelector: a.selector})
	if err != nil {
		return nil, err
	}
	for i := range pods.Items {
		if pods.Items[i].DeletionTimestamp == nil {
			return &pods.Items[i], nil
		}
	}
	return nil, fmt.Errorf("no dummy agent pod in %s", a.namespace)
}

// waitAgentReady waits for a ready agent pod other than notName.
func (f *fixture) waitAgentReady(a *agent, notName string) *corev1.Pod {
	f.t.Helper()
	var pod *corev1.Pod
	err := poll(f.ctx, 2*time.Minute, 250*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		p, err := f.agentPod(ctx, a)
		if err != nil {
			return false, err.Error(), nil
		}
		if p.Name == notName {
			return false, "old pod " + notName + " still there", nil
		}
		for _, cs := range p.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil && imagePullFailures[w.Reason] {
				return false, "", fmt.Errorf("image %s is not on the node: run `make images`", cs.Image)
			}
		}
		pod = p
		return podReady(p), f.podWhy(ctx, p), nil
	})
	if err != nil {
		f.t.Fatalf("dummy agent not ready: %v", err)
	}
	return pod
}

// agentRecords reads the agent's record through the API server's pod proxy.
func (f *fixture) agentRecords(ctx context.Context, a *agent) (Records, error) {
	var r Records
	p, err := f.agentPod(ctx, a)
	if err != nil {
		return r, err
	}
	raw, err := f.client.CoreV1().Pods(a.namespace).ProxyGet("http", p.Name, agentRecordsPort, "/records", nil).DoRaw(ctx)
	if err != nil {
		return r, fmt.Errorf("GET /records of %s via the API server: %w", p.Name, err)
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return r, fmt.Errorf("records of %s: %w: %s", p.Name, err, raw)
	}
	return r, nil
}

// want is the traffic a test expects from one pod.
type want struct {
	pod      string
	apm, dsd bool
}

// waitTraffic waits until the agent has received at least n of each expected
// kind from every pod, counted from baseline when it is the same agent
// process (a restarted agent has a new instance and starts from zero), and
// returns the last record.
func (f *fixture) waitTraffic(a *agent, wants []want, n int, timeout time.Duration, baseline *Records) Records {
	f.t.Helper()
	var last Records
	err := poll(f.ctx, timeout, 500*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		r, err := f.agentRecords(ctx, a)
		if err != nil {
			return false, err.Error(), nil
		}
		last = r
		var missing []string
		for _, w := range wants {
			s := r.Senders[w.pod]
			if s == nil {
				s = &Sender{}
			}
			base := &Sender{}
			if baseline != nil && baseline.Instance == r.Instance && baseline.Senders[w.pod] != nil {
				base = baseline.Senders[w.pod]
			}
			if w.apm && s.APM-base.APM < n {
				missing = append(missing, fmt.Sprintf("%s: %d new traces", w.pod, s.APM-base.APM))
			}
			if w.dsd && s.DSD-base.DSD < n {
				missing = append(missing, fmt.Sprintf("%s: %d new metrics", w.pod, s.DSD-base.DSD))
			}
		}
		if len(missing) > 0 {
			return false, fmt.Sprintf("want >= %d of each; %s (record: %s)", n, strings.Join(missing, ", "), r), nil
		}
		return true, "", nil
	})
	if err != nil {
		f.t.Fatalf("the dummy agent did not get the expected traffic: %v", err)
	}
	return last
}
