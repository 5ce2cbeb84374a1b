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

{{/* Where the tls.secretName Secret is mounted. */}}
{{- define "shale.tlsDir" -}}
/etc/shale/tls
{{- end -}}

{{/* The broker's TLS, SASL and ACL flags, one list item each, after checking
their values: what the broker would refuse at start fails here. */}}
{{- define "shale.securityArgs" -}}
{{- $dir := include "shale.tlsDir" . -}}
{{- with .Values.tls -}}
{{- if .enabled }}
- "--tls-cert={{ $dir }}/tls.crt"
- "--tls-key={{ $dir }}/tls.key"
{{- if .caKey }}
- {{ printf "--tls-ca=%s/%s" $dir .caKey | quote }}
{{- end }}
{{- if not (has .clientAuth (list "none" "requested" "required")) }}
{{- fail (printf "tls.clientAuth %q: none, requested or required" (toString .clientAuth)) }}
{{- end }}
{{- if and (ne .clientAuth "none") (not .caKey) }}
{{- fail (printf "tls.clientAuth %s needs tls.caKey: the CA certificates clients' certificates are verified with" .clientAuth) }}
{{- end }}
- {{ printf "--tls-client-auth=%s" .clientAuth | quote }}
{{- end }}
{{- end }}
{{- with .Values.sasl }}
{{- range .mechanisms }}
{{- if not (has (upper .) (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512")) }}
{{- fail (printf "sasl.mechanisms: %q is none of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512" .) }}
{{- end }}
{{- end }}
{{- with .mechanisms }}
- {{ printf "--sasl-mechanisms=%s" (join "," .) | quote }}
{{- end }}
{{- with .bootstrapUser }}
- {{ printf "--sasl-bootstrap-user=%s" . | quote }}
{{- end }}
{{- end }}
{{- with .Values.acls }}
{{- range .superUsers }}
{{- if not (regexMatch "^[^:;]+:[^;]+$" (toString .)) }}
{{- fail (printf "acls.superUsers: %q is not a principal: Type:Name, as User:admin" (toString .)) }}
{{- end }}
{{- end }}
{{- if and (not .enabled) (or .superUsers .allowEveryoneIfNoAclFound) }}
{{- fail "acls.superUsers and acls.allowEveryoneIfNoAclFound need acls.enabled (without it every client may do anything)" }}
{{- end }}
{{- if .enabled }}
- "--acls"
{{- with .superUsers }}
- {{ printf "--super-users=%s" (join ";" .) | quote }}
{{- end }}
{{- if .allowEveryoneIfNoAclFound }}
- "--allow-everyone-if-no-acl-found"
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Where the etcd.tls.secretName Secret is mounted. */}}
{{- define "shale.etcdTLSDir" -}}
/etc/shale/etcd-tls
{{- end -}}

{{/* The broker's etcd TLS and user flags, one list item each, after checking
their values: what the broker would refuse at start fails here. */}}
{{- define "shale.etcdArgs" -}}
{{- $dir := include "shale.etcdTLSDir" . -}}
{{- with .Values.etcd.tls -}}
{{- if .enabled }}
{{- if contains "http://" $.Values.etcd.endpoints }}
{{- fail (printf "etcd.endpoints %q: http:// is plain TCP, but etcd.tls.enabled asks for TLS: give https://host:port or host:port" $.Values.etcd.endpoints) }}
{{- end }}
{{- if ne (empty .cert) (empty .key) }}
{{- fail "etcd.tls.cert and etcd.tls.key: both (a client certificate and its key) or neither" }}
{{- end }}
{{- if and (not .ca) (not .cert) }}
{{- fail "etcd.tls.enabled needs etcd.tls.ca or etcd.tls.cert (the Secret's keys to pass); for TLS with the image's CAs alone, write etcd.endpoints as https://host:port instead" }}
{{- end }}
{{- if .ca }}
- {{ printf "--etcd-tls-ca=%s/%s" $dir .ca | quote }}
{{- end }}
{{- if .cert }}
- {{ printf "--etcd-tls-cert=%s/%s" $dir .cert | quote }}
- {{ printf "--etcd-tls-key=%s/%s" $dir .key | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.etcd.user }}
- {{ printf "--etcd-user=%s" . | quote }}
{{- end }}
{{- end -}}
