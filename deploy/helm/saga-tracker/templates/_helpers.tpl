{{/* Chart name, truncated to the 63 characters Kubernetes allows in names and labels. */}}
{{- define "saga-tracker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, or the release name alone when it already contains the chart name. */}}
{{- define "saga-tracker.fullname" -}}
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

{{- define "saga-tracker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard app.kubernetes.io labels. */}}
{{- define "saga-tracker.labels" -}}
helm.sh/chart: {{ include "saga-tracker.chart" . }}
{{ include "saga-tracker.selectorLabels" . }}
app.kubernetes.io/version: {{ (.Values.image.tag | default .Chart.AppVersion) | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: saga-tracker
{{- end }}

{{- define "saga-tracker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "saga-tracker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "saga-tracker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "saga-tracker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "saga-tracker.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The Secret and key holding the database URL. */}}
{{- define "saga-tracker.databaseSecretName" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else }}
{{- include "saga-tracker.fullname" . }}
{{- end }}
{{- end }}

{{- define "saga-tracker.databaseSecretKey" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecretKey }}
{{- else -}}
database-url
{{- end }}
{{- end }}

{{/* The key of the read replica's URL in the database Secret, or nothing without one. */}}
{{- define "saga-tracker.databaseReadSecretKey" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecretReadKey }}
{{- else if .Values.database.readUrl -}}
database-read-url
{{- end }}
{{- end }}

{{/* Where file settings ({secret, key}) are mounted; one directory per setting. */}}
{{- define "saga-tracker.secretsDir" -}}
/var/run/secrets/saga-tracker
{{- end }}

{{/*
The file settings in effect, as JSON {"files": [{volume, env, secret, key}]}: each names the
TRACKER_* variable that receives the file's path and the Secret key it is mounted from.
Settings of a feature that is off (Kafka TLS, SASL, auth) are left out, so a stray value
cannot half-configure it.
*/}}
{{- define "saga-tracker.fileSettings" -}}
{{- $v := .Values -}}
{{- $candidates := list -}}
{{- if $v.kafka.tls.enabled -}}
{{- $candidates = append $candidates (list "kafka-tls-ca" "TRACKER_KAFKA__TLS__CA_FILE" $v.kafka.tls.caFile) -}}
{{- $candidates = append $candidates (list "kafka-tls-cert" "TRACKER_KAFKA__TLS__CERT_FILE" $v.kafka.tls.certFile) -}}
{{- $candidates = append $candidates (list "kafka-tls-key" "TRACKER_KAFKA__TLS__KEY_FILE" $v.kafka.tls.keyFile) -}}
{{- $candidates = append $candidates (list "kafka-tls-key-password" "TRACKER_KAFKA__TLS__KEY_PASSWORD_FILE" $v.kafka.tls.keyPasswordFile) -}}
{{- end -}}
{{- if $v.kafka.sasl.mechanism -}}
{{- $candidates = append $candidates (list "kafka-sasl-password" "TRACKER_KAFKA__SASL__PASSWORD_FILE" $v.kafka.sasl.passwordFile) -}}
{{- end -}}
{{- $candidates = append $candidates (list "database-ssl-root-cert" "TRACKER_DATABASE__SSL_ROOT_CERT" $v.database.sslRootCert) -}}
{{- $candidates = append $candidates (list "database-password" "TRACKER_DATABASE__PASSWORD_FILE" $v.database.passwordFile) -}}
{{- if $v.auth.enabled -}}
{{- $candidates = append $candidates (list "auth-api-keys" "TRACKER_AUTH__API_KEYS_FILE" $v.auth.apiKeysFile) -}}
{{- end -}}
{{- if $v.schemaRegistry.url -}}
{{- $candidates = append $candidates (list "schema-registry-password" "TRACKER_SCHEMA_REGISTRY__PASSWORD_FILE" $v.schemaRegistry.passwordFile) -}}
{{- $candidates = append $candidates (list "schema-registry-ca" "TRACKER_SCHEMA_REGISTRY__SSL_ROOT_CERT" $v.schemaRegistry.sslRootCert) -}}
{{- end -}}
{{- range $id, $file := $v.schemaRegistry.schemas -}}
{{- $candidates = append $candidates (list (printf "schema-registry-schema-%s" $id) (printf "TRACKER_SCHEMA_REGISTRY__SCHEMAS__%s" $id) $file) -}}
{{- end -}}
{{- $files := list -}}
{{- range $candidates -}}
{{- $file := index . 2 | default dict -}}
{{- if $file.secret -}}
{{- $files = append $files (dict "volume" (index . 0) "env" (index . 1) "secret" $file.secret "key" $file.key) -}}
{{- end -}}
{{- end -}}
{{- toJson (dict "files" $files) -}}
{{- end }}

{{/*
The typed settings as TRACKER_* variables, for the tracker and the migration job alike (the
job loads and validates the same configuration). Only what is set is emitted: an unset value
keeps the tracker's own default.
*/}}
{{- define "saga-tracker.settingsEnv" -}}
{{- $v := .Values -}}
{{- if $v.kafka.tls.enabled }}
- name: TRACKER_KAFKA__TLS__ENABLED
  value: "true"
- name: TRACKER_KAFKA__TLS__VERIFY_HOSTNAME
  value: {{ $v.kafka.tls.verifyHostname | quote }}
{{- end }}
{{- with $v.kafka.sasl.mechanism }}
- name: TRACKER_KAFKA__SASL__MECHANISM
  value: {{ . | quote }}
- name: TRACKER_KAFKA__SASL__USERNAME
  value: {{ $v.kafka.sasl.username | quote }}
{{- end }}
{{- with $v.schemaRegistry.url }}
- name: TRACKER_SCHEMA_REGISTRY__URL
  value: {{ . | quote }}
{{- with $v.schemaRegistry.username }}
- name: TRACKER_SCHEMA_REGISTRY__USERNAME
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- with $v.database.sslMode }}
- name: TRACKER_DATABASE__SSL_MODE
  value: {{ . | quote }}
{{- end }}
{{- if $v.auth.enabled }}
- name: TRACKER_AUTH__ENABLED
  value: "true"
{{- with $v.auth.oidc }}
{{- if .issuer }}
- name: TRACKER_AUTH__OIDC__ENABLED
  value: "true"
- name: TRACKER_AUTH__OIDC__ISSUER
  value: {{ .issuer | quote }}
- name: TRACKER_AUTH__OIDC__AUDIENCE
  value: {{ .audience | quote }}
- name: TRACKER_AUTH__OIDC__JWKS_URL
  value: {{ .jwksUrl | quote }}
{{- with .roleClaim }}
- name: TRACKER_AUTH__OIDC__ROLE_CLAIM
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if $v.opsListener.enabled }}
- name: TRACKER_HTTP__OPS_ADDR
  value: {{ printf "0.0.0.0:%v" $v.opsListener.port | quote }}
{{- end }}
{{- range (include "saga-tracker.fileSettings" . | fromJson).files }}
- name: {{ .env }}
  value: {{ printf "%s/%s/%s" (include "saga-tracker.secretsDir" $) .volume .key | quote }}
{{- end }}
{{- end }}

{{/*
The tracker's own traces and logs (`telemetry` values): the standard OpenTelemetry variables,
which the tracker reads over `[telemetry]`, and the Loki URL. The pod's name and namespace
become resource attributes, so Tempo and Loki tell the replicas apart. Deployment only: the
migration job exports nothing.
*/}}
{{- define "saga-tracker.telemetryEnv" -}}
{{- $t := .Values.telemetry -}}
{{- with $t.otlp.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- with $t.otlp.protocol }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ . | quote }}
{{- end }}
{{- with $t.otlp.sampler }}
- name: OTEL_TRACES_SAMPLER
  value: {{ . | quote }}
{{- end }}
{{- with $t.otlp.samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | quote }}
{{- end }}
{{- with $t.otlp.headersSecret }}
- name: OTEL_EXPORTER_OTLP_HEADERS
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
{{- end }}
{{- end }}
{{- if or $t.otlp.endpoint $t.loki.url $t.loki.urlSecret }}
{{- with $t.serviceName }}
- name: OTEL_SERVICE_NAME
  value: {{ . | quote }}
{{- end }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)%s" (ternary (printf ",%s" $t.resourceAttributes) "" (ne $t.resourceAttributes "")) | quote }}
{{- end }}
{{- if $t.loki.urlSecret }}
- name: TRACKER_TELEMETRY__LOKI__URL
  valueFrom:
    secretKeyRef:
      name: {{ $t.loki.urlSecret.secret }}
      key: {{ $t.loki.urlSecret.key }}
{{- else if $t.loki.url }}
- name: TRACKER_TELEMETRY__LOKI__URL
  value: {{ $t.loki.url | quote }}
{{- end }}
{{- end }}

{{/* volumeMounts for the file settings. */}}
{{- define "saga-tracker.secretMounts" -}}
{{- range (include "saga-tracker.fileSettings" . | fromJson).files }}
- name: {{ .volume }}
  mountPath: {{ printf "%s/%s" (include "saga-tracker.secretsDir" $) .volume }}
  readOnly: true
{{- end }}
{{- end }}

{{/* volumes for the file settings: only the one key of each Secret, readable by the pod's group. */}}
{{- define "saga-tracker.secretVolumes" -}}
{{- range (include "saga-tracker.fileSettings" . | fromJson).files }}
- name: {{ .volume }}
  secret:
    secretName: {{ .secret }}
    defaultMode: 0440
    items:
      - key: {{ .key }}
        path: {{ .key }}
{{- end }}
{{- end }}

{{/* A probe from values, pointed at the ops listener when there is one. */}}
{{- define "saga-tracker.probe" -}}
{{- $probe := deepCopy .probe -}}
{{- if .root.Values.opsListener.enabled -}}
{{- $_ := set $probe.httpGet "port" "ops" -}}
{{- end -}}
{{- toYaml $probe -}}
{{- end }}
