{{/*
Names. Objects in the release namespace have config/'s fixed names (m2m-manager,
m2m-token-server, ...): one release per namespace. Objects that two releases could share, the
cluster-scoped ones and the RoleBindings in watched namespaces, carry the release name:
m2m.clusterName replaces the "m2m" that config/'s names start with by the release name when it
starts with "m2m" (release m2m keeps config/'s names, so the chart test compares them with
config/default), else by the release name and "-m2m". Two releases of different names never get one
name, since a release name that does not start with "m2m" gets a prefix that does not either;
two releases of one name in two namespaces do (docs/operations.md says to avoid that).
*/}}

{{/* The prefix of a release's shared names (see above). */}}
{{- define "m2m.prefix" -}}
{{- if hasPrefix "m2m" .Release.Name }}{{ .Release.Name }}{{ else }}{{ .Release.Name }}-m2m{{ end -}}
{{- end }}

{{/* The release's name of an object that config/ names .name: (dict "ctx" $ "name" "m2m-manager"). */}}
{{- define "m2m.clusterName" -}}
{{ include "m2m.prefix" .ctx }}{{ trimPrefix "m2m" .name }}
{{- end }}

{{/* The image of both containers: the tag defaults to the chart's appVersion. */}}
{{- define "m2m.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The --issuer-url of the install being upgraded, if any (empty with helm template). */}}
{{- define "m2m.existingIssuer" -}}
{{- $d := lookup "apps/v1" "Deployment" .Release.Namespace "m2m-token-server" -}}
{{- $found := "" -}}
{{- if $d -}}
{{- range $d.spec.template.spec.containers -}}
{{- if eq .name "token-server" -}}
{{- range .args -}}
{{- if and (not $found) (hasPrefix "--issuer-url=" .) }}{{ $found = trimPrefix "--issuer-url=" . }}{{ end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{ $found }}
{{- end }}

{{/* The URL of the token server's Service in the release namespace, https with TLS on. */}}
{{- define "m2m.serviceURL" -}}
{{- if .Values.tls.enabled -}}
https://m2m-token-server.{{ .Release.Namespace }}.svc
{{- else -}}
http://m2m-token-server.{{ .Release.Namespace }}.svc:8080
{{- end -}}
{{- end }}

{{/* The token server's DNS name in the cluster, which its certificate covers. */}}
{{- define "m2m.serviceHost" -}}
m2m-token-server.{{ .Release.Namespace }}.svc
{{- end }}

{{/*
The issuer URL: the value; else the upgraded install's, which resource servers pin; else the
token server's Service. With a public door the issuer is https://<host>, set explicitly. An
upgrade that would change the installed issuer without previousIssuerURL naming it fails, since
the issuer is the audience of ServiceAccount and private_key_jwt assertions and what every
verifier pins (docs/operations.md#moving-to-a-public-issuer).
*/}}
{{- define "m2m.issuerURL" -}}
{{- $existing := include "m2m.existingIssuer" . -}}
{{- $door := .Values.publicDoor.host -}}
{{- $public := printf "https://%s" $door -}}
{{- if and .Release.IsUpgrade (not .Values.issuerURL) (not $existing) -}}
{{- fail "an upgrade needs the issuer of the install it upgrades, and Helm could not read it (a client-side render?): set issuerURL to it, as GitOps tools that render with helm template must always do" -}}
{{- end -}}
{{- if and $door (not .Values.tls.enabled) -}}
{{- fail (printf "publicDoor.host %s needs tls.enabled=true: the Gateway or Ingress re-encrypts to the token server and verifies it against the manager's CA" $door) -}}
{{- end -}}
{{- if and $door .Values.issuerURL (ne .Values.issuerURL $public) -}}
{{- fail (printf "publicDoor.host %s serves the issuer %s, but issuerURL is %s: set issuerURL to %s, or leave it unset (docs/operations.md#moving-to-a-public-issuer)" $door $public .Values.issuerURL $public) -}}
{{- end -}}
{{- if and $door (not .Values.issuerURL) $existing (ne $existing $public) -}}
{{- fail (printf "the install being upgraded has the issuer %s, and publicDoor.host %s would change it to %s without a word: resource servers pin the issuer, and it is the audience of ServiceAccount and private_key_jwt assertions. Migrate on purpose: set issuerURL=%s and previousIssuerURL=%s, as docs/operations.md#moving-to-a-public-issuer says" $existing $door $public $public $existing) -}}
{{- end -}}
{{- if and $door (not .Values.issuerURL) (ne $existing $public) -}}
{{- fail (printf "publicDoor.host %s needs issuerURL set, to %s: a render without the cluster (helm template, as GitOps tools do) cannot tell a new install from an upgrade of one with another issuer, which must move on purpose (docs/operations.md#moving-to-a-public-issuer)" $door $public) -}}
{{- end -}}
{{- if and .Values.issuerURL $existing (ne .Values.issuerURL $existing) (ne .Values.previousIssuerURL $existing) -}}
{{- fail (printf "the install being upgraded has the issuer %s, and issuerURL %s would change it while assertions and verifiers still name it: move on purpose, with previousIssuerURL=%s (docs/operations.md#moving-to-a-public-issuer)" $existing .Values.issuerURL $existing) -}}
{{- end -}}
{{- if .Values.issuerURL -}}
{{ .Values.issuerURL }}
{{- else if $existing -}}
{{ $existing }}
{{- else if $door -}}
{{ $public }}
{{- else -}}
{{ include "m2m.serviceURL" . }}
{{- end -}}
{{- end }}

{{/*
The URL pods reach the token server by: the Service's with a public door (no hairpin through the
load balancer), else the issuer. The manager writes it as token_url into credentials Secrets.
*/}}
{{- define "m2m.inClusterURL" -}}
{{- if .Values.publicDoor.host }}{{ include "m2m.serviceURL" . }}{{ else }}{{ include "m2m.issuerURL" . }}{{ end -}}
{{- end }}

{{/* The Secret of the public door's certificate: the value, else the one cert-manager fills. */}}
{{- define "m2m.publicTLSSecret" -}}
{{ .Values.publicDoor.tls.secretName | default "m2m-token-server-public-tls" }}
{{- end }}

{{/*
The paths the public door routes: what clients and verifiers outside use (token, introspection,
revocation list, keys and metadata). Not /refusals, which takes a Kubernetes bearer token that has no business on
the internet (kubectl m2m why asks the in-cluster URL), nor the probes, which only the kubelet needs.
*/}}
{{- define "m2m.publicPaths" -}}
{{- toJson (list "/oauth2/token" "/oauth2/introspect" "/revocations" "/.well-known/jwks.json" "/.well-known/openid-configuration" "/.well-known/oauth-authorization-server") -}}
{{- end }}

{{/*
"true" when the token server serves HTTPS with the manager's certificate. An https issuer with
TLS off would be served on a plain listener that no client following the issuer can talk to:
refused.
*/}}
{{- define "m2m.tls" -}}
{{- $issuer := include "m2m.issuerURL" . -}}
{{- if and (hasPrefix "https://" $issuer) (not .Values.tls.enabled) -}}
{{- fail (printf "the issuer %s is https, but tls.enabled=false would serve the token server as plain HTTP, where clients that follow the issuer cannot connect: keep tls.enabled=true (the default: the manager issues the token server's certificate), or set an http:// issuerURL to serve plain HTTP on purpose" $issuer) -}}
{{- end -}}
{{- if and .Values.tls.enabled (hasPrefix "https://" $issuer) }}true{{ end -}}
{{- end }}

{{/* The status-writer admission policy, which the manager checks is installed (--status-policy-name). */}}
{{- define "m2m.statusPolicyName" -}}
{{ include "m2m.clusterName" (dict "ctx" . "name" "m2m-manager-writes-status") }}
{{- end }}

{{/* namespace/name of the signing-key Secret. */}}
{{- define "m2m.signingKeySecret" -}}
{{ .Release.Namespace }}/m2m-signing-keys
{{- end }}

{{/* Labels every object carries: what Helm and tooling read. */}}
{{- define "m2m.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
{{- end }}

{{/* Selector labels of a component (dict "component" "manager"): they never change. */}}
{{- define "m2m.selectorLabels" -}}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/name: m2m-operator
{{- end }}

{{/* Labels of a component's objects: (dict "ctx" $ "component" "manager"). */}}
{{- define "m2m.componentLabels" -}}
{{ include "m2m.selectorLabels" . }}
{{ include "m2m.labels" .ctx }}
{{- end }}

{{/* The scheduling and pod fields shared by both Deployments: (dict "ctx" $ "pod" .Values.manager). */}}
{{- define "m2m.podScheduling" -}}
{{- with .ctx.Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
- name: {{ . }}
{{- end }}
{{- end }}
{{- with .pod.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
  runAsNonRoot: true
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{/* The container security context of both containers. */}}
{{- define "m2m.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  capabilities:
    drop:
    - ALL
  readOnlyRootFilesystem: true
{{- end }}

{{/* Subjects: a ServiceAccount of the release namespace. */}}
{{- define "m2m.subject" -}}
- kind: ServiceAccount
  name: {{ .name }}
  namespace: {{ .ctx.Release.Namespace }}
{{- end }}
