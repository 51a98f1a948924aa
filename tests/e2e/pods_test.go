package e2e

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/utils/ptr"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
)

// appPod is a pod of the test app that passes Pod Security restricted.
// Its traffic goes wherever its DD_*_URL env vars point: the webhook injects
// them, or the caller sets them.
func appPod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "e2e-app"}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				RunAsUser:      ptr.To[int64](65532),
				RunAsGroup:     ptr.To[int64](65532),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:            "app",
				Image:           testAppImage,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Env: []corev1.EnvVar{{
					Name:      "POD_NAME",
					ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}},
				}},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false),
					ReadOnlyRootFilesystem:   ptr.To(true),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceCPU:    resource.MustParse("5m"),
					corev1.ResourceMemory: resource.MustParse("16Mi"),
				}},
			}},
		},
	}
}

// seedPod is the seed scenario's pod named nginx: the real nginx image where
// a registry is reachable (it runs as root: fine under baseline), the test
// app offline.
func seedPod() *corev1.Pod {
	p := appPod("nginx")
	p.Labels = map[string]string{"app": "nginx"}
	p.Spec.Containers[0].Name = "nginx"
	p.Spec.Containers[0].Image = appImage
	if appImage != testAppImage {
		p.Spec.SecurityContext = nil
		p.Spec.Containers[0].SecurityContext = nil
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}
	}
	return optIn(p)
}

// optIn labels a pod for the webhook, plus extra label pairs (key, value, ...).
func optIn(p *corev1.Pod, kv ...string) *corev1.Pod {
	if p.Labels == nil {
		p.Labels = map[string]string{}
	}
	p.Labels[datadog.LabelEnabled] = "true"
	for i := 0; i+1 < len(kv); i += 2 {
		p.Labels[kv[i]] = kv[i+1]
	}
	return p
}

// withCSIVolume adds a read-only inline volume of our driver mounted at mountPath.
func withCSIVolume(p *corev1.Pod, name, mountPath string, attrs map[string]string) *corev1.Pod {
	p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{
		Name: name,
		VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
			Driver: datadog.DriverName, ReadOnly: ptr.To(true), VolumeAttributes: attrs,
		}},
	})
	c := &p.Spec.Containers[0]
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: name, MountPath: mountPath, ReadOnly: true})
	return p
}

// withEnv sets env vars of the pod's container (name, value, ...).
func withEnv(p *corev1.Pod, kv ...string) *corev1.Pod {
	c := &p.Spec.Containers[0]
	for i := 0; i+1 < len(kv); i += 2 {
		c.Env = append(c.Env, corev1.EnvVar{Name: kv[i], Value: kv[i+1]})
	}
	return p
}

func (f *fixture) createPod(ns string, p *corev1.Pod) *corev1.Pod {
	f.t.Helper()
	created, err := f.client.CoreV1().Pods(ns).Create(f.ctx, p, metav1.CreateOptions{})
	if err != nil {
		f.t.Fatalf("creating pod %s/%s: %v", ns, p.Name, err)
	}
	return created
}

// dryRunPod creates p with a server-side dry run: the answer is the pod as
// admission (webhook, Pod Security) made it, and nothing is stored.
func (f *fixture) dryRunPod(ctx context.Context, ns string, p *corev1.Pod) (*corev1.Pod, error) {
	return f.client.CoreV1().Pods(ns).Create(ctx, p.DeepCopy(), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
}

// imagePullFailures are waiting reasons that mean the image is not on the node.
var imagePullFailures = map[string]bool{"ErrImagePull": true, "ImagePullBackOff": true, "ErrImageNeverPull": true, "InvalidImageName": true}

// waitPodReady waits until the pod is Ready; an image that is not on the node
// fails at once, naming `make images`.
func (f *fixture) waitPodReady(ns, name string, timeout time.Duration) *corev1.Pod {
	f.t.Helper()
	var pod *corev1.Pod
	start := time.Now()
	defer func() {
		if d := time.Since(start); d > 10*time.Second {
			f.t.Logf("pod %s/%s took %s to become ready", ns, name, d.Round(time.Millisecond))
		}
	}()
	err := poll(f.ctx, timeout, 250*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		p, err := f.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		pod = p
		for _, cs := range p.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil && imagePullFailures[w.Reason] {
				return false, "", fmt.Errorf("pod %s/%s: image %s is not on the node (%s: %s): run `make images`",
					ns, name, cs.Image, w.Reason, w.Message)
			}
		}
		if podReady(p) {
			return true, "", nil
		}
		return false, f.podWhy(ctx, p), nil
	})
	if err != nil {
		f.t.Fatalf("pod %s/%s not ready: %v", ns, name, err)
	}
	return pod
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podWhy says why a pod is not ready: its phase, container states and last event.
func (f *fixture) podWhy(ctx context.Context, p *corev1.Pod) string {
	why := "phase " + string(p.Status.Phase)
	for _, cs := range p.Status.ContainerStatuses {
		why += "; " + cs.Name + " " + describeState(cs.State)
	}
	events, err := f.client.CoreV1().Events(p.Namespace).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.name", p.Name).String(),
	})
	if err == nil && len(events.Items) > 0 {
		last := events.Items[0]
		for _, e := range events.Items {
			if eventTime(&e).After(eventTime(&last)) {
				last = e
			}
		}
		why += "; last event " + last.Reason + ": " + last.Message
	}
	return why
}

// deletePodAndWait deletes a pod and waits until the API no longer has it:
// the kubelet removes it only after its volumes are unmounted.
func (f *fixture) deletePodAndWait(ns, name string, timeout time.Duration) {
	f.t.Helper()
	if err := f.client.CoreV1().Pods(ns).Delete(f.ctx, name, metav1.DeleteOptions{}); err != nil {
		f.t.Fatalf("deleting pod %s/%s: %v", ns, name, err)
	}
	err := poll(f.ctx, timeout, 250*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		p, err := f.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		if err != nil {
			return false, err.Error(), nil
		}
		return false, f.podWhy(ctx, p), nil
	})
	if err != nil {
		f.t.Fatalf("pod %s/%s not deleted: %v", ns, name, err)
	}
}

// ourVolumes returns the pod's volumes of our driver, by volume type (or
// legacy mode) attribute.
func ourVolumes(p *corev1.Pod) map[string]corev1.Volume {
	out := map[string]corev1.Volume{}
	for _, v := range p.Spec.Volumes {
		if v.CSI != nil && v.CSI.Driver == datadog.DriverName {
			key := v.CSI.VolumeAttributes[datadog.AttrType]
			if key == "" {
				key = "mode=" + v.CSI.VolumeAttributes[datadog.AttrMode]
			}
			out[key] = v
		}
	}
	return out
}

func hostPathVolumes(p *corev1.Pod) []string {
	var paths []string
	for _, v := range p.Spec.Volumes {
		if v.HostPath != nil {
			paths = append(paths, v.Name+"="+v.HostPath.Path)
		}
	}
	return paths
}

func envValue(p *corev1.Pod, name string) (string, bool) {
	for _, e := range p.Spec.Containers[0].Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

// injectedMode tells from a pod spec how the webhook connected it to the agent.
func injectedMode(p *corev1.Pod) datadog.Mode {
	switch {
	case len(ourVolumes(p)) > 0:
		return datadog.ModeCSI
	case len(hostPathVolumes(p)) > 0:
		return datadog.ModeSocket
	}
	if _, ok := envValue(p, datadog.EnvAgentHost); ok {
		return datadog.ModeHostIP
	}
	return ""
}

// waitWebhookMode waits until labelled pods created in ns come out of
// admission in the given mode, every time for several seconds: the webhook
// patches its caBundle after it starts, and during a rollout old and new
// replicas both answer until the Service's endpoints reach kube-proxy.
func (f *fixture) waitWebhookMode(ns string, want datadog.Mode) {
	f.t.Helper()
	const minStreak, minStreakTime = 5, 3 * time.Second
	probe := optIn(appPod("webhook-probe"))
	streak, streakStart := 0, time.Time{}
	err := poll(f.ctx, 2*time.Minute, 300*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		start := time.Now()
		p, err := f.dryRunPod(ctx, ns, probe)
		if err != nil {
			streak = 0
			return false, "dry run: " + err.Error(), nil
		}
		got := injectedMode(p)
		if got != want {
			streak = 0
			why := fmt.Sprintf("probe pod came out in mode %q (volumes %s)", got, describeVolumes(p))
			if took := time.Since(start); took > 5*time.Second {
				// failurePolicy Ignore: the API server gave up on the webhook.
				why += fmt.Sprintf("; the dry run took %s: the API server cannot reach the webhook's Service "+
					"(its ClusterIP goes through kube-proxy: see `kubectl -n kube-system logs ds/kube-proxy`)", took.Round(time.Second))
			}
			return false, why, nil
		}
		if streak == 0 {
			streakStart = start
		}
		streak++
		return streak >= minStreak && time.Since(streakStart) >= minStreakTime, "", nil
	})
	if err != nil {
		f.t.Fatalf("webhook not mutating in %s mode: %v", want, err)
	}
}
