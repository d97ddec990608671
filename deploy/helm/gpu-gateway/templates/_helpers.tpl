{{/* Names and labels. */}}
{{- define "gpu-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gpu-gateway.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "gpu-gateway.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "gpu-gateway.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gpu-gateway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "gpu-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "gateway"). */}}
{{- define "gpu-gateway.selector" -}}
app.kubernetes.io/name: {{ include "gpu-gateway.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "gpu-gateway.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "gpu-gateway.serviceName" -}}{{ include "gpu-gateway.fullname" . }}{{- end -}}
{{- define "gpu-gateway.tlsSecret" -}}
{{- if eq .Values.tls.source "secret" -}}{{ .Values.tls.secret.name }}{{- else -}}{{ include "gpu-gateway.fullname" . }}-tls{{- end -}}
{{- end -}}
{{- define "gpu-gateway.policyConfigMap" -}}
{{- default (printf "%s-policy" (include "gpu-gateway.fullname" .)) .Values.policy.existingConfigMap -}}
{{- end -}}
{{- define "gpu-gateway.historyKeySecret" -}}
{{- default (printf "%s-history-key" (include "gpu-gateway.fullname" .)) .Values.historyKey.existingSecret -}}
{{- end -}}

{{/* The DNS names the serving certificate must carry. */}}
{{- define "gpu-gateway.dnsNames" -}}
{{- $svc := include "gpu-gateway.serviceName" . -}}
{{- $names := list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) -}}
{{- if .Values.adminApi.enabled -}}
{{- $api := printf "%s-api" $svc -}}
{{- $names = concat $names (list $api (printf "%s.%s" $api .Release.Namespace) (printf "%s.%s.svc" $api .Release.Namespace)) .Values.adminApi.dnsNames -}}
{{- end -}}
{{- toJson $names -}}
{{- end -}}

{{/* Refuse settings that would install an unsafe or broken gateway. */}}
{{- define "gpu-gateway.validate" -}}
{{- if and (gt (int .Values.gateway.replicas) 1) (ne .Values.database.type "postgresql") -}}
{{- fail (printf "gateway.replicas=%d, but database.type=%s is single-replica (one SQLite file serves one gateway process). Set gateway.replicas=1, or run several replicas on PostgreSQL: database.type=postgresql and database.postgresql.existingSecret (a Secret with the connection URL)" (int .Values.gateway.replicas) .Values.database.type) -}}
{{- end -}}
{{- if and (eq .Values.database.type "postgresql") (not .Values.database.postgresql.existingSecret) -}}
{{- fail "database.type=postgresql needs database.postgresql.existingSecret (a Secret with the connection URL)" -}}
{{- end -}}
{{- if and (eq .Values.tls.source "secret") (or (not .Values.tls.secret.name) (not .Values.tls.secret.caBundle)) -}}
{{- fail "tls.source=secret needs tls.secret.name and tls.secret.caBundle" -}}
{{- end -}}
{{- if ge (mul (int .Values.gateway.decisionBudgetMs) 5) (mul (int .Values.webhook.timeoutSeconds) 4000) -}}
{{- fail (printf "gateway.decisionBudgetMs=%d must stay below webhook.timeoutSeconds/1.25 (%d ms), or the API server times out before the gateway answers" (int .Values.gateway.decisionBudgetMs) (div (mul (int .Values.webhook.timeoutSeconds) 4000) 5)) -}}
{{- end -}}
{{- $auth := .Values.adminApi.auth -}}
{{- if and $auth.oidc.issuer $auth.jwt.existingSecret -}}
{{- fail "adminApi.auth: set either oidc.issuer (OIDC) or jwt.existingSecret (a shared secret), not both" -}}
{{- end -}}
{{- if and $auth.oidc.issuer (not $auth.oidc.audience) -}}
{{- fail "adminApi.auth.oidc.issuer needs adminApi.auth.oidc.audience (the client id gpuctl's tokens are issued for)" -}}
{{- end -}}
{{- if and $auth.jwt.existingSecret (not (and $auth.jwt.issuer $auth.jwt.audience)) -}}
{{- fail "adminApi.auth.jwt.existingSecret needs adminApi.auth.jwt.issuer and adminApi.auth.jwt.audience (the iss and aud its tokens carry)" -}}
{{- end -}}
{{- if and .Values.checkpoints.enabled (not .Values.checkpoints.existingSecret) -}}
{{- fail "checkpoints.enabled needs checkpoints.existingSecret (a Secret with the Ed25519 signing key)" -}}
{{- end -}}
{{- end -}}

{{/*
Where the controller runs: "gateway" (inside `serve`, the one process that owns the SQLite
file), "deployment" (its own Deployment beside the gateways sharing PostgreSQL) or "" (off).
*/}}
{{- define "gpu-gateway.controllerMode" -}}
{{- if .Values.controller.enabled -}}{{ ternary "gateway" "deployment" (eq .Values.database.type "sqlite") }}{{- end -}}
{{- end -}}

{{/* The service account the controller runs as; its identity alone may lift the quota gate. */}}
{{- define "gpu-gateway.controllerAccount" -}}
{{- include "gpu-gateway.fullname" . }}{{ if eq (include "gpu-gateway.controllerMode" .) "deployment" }}-controller{{ end -}}
{{- end -}}

{{/* The controller's flags, the same for `gpu-gateway controller` and `serve --controller`. */}}
{{- define "gpu-gateway.controllerArgs" -}}
{{- $fullname := include "gpu-gateway.fullname" . -}}
- --lease-name={{ .Values.controller.leaseName }}
- --lease-namespace={{ .Release.Namespace }}
# The identity that patches the pods is the only one that may lift the gpu-gateway.io/quota gate.
- --service-account=system:serviceaccount:{{ .Release.Namespace }}:{{ include "gpu-gateway.controllerAccount" . }}
# Drift of the installation's webhook configurations raises a metric, an Event and an audit
# record; a new chart rendering (an upgrade) records new baselines instead.
- --watch-webhook=validating/{{ $fullname }}
- --watch-webhook=mutating/{{ $fullname }}
- --webhook-generation={{ include (print .Template.BasePath "/webhooks.yaml") . | sha256sum | trunc 16 }}
{{- range .Values.controller.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/* The gateway's service account needs a token: it evicts rogue pods, or runs the controller. */}}
{{- define "gpu-gateway.gatewayToken" -}}
{{- or (dig "telemetry" "evict_rogue_pods" false (include "gpu-gateway.limits" . | fromJson)) (eq (include "gpu-gateway.controllerMode" .) "gateway") -}}
{{- end -}}

{{/* The policy bundle's limits.yaml as values: the chart-side copy, or the override. */}}
{{- define "gpu-gateway.limits" -}}
{{- $text := .Files.Get "files/policies/limits.yaml" -}}
{{- if hasKey .Values.policy.files "limits.yaml" -}}{{- $text = get .Values.policy.files "limits.yaml" -}}{{- end -}}
{{- $text | fromYaml | toJson -}}
{{- end -}}

{{/* A shell-style pattern list as one anchored RE2 alternation. */}}
{{- define "gpu-gateway.globsRegex" -}}
{{- $parts := list -}}
{{- range . -}}
{{- $parts = append $parts (regexQuoteMeta . | replace "\\*" ".*" | replace "\\?" ".") -}}
{{- end -}}
{{- printf "^(%s)$" (join "|" $parts) -}}
{{- end -}}

{{/* CEL: the resource name `.r` is a GPU (dict "r" var "g" $). */}}
{{- define "gpu-gateway.celGpu" -}}
{{- $limits := include "gpu-gateway.limits" .g | fromJson -}}
{{- /* The defaults are the gateway's own when limits.yaml names none (gateway/admission/workloads.py). */ -}}
{{- $gpu := .g.Values.webhook.gpuResources | default (get $limits "gpu_resources") | default (list "nvidia.com/gpu" "nvidia.com/mig-*" "amd.com/gpu" "gpu.intel.com/*") -}}
{{- $not := .g.Values.webhook.notGpuResources | default (get $limits "not_gpu_resources") | default (list "gpu.intel.com/millicores" "gpu.intel.com/memory.max" "gpu.intel.com/tiles") -}}
{{- if $not -}}
({{ .r }}.matches(r'{{ include "gpu-gateway.globsRegex" $gpu }}') && !{{ .r }}.matches(r'{{ include "gpu-gateway.globsRegex" $not }}'))
{{- else -}}
{{ .r }}.matches(r'{{ include "gpu-gateway.globsRegex" $gpu }}')
{{- end -}}
{{- end -}}

{{/* CEL: the ResourceRequirements `.e` asks for a GPU (its limits or requests name one). */}}
{{- define "gpu-gateway.celResources" -}}
{{- $r := printf "r%d" (int .n) -}}
((has({{ .e }}.limits) ? {{ .e }}.limits.map({{ $r }}, {{ $r }}) : []) + (has({{ .e }}.requests) ? {{ .e }}.requests.map({{ $r }}, {{ $r }}) : [])).exists({{ $r }}, {{ include "gpu-gateway.celGpu" (dict "r" $r "g" .g) }})
{{- end -}}

{{/* CEL: a container of the PodSpec `.e` (app, init or sidecar) asks for a GPU, or the pod names
DRA claims (spec.resourceClaims: their GPUs are in the gateway's ledger, so it must see them). */}}
{{- define "gpu-gateway.celPodSpec" -}}
{{- $c := printf "c%d" (int .n) -}}
((has({{ .e }}.resourceClaims) && size({{ .e }}.resourceClaims) > 0) || ((has({{ .e }}.containers) ? {{ .e }}.containers : []) + (has({{ .e }}.initContainers) ? {{ .e }}.initContainers : [])).exists({{ $c }}, has({{ $c }}.resources) ? {{ include "gpu-gateway.celResources" (dict "e" (printf "%s.resources" $c) "n" (int .n) "g" .g) }} : false))
{{- end -}}

{{/* CEL: the GPU block `.e` ({name, quantity}, Spark's `gpu`) names a GPU resource. */}}
{{- define "gpu-gateway.celGpuField" -}}
(has({{ .e }}.name) ? {{ include "gpu-gateway.celGpu" (dict "r" (printf "string(%s.name)" .e) "g" .g) }} : false)
{{- end -}}

{{/*
CEL: walk the path segments `.segs` from expression `.e` to the leaf: PodSpecs (`spec`),
ResourceRequirements (`resources`), GPU blocks (`gpuField`), anything (`present`, true unless
`.unless` is found beside it) or, for `absent`, true where a segment is missing. Segments: a
field, `[]` each list item, `{}` each map value, `{*Suffix}` each map value whose key ends
with Suffix, `*` each item or value.
*/}}
{{- define "gpu-gateway.celWalk" -}}
{{- $miss := ternary "true" "false" (eq .leaf "absent") -}}
{{- if not .segs -}}
{{- if eq .leaf "resources" -}}
{{- include "gpu-gateway.celResources" (dict "e" .e "n" (int .n) "g" .g) -}}
{{- else if eq .leaf "reach" -}}
{{- include "gpu-gateway.celPodReach" (dict "e" .e "n" (int .n)) -}}
{{- else if eq .leaf "gpuField" -}}
{{- include "gpu-gateway.celGpuField" (dict "e" .e "g" .g) -}}
{{- else if eq .leaf "absent" -}}
false
{{- else if eq .leaf "present" -}}
{{- if .unless -}}!({{ include "gpu-gateway.celWalk" (dict "e" .e "segs" .unless "n" (int .n) "leaf" "present" "g" .g) }}){{- else -}}true{{- end -}}
{{- else -}}
{{- include "gpu-gateway.celPodSpec" (dict "e" .e "n" (int .n) "g" .g) -}}
{{- end -}}
{{- else -}}
{{- $seg := first .segs -}}
{{- $rest := rest .segs -}}
{{- $v := printf "x%d" (int .n) -}}
{{- $next := add1 (int .n) -}}
{{- $sub := dict "e" $v "segs" $rest "n" $next "leaf" .leaf "unless" .unless "g" .g -}}
{{- if eq $seg "[]" -}}
{{ .e }}.exists({{ $v }}, {{ include "gpu-gateway.celWalk" $sub }})
{{- else if eq $seg "*" -}}
(type({{ .e }}) == list ? {{ .e }} : type({{ .e }}) == map ? {{ .e }}.map(k{{ .n }}, {{ .e }}[k{{ .n }}]) : []).exists({{ $v }}, {{ include "gpu-gateway.celWalk" $sub }})
{{- else if hasPrefix "{" $seg -}}
{{- $suffix := $seg | trimPrefix "{" | trimSuffix "}" | trimPrefix "*" -}}
{{ .e }}.exists({{ $v }}, {{ if $suffix }}!{{ $v }}.endsWith('{{ $suffix }}') ? false : {{ end }}{{ include "gpu-gateway.celWalk" (dict "e" (printf "%s[%s]" .e $v) "segs" $rest "n" $next "leaf" .leaf "unless" .unless "g" .g) }})
{{- else if regexMatch "^[A-Za-z_][A-Za-z0-9_]*$" $seg -}}
(has({{ .e }}.{{ $seg }}) ? {{ include "gpu-gateway.celWalk" (dict "e" (printf "%s.%s" .e $seg) "segs" $rest "n" .n "leaf" .leaf "unless" .unless "g" .g) }} : {{ $miss }})
{{- else -}}
('{{ $seg }}' in {{ .e }} ? {{ include "gpu-gateway.celWalk" (dict "e" (printf "%s['%s']" .e $seg) "segs" $rest "n" .n "leaf" .leaf "unless" .unless "g" .g) }} : {{ $miss }})
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Path segments: a dotted string (values) or already a list (the bundle's workload_kinds). */}}
{{- define "gpu-gateway.segments" -}}
{{- if kindIs "string" . -}}{{- splitList "." . | toJson -}}{{- else -}}{{- toJson . -}}{{- end -}}
{{- end -}}

{{/* CEL: the object `.o` of a kind with these pod locations (`.kind`) asks for a GPU. */}}
{{- define "gpu-gateway.celKindGpus" -}}
{{- $terms := list -}}
{{- range $leaf, $key := dict "spec" "podSpecs" "resources" "resources" "gpuField" "gpuFields" "absent" "absent" -}}
{{- range get $.kind $key | default list -}}
{{- $terms = append $terms (printf "(%s)" (include "gpu-gateway.celWalk" (dict "e" $.o "segs" (include "gpu-gateway.segments" . | fromJsonArray) "n" 0 "leaf" $leaf "g" $.g))) -}}
{{- end -}}
{{- end -}}
{{- range .kind.present | default list -}}
{{- $path := . -}}{{- $unless := list -}}
{{- if kindIs "map" . -}}{{- $path = .path -}}{{- $unless = .unless | default list -}}{{- end -}}
{{- $terms = append $terms (printf "(%s)" (include "gpu-gateway.celWalk" (dict "e" $.o "segs" (include "gpu-gateway.segments" $path | fromJsonArray) "n" 0 "leaf" "present" "unless" (include "gpu-gateway.segments" $unless | fromJsonArray) "g" $.g))) -}}
{{- end -}}
{{- if $terms -}}{{ join " || " $terms }}{{- else if .kind.registered -}}false{{- else -}}true{{- end -}}
{{- end -}}

{{/*
The policy bundle's workload_kinds (limits.yaml), in the shape of webhook.workloadKinds with
paths as segment lists: every registered kind is routed, its RBAC granted.
*/}}
{{- define "gpu-gateway.registeredKinds" -}}
{{- $limits := include "gpu-gateway.limits" . | fromJson -}}
{{- $out := list -}}
{{- range (get $limits "workload_kinds" | default list) -}}
{{- $k := dict "group" .group "resource" (.resource | default (printf "%ss" (lower .kind))) "registered" true "podSpecs" (list) "resources" (list) "gpuFields" (list) "present" (list) -}}
{{- range .pods | default list -}}
{{- $base := splitList "/" (trimPrefix "/" .path) -}}
{{- if eq .shape "template" -}}
{{- $_ := set $k "podSpecs" (append (get $k "podSpecs") (append $base "spec")) -}}
{{- else if eq .shape "pod_spec" -}}
{{- $_ := set $k "podSpecs" (append (get $k "podSpecs") $base) -}}
{{- else -}}
{{- $_ := set $k "resources" (append (get $k "resources") (append $base "resources")) -}}
{{- end -}}
{{- range .containers | default list -}}
{{- $at := ternary (splitList "/" (trimPrefix "/" .)) (concat $base (splitList "/" .)) (hasPrefix "/" .) -}}
{{- $_ := set $k "resources" (append (get $k "resources") (append $at "resources")) -}}
{{- end -}}
{{- range .gpus | default list -}}
{{- $at := ternary (splitList "/" (trimPrefix "/" .)) (concat $base (splitList "/" .)) (hasPrefix "/" .) -}}
{{- $_ := set $k "gpuFields" (append (get $k "gpuFields") $at) -}}
{{- end -}}
{{- end -}}
{{- range .unresolved | default list -}}
{{- $unless := ternary (splitList "/" (.unless | default "")) (list) (not (empty .unless)) -}}
{{- $_ := set $k "present" (append (get $k "present") (dict "path" (splitList "/" (trimPrefix "/" .path)) "unless" $unless)) -}}
{{- end -}}
{{- $out = append $out $k -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{- define "gpu-gateway.workloadKinds" -}}
{{- concat .Values.webhook.workloadKinds .Values.webhook.extraWorkloadKinds (include "gpu-gateway.registeredKinds" . | fromJsonArray) | toJson -}}
{{- end -}}

{{/*
CEL: this CREATE or UPDATE of a workload asks (or asked, before the update) for GPUs. Kinds
sharing pod locations share one branch. Kinds of the routed API groups that are not listed
are always true: the gateway walks them generically, and nothing is passed unseen.
*/}}
{{- define "gpu-gateway.celRequestsGpus" -}}
{{- $shapes := dict -}}
{{- $order := list -}}
{{- range (include "gpu-gateway.workloadKinds" . | fromJsonArray) -}}
{{- $shape := toJson (dict "podSpecs" (.podSpecs | default list) "resources" (.resources | default list) "gpuFields" (.gpuFields | default list) "present" (.present | default list) "absent" (.absent | default list) "registered" (.registered | default false)) -}}
{{- if not (hasKey $shapes $shape) -}}{{- $order = append $order $shape -}}{{- end -}}
{{- $_ := set $shapes $shape (append (get $shapes $shape | default list) (printf "'%s/%s'" .group .resource)) -}}
{{- end -}}
(request.operation == 'UPDATE' ? [object, oldObject] : [object]).exists(o, 
{{- range $order -}}
(request.resource.group + '/' + request.resource.resource in [{{ join ", " (get $shapes .) }}]) ? ({{ include "gpu-gateway.celKindGpus" (dict "o" "o" "kind" (fromJson .) "g" $) }}) : {{ end -}}
true)
{{- end -}}

{{/*
CEL: the PodSpec `.e` reaches something that may be someone else's, or uses an escape hatch:
every volume but emptyDir, downwardAPI, the configMap kube-root-ca.crt and projected volumes of
only those and service-account tokens; a service account other than `default`; image pull
secrets; envFrom; env valueFrom other than fieldRef/resourceFieldRef; NVIDIA_VISIBLE_DEVICES;
host namespaces, nodeName, privileged, added capabilities, an unmasked /proc, Windows
hostProcess. An allowlist: whatever it does not know (a new volume type) counts as reaching.
*/}}
{{- define "gpu-gateway.celPodReach" -}}
{{- $s := .e -}}{{- $n := int .n -}}
{{- $ca := "'kube-root-ca.crt'" -}}
((has({{ $s }}.volumes) && {{ $s }}.volumes.exists(v{{ $n }}, !(has(v{{ $n }}.emptyDir) || has(v{{ $n }}.downwardAPI) || (has(v{{ $n }}.configMap) && has(v{{ $n }}.configMap.name) && v{{ $n }}.configMap.name == {{ $ca }}) || (has(v{{ $n }}.projected) && (!has(v{{ $n }}.projected.sources) || v{{ $n }}.projected.sources.all(p{{ $n }}, has(p{{ $n }}.serviceAccountToken) || has(p{{ $n }}.downwardAPI) || (has(p{{ $n }}.configMap) && has(p{{ $n }}.configMap.name) && p{{ $n }}.configMap.name == {{ $ca }}))))))) || (has({{ $s }}.serviceAccountName) && {{ $s }}.serviceAccountName != 'default') || (has({{ $s }}.serviceAccount) && {{ $s }}.serviceAccount != 'default') || (has({{ $s }}.imagePullSecrets) && size({{ $s }}.imagePullSecrets) > 0) || (has({{ $s }}.hostNetwork) && {{ $s }}.hostNetwork == true) || (has({{ $s }}.hostPID) && {{ $s }}.hostPID == true) || (has({{ $s }}.hostIPC) && {{ $s }}.hostIPC == true) || (has({{ $s }}.nodeName) && {{ $s }}.nodeName != '') || (has({{ $s }}.securityContext) && has({{ $s }}.securityContext.windowsOptions) && has({{ $s }}.securityContext.windowsOptions.hostProcess) && {{ $s }}.securityContext.windowsOptions.hostProcess == true) || ((has({{ $s }}.containers) ? {{ $s }}.containers : []) + (has({{ $s }}.initContainers) ? {{ $s }}.initContainers : []) + (has({{ $s }}.ephemeralContainers) ? {{ $s }}.ephemeralContainers : [])).exists(c{{ $n }}, (has(c{{ $n }}.envFrom) && size(c{{ $n }}.envFrom) > 0) || (has(c{{ $n }}.env) && c{{ $n }}.env.exists(e{{ $n }}, (has(e{{ $n }}.valueFrom) && !has(e{{ $n }}.valueFrom.fieldRef) && !has(e{{ $n }}.valueFrom.resourceFieldRef)) || (has(e{{ $n }}.name) && e{{ $n }}.name == 'NVIDIA_VISIBLE_DEVICES'))) || (has(c{{ $n }}.securityContext) && ((has(c{{ $n }}.securityContext.privileged) && c{{ $n }}.securityContext.privileged == true) || (has(c{{ $n }}.securityContext.capabilities) && has(c{{ $n }}.securityContext.capabilities.add) && size(c{{ $n }}.securityContext.capabilities.add) > 0) || (has(c{{ $n }}.securityContext.procMount) && c{{ $n }}.securityContext.procMount != 'Default') || (has(c{{ $n }}.securityContext.windowsOptions) && has(c{{ $n }}.securityContext.windowsOptions.hostProcess) && c{{ $n }}.securityContext.windowsOptions.hostProcess == true)))))
{{- end -}}

{{/*
CEL: this CREATE or UPDATE of a workload reaches data or uses an escape hatch (or did, before
the update). Only kinds whose pods are all at listed PodSpecs are looked into; every other kind
(pods kept in other shapes, kinds not listed) counts as reaching, and so does a StatefulSet's
volumeClaimTemplates. Used on a fail-closed webhook: an error denies.
*/}}
{{- define "gpu-gateway.celReaches" -}}
{{- $shapes := dict -}}
{{- $order := list -}}
{{- range (include "gpu-gateway.workloadKinds" . | fromJsonArray) -}}
{{- if and .podSpecs (not .resources) (not .gpuFields) (not .present) (not .absent) -}}
{{- $shape := toJson .podSpecs -}}
{{- if not (hasKey $shapes $shape) -}}{{- $order = append $order $shape -}}{{- end -}}
{{- $_ := set $shapes $shape (append (get $shapes $shape | default list) (printf "'%s/%s'" .group .resource)) -}}
{{- end -}}
{{- end -}}
(request.operation == 'UPDATE' ? [object, oldObject] : [object]).exists(o, (has(o.spec) && has(o.spec.volumeClaimTemplates) && size(o.spec.volumeClaimTemplates) > 0) || (
{{- range $order -}}
{{- $terms := list -}}
{{- range fromJsonArray . -}}
{{- $terms = append $terms (printf "(%s)" (include "gpu-gateway.celWalk" (dict "e" "o" "segs" (include "gpu-gateway.segments" . | fromJsonArray) "n" 0 "leaf" "reach" "g" $))) -}}
{{- end -}}
(request.resource.group + '/' + request.resource.resource in [{{ join ", " (get $shapes .) }}]) ? ({{ join " || " $terms }}) : {{ end -}}
true))
{{- end -}}

{{/*
CEL: this CREATE of a data object reads another object's contents: a claim cloned from a claim
or a snapshot (dataSource, dataSourceRef), a Secret the token controller fills with a service
account's token, a ServiceAccount listing Secrets. Constant cost: no lists are walked.
*/}}
{{- define "gpu-gateway.celDataSources" -}}
(request.resource.resource == 'persistentvolumeclaims' && has(object.spec) && (has(object.spec.dataSource) || has(object.spec.dataSourceRef))) || (request.resource.resource == 'secrets' && has(object.type) && object.type == 'kubernetes.io/service-account-token') || (request.resource.resource == 'serviceaccounts' && ((has(object.secrets) && size(object.secrets) > 0) || (has(object.imagePullSecrets) && size(object.imagePullSecrets) > 0)))
{{- end -}}

{{/* Workload rules (apiGroups → resources) for `operations`, with `sub` appended to resources. */}}
{{- define "gpu-gateway.workloadRules" -}}
{{- $byGroup := dict -}}
{{- $builtin := list "" "apps" "batch" -}}
{{- range (include "gpu-gateway.workloadKinds" .root | fromJsonArray) -}}
{{- if has .group $builtin -}}
{{- if or (not $.scaleOnly) .scale -}}
{{- $_ := set $byGroup .group (append (get $byGroup .group | default list) .resource) -}}
{{- end -}}
{{- else -}}
{{- $_ := set $byGroup .group (list "*") -}}
{{- end -}}
{{- end -}}
{{- range $group := keys $byGroup | sortAlpha }}
- apiGroups: [{{ $group | quote }}]
  apiVersions: ["*"]
  operations: {{ toJson $.operations }}
  resources: {{ $res := list }}{{ range get $byGroup $group | uniq }}{{ $res = append $res (printf "%s%s" . $.sub) }}{{ end }}{{ toJson $res }}
  scope: Namespaced
{{- end }}
{{- end -}}

{{/* The namespaces never sent to the gateway, and the break-glass label. */}}
{{- define "gpu-gateway.namespaceSelector" -}}
{{- $limits := include "gpu-gateway.limits" . | fromJson -}}
{{- $exempt := concat (list "kube-system" .Release.Namespace) (get $limits "exempt_namespaces" | default list) .Values.webhook.exemptNamespaces | uniq -}}
namespaceSelector:
  matchExpressions:
    - {key: kubernetes.io/metadata.name, operator: NotIn, values: {{ toJson $exempt }}}
{{- if .Values.webhook.exemptNamespaceLabel }}
    - {key: {{ .Values.webhook.exemptNamespaceLabel }}, operator: NotIn, values: ["true"]}
{{- end }}
{{- end -}}

{{- define "gpu-gateway.clientConfig" -}}
clientConfig:
  service:
    name: {{ include "gpu-gateway.serviceName" .root }}
    namespace: {{ .root.Release.Namespace }}
    path: {{ .path }}
    port: {{ .root.Values.service.port }}
{{- if ne .root.Values.tls.source "certManager" }}
  caBundle: {{ include "gpu-gateway.caBundle" .root }}
{{- end }}
{{- end -}}

{{- define "gpu-gateway.webhookAnnotations" -}}
{{- if eq .Values.tls.source "certManager" }}
annotations:
  cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/{{ include "gpu-gateway.fullname" . }}-serving
{{- end }}
{{- end -}}

{{/* The CA bundle for clientConfig: from the chart-made CA, or given. */}}
{{- define "gpu-gateway.caBundle" -}}
{{- if eq .Values.tls.source "secret" -}}
{{- .Values.tls.secret.caBundle -}}
{{- else -}}
{{- (include "gpu-gateway.chartTls" . | fromJson).ca | b64enc -}}
{{- end -}}
{{- end -}}

{{/*
The chart-generated CA and serving pair, made once per render (cached on the root context,
never in .Values, so nothing leaks into the release's stored values) and kept across
upgrades: the existing Secret is reused when it is there (lookup is empty offline).
*/}}
{{- define "gpu-gateway.chartTls" -}}
{{- if not (hasKey . "gpuGatewayTls") -}}
{{- $name := include "gpu-gateway.tlsSecret" . -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $name -}}
{{- if and $existing (index ($existing.data | default dict) "ca.crt") -}}
{{- $_ := set . "gpuGatewayTls" (dict "ca" (index $existing.data "ca.crt" | b64dec) "cert" (index $existing.data "tls.crt" | b64dec) "key" (index $existing.data "tls.key" | b64dec)) -}}
{{- else -}}
{{- $days := int .Values.tls.chart.validityDays -}}
{{- $ca := genCA (printf "%s-ca" (include "gpu-gateway.fullname" .)) $days -}}
{{- $svc := include "gpu-gateway.serviceName" . -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc .Release.Namespace) nil (include "gpu-gateway.dnsNames" . | fromJsonArray) $days $ca -}}
{{- $_ := set . "gpuGatewayTls" (dict "ca" $ca.Cert "cert" $cert.Cert "key" $cert.Key) -}}
{{- end -}}
{{- end -}}
{{- toJson (get . "gpuGatewayTls") -}}
{{- end -}}

{{/* Environment shared by gateway and controller: the database URL from its Secret. */}}
{{- define "gpu-gateway.databaseEnv" -}}
{{- if eq .Values.database.type "postgresql" }}
- name: GPU_GATEWAY_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.postgresql.existingSecret }}
      key: {{ .Values.database.postgresql.secretKey }}
{{- end }}
{{- end -}}

{{- define "gpu-gateway.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  capabilities: {drop: [ALL]}
  seccompProfile: {type: RuntimeDefault}
{{- end -}}
