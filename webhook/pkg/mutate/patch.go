package mutate

import (
	"strconv"
	"strings"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
	"github.com/datadog-csi/datadog-csi/webhook/pkg/mutate/jsonscan"
)

// Patch decodes a pod, mutates it and returns the RFC 6902 patch from the
// pod to its mutated form (nil when nothing changed).
func (m *Mutator) Patch(raw []byte, namespace string) ([]byte, Outcome, error) {
	fields, err := DecodePodFields(raw)
	if err != nil {
		return nil, Outcome{}, err
	}
	return m.PatchFields(fields, namespace)
}

// PodFields is the part of a pod the mutation reads: names, paths, labels
// and annotations. Decoding only this is several times cheaper than a full
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
		Volumes        []named         `json:"volumes"`
	} `json:"spec"`
}

type slimContainer struct {
	Name         string      `json:"name"`
	Env          []named     `json:"env"`
	VolumeMounts []slimMount `json:"volumeMounts"`
}

type slimMount struct {
	Name      string `json:"name"`
	MountPath string `json:"mountPath"`
}

// PatchFields returns the RFC 6902 patch that makes of the pod what
// MutatePod makes of it (nil when nothing changes), with the same
// Outcome. It applies MutatePod's rules to PodFields and writes each
// addition as it decides it, from JSON encoded in New: env vars
// prepended, mounts and volumes appended, the annotation set. It only ever
// adds, so fields this binary does not know (a newer API) are never
// touched. The tests (golden, fuzz) apply every patch and compare the
// result with MutatePod's pod, and compare the patch with one derived
// from MutatePod's pod.
//
// This replaced diffing two encodings with gomodules.xyz/jsonpatch (3x
// the whole no-op admission round trip), then building a corev1.Pod from
// PodFields, mutating it and deriving the patch from the result (still
// the larger part of the handler's cost; that derivation is now the
// tests' oracle, patch_reference_test.go).
//
// The error is nil today; it is the contract for an internal failure,
// which the server answers by allowing the pod unchanged.
func (m *Mutator) PatchFields(f *PodFields, namespace string) ([]byte, Outcome, error) {
	out, d := m.decide(f.Metadata.Labels, f.Metadata.Namespace, namespace)
	if out.Skipped != "" {
		return nil, out, nil
	}
	groups := [2][]slimContainer{f.Spec.Containers, f.Spec.InitContainers}
	nContainers := len(groups[0]) + len(groups[1])

	// mounted[c] has bit i set when planned volume i is mounted in
	// container c (containers, then init containers), as injectVolume
	// appends it.
	var small [16]uint8 // no allocation for most pods
	var mounted []uint8
	if nContainers <= len(small) {
		mounted = small[:nContainers]
	} else {
		mounted = make([]uint8, nContainers)
	}
	var injectedBits uint8
	if d.plan != nil {
		for i := range d.plan.volumes {
			if injectsVolume(f, groups, d.plan.volumes, i, mounted) {
				injectedBits |= 1 << i
				out.InjectedVolumes = append(out.InjectedVolumes, d.plan.volumes[i].volume.Name)
			}
		}
	}

	w := patchWriter{out: make([]byte, 0, 512+1024*nContainers)}
	w.out = append(w.out, '[')
	c := 0
	for g, group := range groups {
		prefix := "/spec/containers/"
		if g == 1 {
			prefix = "/spec/initContainers/"
		}
		for i := range group {
			w.containerEnv(prefix, i, &group[i], d.envs, g == 1)
			if mounted[c] != 0 {
				w.containerMounts(prefix, i, len(group[i].VolumeMounts), d.plan.volumes, mounted[c])
			}
			c++
		}
	}
	if injectedBits != 0 {
		first := true
		for i, v := range d.plan.volumes {
			if injectedBits&(1<<i) == 0 {
				continue
			}
			if len(f.Spec.Volumes) == 0 {
				// The list is new (or replaces a null or []).
				if first {
					w.op("/spec/volumes", "")
					w.out = append(w.out, '[')
				} else {
					w.out = append(w.out, ',')
				}
				w.out = append(w.out, v.volumeJSON...)
			} else {
				w.op("/spec/volumes/-", "")
				w.out = append(w.out, v.volumeJSON...)
				w.out = append(w.out, '}')
			}
			first = false
		}
		if len(f.Spec.Volumes) == 0 {
			w.out = append(w.out, "]}"...)
		}
		w.safeToEvict(f.Metadata.Annotations, out.InjectedVolumes)
	}
	if w.ops == 0 {
		return nil, out, nil
	}
	out.Mutated = true
	return append(w.out, ']'), out, nil
}

// injectsVolume applies injectVolume's rule to planned volume i: it is
// mounted in every container that has no mount of its name or path
// (counting the mounts of the planned volumes before it), even when the
// pod already has a volume of its name, and it is added unless the pod
// has one, only if mounted somewhere. It reports whether it is added.
func injectsVolume(f *PodFields, groups [2][]slimContainer, plan []plannedVolume, i int, mounted []uint8) bool {
	v := &plan[i]
	mountedSomewhere := false
	c := 0
	for _, group := range groups {
		for k := range group {
			if !hasMount(group[k].VolumeMounts, plan, mounted[c], v.mount.Name, v.mount.MountPath) {
				mounted[c] |= 1 << i
				mountedSomewhere = true
			}
			c++
		}
	}
	if !mountedSomewhere {
		return false
	}
	for _, existing := range f.Spec.Volumes {
		if existing.Name == v.volume.Name {
			return false
		}
	}
	return true
}

func hasMount(own []slimMount, plan []plannedVolume, planned uint8, name, mountPath string) bool {
	for _, vm := range own {
		if vm.Name == name || vm.MountPath == mountPath {
			return true
		}
	}
	for j := range plan {
		if planned&(1<<j) != 0 && (plan[j].mount.Name == name || plan[j].mount.MountPath == mountPath) {
			return true
		}
	}
	return false
}

// patchWriter appends "add" operations to a JSON array.
type patchWriter struct {
	out []byte
	ops int
}

// op opens an operation on path+suffix, up to its value.
func (w *patchWriter) op(path, suffix string) {
	if w.ops > 0 {
		w.out = append(w.out, ',')
	}
	w.ops++
	w.out = append(w.out, `{"op":"add","path":`...)
	w.out = appendJSONString(w.out, path+suffix)
	w.out = append(w.out, `,"value":`...)
}

// containerOp opens an operation on prefix<i>suffix; prefixes and
// suffixes are fixed ASCII paths.
func (w *patchWriter) containerOp(prefix string, i int, suffix string) {
	if w.ops > 0 {
		w.out = append(w.out, ',')
	}
	w.ops++
	w.out = append(w.out, `{"op":"add","path":"`...)
	w.out = append(w.out, prefix...)
	w.out = strconv.AppendInt(w.out, int64(i), 10)
	w.out = append(w.out, suffix...)
	w.out = append(w.out, `","value":`...)
}

// containerEnv prepends, as prependEnv does, the variables the container
// does not have: as its whole list when it has none, else one "add at 0"
// per variable in reverse order, which yields them in order.
func (w *patchWriter) containerEnv(prefix string, i int, c *slimContainer, envs envList, init bool) {
	var missingSmall [8]int
	missing := missingSmall[:0]
	for k, env := range envs.vars {
		if !hasName(c.Env, env.Name) {
			missing = append(missing, k)
		}
	}
	if len(missing) == 0 {
		return
	}
	if len(c.Env) == 0 {
		w.containerOp(prefix, i, "/env")
		w.out = append(w.out, '[')
		for n, k := range missing {
			if n > 0 {
				w.out = append(w.out, ',')
			}
			w.appendEnv(envs, k, c.Name, init)
		}
		w.out = append(w.out, "]}"...)
		return
	}
	for n := len(missing) - 1; n >= 0; n-- {
		w.containerOp(prefix, i, "/env/0")
		w.appendEnv(envs, missing[n], c.Name, init)
		w.out = append(w.out, '}')
	}
}

func (w *patchWriter) appendEnv(envs envList, k int, container string, init bool) {
	if b := envs.json[k]; b != nil {
		w.out = append(w.out, b...)
		return
	}
	// DD_EXTERNAL_ENV, as encoding/json writes a corev1.EnvVar.
	w.out = append(w.out, `{"name":`...)
	w.out = appendJSONString(w.out, envs.vars[k].Name)
	w.out = append(w.out, `,"value":`...)
	w.out = appendJSONString(w.out, datadog.ExternalEnvValue(container, init))
	w.out = append(w.out, '}')
}

// containerMounts appends the mounts of the planned volumes in bits: as
// the whole list when the container had none.
func (w *patchWriter) containerMounts(prefix string, i, own int, plan []plannedVolume, bits uint8) {
	first := true
	for j := range plan {
		if bits&(1<<j) == 0 {
			continue
		}
		if own == 0 {
			if first {
				w.containerOp(prefix, i, "/volumeMounts")
				w.out = append(w.out, '[')
			} else {
				w.out = append(w.out, ',')
			}
		} else {
			w.containerOp(prefix, i, "/volumeMounts/-")
		}
		w.out = append(w.out, plan[j].mountJSON...)
		if own != 0 {
			w.out = append(w.out, '}')
		}
		first = false
	}
	if own == 0 {
		w.out = append(w.out, "]}"...)
	}
}

// safeToEvict adds the injected volumes to the autoscaler's annotation as
// markSafeToEvict does: the whole map when the pod has no annotations,
// else the one value, when it changes.
func (w *patchWriter) safeToEvict(annotations map[string]string, injected []string) {
	const key = datadog.AnnotationSafeToEvictLocalVolumes
	current, found := annotations[key]
	value := current
	for _, name := range injected {
		if !listContains(value, name) {
			if value == "" {
				value = name
			} else {
				value += "," + name
			}
		}
	}
	if found && value == current {
		return
	}
	if len(annotations) == 0 {
		w.op("/metadata/annotations", "")
		w.out = append(w.out, '{')
		w.out = appendJSONString(w.out, key)
		w.out = append(w.out, ':')
		w.out = appendJSONString(w.out, value)
		w.out = append(w.out, "}}"...)
		return
	}
	w.op("/metadata/annotations/", escape(key))
	w.out = appendJSONString(w.out, value)
	w.out = append(w.out, '}')
}

// listContains reports whether the comma-separated list holds name.
func listContains(list, name string) bool {
	for list != "" {
		var item string
		item, list, _ = strings.Cut(list, ",")
		if item == name {
			return true
		}
	}
	return false
}

func hasName(list []named, name string) bool {
	for _, n := range list {
		if n.Name == name {
			return true
		}
	}
	return false
}

// appendJSONString appends s as a JSON string.
func appendJSONString(out []byte, s string) []byte { return jsonscan.AppendString(out, s) }

// escape encodes a map key as a JSON pointer token (RFC 6901).
func escape(key string) string {
	return strings.ReplaceAll(strings.ReplaceAll(key, "~", "~0"), "/", "~1")
}
