{{/* Helpers of the datadog-csi umbrella chart, namespaced by its name. */}}

{{- define "datadog-csi.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "datadog-csi.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: admission-policy
app.kubernetes.io/part-of: datadog-csi
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The volume types the driver serves; must equal pkg/datadog.VolumeTypes (the
chart tests compare them).
*/}}
{{- define "datadog-csi.volumeTypes" -}}
APMSocket,DSDSocket,APMSocketDirectory,DSDSocketDirectory,DatadogSocketsDirectory
{{- end }}

{{/*
A socket path of both subcharts: the global, required here so that the driver
and the webhook cannot fall back to their own, possibly different, values.
NOTES.txt includes it: the one template rendered whatever the values.
Argument: (list . "apmHostSocketPath" "/var/run/datadog/apm.socket").
*/}}
{{- define "datadog-csi.socketPath" -}}
{{- $root := index . 0 }}
{{- $key := index . 1 }}
{{- $path := toString (index ($root.Values.global | default dict) $key | default "") }}
{{- if not $path }}
{{- fail (printf "global.%s must not be empty: it is the socket path of both the driver and the webhook; set it, or remove it from your values for the default %s" $key (index . 2)) }}
{{- end }}
{{- $path }}
{{- end }}
