{{/*
Helpers of the datadog-csi-driver chart. Every name starts with the chart name
so that, inside the datadog-csi umbrella, they never collide with the
webhook chart's helpers.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "datadog-csi-driver.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* release-chart, or fullnameOverride; the release name alone if it already contains the chart name. */}}
{{- define "datadog-csi-driver.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The DaemonSet name and its selector label value: "<name>-node-server", exactly
as in Datadog's chart. A DaemonSet's selector is immutable, so keeping both lets
a release installed from Datadog's chart be upgraded to this one in place.
*/}}
{{- define "datadog-csi-driver.daemonsetName" -}}
{{- printf "%s-node-server" (include "datadog-csi-driver.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "datadog-csi-driver.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* app.kubernetes.io labels of every object. */}}
{{- define "datadog-csi-driver.labels" -}}
helm.sh/chart: {{ include "datadog-csi-driver.chart" . }}
app.kubernetes.io/name: {{ include "datadog-csi-driver.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: csi-driver
app.kubernetes.io/part-of: datadog-csi
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The driver image tag: image.tag, or the appVersion when unset; empty fails. */}}
{{- define "datadog-csi-driver.imageTag" -}}
{{- $tag := .Values.image.tag }}
{{- if kindIs "invalid" $tag }}
{{- .Chart.AppVersion }}
{{- else if eq (toString $tag | trim) "" }}
{{- fail "image.tag is empty: set it to an image tag, or leave it unset (null) to use the chart's appVersion" }}
{{- else }}
{{- toString $tag }}
{{- end }}
{{- end }}

{{/*
The default image repositories, repeated from values.yaml (the chart tests
compare them): a repository set to null or "" means the default, as in values
files generated from Datadog's early charts, whose `repository:` was empty.
Helm deletes a key set to null, so values.yaml's default is gone by then.
*/}}
{{- define "datadog-csi-driver.defaultRepository" -}}
ghcr.io/datadog-csi/datadog-csi-driver
{{- end }}

{{- define "datadog-csi-driver.defaultRegistrarRepository" -}}
registry.k8s.io/sig-storage/csi-node-driver-registrar
{{- end }}

{{/* The driver image: image.repository (the default when null or empty) and the tag. */}}
{{- define "datadog-csi-driver.image" -}}
{{- $repo := toString (.Values.image.repository | default "") | trim }}
{{- printf "%s:%s" ($repo | default (include "datadog-csi-driver.defaultRepository" .)) (include "datadog-csi-driver.imageTag" .) }}
{{- end }}

{{- define "datadog-csi-driver.registrarImage" -}}
{{- $repo := toString (.Values.registrar.image.repository | default "") | trim }}
{{- $tag := .Values.registrar.image.tag }}
{{- if or (kindIs "invalid" $tag) (eq (toString $tag | trim) "") }}
{{- fail "registrar.image.tag must not be empty: set it to a csi-node-driver-registrar tag, or remove it from your values for the chart's pinned default" }}
{{- end }}
{{- printf "%s:%s" ($repo | default (include "datadog-csi-driver.defaultRegistrarRepository" .)) (toString $tag) }}
{{- end }}

{{/*
datadog-csi-driver.absPath checks that a value is an absolute, clean path
(as the driver requires) and returns it. Argument: (list "name.of.value" value).
*/}}
{{- define "datadog-csi-driver.absPath" -}}
{{- $name := index . 0 }}
{{- $path := toString (index . 1) }}
{{- if not (regexMatch "^(/([^/.][^/]*|\\.[^/.][^/]*|\\.\\.[^/]+))+$" $path) }}
{{- fail (printf "%s must be an absolute, clean path like /var/run/datadog/apm.socket (no trailing slash, no . or .. segments); got %q" $name $path) }}
{{- end }}
{{- $path }}
{{- end }}

{{/*
datadog-csi-driver.socketPath: a socket's host path, from the global value when
set (a parent chart, the datadog-csi umbrella, sets it once for the driver and
the webhook), else from the chart's own value. An own value that is neither the
default nor the global's would be silently ignored, so it fails instead.
Argument: (list "global.name" global "own.name" own default).
*/}}
{{- define "datadog-csi-driver.socketPath" -}}
{{- $gName := index . 0 }}
{{- $g := toString (index . 1 | default "") }}
{{- $name := index . 2 }}
{{- $own := toString (index . 3 | default "") }}
{{- $default := index . 4 }}
{{- if $g }}
{{- if and $own (ne $own $g) (ne $own $default) }}
{{- fail (printf "%s %q differs from %s %q, which overrides it: set the path once, in %s (in the datadog-csi umbrella both the driver and the webhook use it), and remove %s" $name $own $gName $g $gName $name) }}
{{- end }}
{{- include "datadog-csi-driver.absPath" (list $gName $g) }}
{{- else }}
{{- include "datadog-csi-driver.absPath" (list $name $own) }}
{{- end }}
{{- end }}

{{/* The APM socket's host path: global.apmHostSocketPath, else sockets.apmHostSocketPath (default repeated from values.yaml). */}}
{{- define "datadog-csi-driver.apmHostSocketPath" -}}
{{- include "datadog-csi-driver.socketPath" (list "global.apmHostSocketPath" (.Values.global | default dict).apmHostSocketPath "sockets.apmHostSocketPath" .Values.sockets.apmHostSocketPath "/var/run/datadog/apm.socket") }}
{{- end }}

{{/* The DogStatsD socket's host path: global.dsdHostSocketPath, else sockets.dsdHostSocketPath (default repeated from values.yaml). */}}
{{- define "datadog-csi-driver.dsdHostSocketPath" -}}
{{- include "datadog-csi-driver.socketPath" (list "global.dsdHostSocketPath" (.Values.global | default dict).dsdHostSocketPath "sockets.dsdHostSocketPath" .Values.sockets.dsdHostSocketPath "/var/run/datadog/dsd.socket") }}
{{- end }}

{{/* The kubelet root directory, without a trailing slash. */}}
{{- define "datadog-csi-driver.kubeletRootDir" -}}
{{- include "datadog-csi-driver.absPath" (list "kubeletRootDir" .Values.kubeletRootDir) }}
{{- end }}

{{/* The CSI driver name. Fixed: Datadog's Cluster Agent and pods' volumes name it. */}}
{{- define "datadog-csi-driver.driverName" -}}
k8s.csi.datadoghq.com
{{- end }}

{{/* The host directory holding the driver's CSI socket (mounted at /csi). */}}
{{- define "datadog-csi-driver.pluginDir" -}}
{{- printf "%s/plugins/%s" (include "datadog-csi-driver.kubeletRootDir" .) (include "datadog-csi-driver.driverName" .) }}
{{- end }}
