{{/* Names ------------------------------------------------------------------------ */}}
{{- define "crm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "crm.fullname" -}}
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

{{/* <fullname>-<service>; call with (dict "root" $ "name" "leads") */}}
{{- define "crm.componentName" -}}
{{- printf "%s-%s" (include "crm.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "crm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels: selectors use name and instance only --------------------------------- */}}
{{- define "crm.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* call with (dict "root" $ "name" "leads" "component" "service") */}}
{{- define "crm.labels" -}}
{{ include "crm.selectorLabels" . }}
app.kubernetes.io/component: {{ .component | default "service" }}
app.kubernetes.io/part-of: crm
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "crm.chart" .root }}
{{- end -}}

{{- define "crm.commonLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: crm
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "crm.chart" . }}
{{- end -}}

{{/* A service's values: default: merged with services.<name> (service wins), as YAML.
     call with (dict "root" $ "name" "leads") and read it back with fromYaml. */}}
{{- define "crm.component" -}}
{{- $svc := index .root.Values.services .name -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.default) (deepCopy $svc)) -}}
{{- end -}}

{{- define "crm.image" -}}
{{- $c := .c -}}
{{- $img := $c.image | default dict -}}
{{- $repo := $img.repository | default (printf "%s/crm-%s" .root.Values.image.registry .name) -}}
{{- $tag := $img.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{/* Python package name suffix: service-desk -> service_desk */}}
{{- define "crm.dbName" -}}
{{- printf "crm_%s" (.name | replace "-" "_") -}}
{{- end -}}

{{/* Secrets -------------------------------------------------------------------------- */}}
{{- define "crm.trialPostgresHost" -}}
{{- printf "%s-postgresql" (include "crm.fullname" .) -}}
{{- end -}}

{{- define "crm.trialNatsUrl" -}}
{{- printf "nats://%s-nats:4222" (include "crm.fullname" .) -}}
{{- end -}}

{{/* The chart-managed Secret's data for one service (may be empty). */}}
{{- define "crm.secretData" -}}
{{- $v := .root.Values -}}
{{- if $v.trialDependencies.enabled -}}
{{- $pg := $v.trialDependencies.postgresql -}}
DB_URL: {{ printf "postgresql+asyncpg://%s:%s@%s:5432/%s" $pg.user (urlquery $pg.password) (include "crm.trialPostgresHost" .root) (include "crm.dbName" .) | b64enc | quote }}
NATS_URL: {{ include "crm.trialNatsUrl" .root | b64enc | quote }}
{{- else }}
{{- if not $v.database.existingSecret }}
DB_URL: {{ required (printf "database.urls.%s is required (or database.existingSecret)" .name) (index $v.database.urls .name) | b64enc | quote }}
{{- end }}
{{- if not $v.nats.existingSecret }}
NATS_URL: {{ $v.nats.url | b64enc | quote }}
{{- end }}
{{- end }}
{{- if and (eq .name "directory") $v.auth.bootstrapToken (not $v.auth.existingSecret) }}
BOOTSTRAP_TOKEN: {{ $v.auth.bootstrapToken | b64enc | quote }}
{{- end }}
{{- end -}}

{{/* env entries reading DB_URL (and, unless only migrating, NATS_URL and
     BOOTSTRAP_TOKEN) from the chart's Secret or the existing ones.
     call with (dict "root" $ "name" "leads" "secretName" "..." "migrate" false) */}}
{{- define "crm.secretEnv" -}}
{{- $v := .root.Values -}}
{{- $own := .secretName -}}
- name: DB_URL
  valueFrom:
    secretKeyRef:
{{- if and $v.database.existingSecret (not $v.trialDependencies.enabled) }}
      name: {{ $v.database.existingSecret }}
      key: {{ .name }}
{{- else }}
      name: {{ $own }}
      key: DB_URL
{{- end }}
{{- if not .migrate }}
- name: NATS_URL
  valueFrom:
    secretKeyRef:
{{- if and $v.nats.existingSecret (not $v.trialDependencies.enabled) }}
      name: {{ $v.nats.existingSecret }}
      key: {{ $v.nats.existingSecretKey }}
{{- else }}
      name: {{ $own }}
      key: NATS_URL
{{- end }}
{{- if eq .name "directory" }}
{{- if $v.auth.existingSecret }}
- name: BOOTSTRAP_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $v.auth.existingSecret }}
      key: {{ $v.auth.existingSecretKey }}
{{- else if $v.auth.bootstrapToken }}
- name: BOOTSTRAP_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $own }}
      key: BOOTSTRAP_TOKEN
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* ConfigMap data for one service. call with (dict "root" $ "name" "leads" "c" $c) */}}
{{- define "crm.configData" -}}
{{- $v := .root.Values -}}
{{- $dir := include "crm.componentName" (dict "root" .root "name" "directory") -}}
{{- $dirPorts := $v.services.directory.ports -}}
SERVICE_NAME: {{ .name | quote }}
HTTP_HOST: "0.0.0.0"
HTTP_PORT: {{ .c.ports.http | quote }}
GRPC_HOST: "0.0.0.0"
GRPC_PORT: {{ .c.ports.grpc | quote }}
NATS_NAMESPACE: {{ $v.config.natsNamespace | quote }}
DB_POOL_SIZE: {{ $v.config.dbPoolSize | quote }}
JWKS_URL: {{ $v.auth.jwksUrl | default (printf "http://%s:%v/.well-known/jwks.json" $dir $dirPorts.http) | quote }}
JWT_ISSUER: {{ $v.auth.jwtIssuer | quote }}
JWT_AUDIENCE: {{ $v.auth.jwtAudience | quote }}
DIRECTORY_GRPC_TARGET: {{ $v.auth.directoryGrpcTarget | default (printf "%s:%v" $dir $dirPorts.grpc) | quote }}
LOG_LEVEL: {{ $v.config.logLevel | quote }}
LOG_JSON: {{ $v.config.logJson | quote }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ $v.otel.endpoint | quote }}
OTEL_SERVICE_NAME: {{ .name | quote }}
DEPLOYMENT_ENVIRONMENT: {{ $v.config.environment | quote }}
SERVICE_VERSION: {{ .root.Values.image.tag | default .root.Chart.AppVersion | quote }}
{{- range $k, $val := .c.env }}
{{ $k }}: {{ $val | quote }}
{{- end }}
{{- end -}}

{{/* Security contexts (Online Boutique defaults) ------------------------------------ */}}
{{- define "crm.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "crm.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Migrations hook phases: with in-cluster trial dependencies the database starts with
     the release, so the first run is post-install. */}}
{{- define "crm.migrationsHook" -}}
{{- if .Values.trialDependencies.enabled -}}
post-install,pre-upgrade
{{- else -}}
pre-install,pre-upgrade
{{- end -}}
{{- end -}}
