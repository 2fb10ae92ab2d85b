{{/* Chart name, overridable. */}}
{{- define "enforcer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object name prefix: release + chart, unless the release name already holds the chart's. */}}
{{- define "enforcer.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "enforcer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "enforcer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "enforcer.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "enforcer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "enforcer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "enforcer.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "enforcer.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Agent action names (as policies spell them) of the actions enabled in values, comma-separated. */}}
{{- define "enforcer.enabledActions" -}}
{{- $names := dict "kill" "kill" "deletePod" "delete_pod" "labelPod" "label_pod" "cordon" "cordon" "networkpolicy" "networkpolicy" "quarantine" "quarantine" "snapshot" "snapshot" "notify" "notify" -}}
{{- $enabled := list -}}
{{- range $key := keys $names | sortAlpha -}}
{{- $action := get $.Values.actions $key -}}
{{- if and $action $action.enabled -}}
{{- $enabled = append $enabled (get $names $key) -}}
{{- end -}}
{{- end -}}
{{- join "," (sortAlpha $enabled) -}}
{{- end -}}

{{/* Name of the ConfigMap holding extra rules, or "" when there are none. */}}
{{- define "enforcer.rulesConfigMap" -}}
{{- if .Values.rules.existingConfigMap -}}
{{- .Values.rules.existingConfigMap -}}
{{- else if .Values.rules.inline -}}
{{- printf "%s-rules" (include "enforcer.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Name of the ConfigMap holding response policies, or "" for the bundled ones. */}}
{{- define "enforcer.policiesConfigMap" -}}
{{- if .Values.policies.existingConfigMap -}}
{{- .Values.policies.existingConfigMap -}}
{{- else if .Values.policies.inline -}}
{{- printf "%s-policies" (include "enforcer.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Name of the ConfigMap holding the agent's --config file, or "" when there is none. */}}
{{- define "enforcer.configConfigMap" -}}
{{- if .Values.config -}}
{{- printf "%s-config" (include "enforcer.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* ConfigMap data from a map of file name -> YAML text or YAML value. */}}
{{- define "enforcer.fileData" -}}
{{- range $file, $content := . }}
{{ $file }}: |-
{{- if kindIs "string" $content }}
{{ $content | trim | indent 2 }}
{{- else }}
{{ toYaml $content | indent 2 }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
What is mounted to reach a runtime socket: the socket's directory when it is the runtime's own
(/run/containerd/containerd.sock -> /run/containerd), the socket itself when its directory is
shared by other services (/var/run/docker.sock, /run/x.sock, /x.sock).
*/}}
{{- define "enforcer.socketMount" -}}
{{- $dir := dir . -}}
{{- if has $dir (list "/" "/run" "/var/run" "/var" "/tmp") -}}
{{- . -}}
{{- else -}}
{{- $dir -}}
{{- end -}}
{{- end }}

{{/* The console's pods: a name of their own, so the DaemonSet's selector and the metrics
Service never take them for agents. */}}
{{- define "enforcer.consoleSelectorLabels" -}}
app.kubernetes.io/name: {{ include "enforcer.name" . }}-console
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: console
{{- end -}}

{{- define "enforcer.consoleLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "enforcer.consoleSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
