{{- define "cdcrouter.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cdcrouter.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* selector labels of one component: (dict "root" $ "component" "router") */}}
{{- define "cdcrouter.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "cdcrouter.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "cdcrouter.configMapName" -}}
{{- .Values.config.existingConfigMap | default (printf "%s-config" (include "cdcrouter.fullname" .)) -}}
{{- end -}}

{{/* connections: env vars from Secrets (never values), plain settings, and the log format */}}
{{- define "cdcrouter.env" -}}
{{- with .Values.connections.existingSecret }}
envFrom:
  - secretRef:
      name: {{ . }}
{{- end }}
env:
  - name: CDCROUTER_LOG_FORMAT
    value: {{ .Values.logFormat | quote }}
{{- range .Values.connections.secretEnv }}
  - name: {{ .name }}
    valueFrom:
      secretKeyRef:
        name: {{ .secretName }}
        key: {{ .key }}
{{- end }}
{{- range $k, $v := .Values.connections.env }}
  - name: {{ $k }}
    value: {{ $v | quote }}
{{- end }}
{{- end -}}

{{- define "cdcrouter.probes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: metrics}
  {{- toYaml .Values.probes.liveness | nindent 2 }}
readinessProbe:
  httpGet: {path: /readyz, port: metrics}
  {{- toYaml .Values.probes.readiness | nindent 2 }}
{{- end -}}

{{/* pod-level parts shared by every workload */}}
{{- define "cdcrouter.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{/* The config directory: mounted whole, never with subPath. The kubelet updates a mounted
ConfigMap directory in place (an atomic swap of its ..data link), and the router reloads
filters.yaml when it changes; a subPath mount is a copy that never sees an update. */}}
{{- define "cdcrouter.volumeMounts" -}}
volumeMounts:
  - name: config
    mountPath: /config
    readOnly: true
  - name: tmp
    mountPath: /tmp
{{- end -}}

{{- define "cdcrouter.volumes" -}}
volumes:
  - name: config
    configMap:
      name: {{ include "cdcrouter.configMapName" . }}
  - name: tmp
    emptyDir: {}
{{- end -}}

{{/* pod template labels: the selector plus the version labels (no key twice) */}}
{{- define "cdcrouter.podLabels" -}}
{{ include "cdcrouter.selector" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}
