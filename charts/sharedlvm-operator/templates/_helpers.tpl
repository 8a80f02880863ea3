{{/* Names and labels shared by every template. */}}
{{- define "sharedlvm.fullname" -}}
{{- /* Release "sharedlvm" gives sharedlvm-operator and sharedlvm-agent. */ -}}
{{- if hasPrefix "sharedlvm" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-sharedlvm" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sharedlvm.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sharedlvm.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "sharedlvm.operatorSA" -}}
{{- default (printf "%s-operator" (include "sharedlvm.fullname" .)) .Values.serviceAccount.operatorName -}}
{{- end -}}

{{- define "sharedlvm.agentSA" -}}
{{- default (printf "%s-agent" (include "sharedlvm.fullname" .)) .Values.serviceAccount.agentName -}}
{{- end -}}

{{- define "sharedlvm.image" -}}
{{- printf "%s/%s:%s" .root.Values.image.repository .name (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}
