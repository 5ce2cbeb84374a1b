{{- define "shale.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shale.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "shale.headless" -}}
{{- printf "%s-headless" (include "shale.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "shale.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "shale.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "shale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "shale.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret with the S3 credentials, if any. */}}
{{- define "shale.credentialsSecret" -}}
{{- if .Values.objectStore.existingSecret -}}
{{- .Values.objectStore.existingSecret -}}
{{- else if .Values.objectStore.accessKeyId -}}
{{- printf "%s-object-store" (include "shale.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* "k=v,k=v" of config.topicDefaults, sorted. */}}
{{- define "shale.topicDefaults" -}}
{{- $out := list -}}
{{- range $k, $v := .Values.config.topicDefaults -}}
{{- $out = append $out (printf "%s=%v" $k $v) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}
