{{/*
Names, labels and the pieces every broker pod shares.
*/}}

{{- define "broker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every object's name.  At most 40 characters: the longest
suffix is "-gateway", and a StatefulSet's name, with the revision hash the
controller adds to its pods' labels, must stay within 63.
*/}}
{{- define "broker.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels that select one component's pods: (dict "root" $ "component" "stream") */}}
{{- define "broker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "broker.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every object's labels: (dict "root" $ "component" "stream") */}}
{{- define "broker.labels" -}}
{{ include "broker.selectorLabels" . }}
app.kubernetes.io/part-of: broker
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/* The labels every broker pod of this release has, whatever its component. */}}
{{- define "broker.releaseLabels" -}}
app.kubernetes.io/name: {{ include "broker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* A tag given on the helm command line as --set image.tag=2 arrives as a number. */}}
{{- define "broker.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) -}}
{{- end -}}

{{- define "broker.gatewayImage" -}}
{{- printf "%s:%s" .Values.gatewayImage.repository (default .Chart.AppVersion .Values.gatewayImage.tag | toString) -}}
{{- end -}}

{{/* A component's Service, fully qualified (nginx's resolver uses no search list): (dict "root" $ "component" "auth") */}}
{{- define "broker.serviceHost" -}}
{{- printf "%s-%s.%s.svc.%s" (include "broker.fullname" .root) .component .root.Release.Namespace .root.Values.clusterDomain -}}
{{- end -}}

{{/*
The forwarders, each by its stable name (StatefulSet pod . headless Service):
ZeroMQ connects to one address per name, so a Service name in front of
several forwarders would reach only one of them.
*/}}
{{- define "broker.busForwarders" -}}
{{- $full := include "broker.fullname" . -}}
{{- $names := list -}}
{{- range $i := until (int .Values.bus.replicas) -}}
{{- $names = append $names (printf "%s-bus-%d.%s-bus.%s.svc.%s:%d" $full $i $full $.Release.Namespace $.Values.clusterDomain (int $.Values.bus.port)) -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{/* The Secrets' names: the user's, or the chart's own. */}}
{{- define "broker.apiSecret" -}}
{{- default (printf "%s-api" (include "broker.fullname" .)) .Values.secrets.api.existingSecret -}}
{{- end -}}
{{- define "broker.storeSecret" -}}
{{- default (printf "%s-store" (include "broker.fullname" .)) .Values.secrets.store.existingSecret -}}
{{- end -}}
{{- define "broker.busSecret" -}}
{{- default (printf "%s-bus-keys" (include "broker.fullname" .)) .Values.secrets.bus.existingSecret -}}
{{- end -}}

{{/* Whether the store Secret has a password apart from the URI. */}}
{{- define "broker.storePassword" -}}
{{- if .Values.secrets.store.existingSecret -}}
{{- if .Values.secrets.store.passwordKey }}yes{{ end -}}
{{- else if .Values.secrets.store.password }}yes{{ end -}}
{{- end -}}

{{/*
Flags of every broker service: logging, network time and the bus (CURVE on
every link: the service's own pair, the forwarders' and certd's public keys,
and the keys a binding socket accepts).  Argument: (dict "root" $ "component" "auth")
*/}}
{{- define "broker.commonArgs" -}}
{{- $v := .root.Values -}}
- {{ printf "--log_format=%s" $v.config.logFormat | quote }}
- {{ printf "--log_level=%s" $v.config.logLevel | quote }}
- {{ printf "--ntp_servers=%s" $v.config.ntpServers | quote }}
- {{ printf "--bus_forwarders=%s" (include "broker.busForwarders" .root) | quote }}
- --bus_key_file=/etc/broker/bus/key
- --bus_trusted_keys=/etc/broker/bus/trusted.keys
- --bus_server_key=/etc/broker/bus/bus.pub
- --bus_certd_key=/etc/broker/bus/certd.pub
{{- range $v.config.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Flags of the services that answer clients and use the store: every secret from a file. */}}
{{- define "broker.apiArgs" -}}
{{- $v := .Values -}}
- --admin_token_file=/etc/broker/api/admin_token
- --jwt_secret_file=/etc/broker/api/jwt_secret
- --store_file=/etc/broker/store/store_uri
{{- if include "broker.storePassword" . }}
- --store_password_file=/etc/broker/store/store_password
{{- end }}
- {{ printf "--origin=%s" $v.api.origin | quote }}
- --jwt_expiry={{ int $v.api.jwtExpiry }}
- --max_body={{ int $v.api.maxBody }}
- --login_limit_user={{ int $v.api.loginLimitUser }}
- --login_limit_ip={{ int $v.api.loginLimitIp }}
- --admin_limit_ip={{ int $v.api.adminLimitIp }}
- {{ printf "--trusted_proxies=%s" $v.api.trustedProxies | quote }}
{{- end -}}

{{/* The pod spec's shared settings. */}}
{{- define "broker.podSettings" -}}
# No API credentials: nothing in the pods talks to Kubernetes.
automountServiceAccountToken: false
# Kubernetes would put every Service of the namespace in the environment as
# <NAME>_PORT=tcp://..., and the services read every BROKER_<FLAG> variable:
# a Service named broker or broker-http would set --port or --http_port.
enableServiceLinks: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
The bus keys a pod mounts: its own service's pair (as "key"), the public
keys of the forwarders and of certd, and trusted.keys.  A directory mount,
not subPath, so a rotated trusted.keys reaches the forwarders without a
restart (they re-read it at every handshake).  Mode 0440 with the pod's
fsGroup: the images' user reads them, other users cannot.
Argument: (dict "root" $ "component" "auth")
*/}}
{{- define "broker.busKeysVolume" -}}
- name: bus-keys
  secret:
    secretName: {{ include "broker.busSecret" .root }}
    defaultMode: 288 # 0440
    items:
      - {key: {{ .component }}, path: key}
      - {key: bus.pub, path: bus.pub}
      - {key: certd.pub, path: certd.pub}
      - {key: trusted.keys, path: trusted.keys}
{{- end -}}

{{/* The API's secrets and the store's URI (auth, ingest, stream). */}}
{{- define "broker.apiVolumes" -}}
- name: api-secrets
  secret:
    secretName: {{ include "broker.apiSecret" . }}
    defaultMode: 288 # 0440
    items:
      - {key: admin_token, path: admin_token}
      - {key: jwt_secret, path: jwt_secret}
- name: store
  secret:
    secretName: {{ include "broker.storeSecret" . }}
    defaultMode: 288 # 0440
    items:
      - {key: store_uri, path: store_uri}
      {{- if include "broker.storePassword" . }}
      - {key: {{ .Values.secrets.store.existingSecret | empty | ternary "store_password" .Values.secrets.store.passwordKey }}, path: store_password}
      {{- end }}
{{- end -}}

{{- define "broker.apiVolumeMounts" -}}
- {name: api-secrets, mountPath: /etc/broker/api, readOnly: true}
- {name: store, mountPath: /etc/broker/store, readOnly: true}
{{- end -}}

{{/* Health on the port every broker service serves: alive on /healthz, ready on /readyz. */}}
{{- define "broker.httpProbes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: http}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end -}}

{{/* The pause before SIGTERM of a pod that serves clients (values: preStopSleepSeconds). */}}
{{- define "broker.preStop" -}}
lifecycle:
  preStop:
    exec:
      command: ["sleep", {{ .Values.preStopSleepSeconds | int | toString | quote }}]
{{- end -}}

{{/* The stream's grace period: the value, or pause + drain + 10 s. */}}
{{- define "broker.streamGrace" -}}
{{- $floor := add (int .Values.preStopSleepSeconds) (int .Values.stream.drainSeconds) -}}
{{- $grace := add $floor 10 -}}
{{- if .Values.stream.terminationGracePeriodSeconds -}}
{{- $grace = int .Values.stream.terminationGracePeriodSeconds -}}
{{- end -}}
{{- if le (int $grace) (int $floor) -}}
{{- fail (printf "stream.terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + stream.drainSeconds (%d): the kubelet would kill streams before they are drained" (int $grace) (int $floor)) -}}
{{- end -}}
{{- $grace -}}
{{- end -}}

{{/* Settings that cannot work together stop the render with the reason. */}}
{{- define "broker.validate" -}}
{{- $v := .Values -}}
{{- if and (not $v.gateway.enabled) (not $v.ingress.enabled) -}}
{{- fail "gateway.enabled and ingress.enabled are both false: nothing would route clients to the services" -}}
{{- end -}}
{{- if $v.certd.tls.enabled -}}
{{- if not $v.gateway.enabled -}}
{{- fail "certd.tls.enabled needs gateway.enabled: the gateway serves certd's certificate" -}}
{{- end -}}
{{- if $v.ingress.enabled -}}
{{- fail "certd.tls.enabled with ingress.enabled: the gateway would redirect the Ingress's plain HTTP to https; terminate TLS at the Ingress instead (ingress.tls, cert-manager)" -}}
{{- end -}}
{{- if not $v.certd.tls.domain -}}
{{- fail "certd.tls.enabled needs certd.tls.domain, the name to certify" -}}
{{- end -}}
{{- end -}}
{{- if lt (int $v.bus.replicas) 1 -}}
{{- fail "bus.replicas must be at least 1" -}}
{{- end -}}
{{- if lt (int $v.stream.drainSeconds) 1 -}}
{{- fail "stream.drainSeconds must be at least 1" -}}
{{- end -}}
{{- end -}}
