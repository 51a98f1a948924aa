package mutate

import (
	"encoding/json"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

// referencePatch is the patch the way it was first derived, kept as an
// oracle for PatchFields: build a corev1.Pod from the fields, run
// MutatePod, and write the additions found by comparing list lengths and
// annotations before and after, encoding every element with
// encoding/json.
func (m *Mutator) referencePatch(f *PodFields, namespace string) ([]byte, Outcome, error) {
	pod := f.pod()
	before := shapeOf(&pod)
	out := m.MutatePod(&pod, namespace)
	if !out.Mutated {
		return nil, out, nil
	}
	ops, err := referenceOps(&before, &pod)
	if err != nil || len(ops) == 0 {
		return nil, out, err
	}
	return writeOps(ops), out, nil
}

func (s *PodFields) pod() corev1.Pod {
	var p corev1.Pod
	p.Namespace, p.Labels, p.Annotations = s.Metadata.Namespace, s.Metadata.Labels, s.Metadata.Annotations
	if p.Annotations != nil {
		// MutatePod writes to it; f must stay as decoded.
		p.Annotations = make(map[string]string, len(s.Metadata.Annotations))
		for k, v := range s.Metadata.Annotations {
			p.Annotations[k] = v
		}
	}
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

type referenceOp struct {
	path  string
	value any
}

func writeOps(ops []referenceOp) []byte {
	out := []byte{'['}
	for i, o := range ops {
		if i > 0 {
			out = append(out, ',')
		}
		value, err := json.Marshal(o.value)
		if err != nil {
			panic(err)
		}
		out = append(out, `{"op":"add","path":`...)
		out = appendJSONString(out, o.path)
		out = append(out, `,"value":`...)
		out = append(out, value...)
		out = append(out, '}')
	}
	return append(out, ']')
}

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

func referenceOps(before *shape, after *corev1.Pod) ([]referenceOp, error) {
	var ops []referenceOp
	for g, group := range [2]struct {
		path       string
		containers []corev1.Container
	}{{"/spec/containers", after.Spec.Containers}, {"/spec/initContainers", after.Spec.InitContainers}} {
		if len(before.env[g]) != len(group.containers) {
			return nil, fmt.Errorf("%s changed length", group.path)
		}
		for i := range group.containers {
			base := group.path + "/" + strconv.Itoa(i)
			a := &group.containers[i]
			envBefore := before.env[g][i]
			added := len(a.Env) - envBefore
			switch {
			case added < 0:
				return nil, fmt.Errorf("%s/env shrank", base)
			case added > 0 && envBefore == 0:
				ops = append(ops, referenceOp{base + "/env", a.Env})
			case added > 0:
				for j := added - 1; j >= 0; j-- {
					ops = append(ops, referenceOp{base + "/env/0", a.Env[j]})
				}
			}
			n := before.mounts[g][i]
			switch {
			case len(a.VolumeMounts) < n:
				return nil, fmt.Errorf("%s/volumeMounts shrank", base)
			case len(a.VolumeMounts) > n && n == 0:
				ops = append(ops, referenceOp{base + "/volumeMounts", a.VolumeMounts})
			default:
				for _, vm := range a.VolumeMounts[n:] {
					ops = append(ops, referenceOp{base + "/volumeMounts/-", vm})
				}
			}
		}
	}
	n := before.volumes
	switch {
	case len(after.Spec.Volumes) < n:
		return nil, fmt.Errorf("/spec/volumes shrank")
	case len(after.Spec.Volumes) > n && n == 0:
		ops = append(ops, referenceOp{"/spec/volumes", after.Spec.Volumes})
	default:
		for _, v := range after.Spec.Volumes[n:] {
			ops = append(ops, referenceOp{"/spec/volumes/-", v})
		}
	}
	if len(before.annotations) == 0 && len(after.Annotations) > 0 {
		ops = append(ops, referenceOp{"/metadata/annotations", after.Annotations})
	} else {
		for k, v := range after.Annotations {
			if old, ok := before.annotations[k]; !ok || old != v {
				ops = append(ops, referenceOp{"/metadata/annotations/" + escape(k), v})
			}
		}
	}
	return ops, nil
}
