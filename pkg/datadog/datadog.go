// Package datadog is the one source of truth for the names this project shares
// with Datadog's own components: the CSI driver name, the volume-type
// vocabulary and its attribute keys, the default agent socket paths, the
// admission labels, the injected env vars, volume names and pod mount paths.
//
// Compatibility is the contract: a pod mutated by Datadog's Cluster Agent must
// be served by our driver, and a pod mutated by our webhook must be served by
// Datadog's driver. So nothing here may be renamed; add, never change.
package datadog

import (
	"path"
	"sort"
	"strings"
)

// DriverName is the CSI driver name both Datadog's driver and ours register.
const DriverName = "k8s.csi.datadoghq.com"

// Keys of a CSI volume's volumeAttributes.
const (
	// AttrType selects the volume type (one of the VolumeType constants).
	AttrType = "type"
	// AttrMode and AttrPath are the legacy (pre-"type") form: mode "socket"
	// or "local" plus the host path of the socket or its directory.
	AttrMode = "mode"
	AttrPath = "path"
)

// Keys the kubelet adds to the volume context when the CSIDriver object has
// podInfoOnMount: true.
const (
	AttrPodName      = "csi.storage.k8s.io/pod.name"
	AttrPodNamespace = "csi.storage.k8s.io/pod.namespace"
	AttrPodUID       = "csi.storage.k8s.io/pod.uid"
	AttrEphemeral    = "csi.storage.k8s.io/ephemeral"
)

// VolumeType is the value of volumeAttributes.type.
type VolumeType string

// The volume types. Socket types mount the socket file itself, directory
// types mount the directory that holds it (which survives an agent restart
// that recreates the socket).
const (
	APMSocket          VolumeType = "APMSocket"
	DSDSocket          VolumeType = "DSDSocket"
	APMSocketDirectory VolumeType = "APMSocketDirectory"
	DSDSocketDirectory VolumeType = "DSDSocketDirectory"
	// DatadogSocketsDirectory is deprecated: it mounts the DogStatsD socket's
	// directory and predates the per-socket directory types.
	DatadogSocketsDirectory VolumeType = "DatadogSocketsDirectory"
)

// Legacy values of AttrMode.
const (
	LegacyModeSocket = "socket" // path is a socket file
	LegacyModeLocal  = "local"  // path is a directory
)

// Socket names which agent socket a volume type refers to.
type Socket int

const (
	SocketAPM Socket = iota + 1 // trace agent, a stream socket (HTTP)
	SocketDSD                   // DogStatsD, a datagram socket
)

func (s Socket) String() string {
	switch s {
	case SocketAPM:
		return "apm"
	case SocketDSD:
		return "dsd"
	}
	return "unknown"
}

// VolumeTypes lists every type a driver must accept, in a stable order.
var VolumeTypes = []VolumeType{APMSocket, DSDSocket, APMSocketDirectory, DSDSocketDirectory, DatadogSocketsDirectory}

// Socket tells which agent socket t refers to and whether the volume is the
// socket's directory rather than the socket file. ok is false for an unknown type.
func (t VolumeType) Socket() (s Socket, directory bool, ok bool) {
	switch t {
	case APMSocket:
		return SocketAPM, false, true
	case DSDSocket:
		return SocketDSD, false, true
	case APMSocketDirectory:
		return SocketAPM, true, true
	case DSDSocketDirectory, DatadogSocketsDirectory:
		return SocketDSD, true, true
	}
	return 0, false, false
}

// Valid reports whether t is a known volume type.
func (t VolumeType) Valid() bool { _, _, ok := t.Socket(); return ok }

// Deprecated reports whether t is accepted only for backward compatibility.
func (t VolumeType) Deprecated() bool { return t == DatadogSocketsDirectory }

// VolumeTypeNames returns the known type names, sorted, for error messages.
func VolumeTypeNames() []string {
	names := make([]string, 0, len(VolumeTypes))
	for _, t := range VolumeTypes {
		names = append(names, string(t))
	}
	sort.Strings(names)
	return names
}

// ParseVolumeType accepts a type name exactly as Datadog spells it.
func ParseVolumeType(s string) (VolumeType, bool) {
	t := VolumeType(s)
	return t, t.Valid()
}

// Default socket paths on the host, and their file names. The webhook mounts
// sockets at the same paths inside the pod.
const (
	APMSocketFile         = "apm.socket"
	DSDSocketFile         = "dsd.socket"
	SocketDir             = "/var/run/datadog"
	DefaultAPMSocketPath  = SocketDir + "/" + APMSocketFile
	DefaultDSDSocketPath  = SocketDir + "/" + DSDSocketFile
	PodAPMSocketDirectory = SocketDir + "/apm" // csi mode, directory volumes
	PodDSDSocketDirectory = SocketDir + "/dsd"
)

// Admission labels, set on pods.
const (
	LabelEnabled           = "admission.datadoghq.com/enabled"
	LabelMode              = "admission.datadoghq.com/config.mode"
	LabelTypeSocketVolumes = "admission.datadoghq.com/config.type_socket_volumes"
)

// AnnotationSafeToEvictLocalVolumes lists volumes the cluster autoscaler may
// drop when it evicts the pod; injected volumes are added to it.
const AnnotationSafeToEvictLocalVolumes = "cluster-autoscaler.kubernetes.io/safe-to-evict-local-volumes"

// Mode is how an application reaches the agent.
type Mode string

const (
	ModeHostIP  Mode = "hostip"
	ModeService Mode = "service"
	ModeSocket  Mode = "socket" // hostPath volumes: rejected by Pod Security baseline
	ModeCSI     Mode = "csi"    // CSI inline volumes of DriverName: admitted by baseline
	ModeAuto    Mode = "auto"   // csi when the driver is installed, else what the namespace allows
)

// Modes lists the modes in documentation order.
var Modes = []Mode{ModeHostIP, ModeService, ModeSocket, ModeCSI, ModeAuto}

// ParseMode accepts a mode name case-insensitively, as the Cluster Agent does.
func ParseMode(s string) (Mode, bool) {
	m := Mode(strings.ToLower(strings.TrimSpace(s)))
	for _, known := range Modes {
		if m == known {
			return m, true
		}
	}
	return "", false
}

// Env vars the webhook injects.
const (
	EnvEntityID       = "DD_ENTITY_ID"
	EnvInternalPodUID = "DD_INTERNAL_POD_UID"
	EnvExternalEnv    = "DD_EXTERNAL_ENV"
	EnvAgentHost      = "DD_AGENT_HOST"
	EnvTraceAgentURL  = "DD_TRACE_AGENT_URL"
	EnvDogStatsDURL   = "DD_DOGSTATSD_URL"
)

// ExternalEnvValue is the value of DD_EXTERNAL_ENV ("External Data") for a
// container, in the Cluster Agent's format it-<init>,cn-<name>,pu-<pod uid>.
// The pod UID is a dependent env var reference, so DD_INTERNAL_POD_UID must
// precede DD_EXTERNAL_ENV in the container's env list.
func ExternalEnvValue(containerName string, initContainer bool) string {
	it := "it-false"
	if initContainer {
		it = "it-true"
	}
	return it + ",cn-" + containerName + ",pu-$(" + EnvInternalPodUID + ")"
}

// Names of the volumes the webhook injects.
const (
	VolumeSocketDir = "datadog"     // socket mode, one hostPath dir
	VolumeAPMDir    = "datadog-apm" // directory volumes (csi, or socket with split dirs)
	VolumeDSDDir    = "datadog-dsd"
	VolumeAPMSocket = "datadog-trace-agent" // socket-file volumes (typeSocketVolumes)
	VolumeDSDSocket = "datadog-dogstatsd"
)

// UnixURL returns the unix:// URL of a socket path, as DD_*_URL expect it.
func UnixURL(socketPath string) string { return "unix://" + socketPath }

// SocketFileName returns the file name of a socket path ("apm.socket").
func SocketFileName(socketPath string) string { return path.Base(socketPath) }
