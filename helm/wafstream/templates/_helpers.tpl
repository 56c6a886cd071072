{{/*
Names and labels. The full name is the release name when it already contains the chart's name
(`helm install wafstream ...` → wafstream-ingress, wafstream-worker, ...).
*/}}
{{- define "wafstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wafstream.fullname" -}}
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

{{- define "wafstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wafstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "wafstream.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "wafstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: wafstream
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one role's objects; call with (dict "root" $ "role" "ingress"). */}}
{{- define "wafstream.roleLabels" -}}
{{ include "wafstream.labels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "wafstream.roleSelectorLabels" -}}
{{ include "wafstream.selectorLabels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "wafstream.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{/*
A TOML key: bare when it can be, else a quoted (JSON) string, e.g. "security.protocol".
*/}}
{{- define "wafstream.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/*
Render a config map (sections → keys) as wafstream's TOML. Scalars and lists of scalars are
written as JSON, which is valid TOML for strings, numbers, booleans and such lists; a nested map
becomes a sub-table ([kafka.properties]). Null values and empty tables are left out. Lists of
tables ([[processors]]) cannot be written this way: put them in `extraToml`.
*/}}
{{- define "wafstream.toml" -}}
{{- range $section, $body := . }}
{{- if not (kindIs "map" $body) }}
{{- fail (printf "config.%s must be a table of settings (see `wafstream validate-config --print-default`)" $section) }}
{{- end }}
{{- $plain := dict }}
{{- $tables := dict }}
{{- range $k, $v := $body }}
{{- if kindIs "map" $v }}
{{- if $v }}{{ $_ := set $tables $k $v }}{{ end }}
{{- else if not (kindIs "invalid" $v) }}
{{- $_ := set $plain $k $v }}
{{- end }}
{{- end }}
{{- if $plain }}
[{{ include "wafstream.tomlKey" $section }}]
{{- range $k, $v := $plain }}
{{ include "wafstream.tomlKey" $k }} = {{ toJson $v }}
{{- end }}
{{ end }}
{{- range $k, $table := $tables }}
[{{ include "wafstream.tomlKey" $section }}.{{ include "wafstream.tomlKey" $k }}]
{{- range $k2, $v2 := $table }}
{{- if not (kindIs "invalid" $v2) }}
{{ include "wafstream.tomlKey" $k2 }} = {{ toJson $v2 }}
{{- end }}
{{- end }}
{{ end }}
{{- end }}
{{- end }}

{{/* One role's settings: `config` with the role's `config` merged over it. (dict "root" $ "role" "ingress") */}}
{{- define "wafstream.roleConfig" -}}
{{- $role := index .root.Values .role }}
{{- mustMergeOverwrite (deepCopy .root.Values.config) (deepCopy ($role.config | default dict)) | toYaml }}
{{- end }}

{{/* The file a role reads: its own <role>.toml when it has role settings, else wafstream.toml. */}}
{{- define "wafstream.configFile" -}}
{{- $role := index .root.Values .role }}
{{- if $role.config }}{{ printf "/etc/wafstream/%s.toml" .role }}{{ else }}/etc/wafstream/wafstream.toml{{ end }}
{{- end }}

{{/* Container args: global flags, the subcommand, the role's extra flags. */}}
{{- define "wafstream.args" -}}
{{- $role := index .root.Values .role }}
{{- $args := list "--config" (include "wafstream.configFile" .) (.subcommand | default .role) }}
{{- $args = concat $args ($role.extraArgs | default list) -}}
args: {{ toJson $args }}
{{- end }}

{{- define "wafstream.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "wafstream.containerSecurityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end }}

{{/* Liveness and readiness probes on the metrics port. */}}
{{- define "wafstream.probes" -}}
livenessProbe:
  httpGet: { path: /healthz, port: metrics }
  {{- toYaml .Values.probes.liveness | nindent 2 }}
readinessProbe:
  httpGet: { path: /readyz, port: metrics }
  {{- toYaml .Values.probes.readiness | nindent 2 }}
{{- end }}

{{/* Prometheus scrape annotations for a pod template. */}}
{{- define "wafstream.podAnnotations" -}}
{{- if .Values.metrics.podAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/*
Environment every role gets: the metrics address (the probes need it), the log format, and the
Kafka client secrets. With a SASL or TLS Secret, WAFSTREAM_KAFKA carries every librdkafka
property (it replaces the file's [kafka.properties]): the role's kafka.properties, then the SASL
username/password (expanded by Kubernetes from the two variables above it) and the TLS file
locations. (dict "root" $ "role" "worker")
*/}}
{{- define "wafstream.commonEnv" -}}
{{- $root := .root }}
{{- $k := $root.Values.kafka -}}
- name: WAFSTREAM_METRICS_ADDR
  value: {{ printf "0.0.0.0:%v" $root.Values.metrics.port | quote }}
{{- if or $k.sasl.existingSecret $k.tls.existingSecret }}
{{- $cfg := include "wafstream.roleConfig" . | fromYaml }}
{{- $props := list }}
{{- range $key, $v := (($cfg.kafka | default dict).properties | default dict) }}
{{- $props = append $props (printf "%s=%s" $key (ternary $v (toJson $v) (kindIs "string" $v))) }}
{{- end }}
{{- if $k.sasl.existingSecret }}
- name: KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef: { name: {{ $k.sasl.existingSecret | quote }}, key: {{ $k.sasl.usernameKey | quote }} }
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef: { name: {{ $k.sasl.existingSecret | quote }}, key: {{ $k.sasl.passwordKey | quote }} }
{{- $props = append $props "sasl.username=$(KAFKA_SASL_USERNAME)" }}
{{- $props = append $props "sasl.password=$(KAFKA_SASL_PASSWORD)" }}
{{- end }}
{{- if $k.tls.existingSecret }}
{{- if $k.tls.caKey }}{{ $props = append $props (printf "ssl.ca.location=/etc/wafstream-secrets/kafka-tls/%s" $k.tls.caKey) }}{{ end }}
{{- if $k.tls.certKey }}{{ $props = append $props (printf "ssl.certificate.location=/etc/wafstream-secrets/kafka-tls/%s" $k.tls.certKey) }}{{ end }}
{{- if $k.tls.keyKey }}{{ $props = append $props (printf "ssl.key.location=/etc/wafstream-secrets/kafka-tls/%s" $k.tls.keyKey) }}{{ end }}
{{- end }}
- name: WAFSTREAM_KAFKA
  value: {{ join ";" $props | quote }}
{{- end }}
{{- end }}

{{/* Volume mounts / volumes every role gets: the config and the Kafka TLS Secret. */}}
{{- define "wafstream.commonVolumeMounts" -}}
- { name: config, mountPath: /etc/wafstream, readOnly: true }
{{- if .Values.kafka.tls.existingSecret }}
- { name: kafka-tls, mountPath: /etc/wafstream-secrets/kafka-tls, readOnly: true }
{{- end }}
{{- end }}

{{- define "wafstream.commonVolumes" -}}
- name: config
  configMap: { name: {{ include "wafstream.fullname" . }} }
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  secret: { secretName: {{ .Values.kafka.tls.existingSecret | quote }}, defaultMode: 0440 }
{{- end }}
{{- end }}

{{/* Scheduling and pod-level settings of one role. (dict "root" $ "role" "ingress") */}}
{{- define "wafstream.podSpecCommon" -}}
{{- $root := .root }}
{{- $role := index $root.Values .role -}}
automountServiceAccountToken: false
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $root.Values.serviceAccountName }}
serviceAccountName: {{ $root.Values.serviceAccountName }}
{{- end }}
securityContext:
  {{- include "wafstream.podSecurityContext" $root | nindent 2 }}
terminationGracePeriodSeconds: {{ $role.terminationGracePeriodSeconds }}
{{- with $role.nodeSelector }}
nodeSelector: {{ toYaml . | nindent 2 }}
{{- end }}
{{- with $role.tolerations }}
tolerations: {{ toYaml . | nindent 2 }}
{{- end }}
{{- with $role.affinity }}
affinity: {{ toYaml . | nindent 2 }}
{{- end }}
{{- with $role.topologySpreadConstraints }}
topologySpreadConstraints: {{ toYaml . | nindent 2 }}
{{- end }}
{{- end }}
