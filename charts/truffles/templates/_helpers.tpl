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

{{/* The operator's settings from values: its Deployment and its billing CronJob. */}}
{{- define "truffles.operatorEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ .Values.database.existingSecret | quote }}, key: {{ .Values.database.key | quote }}}
- name: TRUFFLES_BACKUP_MASTER_KEY
  valueFrom:
    secretKeyRef: {name: {{ .Values.backupMasterKey.existingSecret | quote }}, key: {{ .Values.backupMasterKey.key | quote }}}
- name: TRUFFLES_RUNTIME_IMAGE
  value: {{ .Values.runtimeImage | quote }}
{{- with .Values.database.tenantHost }}
- name: TRUFFLES_TENANT_DATABASE_HOST
  value: {{ . | quote }}
{{- end }}
{{- with .Values.watchNamespace }}
- name: TRUFFLES_WATCH_NAMESPACE
  value: {{ . | quote }}
{{- end }}
- name: TRUFFLES_INGRESS_NAMESPACES
  value: {{ join "," .Values.networkPolicy.ingressNamespaces | quote }}
- name: TRUFFLES_MONITORING_NAMESPACES
  value: {{ join "," .Values.networkPolicy.monitoringNamespaces | quote }}
- name: TRUFFLES_PLATFORM_NAMESPACES
  value: {{ join "," (default (list .Release.Namespace) .Values.networkPolicy.platformNamespaces) | quote }}
{{- with .Values.networkPolicy.privateCidrs }}
- name: TRUFFLES_PRIVATE_CIDRS
  value: {{ join "," . | quote }}
{{- end }}
{{- with .Values.networkPolicy.egressCidrs }}
- name: TRUFFLES_EGRESS_CIDRS
  value: {{ join "," . | quote }}
{{- end }}
{{- with .Values.networkPolicy.fetchAllowCidrs }}
- name: TRUFFLES_FETCH_ALLOW_CIDRS
  value: {{ join "," . | quote }}
{{- end }}
{{- with .Values.tenantBoundary.images }}
- name: TRUFFLES_ALLOWED_IMAGES
  value: {{ join "," . | quote }}
{{- end }}
{{- with .Values.tenantBoundary.ingressAnnotations }}
- name: TRUFFLES_ALLOWED_INGRESS_ANNOTATIONS
  value: {{ join "," . | quote }}
{{- end }}
{{- with .Values.tenantBoundary.apiHosts }}
- name: TRUFFLES_ALLOWED_API_HOSTS
  value: {{ join "," . | quote }}
{{- end }}
{{- if .Values.redis.existingSecret }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef: {name: {{ .Values.redis.existingSecret | quote }}, key: {{ .Values.redis.key | quote }}}
{{- end }}
{{- if .Values.telegram.existingSecret }}
- name: TRUFFLES_TELEGRAM_BOT_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ .Values.telegram.existingSecret | quote }}, key: {{ .Values.telegram.key | quote }}}
{{- end }}
{{- with .Values.telegram.apiUrl }}
- name: TRUFFLES_TELEGRAM_API_URL
  value: {{ . | quote }}
{{- end }}
{{- if .Values.smtp.existingSecret }}
- name: TRUFFLES_SMTP_URL
  valueFrom:
    secretKeyRef: {name: {{ .Values.smtp.existingSecret | quote }}, key: {{ .Values.smtp.key | quote }}}
- name: TRUFFLES_SMTP_FROM
  value: {{ .Values.smtp.from | quote }}
{{- end }}
{{- end -}}
