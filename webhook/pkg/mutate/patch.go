package mutate

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Patch decodes a pod, mutates it and returns the RFC 6902 patch from the
// pod to its mutated form (nil when nothing changed).
//
// The patch is written from what MutatePod can change (env vars prepended,
// mounts and volumes appended, one annotation set) rather than by diffing
// two encodings (gomodules.xyz/jsonpatch's CreatePatch cost 3x the whole
// no-op admission round trip): it only ever adds, so
// fields this binary does not know (a newer API) are never touched.
func (m *Mutator) Patch(raw []byte, namespace string) ([]byte, Outcome, error) {
	var fields PodFields
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, Outcome{}, fmt.Errorf("decode pod: %w", err)
	}
	return m.PatchFields(&fields, namespace)
}

// PatchFields is Patch for a pod already decoded into PodFields, so a
// caller can decode the pod in the same pass as its envelope.
func (m *Mutator) PatchFields(fields *PodFields, namespace string) ([]byte, Outcome, error) {
	pod := fields.pod()
	before := shapeOf(&pod)
	out := m.MutatePod(&pod, namespace)
	if !out.Mutated {
		return nil, out, nil
	}
	ops, err := m.patchOps(&before, &pod)
	if err != nil {
		return nil, out, err
	}
	if len(ops) == 0 {
		return nil, out, nil
	}
	return writePatch(ops), out, nil
}

// PodFields is the part of a pod MutatePod reads: names, paths, labels and
// annotations. Decoding only this is several times cheaper than a full
// corev1.Pod, and enough: the patch only ever carries elements the webhook
// adds, never the pod's own.
type PodFields struct {
	Metadata struct {
		Namespace   string            `json:"namespace"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		Containers     []slimContainer `json:"containers"`
		InitContainers []slimContainer `json:"initContainers"`
		Volumes        []struct {
			Name string `json:"name"`
		} `json:"volumes"`
	} `json:"spec"`
}

type slimContainer struct {
	Name string `json:"name"`
	Env  []struct {
		Name string `json:"name"`
	} `json:"env"`
	VolumeMounts []struct {
		Name      string `json:"name"`
		MountPath string `json:"mountPath"`
	} `json:"volumeMounts"`
}

func (s *PodFields) pod() corev1.Pod {
	var p corev1.Pod
	p.Namespace, p.Labels, p.Annotations = s.Metadata.Namespace, s.Metadata.Labels, s.Metadata.Annotations
	containers := func(in []slimContainer) []corev1.Container {
		if in == nil {
			return nil
		}
		out := make([]corev1.Container, len(in))
		for i, c := range in {
			out[i].Name = c.Name
			if c.Env != nil {
				out[i].Env = make([]corev1.EnvVar, len(c.Env))
				for j, e := range c.Env {
					out[i].Env[j].Name = e.Name
				}
			}
			if c.VolumeMounts != nil {
				out[i].VolumeMounts = make([]corev1.VolumeMount, len(c.VolumeMounts))
				for j, m := range c.VolumeMounts {
					out[i].VolumeMounts[j] = corev1.VolumeMount{Name: m.Name, MountPath: m.MountPath}
				}
			}
		}
		return out
	}
	p.Spec.Containers = containers(s.Spec.Containers)
	p.Spec.InitContainers = containers(s.Spec.InitContainers)
	if s.Spec.Volumes != nil {
		p.Spec.Volumes = make([]corev1.Volume, len(s.Spec.Volumes))
		for i, v := range s.Spec.Volumes {
			p.Spec.Volumes[i].Name = v.Name
		}
	}
	return p
}

// op is one RFC 6902 "add" operation with its value already encoded.
// Writing the patch from pre-encoded elements (encodedElements) rather than
// json.Marshal of Go values halves the cost of a mutation; the tests apply
// every patch with github.com/evanphx/json-patch to prove it right.
type op struct {
	path  string
	value []byte
}

// encodedElements caches the JSON of every element the webhook injects,
// keyed by the element itself: they are built once in New and shared, so
// an equal key is the same element.
// mountKey identifies an injected mount (corev1.VolumeMount is not
// comparable); injected mounts set no other field.
type mountKey struct {
	name, path string
	readOnly   bool
}

type encodedElements struct {
	env    map[corev1.EnvVar][]byte
	mounts map[mountKey][]byte
	vols   map[corev1.Volume][]byte
}

func (m *Mutator) encodeElements() error {
	m.encoded = encodedElements{env: map[corev1.EnvVar][]byte{}, mounts: map[mountKey][]byte{}, vols: map[corev1.Volume][]byte{}}
	var err error
	put := func(v any) []byte {
		b, e := json.Marshal(v)
		if e != nil {
			err = e
		}
		return b
	}
	for _, e := range []corev1.EnvVar{m.envPodUID, m.envEntityID, m.envHostIP, m.envService} {
		m.encoded.env[e] = put(e)
	}
	for _, plan := range m.plans {
		m.encoded.env[plan.apmEnv], m.encoded.env[plan.dsdEnv] = put(plan.apmEnv), put(plan.dsdEnv)
		for _, v := range plan.volumes {
			m.encoded.vols[v.volume], m.encoded.mounts[mountKey{v.mount.Name, v.mount.MountPath, v.mount.ReadOnly}] = put(v.volume), put(v.mount)
		}
	}
	return err
}

func (m *Mutator) encodeEnv(e corev1.EnvVar) ([]byte, error) {
	if b, ok := m.encoded.env[e]; ok {
		return b, nil
	}
	if e.ValueFrom == nil {
		// DD_EXTERNAL_ENV: its value is per container.
		out := make([]byte, 0, 32+len(e.Name)+len(e.Value))
		out = append(out, `{"name":`...)
		out = appendJSONString(out, e.Name)
		if e.Value != "" {
			out = append(out, `,"value":`...)
			out = appendJSONString(out, e.Value)
		}
		return append(out, '}'), nil
	}
	return json.Marshal(e)
}

func (m *Mutator) encodeMount(vm corev1.VolumeMount) ([]byte, error) {
	plain := vm.SubPath == "" && vm.SubPathExpr == "" && vm.MountPropagation == nil && vm.RecursiveReadOnly == nil
	if b, ok := m.encoded.mounts[mountKey{vm.Name, vm.MountPath, vm.ReadOnly}]; ok && plain {
		return b, nil
	}
	return json.Marshal(vm)
}

func (m *Mutator) encodeVolume(v corev1.Volume) ([]byte, error) {
	if b, ok := m.encoded.vols[v]; ok {
		return b, nil
	}
	return json.Marshal(v)
}

func encodeList[T any](items []T, enc func(T) ([]byte, error)) ([]byte, error) {
	out := make([]byte, 1, 128*len(items)+2)
	out[0] = '['
	for i, it := range items {
		if i > 0 {
			out = append(out, ',')
		}
		b, err := enc(it)
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	return append(out, ']'), nil
}

// appendJSONString appends s as a JSON string. Paths are built from fixed
// segments, indexes and annotation keys, plain ASCII in practice; anything
// else goes through encoding/json.
func appendJSONString(out []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s)
			return append(out, b...)
		}
	}
	out = append(out, '"')
	out = append(out, s...)
	return append(out, '"')
}

func writePatch(ops []op) []byte {
	size := 2
	for _, o := range ops {
		size += len(o.path) + len(o.value) + 40
	}
	out := make([]byte, 0, size)
	out = append(out, '[')
	for i, o := range ops {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, `{"op":"add","path":`...)
		out = appendJSONString(out, o.path)
		out = append(out, `,"value":`...)
		out = append(out, o.value...)
		out = append(out, '}')
	}
	return append(out, ']')
}

// shape is what patchOps needs to know of the pod before mutation: list
// lengths and annotations. Much cheaper than a deep copy.
type shape struct {
	env, mounts [2][]int // [containers, initContainers][i]
	volumes     int
	annotations map[string]string
}

func shapeOf(pod *corev1.Pod) shape {
	var s shape
	for g, cs := range [2][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		s.env[g], s.mounts[g] = make([]int, len(cs)), make([]int, len(cs))
		for i := range cs {
			s.env[g][i], s.mounts[g][i] = len(cs[i].Env), len(cs[i].VolumeMounts)
		}
	}
	s.volumes = len(pod.Spec.Volumes)
	if len(pod.Annotations) > 0 {
		s.annotations = make(map[string]string, len(pod.Annotations))
		for k, v := range pod.Annotations {
			s.annotations[k] = v
		}
	}
	return s
}

// patchOps returns the operations that turn a pod of shape before into
// after, given that after only differs by prepended env vars, appended
// mounts and volumes and annotation values. It checks what it can of that
// assumption and errors otherwise, so a future change to MutatePod cannot
// silently produce a wrong patch.
func (m *Mutator) patchOps(before *shape, after *corev1.Pod) ([]op, error) {
	ops := make([]op, 0, 16)
	var encErr error
	add := func(path string, v any) op {
		b, err := m.encode(v)
		if err != nil && encErr == nil {
			encErr = fmt.Errorf("encode %s: %w", path, err)
		}
		return op{path: path, value: b}
	}
	for g, group := range [2]struct {
		path       string
		containers []corev1.Container
	}{{"/spec/containers", after.Spec.Containers}, {"/spec/initContainers", after.Spec.InitContainers}} {
		if len(before.env[g]) != len(group.containers) {
			return nil, fmt.Errorf("internal: %s changed length", group.path)
		}
		for i := range group.containers {
			base := group.path + "/" + strconv.Itoa(i)
			a := &group.containers[i]
			envBefore := before.env[g][i]
			added := len(a.Env) - envBefore
			switch {
			case added < 0:
				return nil, fmt.Errorf("internal: %s/env shrank", base)
			case added > 0 && envBefore == 0:
				ops = append(ops, add(base+"/env", a.Env))
			case added > 0:
				// Inserting at 0 in reverse order yields them in order.
				for j := added - 1; j >= 0; j-- {
					ops = append(ops, add(base+"/env/0", a.Env[j]))
				}
			}
			mounts, err := appended(base+"/volumeMounts", before.mounts[g][i], len(a.VolumeMounts))
			if err != nil {
				return nil, err
			}
			for _, j := range mounts {
				if j < 0 {
					ops = append(ops, add(base+"/volumeMounts", a.VolumeMounts))
					break
				}
				ops = append(ops, add(base+"/volumeMounts/-", a.VolumeMounts[j]))
			}
		}
	}
	volumes, err := appended("/spec/volumes", before.volumes, len(after.Spec.Volumes))
	if err != nil {
		return nil, err
	}
	for _, j := range volumes {
		if j < 0 {
			ops = append(ops, add("/spec/volumes", after.Spec.Volumes))
			break
		}
		ops = append(ops, add("/spec/volumes/-", after.Spec.Volumes[j]))
	}
	if len(before.annotations) == 0 && len(after.Annotations) > 0 {
		ops = append(ops, add("/metadata/annotations", after.Annotations))
	} else {
		for k, v := range after.Annotations {
			if old, ok := before.annotations[k]; !ok || old != v {
				ops = append(ops, add("/metadata/annotations/"+escape(k), v))
			}
		}
	}
	return ops, encErr
}

func (m *Mutator) encode(v any) ([]byte, error) {
	switch v := v.(type) {
	case corev1.EnvVar:
		return m.encodeEnv(v)
	case []corev1.EnvVar:
		return encodeList(v, m.encodeEnv)
	case corev1.VolumeMount:
		return m.encodeMount(v)
	case []corev1.VolumeMount:
		return encodeList(v, m.encodeMount)
	case corev1.Volume:
		return m.encodeVolume(v)
	case []corev1.Volume:
		return encodeList(v, m.encodeVolume)
	}
	return json.Marshal(v)
}

// appended returns the indexes of the elements appended to a list that
// grew from n to m, or [-1] when it was empty and the whole list is new
// (which also replaces a null or [] in the original document).
func appended(path string, n, m int) ([]int, error) {
	switch {
	case m < n:
		return nil, fmt.Errorf("internal: %s shrank", path)
	case m == n:
		return nil, nil
	case n == 0:
		return []int{-1}, nil
	}
	idx := make([]int, 0, m-n)
	for j := n; j < m; j++ {
		idx = append(idx, j)
	}
	return idx, nil
}

// escape encodes a map key as a JSON pointer token (RFC 6901).
func escape(key string) string {
	return strings.ReplaceAll(strings.ReplaceAll(key, "~", "~0"), "/", "~1")
}
