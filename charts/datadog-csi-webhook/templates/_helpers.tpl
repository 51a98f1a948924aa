{{/*
Helpers of the datadog-csi-webhook chart. Every name starts with the chart
name so that, inside the datadog-csi umbrella, they never collide with the
driver chart's helpers.
*/}}

{{- define "datadog-csi-webhook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* release-chart, or fullnameOverride; the release name alone if it already contains the chart name. */}}
{{- define "datadog-csi-webhook.fullname" -}}
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

{{- define "datadog-csi-webhook.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "datadog-csi-webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "datadog-csi-webhook.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* app.kubernetes.io labels of every object. */}}
{{- define "datadog-csi-webhook.labels" -}}
helm.sh/chart: {{ include "datadog-csi-webhook.chart" . }}
{{ include "datadog-csi-webhook.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: admission-webhook
app.kubernetes.io/part-of: datadog-csi
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The webhook image tag: image.tag, or the appVersion when unset; empty fails. */}}
{{- define "datadog-csi-webhook.imageTag" -}}
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
The webhook image. An empty or null repository fails rather than rendering
":<tag>"; Helm deletes a key set to null, so the default is gone by then.
*/}}
{{- define "datadog-csi-webhook.image" -}}
{{- $repo := toString (.Values.image.repository | default "") | trim }}
{{- if not $repo }}
{{- fail "image.repository must not be empty: set it to an image repository, or remove it from your values for the default ghcr.io/datadog-csi/datadog-csi-webhook" }}
{{- end }}
{{- printf "%s:%s" $repo (include "datadog-csi-webhook.imageTag" .) }}
{{- end }}

{{/* Checks an absolute, clean path and returns it. Argument: (list "value.name" value). */}}
{{- define "datadog-csi-webhook.absPath" -}}
{{- $name := index . 0 }}
{{- $path := toString (index . 1) }}
{{- if not (regexMatch "^(/([^/.][^/]*|\\.[^/.][^/]*|\\.\\.[^/]+))+$" $path) }}
{{- fail (printf "%s must be an absolute, clean path like /var/run/datadog/apm.socket (no trailing slash, no . or .. segments); got %q" $name $path) }}
{{- end }}
{{- $path }}
{{- end }}

{{/*
datadog-csi-webhook.socketPath: a socket's host path, from the global value when
set (a parent chart, the datadog-csi umbrella, sets it once for the driver and
the webhook), else from the chart's own value. An own value that is neither the
default nor the global's would be silently ignored, so it fails instead.
Argument: (list "global.name" global "own.name" own default).
*/}}
{{- define "datadog-csi-webhook.socketPath" -}}
{{- $gName := index . 0 }}
{{- $g := toString (index . 1 | default "") }}
{{- $name := index . 2 }}
{{- $own := toString (index . 3 | default "") }}
{{- $default := index . 4 }}
{{- if $g }}
{{- if and $own (ne $own $g) (ne $own $default) }}
{{- fail (printf "%s %q differs from %s %q, which overrides it: set the path once, in %s (in the datadog-csi umbrella both the driver and the webhook use it), and remove %s" $name $own $gName $g $gName $name) }}
{{- end }}
{{- include "datadog-csi-webhook.absPath" (list $gName $g) }}
{{- else }}
{{- include "datadog-csi-webhook.absPath" (list $name $own) }}
{{- end }}
{{- end }}

{{/* The APM socket's host path: global.apmHostSocketPath, else apmSocketPath (default repeated from values.yaml). */}}
{{- define "datadog-csi-webhook.apmSocketPath" -}}
{{- include "datadog-csi-webhook.socketPath" (list "global.apmHostSocketPath" (.Values.global | default dict).apmHostSocketPath "apmSocketPath" .Values.apmSocketPath "/var/run/datadog/apm.socket") }}
{{- end }}

{{/* The DogStatsD socket's host path: global.dsdHostSocketPath, else dsdSocketPath (default repeated from values.yaml). */}}
{{- define "datadog-csi-webhook.dsdSocketPath" -}}
{{- include "datadog-csi-webhook.socketPath" (list "global.dsdHostSocketPath" (.Values.global | default dict).dsdHostSocketPath "dsdSocketPath" .Values.dsdSocketPath "/var/run/datadog/dsd.socket") }}
{{- end }}

{{/* The validated agentCommunicationMode, lower-cased as the Cluster Agent accepts it. */}}
{{- define "datadog-csi-webhook.mode" -}}
{{- $mode := toString .Values.agentCommunicationMode | trim | lower }}
{{- if not (has $mode (list "hostip" "service" "socket" "csi" "auto")) }}
{{- fail (printf "agentCommunicationMode %q is not one of hostip, service, socket, csi, auto" (toString .Values.agentCommunicationMode)) }}
{{- end }}
{{- $mode }}
{{- end }}

{{- define "datadog-csi-webhook.tlsMode" -}}
{{- $mode := toString .Values.tlsMode }}
{{- if not (has $mode (list "selfManaged" "certManager" "existingSecret")) }}
{{- fail (printf "tlsMode %q is not one of selfManaged, certManager, existingSecret" $mode) }}
{{- end }}
{{- if and (eq $mode "existingSecret") (not .Values.tlsSecretName) }}
{{- fail "tlsMode existingSecret needs tlsSecretName: the name of your kubernetes.io/tls Secret" }}
{{- end }}
{{- if and (eq $mode "existingSecret") (not .Values.tlsCABundle) }}
{{- fail "tlsMode existingSecret needs tlsCABundle: the base64-encoded PEM of the CA that signed the certificate" }}
{{- end }}
{{- $mode }}
{{- end }}

{{- define "datadog-csi-webhook.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "datadog-csi-webhook.fullname" .)) .Values.tlsSecretName }}
{{- end }}

{{/* Webhook names must be fully qualified; this one is unique per release. */}}
{{- define "datadog-csi-webhook.webhookName" -}}
{{- printf "%s.agent-config.datadog-csi.io" (include "datadog-csi-webhook.fullname" .) }}
{{- end }}

{{/*
The namespaces never mutated, comma-separated: kube-system (mutating the
control plane's pods could break the cluster), excludedNamespaces, and the
release namespace (the webhook must not depend on itself), without duplicates.
*/}}
{{- define "datadog-csi-webhook.excludedNamespaces" -}}
{{- $ns := list "kube-system" }}
{{- range .Values.excludedNamespaces }}
{{- $ns = append $ns (toString .) }}
{{- end }}
{{- $ns = append $ns .Release.Namespace | uniq }}
{{- join "," $ns }}
{{- end }}

{{/*
shutdownDelay in seconds, checked to be a Go duration (5s, 1500ms, 1m30s) or 0.
The webhook parses the same string with time.ParseDuration.
*/}}
{{- define "datadog-csi-webhook.shutdownDelaySeconds" -}}
{{- $delay := toString .Values.shutdownDelay }}
{{- if not (regexMatch "^(0|([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$" $delay) }}
{{- fail (printf "shutdownDelay %q is not a duration such as 5s, 1500ms or 1m30s (or 0 for none)" $delay) }}
{{- end }}
{{- $unit := dict "ns" 0.000000001 "us" 0.000001 "µs" 0.000001 "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 }}
{{- $seconds := 0.0 }}
{{- range regexFindAll "[0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h)" $delay -1 }}
{{- $seconds = addf $seconds (mulf (regexFind "^[0-9.]+" .) (get $unit (regexReplaceAll "^[0-9.]+" . ""))) }}
{{- end }}
{{- $seconds }}
{{- end }}
