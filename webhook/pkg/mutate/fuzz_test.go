package mutate

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
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
	// A volume of an injected name, as on reinvocation once another webhook
	// added a container: the containers without its mount must still get
	// it. Drawn last so the earlier draws of a seed, and its pod, stay.
	if r.IntN(3) == 0 {
		name := pick(names[:len(names)-1]...)
		if !slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == name }) {
			pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		}
	}
	return pod
}

// FuzzMutate: no panic, every patch applies cleanly and yields the mutated
// pod, every container can reach the sockets its env vars name, and the
// webhook applied to its own output returns no patch.
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
		if _, d := m.decide(want.Labels, want.Namespace, "apps"); out.Skipped == "" && d.plan != nil {
			checkMountsPlanned(t, want, d.plan)
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

// checkMountsPlanned fails unless every container and init container of a
// mutated pod has each planned volume's mount, or a mount of its name or
// path: none is left with socket env vars and no socket, even when the pod
// had the volume already.
func checkMountsPlanned(t *testing.T, pod *corev1.Pod, plan *socketPlan) {
	t.Helper()
	var volumes []string
	for _, v := range pod.Spec.Volumes {
		volumes = append(volumes, v.Name)
	}
	for _, c := range slices.Concat(pod.Spec.Containers, pod.Spec.InitContainers) {
		for _, p := range plan.volumes {
			if !slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool {
				return vm.Name == p.mount.Name || vm.MountPath == p.mount.MountPath
			}) {
				t.Fatalf("container %s has no mount of %s or at %s; pod volumes %v", c.Name, p.mount.Name, p.mount.MountPath, volumes)
			}
		}
	}
}
