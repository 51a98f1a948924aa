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

{{- define "datadog-csi-driver.registrarImage" -}}
{{- if eq (toString .Values.registrar.image.tag | trim) "" }}
{{- fail "registrar.image.tag is empty: set it to a csi-node-driver-registrar tag, e.g. v2.18.0" }}
{{- end }}
{{- printf "%s:%s" .Values.registrar.image.repository (toString .Values.registrar.image.tag) }}
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

{{/* The APM socket's host path: global.apmHostSocketPath, else sockets.apmHostSocketPath. */}}
{{- define "datadog-csi-driver.apmHostSocketPath" -}}
{{- $g := (.Values.global | default dict).apmHostSocketPath }}
{{- if $g }}
{{- include "datadog-csi-driver.absPath" (list "global.apmHostSocketPath" $g) }}
{{- else }}
{{- include "datadog-csi-driver.absPath" (list "sockets.apmHostSocketPath" .Values.sockets.apmHostSocketPath) }}
{{- end }}
{{- end }}

{{/* The DogStatsD socket's host path: global.dsdHostSocketPath, else sockets.dsdHostSocketPath. */}}
{{- define "datadog-csi-driver.dsdHostSocketPath" -}}
{{- $g := (.Values.global | default dict).dsdHostSocketPath }}
{{- if $g }}
{{- include "datadog-csi-driver.absPath" (list "global.dsdHostSocketPath" $g) }}
{{- else }}
{{- include "datadog-csi-driver.absPath" (list "sockets.dsdHostSocketPath" .Values.sockets.dsdHostSocketPath) }}
{{- end }}
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
