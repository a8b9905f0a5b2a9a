{{/* Names. */}}
{{- define "shardchat.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "shardchat.fullname" -}}
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

{{- define "shardchat.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The router Deployment (and its pods). */}}
{{- define "shardchat.routerName" -}}
{{- printf "%s-router" (include "shardchat.fullname" .) | trunc 52 | trimSuffix "-" }}
{{- end }}

{{/* The shard StatefulSet; also the headless Service (pods are <sts>-N.<sts>). */}}
{{- define "shardchat.shardName" -}}
{{- printf "%s-shard" (include "shardchat.fullname" .) | trunc 52 | trimSuffix "-" }}
{{- end }}

{{- define "shardchat.headlessName" -}}
{{- include "shardchat.shardName" . }}
{{- end }}

{{- define "shardchat.configName" -}}
{{- printf "%s-config" (include "shardchat.fullname" .) }}
{{- end }}

{{- define "shardchat.secretName" -}}
{{- default (printf "%s-secrets" (include "shardchat.fullname" .)) .Values.secret.existingSecret }}
{{- end }}

{{- define "shardchat.routerServiceAccount" -}}
{{- if .Values.serviceAccount.create }}
{{- include "shardchat.routerName" . }}
{{- else }}
{{- default "default" .Values.serviceAccount.routerName }}
{{- end }}
{{- end }}

{{- define "shardchat.shardServiceAccount" -}}
{{- if .Values.serviceAccount.create }}
{{- include "shardchat.shardName" . }}
{{- else }}
{{- default "default" .Values.serviceAccount.shardName }}
{{- end }}
{{- end }}

{{/*
The image: global.imageRegistry (a mirror for every chart of an umbrella release), else
image.registry, replaces the registry of image.repository (its first part when that
names a host: it has a "." or ":" or is localhost); with neither, image.repository as given.
*/}}
{{- define "shardchat.image" -}}
{{- $repo := .Values.image.repository }}
{{- $registry := default .Values.image.registry (dig "imageRegistry" "" (.Values.global | default dict)) }}
{{- if $registry }}
{{- $parts := splitList "/" $repo }}
{{- $first := first $parts }}
{{- if and (gt (len $parts) 1) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")) }}
{{- $repo = rest $parts | join "/" }}
{{- end }}
{{- $repo = printf "%s/%s" (trimSuffix "/" $registry) $repo }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Labels. Call with (dict "ctx" $ "component" "router"). */}}
{{- define "shardchat.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shardchat.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "shardchat.labels" -}}
helm.sh/chart: {{ include "shardchat.chart" .ctx }}
{{ include "shardchat.selectorLabels" . }}
app.kubernetes.io/version: {{ default .ctx.Chart.AppVersion .ctx.Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: shardchat
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The configuration file shardchat.yaml (common/config.ts), rendered from values. */}}
{{- define "shardchat.config" -}}
{{- $v := .Values -}}
{{- $ns := .Release.Namespace -}}
{{- $sts := include "shardchat.shardName" . -}}
{{- $headless := include "shardchat.headlessName" . -}}
{{- $topology := dict "mode" $v.topology.mode "shards" (int $v.shards) "namespace" $ns "probeIntervalMs" (int $v.topology.probeIntervalMs) "probeTimeoutMs" (int $v.topology.probeTimeoutMs) "probeFailureThreshold" (int $v.topology.probeFailureThreshold) -}}
{{- /* adminTemplate in both modes: `shardchat reshard` (the hook Jobs) reaches every shard's admin port through it. */ -}}
{{- $_ := set $topology "adminTemplate" (printf "http://%s-{ordinal}.%s.{namespace}.svc.cluster.local:9090" $sts $headless) -}}
{{- if eq $v.topology.mode "static" -}}
{{- $_ := set $topology "targetTemplate" (printf "http://%s-{ordinal}.%s.{namespace}.svc.cluster.local:8080" $sts $headless) -}}
{{- else -}}
{{- $_ := set $topology "kubernetes" (dict "statefulSet" $sts "port" 8080 "adminPort" 9090) -}}
{{- end -}}
{{- $router := merge (dict "host" "0.0.0.0" "port" 8080 "adminPort" 9090) (deepCopy $v.router.config) -}}
{{- $shard := merge (dict "host" "0.0.0.0" "port" 8080 "adminPort" 9090 "dataDir" "/data") (deepCopy $v.shard.config) -}}
{{- $auth := dict "devTokens" $v.auth.devTokens -}}
{{- with $v.auth.issuer }}{{ $_ := set $auth "issuer" . }}{{ end -}}
{{- with $v.auth.audience }}{{ $_ := set $auth "audience" . }}{{ end -}}
{{- $cfg := dict "shardSpec" $v.shardSpec "topology" $topology "router" $router "shard" $shard "auth" $auth "log" $v.log -}}
# shardchat configuration (docs/architecture.md section 3), rendered by the Helm chart from its values.
# S (topology.shards) comes from the value `shards`, like the StatefulSet's replicas.
{{ toYaml $cfg }}
{{- end }}

{{/* Probes on the named admin port. Call with the component's probes values. */}}
{{- define "shardchat.probes" -}}
startupProbe:
  httpGet: { path: /healthz, port: admin }
  periodSeconds: {{ .startup.periodSeconds }}
  timeoutSeconds: {{ .startup.timeoutSeconds }}
  failureThreshold: {{ .startup.failureThreshold }}
livenessProbe:
  httpGet: { path: /healthz, port: admin }
  periodSeconds: {{ .liveness.periodSeconds }}
  timeoutSeconds: {{ .liveness.timeoutSeconds }}
  failureThreshold: {{ .liveness.failureThreshold }}
readinessProbe:
  httpGet: { path: /readyz, port: admin }
  periodSeconds: {{ .readiness.periodSeconds }}
  timeoutSeconds: {{ .readiness.timeoutSeconds }}
  failureThreshold: {{ .readiness.failureThreshold }}
{{- end }}

{{- define "shardchat.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "shardchat.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/* Environment common to routers and shards. */}}
{{- define "shardchat.env" -}}
- name: POD_NAME
  valueFrom: { fieldRef: { fieldPath: metadata.name } }
- name: POD_NAMESPACE
  valueFrom: { fieldRef: { fieldPath: metadata.namespace } }
- name: NODE_OPTIONS
  value: --enable-source-maps
{{- end }}

{{/*
The data of the chart's Secret (base64 values), computed once per render: the given
values, else what the live Secret holds (lookup: kept across upgrades), else generated.
Memoized on the root context, so that secret.yaml and every checksum/secret annotation
see the same values (randAlphaNum would draw new ones at every call). Call with the root
context; returns YAML.
*/}}
{{- define "shardchat.secretData" -}}
{{- if not (hasKey . "shardchatSecretData") }}
{{- $live := lookup "v1" "Secret" .Release.Namespace (include "shardchat.secretName" .) | default dict }}
{{- $data := dict }}
{{- if .Values.secret.authSecret }}
{{- $_ := set $data "SHARDCHAT_AUTH_SECRET" (.Values.secret.authSecret | b64enc) }}
{{- else }}
{{- $_ := set $data "SHARDCHAT_AUTH_SECRET" (dig "data" "SHARDCHAT_AUTH_SECRET" "" $live | default (randAlphaNum 48 | b64enc)) }}
{{- end }}
{{- if .Values.secret.internalToken }}
{{- $_ := set $data "SHARDCHAT_INTERNAL_TOKEN" (.Values.secret.internalToken | b64enc) }}
{{- else }}
{{- $_ := set $data "SHARDCHAT_INTERNAL_TOKEN" (dig "data" "SHARDCHAT_INTERNAL_TOKEN" "" $live | default (randAlphaNum 48 | b64enc)) }}
{{- end }}
{{- $_ := set . "shardchatSecretData" $data }}
{{- end }}
{{- toYaml (get . "shardchatSecretData") }}
{{- end }}

{{/*
Pod annotations that roll the pods when the configuration or the Secret changes. One
value per render for routers and shards alike. With secret.existingSecret the chart does
not know the Secret's content: its name is hashed (a rotation there needs a rollout, e.g.
`kubectl rollout restart`, or a tool such as Reloader).
*/}}
{{- define "shardchat.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if .Values.secret.existingSecret }}
checksum/secret: {{ printf "existingSecret:%s" .Values.secret.existingSecret | sha256sum }}
{{- else }}
checksum/secret: {{ include "shardchat.secretData" . | sha256sum }}
{{- end }}
{{- end }}

{{/* Fails the render on combinations the schema cannot express. */}}
{{- define "shardchat.validate" -}}
{{- $shutdownMs := 10000 -}}
{{- with .Values.router.config.timeouts }}{{ with .shutdownMs }}{{ $shutdownMs = int . }}{{ end }}{{ end -}}
{{- if le (mul (int .Values.router.terminationGracePeriodSeconds) 1000) $shutdownMs -}}
{{- fail (printf "router.terminationGracePeriodSeconds (%v s) must exceed router.config.timeouts.shutdownMs (%v ms)" .Values.router.terminationGracePeriodSeconds $shutdownMs) -}}
{{- end -}}
{{- if le (mul (int .Values.shard.terminationGracePeriodSeconds) 1000) $shutdownMs -}}
{{- fail (printf "shard.terminationGracePeriodSeconds (%v s) must exceed router.config.timeouts.shutdownMs (%v ms), the shards' drain time" .Values.shard.terminationGracePeriodSeconds $shutdownMs) -}}
{{- end -}}
{{- if and (not (kindIs "string" .Values.shardSpec.onNoMatch)) (ge (int .Values.shardSpec.onNoMatch) (int .Values.shards)) -}}
{{- fail (printf "shardSpec.onNoMatch %v names no shard: there are %v shards" .Values.shardSpec.onNoMatch .Values.shards) -}}
{{- end -}}
{{- end }}

{{/* Pod-spec fields the hook Jobs share with the other pods. */}}
{{- define "shardchat.hookPodSpec" -}}
restartPolicy: Never
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
securityContext:
  {{- include "shardchat.podSecurityContext" . | nindent 2 }}
{{- end }}
