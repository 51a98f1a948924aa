package mutate

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
	corev1 "k8s.io/api/core/v1"
)

// randomPod builds a pod from a seed, biased towards what the mutator
// looks at: labels, env and mounts that collide with injected names and
// paths, pre-existing volumes and annotations, init containers.
func randomPod(seed uint64) *corev1.Pod {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	pod := &corev1.Pod{}
	pod.Name = "p"
	pod.Labels = map[string]string{}
	if r.IntN(4) > 0 {
		pod.Labels[datadog.LabelEnabled] = pick("true", "false", "TRUE", "")
	}
	if r.IntN(2) == 0 {
		pod.Labels[datadog.LabelMode] = pick("hostip", "service", "socket", "csi", "auto", "CSI", "bogus")
	}
	if r.IntN(3) == 0 {
		pod.Labels[datadog.LabelTypeSocketVolumes] = pick("true", "false", "maybe")
	}
	if r.IntN(3) == 0 {
		pod.Annotations = map[string]string{datadog.AnnotationSafeToEvictLocalVolumes: pick("", "a", "datadog", "x,datadog-apm")}
	}
	names := []string{datadog.VolumeSocketDir, datadog.VolumeAPMDir, datadog.VolumeDSDDir, datadog.VolumeAPMSocket, datadog.VolumeDSDSocket, "data"}
	paths := []string{datadog.SocketDir, datadog.PodAPMSocketDirectory, datadog.PodDSDSocketDirectory, datadog.DefaultAPMSocketPath, datadog.DefaultDSDSocketPath, "/data"}
	envs := []string{datadog.EnvAgentHost, datadog.EnvEntityID, datadog.EnvExternalEnv, datadog.EnvInternalPodUID, datadog.EnvTraceAgentURL, datadog.EnvDogStatsDURL, "APP"}
	for i := range r.IntN(3) {
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: fmt.Sprintf("%s%d", pick(names...), i%2), VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	}
	container := func(i int) corev1.Container {
		c := corev1.Container{Name: fmt.Sprintf("c%d", i), Image: "img"}
		for range r.IntN(4) {
			c.Env = append(c.Env, corev1.EnvVar{Name: pick(envs...), Value: "v"})
		}
		for range r.IntN(3) {
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: pick(names...), MountPath: pick(paths...)})
		}
		return c
	}
	for i := range r.IntN(4) {
		pod.Spec.Containers = append(pod.Spec.Containers, container(i))
	}
	for i := range r.IntN(3) {
		pod.Spec.InitContainers = append(pod.Spec.InitContainers, container(10+i))
	}
	return pod
}

// FuzzMutate: no panic, every patch applies cleanly and yields the mutated
// pod, and the webhook applied to its own output returns no patch.
func FuzzMutate(f *testing.F) {
	for _, s := range []uint64{0, 1, 2, 3, 42, 1 << 40} {
		f.Add(s, uint8(0), false, false, false)
	}
	f.Fuzz(func(t *testing.T, seed uint64, modeIndex uint8, socketVolumes, unlabelled, csiInstalled bool) {
		mode := datadog.Modes[int(modeIndex)%len(datadog.Modes)]
		state := StaticClusterState{CSIDriver: csiInstalled, Namespaces: map[string]map[string]string{"apps": {"pod-security.kubernetes.io/enforce": "baseline"}}}
		m, err := New(Config{Mode: mode, TypeSocketVolumes: socketVolumes, MutateUnlabelled: unlabelled,
			APMSocketPath: datadog.DefaultAPMSocketPath, DSDSocketPath: datadog.DefaultDSDSocketPath,
			AgentServiceName: "datadog-agent", AgentServiceNamespace: "datadog", ClusterDomain: "cluster.local"}, state)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := json.Marshal(randomPod(seed))
		if err != nil {
			t.Fatal(err)
		}
		patch, out, err := m.Patch(raw, "apps")
		if err != nil {
			t.Fatal(err)
		}
		applied := applyPatch(t, raw, patch)
		want := decodePod(t, raw)
		m.MutatePod(want, "apps")
		if got := decodePod(t, applied); !reflect.DeepEqual(got, want) {
			t.Fatalf("patch %s does not yield the mutated pod (outcome %+v)", patch, out)
		}
		again, _, err := m.Patch(applied, "apps")
		if err != nil {
			t.Fatal(err)
		}
		if again != nil {
			t.Fatalf("not idempotent: second patch %s", again)
		}
	})
}
