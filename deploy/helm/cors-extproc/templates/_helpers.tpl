{{/* The objects' name: the release name, with the chart's name added unless it holds it. */}}
{{- define "cors-extproc.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cors-extproc.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cors-extproc.labels" -}}
{{ include "cors-extproc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The Secret holding the gRPC port's certificate, key and CA. */}}
{{- define "cors-extproc.tlsSecret" -}}
{{- if .Values.tls.certManager.enabled -}}
{{- printf "%s-tls" (include "cors-extproc.fullname" .) -}}
{{- else if .Values.tls.existingSecret -}}
{{- .Values.tls.existingSecret -}}
{{- else -}}
{{- fail "tls.enabled needs tls.certManager.enabled or tls.existingSecret" -}}
{{- end -}}
{{- end -}}

{{/* GOMEMLIMIT: goMemLimit, or 90% of the memory limit in MiB. */}}
{{- define "cors-extproc.goMemLimit" -}}
{{- if .Values.goMemLimit -}}
{{- .Values.goMemLimit -}}
{{- else -}}
{{- $limit := toString (.Values.resources.limits.memory | required "resources.limits.memory is required (GOMEMLIMIT is derived from it)") -}}
{{- $mib := 0 -}}
{{- if regexMatch "^[0-9]+Mi$" $limit -}}
{{- $mib = trimSuffix "Mi" $limit | atoi -}}
{{- else if regexMatch "^[0-9]+Gi$" $limit -}}
{{- $mib = mul (trimSuffix "Gi" $limit | atoi) 1024 -}}
{{- else -}}
{{- fail (printf "resources.limits.memory %q: give it in Mi or Gi, or set goMemLimit" $limit) -}}
{{- end -}}
{{- printf "%dMiB" (div (mul $mib 9) 10) -}}
{{- end -}}
{{- end -}}

{{/* The named-policy file: the policies value, or the example file beside the chart. */}}
{{- define "cors-extproc.policies" -}}
{{- if .Values.policies -}}
{{- toYaml .Values.policies -}}
{{- else -}}
{{- .Files.Get "files/policies.yaml" -}}
{{- end -}}
{{- end -}}
