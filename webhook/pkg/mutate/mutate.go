// Package mutate is the pure core of the webhook: given a pod and the state
// of the cluster, it decides whether and how to inject the Datadog agent
// configuration, with exactly the pod shape the Datadog Cluster Agent's
// "config" mutation produces (env order, volume and mount shapes, readOnly,
// hostPath types, the safe-to-evict annotation), and renders the change as
// an RFC 6902 JSON patch. It performs no I/O.
package mutate

import (
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
	// and without socket-file volumes, computed once: they depend on the
	// configuration only. Their pointers end up shared by mutated pods,
	// which are encoded and never modified afterwards.
	plans map[planKey]socketPlan
	// The env vars every pod gets, built once for the same reason.
	envPodUID, envEntityID, envHostIP, envService corev1.EnvVar
	// encoded holds the JSON of the elements above, so a patch is mostly
	// copied bytes rather than reflection (see patch.go).
	encoded encodedElements
}

type planKey struct{ csi, socketVolumes bool }

type socketPlan struct {
	volumes        []plannedVolume
	apmURL, dsdURL string
	apmEnv, dsdEnv corev1.EnvVar
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
	m := &Mutator{cfg: cfg, state: state, excluded: map[string]bool{}, plans: map[planKey]socketPlan{}}
	for _, csi := range []bool{false, true} {
		for _, socketVolumes := range []bool{false, true} {
			m.plans[planKey{csi, socketVolumes}] = m.planSocketVolumes(csi, socketVolumes)
		}
	}
	m.envPodUID = fieldRefEnv(datadog.EnvInternalPodUID, "metadata.uid")
	m.envEntityID = fieldRefEnv(datadog.EnvEntityID, "metadata.uid")
	m.envHostIP = fieldRefEnv(datadog.EnvAgentHost, "status.hostIP")
	m.envService = corev1.EnvVar{Name: datadog.EnvAgentHost,
		Value: cfg.AgentServiceName + "." + cfg.AgentServiceNamespace + ".svc." + cfg.ClusterDomain}
	if err := m.encodeElements(); err != nil {
		return nil, err
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
	var out Outcome
	if namespace == "" {
		namespace = pod.Namespace
	}
	if m.excluded[namespace] {
		out.Skipped = SkipExcludedNamespace
		return out
	}
	switch v, found := pod.Labels[datadog.LabelEnabled]; {
	case !found:
		if !m.cfg.MutateUnlabelled {
			out.Skipped = SkipUnlabelled
			return out
		}
	case v == "true":
	case v == "false":
		out.Skipped = SkipOptedOut
		return out
	default:
		out.Warnings = append(out.Warnings, fmt.Sprintf("label %s=%q is neither \"true\" nor \"false\"; treated as absent", datadog.LabelEnabled, v))
		if !m.cfg.MutateUnlabelled {
			out.Skipped = SkipUnlabelled
			return out
		}
	}

	mode := m.cfg.Mode
	if v, found := pod.Labels[datadog.LabelMode]; found {
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
	if v, found := pod.Labels[datadog.LabelTypeSocketVolumes]; found {
		switch strings.ToLower(v) {
		case "true":
			socketVolumes = true
		case "false":
			socketVolumes = false
		default:
			out.Warnings = append(out.Warnings, fmt.Sprintf("label %s=%q is neither \"true\" nor \"false\"; using the global setting %t", datadog.LabelTypeSocketVolumes, v, m.cfg.TypeSocketVolumes))
		}
	}

	// The Cluster Agent prepends each env var in turn, so the last one
	// injected comes first; envs is that final order: DD_INTERNAL_POD_UID,
	// DD_EXTERNAL_ENV, DD_ENTITY_ID, then the mode's variables, which lets
	// DD_EXTERNAL_ENV reference $(DD_INTERNAL_POD_UID).
	envs := make([]corev1.EnvVar, 0, 5)
	envs = append(envs, m.envPodUID,
		corev1.EnvVar{Name: datadog.EnvExternalEnv}, // value set per container
		m.envEntityID)
	changed := false
	switch mode {
	case datadog.ModeHostIP:
		envs = append(envs, m.envHostIP)
	case datadog.ModeService:
		envs = append(envs, m.envService)
	case datadog.ModeSocket, datadog.ModeCSI:
		var plan socketPlan
		out.InjectedVolumes, plan = m.injectSocketVolumes(pod, mode == datadog.ModeCSI, socketVolumes)
		changed = len(out.InjectedVolumes) > 0
		envs = append(envs, plan.dsdEnv, plan.apmEnv)
	}
	changed = prependEnv(pod.Spec.Containers, envs, false) || changed
	changed = prependEnv(pod.Spec.InitContainers, envs, true) || changed

	for _, name := range out.InjectedVolumes {
		markSafeToEvict(pod, name)
	}
	out.Mutated = changed
	return out
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
	switch psaapi.Level(labels[psaapi.EnforceLevelLabel]) {
	case psaapi.LevelBaseline, psaapi.LevelRestricted:
		return datadog.ModeHostIP
	}
	return datadog.ModeSocket
}

type plannedVolume struct {
	volume corev1.Volume
	mount  corev1.VolumeMount
}

// injectSocketVolumes adds the socket volumes of socket or csi mode and
// returns the names of the volumes added and the URLs the app must use.
func (m *Mutator) injectSocketVolumes(pod *corev1.Pod, csi, socketVolumes bool) (injected []string, plan socketPlan) {
	plan = m.plans[planKey{csi, socketVolumes}]
	for _, p := range plan.volumes {
		if injectVolume(pod, p.volume, p.mount) {
			injected = append(injected, p.volume.Name)
		}
	}
	return injected, plan
}

func (m *Mutator) planSocketVolumes(csi, socketVolumes bool) socketPlan {
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
	p.apmEnv = corev1.EnvVar{Name: datadog.EnvTraceAgentURL, Value: p.apmURL}
	p.dsdEnv = corev1.EnvVar{Name: datadog.EnvDogStatsDURL, Value: p.dsdURL}
	return p
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

// injectVolume adds volume unless the pod has one of that name, and mounts
// it in every container and init container that has no mount of that name
// or path. The volume is added only if at least one container mounts it.
func injectVolume(pod *corev1.Pod, volume corev1.Volume, mount corev1.VolumeMount) bool {
	if slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == volume.Name }) {
		return false
	}
	mounted := false
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
	if mounted {
		pod.Spec.Volumes = append(pod.Spec.Volumes, volume)
	}
	return mounted
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
