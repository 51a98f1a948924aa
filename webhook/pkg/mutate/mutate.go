// Package mutate is the pure core of the webhook: given a pod and the state
// of the cluster, it decides whether and how to inject the Datadog agent
// configuration, with exactly the pod shape the Datadog Cluster Agent's
// "config" mutation produces (env order, volume and mount shapes, readOnly,
// hostPath types, the safe-to-evict annotation), and renders the change as
// an RFC 6902 JSON patch. It performs no I/O.
package mutate

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
	corev1 "k8s.io/api/core/v1"
	psaapi "k8s.io/pod-security-admission/api"
)

// Config is the global injection setting; pod labels override some of it.
type Config struct {
	// Mode is the global mode; a pod's config.mode label overrides it.
	Mode datadog.Mode
	// TypeSocketVolumes mounts the socket files rather than their
	// directories; a pod's config.type_socket_volumes label overrides it.
	TypeSocketVolumes bool
	// MutateUnlabelled mutates pods without the enabled label.
	MutateUnlabelled bool
	// APMSocketPath and DSDSocketPath are the agent's sockets on the host.
	APMSocketPath string
	DSDSocketPath string
	// AgentServiceName.AgentServiceNamespace.svc.ClusterDomain is
	// DD_AGENT_HOST in service mode.
	AgentServiceName      string
	AgentServiceNamespace string
	ClusterDomain         string
	// ExcludedNamespaces are never mutated (the caller adds its own).
	ExcludedNamespaces []string
}

// ClusterState answers the questions mode "auto" asks. Implementations must
// answer from a cache: they are called on every admission.
type ClusterState interface {
	// CSIDriverInstalled reports whether the CSIDriver object of
	// datadog.DriverName exists.
	CSIDriverInstalled() bool
	// NamespaceLabels returns the labels of a namespace; known is false
	// when the namespace is not (yet) in the cache.
	NamespaceLabels(namespace string) (labels map[string]string, known bool)
}

// StaticClusterState is a ClusterState with fixed answers, for the inject
// subcommand and tests.
type StaticClusterState struct {
	CSIDriver bool
	// Namespaces maps a namespace name to its labels.
	Namespaces map[string]map[string]string
}

// CSIDriverInstalled implements ClusterState.
func (s StaticClusterState) CSIDriverInstalled() bool { return s.CSIDriver }

// NamespaceLabels implements ClusterState.
func (s StaticClusterState) NamespaceLabels(ns string) (map[string]string, bool) {
	l, ok := s.Namespaces[ns]
	return l, ok
}

// Mutator injects the agent configuration into pods. It is safe for
// concurrent use.
type Mutator struct {
	cfg      Config
	state    ClusterState
	excluded map[string]bool
	// plans are the socket volumes and URLs of socket and csi mode, with
	// and without socket-file volumes, computed once with their JSON: they
	// depend on the configuration only, and a patch is then mostly copied
	// bytes (see patch.go). Their pointers end up shared by mutated pods,
	// which are encoded and never modified afterwards.
	plans map[planKey]*socketPlan
	// The env vars of the other modes, built once for the same reasons.
	envsCommon, envsHostIP, envsService envList
}

type planKey struct{ csi, socketVolumes bool }

type socketPlan struct {
	volumes        []plannedVolume
	apmURL, dsdURL string
	envs           envList
}

// envList is the env vars a mode prepends, in their final order, with
// their JSON; DD_EXTERNAL_ENV has none, its value is per container.
type envList struct {
	vars []corev1.EnvVar
	json [][]byte
}

func newEnvList(vars ...corev1.EnvVar) (envList, error) {
	l := envList{vars: vars, json: make([][]byte, len(vars))}
	for i, v := range vars {
		if v.Name == datadog.EnvExternalEnv {
			continue
		}
		b, err := json.Marshal(v)
		if err != nil {
			return l, fmt.Errorf("encode %s: %w", v.Name, err)
		}
		l.json[i] = b
	}
	return l, nil
}

// New validates cfg and returns a Mutator.
func New(cfg Config, state ClusterState) (*Mutator, error) {
	if _, ok := datadog.ParseMode(string(cfg.Mode)); !ok || string(cfg.Mode) != strings.ToLower(string(cfg.Mode)) {
		return nil, fmt.Errorf("mode %q: want one of %s", cfg.Mode, modeNames())
	}
	for name, p := range map[string]string{"APM socket path": cfg.APMSocketPath, "DogStatsD socket path": cfg.DSDSocketPath} {
		if !path.IsAbs(p) || path.Clean(p) != p || path.Base(p) == "/" {
			return nil, fmt.Errorf("%s %q: want a clean absolute path to a socket file", name, p)
		}
	}
	// Any pod may ask for service mode by label, whatever the global mode.
	if cfg.AgentServiceName == "" || cfg.AgentServiceNamespace == "" || cfg.ClusterDomain == "" {
		return nil, errors.New("agent service name, namespace and cluster domain must be set (service mode)")
	}
	if state == nil {
		state = StaticClusterState{}
	}
	m := &Mutator{cfg: cfg, state: state, excluded: map[string]bool{}, plans: map[planKey]*socketPlan{}}
	// The Cluster Agent prepends each env var in turn, so the last one
	// injected comes first; this is that final order: DD_INTERNAL_POD_UID,
	// DD_EXTERNAL_ENV, DD_ENTITY_ID, then the mode's variables, which lets
	// DD_EXTERNAL_ENV reference $(DD_INTERNAL_POD_UID).
	common := []corev1.EnvVar{
		fieldRefEnv(datadog.EnvInternalPodUID, "metadata.uid"),
		{Name: datadog.EnvExternalEnv}, // value set per container
		fieldRefEnv(datadog.EnvEntityID, "metadata.uid"),
	}
	withCommon := func(vars ...corev1.EnvVar) (envList, error) {
		return newEnvList(append(slices.Clip(common), vars...)...)
	}
	var err error
	if m.envsCommon, err = withCommon(); err != nil {
		return nil, err
	}
	if m.envsHostIP, err = withCommon(fieldRefEnv(datadog.EnvAgentHost, "status.hostIP")); err != nil {
		return nil, err
	}
	if m.envsService, err = withCommon(corev1.EnvVar{Name: datadog.EnvAgentHost,
		Value: cfg.AgentServiceName + "." + cfg.AgentServiceNamespace + ".svc." + cfg.ClusterDomain}); err != nil {
		return nil, err
	}
	for _, csi := range []bool{false, true} {
		for _, socketVolumes := range []bool{false, true} {
			p := m.planSocketVolumes(csi, socketVolumes)
			p.envs, err = withCommon(
				corev1.EnvVar{Name: datadog.EnvDogStatsDURL, Value: p.dsdURL},
				corev1.EnvVar{Name: datadog.EnvTraceAgentURL, Value: p.apmURL})
			if err != nil {
				return nil, err
			}
			if len(p.volumes) > 8 {
				// PatchFields tracks planned volumes in a uint8 bit set.
				return nil, fmt.Errorf("internal: %d planned volumes, at most 8 supported", len(p.volumes))
			}
			for i := range p.volumes {
				v := &p.volumes[i]
				if v.volumeJSON, err = json.Marshal(v.volume); err != nil {
					return nil, fmt.Errorf("encode volume %s: %w", v.volume.Name, err)
				}
				if v.mountJSON, err = json.Marshal(v.mount); err != nil {
					return nil, fmt.Errorf("encode mount %s: %w", v.mount.Name, err)
				}
			}
			m.plans[planKey{csi, socketVolumes}] = p
		}
	}
	for _, ns := range cfg.ExcludedNamespaces {
		if ns = strings.TrimSpace(ns); ns != "" {
			m.excluded[ns] = true
		}
	}
	return m, nil
}

func modeNames() string {
	names := make([]string, 0, len(datadog.Modes))
	for _, m := range datadog.Modes {
		names = append(names, string(m))
	}
	return strings.Join(names, ", ")
}

// Outcome says what MutatePod did and why.
type Outcome struct {
	// Mutated is true when the pod changed.
	Mutated bool
	// Skipped names why the pod was not considered ("" when it was).
	Skipped string
	// Mode is the resolved mode ("" when skipped).
	Mode datadog.Mode
	// Warnings are returned to the client as admission warnings.
	Warnings []string
	// InjectedVolumes lists the volumes added to the pod.
	InjectedVolumes []string
}

// Reasons a pod is left alone.
const (
	SkipExcludedNamespace = "excluded-namespace"
	SkipOptedOut          = "opted-out"
	SkipUnlabelled        = "unlabelled"
)

// MutatePod mutates pod in place. namespace is the namespace of the
// admission request (a pod being created may not carry it yet).
func (m *Mutator) MutatePod(pod *corev1.Pod, namespace string) Outcome {
	out, d := m.decide(pod.Labels, pod.Namespace, namespace)
	if out.Skipped != "" {
		return out
	}
	changed := false
	if d.plan != nil {
		for _, p := range d.plan.volumes {
			added, mounted := injectVolume(pod, p.volume, p.mount)
			if added {
				out.InjectedVolumes = append(out.InjectedVolumes, p.volume.Name)
			}
			changed = changed || mounted
		}
	}
	changed = prependEnv(pod.Spec.Containers, d.envs.vars, false) || changed
	changed = prependEnv(pod.Spec.InitContainers, d.envs.vars, true) || changed

	for _, name := range out.InjectedVolumes {
		markSafeToEvict(pod, name)
	}
	out.Mutated = changed
	return out
}

// decision is what a pod gets, decided from its labels and namespace
// alone; MutatePod applies it to a corev1.Pod, PatchFields writes it as a
// patch of the pod's JSON.
type decision struct {
	// envs are the variables to prepend (DD_EXTERNAL_ENV's value is set
	// per container).
	envs envList
	// plan holds the volumes of socket and csi mode, nil otherwise.
	plan *socketPlan
}

// decide resolves whether and how a pod is mutated. out.Skipped is set
// when it is not.
func (m *Mutator) decide(labels map[string]string, podNamespace, namespace string) (out Outcome, d decision) {
	if namespace == "" {
		namespace = podNamespace
	}
	if m.excluded[namespace] {
		out.Skipped = SkipExcludedNamespace
		return out, d
	}
	switch v, found := labels[datadog.LabelEnabled]; {
	case !found:
		if !m.cfg.MutateUnlabelled {
			out.Skipped = SkipUnlabelled
			return out, d
		}
	case v == "true":
	case v == "false":
		out.Skipped = SkipOptedOut
		return out, d
	default:
		out.Warnings = append(out.Warnings, fmt.Sprintf("label %s=%q is neither \"true\" nor \"false\"; treated as absent", datadog.LabelEnabled, v))
		if !m.cfg.MutateUnlabelled {
			out.Skipped = SkipUnlabelled
			return out, d
		}
	}

	mode := m.cfg.Mode
	if v, found := labels[datadog.LabelMode]; found {
		if parsed, ok := datadog.ParseMode(v); ok {
			mode = parsed
		} else {
			out.Warnings = append(out.Warnings, fmt.Sprintf("label %s=%q is not one of %s; using the global mode %q", datadog.LabelMode, v, modeNames(), m.cfg.Mode))
		}
	}
	if mode == datadog.ModeAuto {
		mode = m.resolveAuto(namespace)
	}
	out.Mode = mode

	socketVolumes := m.cfg.TypeSocketVolumes
	if v, found := labels[datadog.LabelTypeSocketVolumes]; found {
		switch strings.ToLower(v) {
		case "true":
			socketVolumes = true
		case "false":
			socketVolumes = false
		default:
			out.Warnings = append(out.Warnings, fmt.Sprintf("label %s=%q is neither \"true\" nor \"false\"; using the global setting %t", datadog.LabelTypeSocketVolumes, v, m.cfg.TypeSocketVolumes))
		}
	}

	switch mode {
	case datadog.ModeHostIP:
		d.envs = m.envsHostIP
	case datadog.ModeService:
		d.envs = m.envsService
	case datadog.ModeSocket, datadog.ModeCSI:
		plan := m.plans[planKey{mode == datadog.ModeCSI, socketVolumes}]
		d.envs, d.plan = plan.envs, plan
	default:
		d.envs = m.envsCommon
	}
	return out, d
}

// resolveAuto picks the mode for "auto": csi when the driver is installed;
// otherwise the one mode Pod Security cannot reject in the namespace.
func (m *Mutator) resolveAuto(namespace string) datadog.Mode {
	if m.state.CSIDriverInstalled() {
		return datadog.ModeCSI
	}
	labels, known := m.state.NamespaceLabels(namespace)
	if !known {
		// An unknown namespace might enforce anything: hostPath could be
		// rejected, hostip never is.
		return datadog.ModeHostIP
	}
	// hostPath only where nothing is enforced. Pod Security enforces
	// restricted for a level it cannot parse ("Baseline", "strict"), so only
	// an absent label or exactly "privileged" means socket is safe.
	switch level, set := labels[psaapi.EnforceLevelLabel]; {
	case !set, psaapi.Level(level) == psaapi.LevelPrivileged:
		return datadog.ModeSocket
	}
	return datadog.ModeHostIP
}

type plannedVolume struct {
	volume corev1.Volume
	mount  corev1.VolumeMount
	// Their JSON, for patches.
	volumeJSON, mountJSON []byte
}

func (m *Mutator) planSocketVolumes(csi, socketVolumes bool) *socketPlan {
	apmHostDir, apmFile := path.Split(m.cfg.APMSocketPath)
	dsdHostDir, dsdFile := path.Split(m.cfg.DSDSocketPath)
	apmHostDir, dsdHostDir = path.Clean(apmHostDir), path.Clean(dsdHostDir)
	podDir := datadog.SocketDir

	var p socketPlan
	switch {
	case socketVolumes:
		apmPodPath := podDir + "/" + apmFile
		dsdPodPath := podDir + "/" + dsdFile
		p.apmURL, p.dsdURL = datadog.UnixURL(apmPodPath), datadog.UnixURL(dsdPodPath)
		if csi {
			p.volumes = []plannedVolume{
				csiVolume(datadog.VolumeDSDSocket, dsdPodPath, datadog.DSDSocket),
				csiVolume(datadog.VolumeAPMSocket, apmPodPath, datadog.APMSocket),
			}
		} else {
			p.volumes = []plannedVolume{
				hostPathVolume(datadog.VolumeDSDSocket, m.cfg.DSDSocketPath, dsdPodPath, corev1.HostPathSocket),
				hostPathVolume(datadog.VolumeAPMSocket, m.cfg.APMSocketPath, apmPodPath, corev1.HostPathSocket),
			}
		}
	case csi || apmHostDir != dsdHostDir:
		// Two directory volumes at distinct mount points, as the Cluster
		// Agent always does with CSI so both sockets are reachable whatever
		// the host layout.
		apmPodDir, dsdPodDir := datadog.PodAPMSocketDirectory, datadog.PodDSDSocketDirectory
		p.apmURL, p.dsdURL = datadog.UnixURL(apmPodDir+"/"+apmFile), datadog.UnixURL(dsdPodDir+"/"+dsdFile)
		if csi {
			p.volumes = []plannedVolume{
				csiVolume(datadog.VolumeDSDDir, dsdPodDir, datadog.DSDSocketDirectory),
				csiVolume(datadog.VolumeAPMDir, apmPodDir, datadog.APMSocketDirectory),
			}
		} else {
			p.volumes = []plannedVolume{
				hostPathVolume(datadog.VolumeDSDDir, dsdHostDir, dsdPodDir, corev1.HostPathDirectoryOrCreate),
				hostPathVolume(datadog.VolumeAPMDir, apmHostDir, apmPodDir, corev1.HostPathDirectoryOrCreate),
			}
		}
	default:
		p.apmURL, p.dsdURL = datadog.UnixURL(podDir+"/"+apmFile), datadog.UnixURL(podDir+"/"+dsdFile)
		p.volumes = []plannedVolume{hostPathVolume(datadog.VolumeSocketDir, dsdHostDir, podDir, corev1.HostPathDirectoryOrCreate)}
	}
	return &p
}

func hostPathVolume(name, hostPath, mountPath string, t corev1.HostPathType) plannedVolume {
	return plannedVolume{
		volume: corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
			HostPath: &corev1.HostPathVolumeSource{Path: hostPath, Type: &t},
		}},
		mount: corev1.VolumeMount{Name: name, MountPath: mountPath, ReadOnly: true},
	}
}

func csiVolume(name, mountPath string, t datadog.VolumeType) plannedVolume {
	readOnly := true
	return plannedVolume{
		volume: corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
			CSI: &corev1.CSIVolumeSource{
				Driver:           datadog.DriverName,
				ReadOnly:         &readOnly,
				VolumeAttributes: map[string]string{datadog.AttrType: string(t)},
			},
		}},
		mount: corev1.VolumeMount{Name: name, MountPath: mountPath, ReadOnly: true},
	}
}

func fieldRefEnv(name, fieldPath string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{FieldPath: fieldPath},
	}}
}

// prependEnv puts envs before each container's own variables, skipping
// any name the container already has. Prepending lets the app's own
// variables reference the injected ones. DD_EXTERNAL_ENV gets its
// per-container value here.
func prependEnv(containers []corev1.Container, envs []corev1.EnvVar, init bool) bool {
	changed := false
	for i := range containers {
		c := &containers[i]
		var merged []corev1.EnvVar
		for _, env := range envs {
			if slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == env.Name }) {
				continue
			}
			if merged == nil {
				merged = make([]corev1.EnvVar, 0, len(envs)+len(c.Env))
			}
			if env.Name == datadog.EnvExternalEnv {
				env.Value = datadog.ExternalEnvValue(c.Name, init)
			}
			merged = append(merged, env)
		}
		if merged != nil {
			c.Env = append(merged, c.Env...)
			changed = true
		}
	}
	return changed
}

// injectVolume mounts volume in every container and init container that
// has no mount of that name or path, and adds it unless the pod has a
// volume of that name. A pod that has the volume still gets the mount in
// the containers that lack it: on reinvocation another webhook may have
// added a container, which gets the socket env vars and so needs the
// socket too. The volume is added only if at least one container mounts
// it; mounted says whether any container got the mount. This is the
// Cluster Agent's rule too (PatchInjectVolume).
func injectVolume(pod *corev1.Pod, volume corev1.Volume, mount corev1.VolumeMount) (added, mounted bool) {
	for _, containers := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for i := range containers {
			c := &containers[i]
			if slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool {
				return vm.Name == mount.Name || vm.MountPath == mount.MountPath
			}) {
				continue
			}
			c.VolumeMounts = append(c.VolumeMounts, mount)
			mounted = true
		}
	}
	if !mounted || slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == volume.Name }) {
		return false, mounted
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes, volume)
	return true, true
}

// markSafeToEvict adds a volume to the cluster autoscaler's list of local
// volumes it may drop, keeping whatever the list held.
func markSafeToEvict(pod *corev1.Pod, volume string) {
	current := pod.Annotations[datadog.AnnotationSafeToEvictLocalVolumes]
	var names []string
	if current != "" {
		names = strings.Split(current, ",")
	}
	if slices.Contains(names, volume) {
		return
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[datadog.AnnotationSafeToEvictLocalVolumes] = strings.Join(append(names, volume), ",")
}
