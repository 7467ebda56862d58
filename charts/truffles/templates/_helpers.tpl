{{- define "truffles.name" -}}truffles-operator{{- end -}}

{{- define "truffles.labels" -}}
app.kubernetes.io/name: {{ include "truffles.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "truffles.selectorLabels" -}}
app.kubernetes.io/name: {{ include "truffles.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
