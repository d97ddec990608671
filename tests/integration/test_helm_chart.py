"""The Helm chart, rendered by Helm's own engine and checked offline.

Every rendered object validates (strict) against the Kubernetes OpenAPI schemas; the webhook
configurations send the gateway exactly what its code decides (proved by evaluating their
rules, namespace selectors and CEL matchConditions against real AdmissionReview requests);
the RBAC grants no verb the code does not use; unsafe settings refuse to render.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("helm_python", reason="the in-process Helm engine (pip helm-python-sdk)")
pytest.importorskip("celpy", reason="a CEL evaluator (pip cel-python)")

import kubernetes_validate
from builders_workloads import CORE_FILES, CRD_FILES, group_kind, load_any
from conftest import POLICIES, make_pod, review
from helm_chart import (
    KUBERNETES,
    NAMESPACE,
    RELEASE,
    evaluate,
    namespace_labels,
    of_kind,
    one,
    render,
    routed_to,
    rule_matches,
    selects,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from postgres_server import pg_url, postgres  # noqa: F401 - fixtures

from gateway.admission.admission import classify
from gateway.admission.owned_data import DATA_KINDS
from gateway.admission.review import parse_review
from gateway.admission.workloads import ADAPTERS, read_workload
from gateway.cli.gpu_gateway import main as cli
from gateway.kube_access import api_calls, in_process
from gateway.policy_bundle import load_bundle

POSTGRES = {"database": {"type": "postgresql", "postgresql": {"existingSecret": "gpu-gateway-db"}}}
COMBINATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "sqlite-1-replica": {"gateway": {"replicas": 1}, "database": {"type": "sqlite"}},
    "postgresql-3-replicas": {"gateway": {"replicas": 3}, **POSTGRES},
    "postgresql-no-controller": {**POSTGRES, "controller": {"enabled": False}},
    "controller-off": {"controller": {"enabled": False}},
    "postgresql-ha-hard-anti-affinity-controller": {
        "gateway": {"replicas": 2, "podAntiAffinity": "hard"}, **POSTGRES, "controller": {"enabled": True}},
    "cert-manager-own-ca": {"tls": {"source": "certManager"}},
    "cert-manager-cluster-issuer": {"tls": {"source": "certManager", "certManager": {
        "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}}}},
    "tls-from-secret": {"tls": {"source": "secret", "secret": {"name": "mine", "caBundle": "Q0EK"}}},
    "agent-on": {"agent": {"enabled": True}},
    "agent-on-with-pod-resources": {"agent": {"enabled": True, "podResources": {"enabled": True}}},
    "agent-off": {"agent": {"enabled": False}},
    "monitoring-and-network-policy": {
        "serviceMonitor": {"enabled": True},
        "networkPolicy": {"enabled": True, "ingressFrom": [{"ipBlock": {"cidr": "10.0.0.0/16"}}],
                          "egressRestricted": True,
                          "egressTo": [{"to": [{"ipBlock": {"cidr": "10.1.0.0/16"}}],
                                        "ports": [{"port": 5432, "protocol": "TCP"}]}]}},
    "everything": {"gateway": {"replicas": 3}, **POSTGRES, "controller": {"enabled": True},
                   "agent": {"enabled": True}, "serviceMonitor": {"enabled": True},
                   "networkPolicy": {"enabled": True}, "tls": {"source": "certManager"},
                   "adminApi": {"auth": {"oidc": {"issuer": "https://login.example.com", "audience": "gpuctl"}},
                                "dnsNames": ["gpu-gateway.example.com", "localhost"]},
                   "checkpoints": {"enabled": True, "existingSecret": "ckpt"},
                   "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"},
                                      "alertLabels": {"team": "platform"}},
                   "grafanaDashboard": {"enabled": True, "namespace": "monitoring",
                                        "annotations": {"grafana_folder": "GPU"}}},
    "alerts-and-dashboard-on-sqlite": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                                       "grafanaDashboard": {"enabled": True}},
    "data-access-off": {"webhook": {"dataAccess": {"enabled": False}}},
    "policy-evicts-rogue-pods": {"policy": {"files": {"limits.yaml": (POLICIES / "limits.yaml").read_text().replace(
        "evict_rogue_pods: false", "evict_rogue_pods: true")}}},
}
GOVERNED_NS = namespace_labels("research")


@cache
def rendered_as(combination: str) -> list[dict[str, Any]]:
    """One combination's objects, rendered once per test run (a render takes about half a second)."""
    return render(COMBINATIONS[combination])


@cache
def bundle() -> Any:
    return load_bundle(POLICIES)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: rendered_as(name) for name in COMBINATIONS}


@pytest.fixture(scope="module")
def default_docs(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return rendered["defaults"]


# ================================================================== schemas

#: Prometheus Operator's duration format (monitoring.coreos.com CRDs' `Duration`).
PROMETHEUS_DURATION = {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?"
                                                    "(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}

#: The fields cert-manager's and the Prometheus Operator's CRDs require or constrain, from
#: their published openAPIV3Schema (no CRD schema ships in a Python package).
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "cert-manager.io/v1/Certificate": {
        "type": "object", "required": ["spec"],
        "properties": {"spec": {
            "type": "object", "required": ["issuerRef", "secretName"],
            "properties": {
                "secretName": {"type": "string", "minLength": 1},
                "issuerRef": {"type": "object", "required": ["name"], "additionalProperties": False,
                              "properties": {"name": {"type": "string"}, "kind": {"type": "string"},
                                             "group": {"type": "string"}}},
                "dnsNames": {"type": "array", "items": {"type": "string"}},
                "commonName": {"type": "string", "maxLength": 64},
                "isCA": {"type": "boolean"},
                "duration": {"type": "string", "pattern": "^[0-9]+(h|m|s)([0-9]+(m|s))?$"},
                "renewBefore": {"type": "string", "pattern": "^[0-9]+(h|m|s)$"},
                "usages": {"type": "array", "items": {"enum": [
                    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
                    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
                    "server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
                    "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"]}},
                "privateKey": {"type": "object", "additionalProperties": False, "properties": {
                    "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]}, "size": {"type": "integer"},
                    "rotationPolicy": {"enum": ["Never", "Always"]},
                    "encoding": {"enum": ["PKCS1", "PKCS8"]}}},
            }}}},
    "cert-manager.io/v1/Issuer": {
        "type": "object", "required": ["spec"],
        "properties": {"spec": {"type": "object", "minProperties": 1, "maxProperties": 1, "properties": {
            "selfSigned": {"type": "object"},
            "ca": {"type": "object", "required": ["secretName"], "properties": {"secretName": {"type": "string"}}}},
            "additionalProperties": False}}},
    "monitoring.coreos.com/v1/PodMonitor": {
        "type": "object", "required": ["spec"],
        "properties": {"spec": {
            "type": "object", "required": ["selector"],
            "properties": {
                "selector": {"type": "object"},
                "namespaceSelector": {"type": "object", "properties": {
                    "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}},
                "podMetricsEndpoints": {"type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "port": {"type": "string"}, "path": {"type": "string"},
                        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                        "interval": PROMETHEUS_DURATION}}}}}}},
    "monitoring.coreos.com/v1/PrometheusRule": {
        "type": "object", "required": ["spec"],
        "properties": {"spec": {
            "type": "object", "additionalProperties": False,
            "properties": {"groups": {"type": "array", "items": {
                "type": "object", "required": ["name"], "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "interval": PROMETHEUS_DURATION,
                    "rules": {"type": "array", "items": {
                        "type": "object", "required": ["expr"], "additionalProperties": False,
                        "properties": {
                            "alert": {"type": "string"}, "record": {"type": "string"},
                            "expr": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                            "for": PROMETHEUS_DURATION,
                            "keep_firing_for": {"type": "string", "minLength": 1},
                            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                            "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}}},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "limit": {"type": "integer"}, "partial_response_strategy": {"type": "string"},
                    "query_offset": {"type": "string"}}}}}}}},
    "monitoring.coreos.com/v1/ServiceMonitor": {
        "type": "object", "required": ["spec"],
        "properties": {"spec": {
            "type": "object", "required": ["selector"],
            "properties": {
                "selector": {"type": "object"},
                "namespaceSelector": {"type": "object", "properties": {
                    "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}},
                "endpoints": {"type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "port": {"type": "string"}, "path": {"type": "string"},
                        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                        "interval": PROMETHEUS_DURATION,
                        "tlsConfig": {"type": "object", "properties": {
                            "serverName": {"type": "string"},
                            "ca": {"type": "object", "properties": {"secret": {
                                "type": "object", "required": ["key"],
                                "properties": {"name": {"type": "string"}, "key": {"type": "string"}}}}}}}}}}}}}},
}


def validate(doc: dict[str, Any]) -> None:
    api_kind = f"{doc['apiVersion']}/{doc['kind']}"
    if api_kind in CRD_SCHEMAS:
        import jsonschema

        jsonschema.validate(doc, CRD_SCHEMAS[api_kind])
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", doc["metadata"]["name"])
        return
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_every_rendered_object_validates_against_the_kubernetes_schemas(rendered, combination):
    docs = rendered[combination]
    assert docs
    for doc in docs:
        try:
            validate(doc)
        except Exception as exc:  # name the object in the failure
            pytest.fail(f"{combination}: {doc['kind']} {doc['metadata']['name']} is invalid: {exc}")


def test_strict_validation_catches_a_misspelled_field(default_docs):
    deployment = copy.deepcopy(one(default_docs, "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


def test_every_combination_renders_its_parts(rendered):
    kinds = {name: {d["kind"] for d in docs} for name, docs in rendered.items()}
    assert "Certificate" in kinds["cert-manager-own-ca"] and "Secret" not in kinds["cert-manager-own-ca"]
    assert "Issuer" not in kinds["cert-manager-cluster-issuer"]
    assert "DaemonSet" in kinds["agent-on"] and "DaemonSet" not in kinds["agent-off"]
    assert {"ServiceMonitor", "NetworkPolicy"} <= kinds["monitoring-and-network-policy"]
    assert "PodDisruptionBudget" in kinds["postgresql-3-replicas"]
    assert "PodDisruptionBudget" not in kinds["defaults"]
    assert "PersistentVolumeClaim" in kinds["defaults"]
    assert "PersistentVolumeClaim" not in kinds["postgresql-3-replicas"]


# ================================================================== safe defaults


def test_gateway_deployment_defaults_are_safe(default_docs):
    deployment = one(default_docs, "Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and pod["securityContext"]["runAsNonRoot"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    # The controller runs inside the one process that owns the SQLite file, with a token to the API.
    assert "--controller" in container["args"] and pod["automountServiceAccountToken"] is True
    claim = pod["volumes"][[v["name"] for v in pod["volumes"]].index("state")]["persistentVolumeClaim"]
    assert one(default_docs, "PersistentVolumeClaim", claim["claimName"])
    assert "--state=/var/lib/gpu-gateway/gpu-gateway.db" in container["args"]
    assert not any(a.startswith("--database-url") for a in container["args"])


def test_ha_runs_on_postgresql_from_a_secret_with_anti_affinity_and_a_pdb(rendered):
    docs = rendered["postgresql-3-replicas"]
    deployment = one(docs, "Deployment", f"{RELEASE}-gpu-gateway")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    env = {e["name"]: e for e in container["env"]}
    assert env["GPU_GATEWAY_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "gpu-gateway-db",
                                                                           "key": "database-url"}
    # Read from the environment by the CLI: the password never appears on a command line.
    assert not any("database" in a for a in container["args"])
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1 and pdb["spec"]["selector"] == deployment["spec"]["selector"]
    # Every replica gets the same history key, from one Secret kept across upgrades.
    key = one(docs, "Secret", f"{RELEASE}-gpu-gateway-history-key")
    assert key["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    import base64

    assert len(base64.b64decode(key["data"]["history-key"])) == 32
    hard = one(rendered["postgresql-ha-hard-anti-affinity-controller"], "Deployment", f"{RELEASE}-gpu-gateway")
    assert hard["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]


@pytest.mark.parametrize("values", [{"gateway": {"replicas": 2}},
                                    {"gateway": {"replicas": 3}, "database": {"type": "sqlite"}},
                                    {"gateway": {"replicas": 10}}])
def test_several_replicas_on_sqlite_refuse_to_render_and_say_why(values):
    """The operator reads what is wrong (replicas, SQLite is single-replica) and the two ways out."""
    import helm_python

    with pytest.raises(helm_python.HelmError) as caught:
        render(values)
    message = str(caught.value)
    assert f"gateway.replicas={values['gateway']['replicas']}, but database.type=sqlite is single-replica" in message
    assert "Set gateway.replicas=1, or run several replicas on PostgreSQL: database.type=postgresql and " \
           "database.postgresql.existingSecret" in message
    assert render({"gateway": {"replicas": 1}}) and render(COMBINATIONS["postgresql-3-replicas"])


@pytest.mark.parametrize("values, where", [
    ({"gateway": {"replicas": 0}}, "/gateway/replicas"),
    ({"gateway": {"failureMode": "sometimes"}}, "/gateway/failureMode"),
    ({"webhook": {"failurePolicy": "Maybe"}}, "/webhook/failurePolicy"),
    ({"webhook": {"timeoutSeconds": 31}}, "/webhook/timeoutSeconds"),
    ({"webhook": {"exemptNamespaces": ["Not A Namespace"]}}, "/webhook/exemptNamespaces/0"),
    ({"tls": {"source": "letsencrypt"}}, "/tls/source"),
    ({"database": {"type": "mysql"}}, "/database/type"),
    ({"image": {"digest": "latest"}}, "/image/digest"),
    ({"gatway": {"replicas": 1}}, "gatway"),
    ({"agent": {"podResources": {"hostPath": "relative/path"}}}, "/agent/podResources/hostPath"),
])
def test_values_schema_rejects_bad_values(values, where):
    import helm_python

    with pytest.raises(helm_python.HelmValuesError) as caught:
        render(values)
    assert where in str(caught.value)


@pytest.mark.parametrize("values, message", [
    (POSTGRES | {"database": {"type": "postgresql"}}, "existingSecret"),
    ({"tls": {"source": "secret"}}, "tls.secret.name"),
    ({"checkpoints": {"enabled": True}}, "checkpoints.existingSecret"),
    ({"adminApi": {"auth": {"oidc": {"issuer": "https://login.example.com"}}}}, "needs adminApi.auth.oidc.audience"),
    ({"adminApi": {"auth": {"jwt": {"existingSecret": "jwt", "issuer": "gpu-gateway"}}}},
     "needs adminApi.auth.jwt.issuer and adminApi.auth.jwt.audience"),
    ({"adminApi": {"auth": {"oidc": {"issuer": "https://login.example.com", "audience": "gpuctl"},
                            "jwt": {"existingSecret": "jwt", "issuer": "gpu-gateway", "audience": "gpuctl"}}}},
     "not both"),
])
def test_incomplete_settings_refuse_to_render(values, message):
    import helm_python

    with pytest.raises(helm_python.HelmError, match=re.escape(message)):
        render(values)


def test_gateway_args_are_flags_of_gpu_gateway_serve(rendered):
    serve = cli.commands["serve"]
    known = {opt for param in serve.params for opt in param.opts}
    for name in ("defaults", "postgresql-3-replicas", "postgresql-ha-hard-anti-affinity-controller", "everything"):
        (container,) = one(rendered[name], "Deployment", f"{RELEASE}-gpu-gateway")["spec"]["template"]["spec"][
            "containers"]
        assert container["args"][0] == "serve"
        flags = {a.split("=", 1)[0] for a in container["args"][1:]}
        assert flags <= known, f"not flags of serve: {flags - known}"
    for auth, flag in (({"oidc": {"issuer": "https://idp.example", "audience": "a"}}, "--oidc-issuer=https://idp.example"),
                       ({"jwt": {"existingSecret": "s", "issuer": "i", "audience": "b"}},
                        "--jwt-secret-file=/etc/gpu-gateway/jwt/jwt-secret")):
        args = one(render({"adminApi": {"auth": auth}}), "Deployment")["spec"]["template"]["spec"]["containers"][0][
            "args"]
        assert {a.split("=", 1)[0] for a in args[1:]} <= known and flag in args


def test_the_gateway_awaits_the_controller_s_workload_listing_only_when_a_controller_runs(rendered):
    """Without a controller nothing would ever list the workloads that predate the gateway, and
    every /scale of a workload the ledger does not know (each HPA scale of a CPU Deployment)
    would be refused for good."""
    for name, awaits in (("defaults", True), ("postgresql-3-replicas", True), ("controller-off", False),
                         ("postgresql-no-controller", False), ("everything", True)):
        (container,) = one(rendered[name], "Deployment", f"{RELEASE}-gpu-gateway")["spec"]["template"]["spec"][
            "containers"]
        # `--controller` implies it: the listing is this process's own.
        assert bool({"--await-workload-listing", "--controller"} & set(container["args"])) is awaits, name


def _controller_pieces(docs: list[dict[str, Any]]) -> tuple[list[str], list[str], set[str]]:
    """The gateway's args, the names of the Deployments, and the service accounts the controller's roles bind."""
    (container,) = one(docs, "Deployment", f"{RELEASE}-gpu-gateway")["spec"]["template"]["spec"]["containers"]
    bound = {s["name"] for b in docs if b["kind"] in ("ClusterRoleBinding", "RoleBinding")
             and b["roleRef"]["name"] == f"{RELEASE}-gpu-gateway-controller" for s in b["subjects"]}
    return container["args"], sorted(d["metadata"]["name"] for d in of_kind(docs, "Deployment")), bound


def test_the_controller_runs_inside_the_sqlite_gateway_and_apart_on_postgresql(rendered):
    """SQLite (the default): `serve --controller` in the one process that owns the file, as the
    gateway's service account, with the separate controller's flags; PostgreSQL: the controller's
    own Deployment and service account as before; controller.enabled=false: neither."""
    gateway, controller = f"{RELEASE}-gpu-gateway", f"{RELEASE}-gpu-gateway-controller"
    args, deployments, bound = _controller_pieces(rendered["defaults"])
    assert deployments == [gateway] and bound == {gateway}
    assert {"--controller", "--lease-name=gpu-gateway-controller", f"--lease-namespace={NAMESPACE}",
            f"--service-account=system:serviceaccount:{NAMESPACE}:{gateway}",
            f"--watch-webhook=validating/{gateway}", f"--watch-webhook=mutating/{gateway}"} <= set(args)
    assert one(rendered["defaults"], "Deployment")["spec"]["strategy"]["type"] == "Recreate"
    assert [a for a in args if a.startswith("--webhook-generation=")]
    assert {d["metadata"]["name"] for d in of_kind(rendered["defaults"], "ServiceAccount")} == {gateway}

    args, deployments, bound = _controller_pieces(rendered["postgresql-3-replicas"])
    assert deployments == [gateway, controller] and bound == {controller}
    assert "--controller" not in args
    assert f"--service-account=system:serviceaccount:{NAMESPACE}:{controller}" in args
    (ctl,) = one(rendered["postgresql-3-replicas"], "Deployment", controller)["spec"]["template"]["spec"]["containers"]
    assert f"--service-account=system:serviceaccount:{NAMESPACE}:{controller}" in ctl["args"]
    # The separate controller and the in-process one are run with the same controller flags.
    in_process = set(_controller_pieces(rendered["defaults"])[0])
    for arg in ctl["args"][2:]:
        if not arg.startswith("--webhook-generation="):
            assert arg.replace(f":{controller}", f":{gateway}") in in_process, arg

    for name in ("controller-off", "postgresql-no-controller"):
        args, deployments, bound = _controller_pieces(rendered[name])
        assert deployments == [gateway] and bound == set() and "--controller" not in args, name
        assert not [d for d in rendered[name] if d["metadata"]["name"] == controller], name


@pytest.mark.parametrize("command, combination", [("controller", "postgresql-ha-hard-anti-affinity-controller"),
                                                  ("agent", "agent-on"), ("agent", "agent-on-with-pod-resources")])
def test_controller_and_agent_args_are_flags_of_their_commands(rendered, command, combination):
    if command not in cli.commands:
        pytest.skip(f"`gpu-gateway {command}` is not in this build yet")
    known = {opt for param in cli.commands[command].params for opt in param.opts}
    workload = [d for d in rendered[combination] if d["kind"] in ("Deployment", "DaemonSet")
                and d["metadata"]["name"].endswith(command)]
    (container,) = workload[0]["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == command
    assert {a.split("=", 1)[0] for a in container["args"][1:]} <= known


def test_policy_bundle_configmap_is_the_repository_bundle(default_docs):
    cm = one(default_docs, "ConfigMap", f"{RELEASE}-gpu-gateway-policy")
    for name in ("model.conf", "policy.csv", "limits.yaml"):
        assert cm["data"][name] == (POLICIES / name).read_text()
    override = one(render({"policy": {"files": {"limits.yaml": "teams: {}\n"}}}), "ConfigMap")
    assert override["data"]["limits.yaml"] == "teams: {}\n"
    assert override["data"]["policy.csv"] == (POLICIES / "policy.csv").read_text()
    assert not of_kind(render({"policy": {"existingConfigMap": "mine"}}), "ConfigMap")


def test_agent_daemonset_mounts_host_paths_read_only_on_gpu_nodes(rendered):
    ds = one(rendered["agent-on"], "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert not [v for v in pod["volumes"] if "hostPath" in v]
    (container,) = pod["containers"]
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"]
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "--token-file=/var/run/secrets/gpu-gateway/token" in container["args"]
    assert f"--gateway=https://{RELEASE}-gpu-gateway.{NAMESPACE}.svc:443" in container["args"]
    # With the kubelet's pod-resources socket: that one host path, read-only.
    pod = one(rendered["agent-on-with-pod-resources"], "DaemonSet")["spec"]["template"]["spec"]
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert host == {"pod-resources": "/var/lib/kubelet/pod-resources"}
    for mount in pod["containers"][0]["volumeMounts"]:
        if mount["name"] in host:
            assert mount["readOnly"] is True


def test_with_the_agent_the_gateway_trusts_the_agents_service_account_tokens(rendered):
    """The gateway accepts the agents' projected tokens (telemetry only) from the cluster's issuer,
    reading its keys with its own API-server token and the cluster CA; no role is granted for it."""
    pod = one(rendered["agent-on"], "Deployment", f"{RELEASE}-gpu-gateway")["spec"]["template"]["spec"]
    ds = one(rendered["agent-on"], "DaemonSet")["spec"]["template"]["spec"]
    (audience,) = [s["serviceAccountToken"]["audience"] for v in ds["volumes"] if "projected" in v
                   for s in v["projected"]["sources"]]
    args = pod["containers"][0]["args"]
    assert [a for a in args if a.startswith("--agent-token")] == [
        "--agent-token-issuer=https://kubernetes.default.svc.cluster.local", f"--agent-token-audience={audience}",
        "--agent-token-ca=/var/run/secrets/gpu-gateway/issuer/ca.crt",
        "--agent-token-bearer-file=/var/run/secrets/gpu-gateway/issuer/token"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "issuer-access"]
    token, ca = volume["projected"]["sources"]
    assert "audience" not in token["serviceAccountToken"]  # the API server's own audience
    assert ca["configMap"] == {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    assert {"name": "issuer-access", "mountPath": "/var/run/secrets/gpu-gateway/issuer", "readOnly": True} in \
        pod["containers"][0]["volumeMounts"]
    # Nothing granted for it: the gateway's roles are the controller's it runs, and no more.
    assert {g for g in _granted(rendered["agent-on"]) if g[0] == "gateway"} == _used("gateway") - {
        g for g in _used("gateway") if g[2] == "pods/eviction"}
    off = one(rendered["agent-off"], "Deployment")["spec"]["template"]["spec"]
    assert not [a for a in off["containers"][0]["args"] if a.startswith("--agent-token")]
    assert not [v for v in off["volumes"] if v["name"] == "issuer-access"]
    # An issuer published outside the cluster: the system's CAs, no token.
    outside = one(render({"agent": {"enabled": True, "tokenIssuer": "https://oidc.eks.example.com/id/ABC",
                                    "tokenIssuerInCluster": False}}), "Deployment")["spec"]["template"]["spec"]
    assert [a for a in outside["containers"][0]["args"] if a.startswith("--agent-token")] == [
        "--agent-token-issuer=https://oidc.eks.example.com/id/ABC", "--agent-token-audience=gpu-gateway"]
    assert not [v for v in outside["volumes"] if v["name"] == "issuer-access"]


def test_the_bundled_policy_lets_the_default_install_s_agent_report():
    """`helm install gpu-gateway ... -n gpu-gateway`: the agent's service account is the user the
    bundled policy.csv binds to role `agent` (other names need a binding: docs/agent.md)."""
    docs = render({"agent": {"enabled": True}, "fullnameOverride": "gpu-gateway"}, namespace="gpu-gateway")
    account = one(docs, "DaemonSet")["spec"]["template"]["spec"]["serviceAccountName"]
    policy = load_bundle(POLICIES)
    identity = policy.identity(f"system:serviceaccount:gpu-gateway:{account}",
                               ("system:serviceaccounts", "system:serviceaccounts:gpu-gateway"))
    assert identity.role == "agent" and policy.may("agent", "report", "any")


def test_decision_budget_must_fit_inside_the_webhook_timeout():
    import helm_python

    with pytest.raises(helm_python.HelmError, match="decisionBudgetMs"):
        render({"gateway": {"decisionBudgetMs": 4500}, "webhook": {"timeoutSeconds": 5}})
    args = one(render({"gateway": {"decisionBudgetMs": 3900}}), "Deployment")["spec"]["template"]["spec"][
        "containers"][0]["args"]
    assert "--decision-budget-ms=3900" in args


# ================================================================== TLS


def test_chart_generated_tls_serves_the_service_names_and_the_ca_is_in_the_webhooks(default_docs):
    import base64

    from cryptography import x509

    secret = one(default_docs, "Secret", f"{RELEASE}-gpu-gateway-tls")
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    ca_pem = base64.b64decode(secret["data"]["ca.crt"])
    ca = x509.load_pem_x509_certificate(ca_pem)
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    assert f"{RELEASE}-gpu-gateway.{NAMESPACE}.svc" in names
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        for webhook in one(default_docs, kind)["webhooks"]:
            assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == ca_pem
            assert webhook["clientConfig"]["service"]["name"] == f"{RELEASE}-gpu-gateway"


def test_cert_manager_mode_injects_the_ca_instead(rendered):
    docs = rendered["cert-manager-own-ca"]
    serving = one(docs, "Certificate", f"{RELEASE}-gpu-gateway-serving")
    assert serving["spec"]["secretName"] == f"{RELEASE}-gpu-gateway-tls"
    assert f"{RELEASE}-gpu-gateway.{NAMESPACE}.svc" in serving["spec"]["dnsNames"]
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        config = one(docs, kind)
        assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == \
            f"{NAMESPACE}/{RELEASE}-gpu-gateway-serving"
        assert all("caBundle" not in w["clientConfig"] for w in config["webhooks"])
    issuer = one(rendered["cert-manager-cluster-issuer"], "Certificate")["spec"]["issuerRef"]
    assert issuer == {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}


# ================================================================== webhook settings


def test_every_webhook_has_the_safe_settings(rendered):
    for name, docs in rendered.items():
        for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
            for webhook in one(docs, kind)["webhooks"]:
                assert webhook["sideEffects"] == "NoneOnDryRun", name
                assert webhook["matchPolicy"] == "Equivalent", name
                assert 1 <= webhook["timeoutSeconds"] <= 10, name
                assert webhook["admissionReviewVersions"] == ["v1"], name


def test_validating_failure_policy_is_fail_by_default_and_configurable(default_docs):
    policies = {w["name"]: w["failurePolicy"] for w in one(default_docs, "ValidatingWebhookConfiguration")["webhooks"]}
    assert policies["workloads.validate.gpu-gateway.io"] == "Fail"
    assert policies["access.validate.gpu-gateway.io"] == "Fail"
    assert policies["claims.validate.gpu-gateway.io"] == "Fail"
    # What protects someone's data fails closed; only recording new objects that read nothing of
    # anyone's, and CPU work that reaches nothing, fail open.
    assert policies["data.validate.gpu-gateway.io"] == "Fail"
    assert policies["data-sources.validate.gpu-gateway.io"] == "Fail"
    assert policies["reach.validate.gpu-gateway.io"] == "Fail"
    assert policies["data-new.validate.gpu-gateway.io"] == "Ignore"
    assert policies["cpu.validate.gpu-gateway.io"] == "Ignore"
    assert {w["name"]: w["failurePolicy"] for w in one(default_docs, "MutatingWebhookConfiguration")["webhooks"]} == {
        "workloads.mutate.gpu-gateway.io": "Fail", "claims.mutate.gpu-gateway.io": "Fail",
        "data.mutate.gpu-gateway.io": "Ignore"}
    relaxed = one(render({"webhook": {"failurePolicy": "Ignore", "access": {"failurePolicy": "Ignore"},
                                      "dra": {"failurePolicy": "Ignore"}, "dataAccess": {"failurePolicy": "Ignore"}}}),
                  "ValidatingWebhookConfiguration")
    assert {w["failurePolicy"] for w in relaxed["webhooks"]} == {"Ignore"}
    strict = render({"webhook": {"dataAccess": {"create": {"failurePolicy": "Fail"},
                                                "cpuWorkloads": {"failurePolicy": "Fail"}}}})
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        assert {w["failurePolicy"] for w in one(strict, kind)["webhooks"]} == {"Fail"}


def test_no_webhook_ever_sees_kube_system_or_its_own_namespace(rendered):
    for name, docs in rendered.items():
        for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
            for webhook in one(docs, kind)["webhooks"]:
                selector = webhook["namespaceSelector"]
                assert not selects(selector, namespace_labels("kube-system")), name
                assert not selects(selector, namespace_labels(NAMESPACE)), name
                assert not selects(selector, namespace_labels("kube-system", **{"gpu-gateway.io/exempt": "false"}))
                assert not selects(selector, namespace_labels("research", **{"gpu-gateway.io/exempt": "true"}))
                assert selects(selector, GOVERNED_NS), name
    # The bundle's exempt namespaces too, and a release installed elsewhere exempts its own.
    other = render(namespace="platform")
    for webhook in one(other, "ValidatingWebhookConfiguration")["webhooks"]:
        for ns in (*bundle().exempt_namespaces, "platform", "kube-system"):
            assert not selects(webhook["namespaceSelector"], namespace_labels(ns))


# ================================================================== routing completeness

#: The subresources Kubernetes has, per resource (built-ins), and for custom resources.
POD_SUBRESOURCES = ("exec", "attach", "portforward", "ephemeralcontainers", "eviction", "status", "log", "binding",
                    "proxy", "resize")
SCALABLE = {("", "replicationcontrollers"), ("apps", "deployments"), ("apps", "statefulsets"),
            ("apps", "replicasets")}
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")


def _subresources(group: str, resource: str) -> tuple[str, ...]:
    if (group, resource) == ("", "pods"):
        return ("", *POD_SUBRESOURCES)
    if group in ("", "apps", "batch"):
        return ("", "status", "scale") if (group, resource) in SCALABLE else ("", "status")
    if (group, resource) in _data_kinds():  # VolumeSnapshots: no scale subresource
        return ("", "status")
    return ("", "status", "scale")


def _registered() -> dict[tuple[str, str], str]:
    """(group, plural resource) → kind of every kind the default bundle registers."""
    return {(k.group, k.resource): k.kind for k in bundle().kinds}


def _kinds() -> set[tuple[str, str]]:
    """(group, plural resource) of every workload kind the code knows: adapters and the bundle's."""
    return {(g, k.lower() + "s") for g, k in ADAPTERS} | set(_registered())


def _read(obj: dict[str, Any], group: str) -> Any:
    return read_workload(obj, group, obj["kind"], bundle().gpu, kinds=bundle().kinds)


@cache
def _seen_through() -> set[tuple[str, str]]:
    """(group, resource) of the kinds whose pods the chart's reach test looks into: those kept
    only at PodSpecs. Every other kind counts as reaching data, and fails closed."""
    import yaml
    from helm_chart import chart

    listed = {(k["group"], k["resource"]) for k in [*chart().values["webhook"]["workloadKinds"], *EXTRA_KINDS]
              if k.get("podSpecs") and not any(k.get(f) for f in ("resources", "gpuFields", "present", "absent"))}
    registered = {(k["group"], k.get("resource") or k["kind"].lower() + "s")
                  for k in yaml.safe_load((POLICIES / "limits.yaml").read_text())["workload_kinds"]
                  if k.get("pods") and not k.get("unresolved") and all(
                      p["shape"] in ("template", "pod_spec") and not p.get("containers") and not p.get("gpus")
                      for p in k["pods"])}
    return listed | registered


def _cpu_webhook(obj: dict[str, Any], group: str) -> str:
    """The webhook a person's workload without GPUs goes to: fail-closed `reach` when it reaches data
    (or the chart cannot look into its pods), else fail-open `cpu`."""
    if _reaches(obj, group) or _resource_of(obj) not in _seen_through():
        return "reach.validate.gpu-gateway.io"
    return "cpu.validate.gpu-gateway.io"


def _reaches(obj: dict[str, Any], group: str) -> bool:
    """Whether the gateway finds claims, ConfigMaps or Secrets the object's pods reach (the mount rules)."""
    from gateway.admission.access import collect

    refs, _ = collect(obj, _read(obj, group), bundle())
    return bool(refs)


def _asks(obj: dict[str, Any], group: str) -> bool:
    """Whether the gateway must see it as a GPU request: GPUs counted, or GPUs it cannot count."""
    workload = _read(obj, group)
    return workload.gpus > 0 or bool(workload.unresolved)


def _gpu_object(group: str, resource: str) -> dict[str, Any]:
    """A GPU-asking object of the kind: its fixture, else a fixture of a kind the same adapter
    reads, renamed (Kubeflow's JAXJob from the PyTorchJob), else a pod template holder; for a
    registered kind that runs no pods itself (a WorkflowTemplate), an object of the kind."""
    kind = _registered().get((group, resource)) or next(
        k for g, k in ADAPTERS if g == group and k.lower() + "s" == resource)
    candidates = []
    for name in (*CORE_FILES, *CRD_FILES):
        obj = load_any(name)
        g, k = group_kind(obj)
        if (g, k) == (group, kind):
            candidates.insert(0, obj)
        elif (g, k) in ADAPTERS and (group, kind) in ADAPTERS and ADAPTERS[(g, k)] is ADAPTERS[(group, kind)]:
            candidates.append(obj | {"kind": kind})
        elif (g, k) == ("argoproj.io", "Workflow") and kind == "CronWorkflow":
            candidates.append(obj | {"kind": kind, "metadata": {"name": "w", "namespace": "research"},
                                     "spec": {"schedules": ["@daily"], "workflowSpec": obj["spec"]}})
    container = {"name": "main", "image": "ghcr.io/lab/train:1", "resources": {"limits": {"nvidia.com/gpu": 8}}}
    meta = {"name": "w", "namespace": "research"}
    api = f"{group}/v1" if group else "v1"
    if kind == "Pod":
        candidates.append({"apiVersion": api, "kind": kind, "metadata": meta, "spec": {"containers": [container]}})
    candidates.append({"apiVersion": api, "kind": kind, "metadata": meta,
                       "spec": {"template": {"spec": {"containers": [container]}}}})
    for obj in candidates:
        if _read(obj, group).gpus:
            return obj
    if (group, resource) in _registered():
        return candidates[-1]
    raise AssertionError(f"no GPU-asking {kind} to test with")


def _request(group: str, resource: str, sub: str, operation: str) -> dict[str, Any]:
    """The AdmissionReview the API server would send for one request, as the gateway's tests build them."""
    data = {(g, r): k for (g, k), r in DATA_KINDS.items()}
    obj = _gpu_object(group, resource) if (group, resource) not in data else {
        "apiVersion": f"{group}/v1" if group else "v1", "kind": data[(group, resource)],
        "metadata": {"name": "d", "namespace": "research"}}
    group_version = obj["apiVersion"].rpartition("/")
    kind = (group, group_version[2], obj["kind"])
    sub_kinds = {"exec": "PodExecOptions", "attach": "PodAttachOptions", "portforward": "PodPortForwardOptions",
                 "eviction": "Eviction", "scale": "Scale"}
    if sub in sub_kinds:
        kind = ("policy" if sub == "eviction" else "autoscaling" if sub == "scale" else "", "v1", sub_kinds[sub])
        payload: dict[str, Any] | None = {"apiVersion": "v1", "kind": sub_kinds[sub], "spec": {"replicas": 2}}
    else:
        payload = obj
    new = None if operation == "DELETE" else payload
    old = payload if operation in ("UPDATE", "DELETE") else None
    return review(new, old=old, operation=operation, sub_resource=sub, kind=kind, resource=(group, resource),
                  namespace="research", name="w").body()


def _data_kinds() -> set[tuple[str, str]]:
    """(API group, resource) of the owned data kinds."""
    return {(group, resource) for (group, _), resource in DATA_KINDS.items()}


def _universe() -> list[tuple[str, str, str, str]]:
    resources = _kinds() | _data_kinds()
    return [(g, r, sub, op) for g, r in sorted(resources) for sub in _subresources(g, r) for op in OPERATIONS]


def _governed(body: dict[str, Any]) -> bool:
    return classify(parse_review(body)) is not None


def test_every_request_the_gateway_decides_is_routed_and_nothing_else(default_docs):
    """Over every (resource, subresource, operation) of every kind the code knows: a request
    reaches the validating webhook exactly when the gateway's `classify` governs it."""
    checked = 0
    for group, resource, sub, operation in _universe():
        body = _request(group, resource, sub, operation)
        routed = routed_to(default_docs, "ValidatingWebhookConfiguration", body, GOVERNED_NS)
        target = f"{operation} {group or 'core'}/{resource}{'/' + sub if sub else ''}"
        if _governed(body):
            assert len(routed) == 1, f"{target} is decided by the gateway but routed to {routed}"
            checked += 1
        else:
            assert routed == [], f"{target} is not decided by the gateway but is sent to {routed}"
        assert not routed_to(default_docs, "ValidatingWebhookConfiguration", body, namespace_labels("kube-system"))
    assert checked >= 80


def test_gpu_launches_and_owned_data_are_routed_to_the_mutating_webhook(default_docs):
    """Creates of GPU workloads and data objects are stamped; updates of GPU workloads are stamped
    again (so that no edit leaves a pod template unowned); updates of data objects are not."""
    workloads = _kinds()
    for group, resource in sorted(workloads | _data_kinds()):
        body = _request(group, resource, "", "CREATE")
        if (group, resource) not in _data_kinds() and not _asks(body["request"]["object"], group):
            continue  # a registered kind that runs no pods itself: nothing to stamp
        assert len(routed_to(default_docs, "MutatingWebhookConfiguration", body, GOVERNED_NS)) == 1, resource
        assert not routed_to(default_docs, "MutatingWebhookConfiguration", body, namespace_labels("kube-system"))
        update = _request(group, resource, "", "UPDATE")
        expected = 1 if (group, resource) in workloads else 0
        assert len(routed_to(default_docs, "MutatingWebhookConfiguration", update, GOVERNED_NS)) == expected


def test_routing_lists_the_workload_kinds_the_code_knows():
    from helm_chart import chart

    kinds = {(k["group"], k["resource"]) for k in chart().values["webhook"]["workloadKinds"]}
    assert kinds == {(g, k.lower() + "s") for g, k in ADAPTERS}


def test_an_unknown_kind_of_a_routed_api_group_is_always_sent(default_docs):
    body = review({"apiVersion": "kubeflow.org/v1", "kind": "FutureJob", "metadata": {"name": "f"},
                   "spec": {"anything": {"template": {"spec": {"containers": []}}}}},
                  resource=("kubeflow.org", "futurejobs")).body()
    assert routed_to(default_docs, "ValidatingWebhookConfiguration", body, GOVERNED_NS) == [
        "workloads.validate.gpu-gateway.io"]


def _claim_request(kind: str, operation: str, sub: str = "", version: str = "v1") -> dict[str, Any]:
    from builders_dra import claim, gpu_template

    obj = gpu_template("t") if kind == "ResourceClaimTemplate" else claim("c")
    obj["apiVersion"] = f"resource.k8s.io/{version}"
    return review(None if operation == "DELETE" else obj, old=obj if operation != "CREATE" else None,
                  operation=operation, sub_resource=sub, kind=("resource.k8s.io", version, kind),
                  resource=("resource.k8s.io", kind.lower() + "s"), namespace="research",
                  name=obj["metadata"]["name"]).body()


@pytest.mark.parametrize("kind", ["ResourceClaim", "ResourceClaimTemplate"])
def test_dra_claims_and_templates_are_routed_fail_closed_and_stamped(default_docs, kind):
    """Every CREATE, UPDATE and DELETE of a claim or template (any API version) reaches the
    gateway, failing closed (pods that name them are charged what the gateway recorded);
    creates are stamped; status updates and kube-system are never sent."""
    webhooks = {w["name"]: w for w in one(default_docs, "ValidatingWebhookConfiguration")["webhooks"]}
    assert webhooks["claims.validate.gpu-gateway.io"]["failurePolicy"] == "Fail"
    for operation, version in itertools.product(("CREATE", "UPDATE", "DELETE"), ("v1", "v1beta1", "v1beta2")):
        body = _claim_request(kind, operation, version=version)
        assert _governed(body)
        assert routed_to(default_docs, "ValidatingWebhookConfiguration", body, GOVERNED_NS) == [
            "claims.validate.gpu-gateway.io"], (operation, version)
        assert not routed_to(default_docs, "ValidatingWebhookConfiguration", body, namespace_labels("kube-system"))
        stamped = routed_to(default_docs, "MutatingWebhookConfiguration", body, GOVERNED_NS)
        assert stamped == (["claims.mutate.gpu-gateway.io"] if operation == "CREATE" else [])
    status = _claim_request(kind, "UPDATE", "status")
    assert not _governed(status)
    assert routed_to(default_docs, "ValidatingWebhookConfiguration", status, GOVERNED_NS) == []


def test_workloads_whose_pods_name_dra_claims_go_to_the_gpu_webhooks(default_docs):
    """A pod template without a GPU in its containers but naming DRA claims is a GPU request:
    the gateway counts the claims' GPUs from its ledger, so the CEL pre-filter must send it."""
    from builders_dra import naming

    from gateway.admission.claims import uses_claims

    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w", "namespace": "research"},
           "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
               "metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "m", "image": "i"}]}}}}
    naming(dep["spec"]["template"]["spec"], templates=("gpu-x4",))
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "research"},
           "spec": copy.deepcopy(dep["spec"]["template"]["spec"])}
    for obj, group, resource in ((dep, "apps", "deployments"), (pod, "", "pods")):
        assert uses_claims(read_workload(obj, group, obj["kind"], bundle().gpu))
        plain = copy.deepcopy(obj)
        spec = plain["spec"]["template"]["spec"] if group else plain["spec"]
        del spec["resourceClaims"]
        del spec["containers"][0]["resources"]
        for new, old, operation in ((obj, None, "CREATE"), (obj, plain, "UPDATE"), (plain, obj, "UPDATE")):
            body = review(new, old=old, operation=operation, resource=(group, resource)).body()
            assert routed_to(default_docs, "ValidatingWebhookConfiguration", body, GOVERNED_NS) == [
                "workloads.validate.gpu-gateway.io"], (resource, operation)
            assert routed_to(default_docs, "MutatingWebhookConfiguration", body, GOVERNED_NS) == [
                "workloads.mutate.gpu-gateway.io"], (resource, operation)
        body = review(plain, resource=(group, resource)).body()
        assert routed_to(default_docs, "ValidatingWebhookConfiguration", body, GOVERNED_NS) == [
            "cpu.validate.gpu-gateway.io"]


# ------------------------------------------------------------ what fails closed

#: Fail-open webhooks, each with what it is for: nothing that protects someone's data or pods.
FAIL_OPEN = {"data-new.validate.gpu-gateway.io", "cpu.validate.gpu-gateway.io", "data.mutate.gpu-gateway.io"}
OWNED_DATA = (("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"), ("", "v1", "ConfigMap", "configmaps"),
              ("", "v1", "Secret", "secrets"), ("", "v1", "ServiceAccount", "serviceaccounts"),
              ("snapshot.storage.k8s.io", "v1", "VolumeSnapshot", "volumesnapshots"))


def _webhooks(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {w["name"]: w for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
            for w in one(docs, kind)["webhooks"]}


def _data_request(group: str, version: str, kind: str, resource: str, operation: str,
                  obj: dict[str, Any] | None = None, user: str = "eve") -> dict[str, Any]:
    obj = obj or {"apiVersion": f"{group}/{version}" if group else version, "kind": kind,
                  "metadata": {"name": "d", "namespace": "research"}}
    return review(None if operation == "DELETE" else obj, old=obj if operation != "CREATE" else None,
                  operation=operation, kind=(group, version, kind), resource=(group, resource),
                  namespace="research", name="d", user=user).body()


@pytest.mark.parametrize("group,version,kind,resource", OWNED_DATA)
def test_changing_owned_data_fails_closed_with_no_condition(default_docs, group, version, kind, resource):
    """UPDATE and DELETE of owned data (from anyone, controllers too) reach a webhook that fails
    closed and has no matchCondition, so neither an outage nor a huge object skips the check;
    a new object that reads nothing of anyone's is stamped and recorded by fail-open webhooks."""
    webhooks = _webhooks(default_docs)
    for operation in ("UPDATE", "DELETE"):
        for user in ("eve", "system:serviceaccount:kube-system:job-controller"):
            body = _data_request(group, version, kind, resource, operation, user=user)
            routed = routed_to(default_docs, "ValidatingWebhookConfiguration", body, GOVERNED_NS)
            assert routed == ["data.validate.gpu-gateway.io"], (operation, user)
            assert not routed_to(default_docs, "MutatingWebhookConfiguration", body, GOVERNED_NS)
    assert webhooks["data.validate.gpu-gateway.io"]["failurePolicy"] == "Fail"
    assert "matchConditions" not in webhooks["data.validate.gpu-gateway.io"]
    create = _data_request(group, version, kind, resource, "CREATE")
    expected = "data.validate" if resource == "volumesnapshots" else "data-new.validate"  # a snapshot copies a claim
    assert routed_to(default_docs, "ValidatingWebhookConfiguration", create, GOVERNED_NS) == [
        f"{expected}.gpu-gateway.io"]
    assert routed_to(default_docs, "MutatingWebhookConfiguration", create, GOVERNED_NS) == [
        "data.mutate.gpu-gateway.io"]
    for docs in (default_docs, rendered_as("data-access-off")):
        assert not routed_to(docs, "ValidatingWebhookConfiguration", create, namespace_labels("kube-system"))
    assert not routed_to(rendered_as("data-access-off"), "ValidatingWebhookConfiguration", create, GOVERNED_NS)


@pytest.mark.parametrize("resource,obj", [
    ("persistentvolumeclaims", {"spec": {"dataSource": {"kind": "PersistentVolumeClaim", "name": "bobs-ckpt"}}}),
    ("persistentvolumeclaims", {"spec": {"dataSourceRef": {"apiGroup": "snapshot.storage.k8s.io",
                                                           "kind": "VolumeSnapshot", "name": "bobs-snap"}}}),
    ("secrets", {"type": "kubernetes.io/service-account-token",
                 "metadata": {"annotations": {"kubernetes.io/service-account.name": "bob-sa"}}}),
    ("serviceaccounts", {"imagePullSecrets": [{"name": "bobs-registry"}]}),
    ("serviceaccounts", {"secrets": [{"name": "bobs-token"}]}),
])
def test_new_objects_that_read_another_s_fail_closed(default_docs, resource, obj):
    """A claim cloned from another claim or a snapshot, a Secret the token controller fills with a
    service account's token, a ServiceAccount listing Secrets: created only past the gateway."""
    kind = {"persistentvolumeclaims": "PersistentVolumeClaim", "secrets": "Secret",
            "serviceaccounts": "ServiceAccount"}[resource]
    full = {"apiVersion": "v1", "kind": kind, **obj,
            "metadata": {"name": "d", "namespace": "research", **obj.get("metadata", {})}}
    body = _data_request("", "v1", kind, resource, "CREATE", full)
    assert routed_to(default_docs, "ValidatingWebhookConfiguration", body, GOVERNED_NS) == [
        "data-sources.validate.gpu-gateway.io"]
    assert _webhooks(default_docs)["data-sources.validate.gpu-gateway.io"]["failurePolicy"] == "Fail"


def _pod(spec: dict[str, Any], name: str = "p") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "research"},
            "spec": {"containers": [{"name": "m", "image": "busybox"}], **spec}}


_C = {"name": "m", "image": "busybox"}
#: Pod specs that reach something of someone else's or use an escape hatch.
REACHING = {
    "claim": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "bobs-ckpt"}}]},
    "claim-read-only": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "x", "readOnly": True}}]},
    "secret-volume": {"volumes": [{"name": "d", "secret": {"secretName": "bobs-token"}}]},
    "configmap-volume": {"volumes": [{"name": "d", "configMap": {"name": "bobs-config"}}]},
    "projected-secret": {"volumes": [{"name": "d", "projected": {"sources": [
        {"serviceAccountToken": {"path": "t"}}, {"secret": {"name": "bobs-token"}}]}}]},
    "ephemeral-claim": {"volumes": [{"name": "d", "ephemeral": {"volumeClaimTemplate": {"spec": {
        "dataSource": {"kind": "PersistentVolumeClaim", "name": "bobs-ckpt"}}}}}]},
    "host-path": {"volumes": [{"name": "d", "hostPath": {"path": "/"}}]},
    "nfs": {"volumes": [{"name": "d", "nfs": {"server": "nas", "path": "/teams/pretrain"}}]},
    "csi-inline": {"volumes": [{"name": "d", "csi": {"driver": "smb.csi.k8s.io"}}]},
    "env-from": {"containers": [{**_C, "envFrom": [{"secretRef": {"name": "bobs-token"}}]}]},
    "value-from-secret": {"containers": [{**_C, "env": [{"name": "T", "valueFrom": {
        "secretKeyRef": {"name": "bobs-token", "key": "t"}}}]}]},
    "value-from-configmap-in-init": {"initContainers": [{**_C, "env": [{"name": "T", "valueFrom": {
        "configMapKeyRef": {"name": "bobs-config", "key": "t"}}}]}]},
    "nvidia-visible-devices": {"containers": [{**_C, "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}]},
    "image-pull-secrets": {"imagePullSecrets": [{"name": "bobs-registry"}]},
    "service-account": {"serviceAccountName": "pretrain-deployer"},
    "privileged": {"containers": [{**_C, "securityContext": {"privileged": True}}]},
    "capabilities": {"containers": [{**_C, "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]},
    "host-network": {"hostNetwork": True},
    "host-pid": {"hostPID": True},
    "host-ipc": {"hostIPC": True},
    "node-name": {"nodeName": "gpu-node-7"},
}
#: Pod specs that reach nothing of anyone's: ordinary CPU work.
REACHING_NOTHING = {
    "plain": {},
    "empty-dir-and-downward-api": {"volumes": [{"name": "s", "emptyDir": {}},
                                               {"name": "l", "downwardAPI": {"items": []}}]},
    "default-token": {"serviceAccountName": "default", "volumes": [{"name": "kube-api-access-x", "projected": {
        "sources": [{"serviceAccountToken": {"path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": []}}]}}]},
    "field-ref-env": {"containers": [{**_C, "env": [
        {"name": "A", "value": "1"}, {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "securityContext": {"runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}}]},
}


@pytest.mark.parametrize("case", [*REACHING, *REACHING_NOTHING])
def test_cpu_work_that_reaches_data_or_uses_a_hatch_fails_closed(default_docs, case):
    """A pod or workload without GPUs that reaches anything of someone else's, or uses an escape
    hatch, goes to a fail-closed webhook (on UPDATE also when only the old object did); one that
    reaches nothing goes to a fail-open one, so ordinary CPU work runs through an outage."""
    spec = REACHING.get(case, REACHING_NOTHING.get(case))
    pod = _pod(copy.deepcopy(spec))
    plain = _pod({})
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w", "namespace": "research"},
           "spec": {"template": {"spec": copy.deepcopy(pod["spec"])}}}
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "w", "namespace": "research"},
           "spec": {"template": {"spec": copy.deepcopy(pod["spec"])}}}
    expected = "reach" if case in REACHING else "cpu"
    webhooks = _webhooks(default_docs)
    assert webhooks[f"{expected}.validate.gpu-gateway.io"]["failurePolicy"] == (
        "Fail" if expected == "reach" else "Ignore")
    for obj, group, resource in ((pod, "", "pods"), (dep, "apps", "deployments"), (sts, "apps", "statefulsets")):
        plain_obj = copy.deepcopy(obj)
        (plain_obj["spec"]["template"] if group else plain_obj)["spec"] = copy.deepcopy(plain["spec"])
        for new, old, operation in ((obj, None, "CREATE"), (obj, plain_obj, "UPDATE"), (plain_obj, obj, "UPDATE")):
            body = review(new, old=old, operation=operation, resource=(group, resource), user="eve").body()
            assert routed_to(default_docs, "ValidatingWebhookConfiguration", body, GOVERNED_NS) == [
                f"{expected}.validate.gpu-gateway.io"], (resource, operation)
        if _reaches(obj, group):  # what the gateway's mount rules check is never sent to a fail-open webhook
            assert expected == "reach"
        body = review(obj, resource=(group, resource), user="system:serviceaccount:kube-system:job-controller").body()
        assert routed_to(default_docs, "ValidatingWebhookConfiguration", body, GOVERNED_NS) == []
    claims = copy.deepcopy(sts)
    claims["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "c"}, "spec": {
        "dataSource": {"kind": "PersistentVolumeClaim", "name": "bobs-ckpt"}}}]
    body = review(claims, resource=("apps", "statefulsets"), user="eve").body()
    assert routed_to(default_docs, "ValidatingWebhookConfiguration", body, GOVERNED_NS) == [
        "reach.validate.gpu-gateway.io"]


def test_no_fail_open_webhook_guards_a_protective_check(rendered):
    """Only the stamping and recording of new objects and CPU work that reaches nothing fail open;
    each fail-open webhook with conditions has a fail-closed twin (same rules) whose last
    condition is the negation of its own, so a condition that fails on the fail-open one (an
    error, a huge object over the cost limit) only skips it: the twin still decides, and an
    error there denies."""
    for name, docs in rendered.items():
        webhooks = _webhooks(docs)
        for webhook in webhooks.values():
            if webhook["failurePolicy"] == "Fail":
                continue
            assert webhook["name"] in FAIL_OPEN, (name, webhook["name"])
            conditions = webhook.get("matchConditions", [])
            if not conditions:
                continue
            twins = [w for w in webhooks.values() if w["failurePolicy"] == "Fail" and w["rules"] == webhook["rules"]
                     and w.get("matchConditions", [])[:-1] == conditions[:-1]]
            assert len(twins) == 1, (name, webhook["name"])
            assert conditions[-1]["expression"] == f"!({twins[0]['matchConditions'][-1]['expression']})"
        # Changing or deleting owned data is never behind a condition.
        assert "matchConditions" not in webhooks.get("data.validate.gpu-gateway.io", {}), name


HUGE = 3 * 1024 * 1024  # the API server's default limit on a request body


def _huge_pod_spec() -> dict[str, Any]:
    """A PodSpec of many small list items (what CEL walks: 2,000 env entries, 500 volumes), the only reference
    to data in the last env entry of the last container: the worst case for `exists`."""
    containers = [{"name": f"c{i}", "image": "busybox", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                   "env": [{"name": f"E{j}", "value": "x" * 40} for j in range(20)],
                   "volumeMounts": [{"name": f"v{j}", "mountPath": f"/m/{j}"} for j in range(5)]}
                  for i in range(100)]
    containers[-1]["env"][-1] = {"name": "T", "valueFrom": {"secretKeyRef": {"name": "bobs-token", "key": "t"}}}
    return {"containers": containers, "volumes": [{"name": f"v{j}", "emptyDir": {}} for j in range(500)]}


def _padded(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` with annotations added until its JSON is ~3 MiB."""
    obj = copy.deepcopy(obj)
    size = len(json.dumps(obj))
    obj["metadata"].setdefault("annotations", {}).update(
        {f"pad.example.com/a{i}": "p" * 1000 for i in range(max(0, HUGE - size - 4096) // 1030)})
    assert HUGE - 64 * 1024 < len(json.dumps(obj)) <= HUGE
    return obj


def _cel_cost(expression: str, activation: dict[str, Any]) -> tuple[Any, int]:
    """The condition's value and an estimate of its CEL cost: the evaluator's steps (every node
    of the expression visited, once per comprehension iteration). cel-python has no cost
    accounting; the API server charges about one unit per such step (more for string functions),
    so this is the order of magnitude of its runtime cost."""
    import celpy
    import lark
    from helm_chart import _program

    steps = 0
    visit = lark.visitors.Interpreter.visit

    def counting(self: Any, tree: Any) -> Any:
        nonlocal steps
        steps += 1
        return visit(self, tree)

    program = _program(expression)
    celpy.evaluation.Evaluator.visit = counting  # type: ignore[method-assign]
    try:
        value = program.evaluate(activation)
    finally:
        del celpy.evaluation.Evaluator.visit
    return value, steps


def test_every_routing_condition_evaluates_on_a_worst_case_3_mib_object(default_docs):
    """Each matchCondition of each webhook, on the ~3 MiB objects it is evaluated on (a Pod and a
    Deployment of 100 containers, 2,000 env entries, 500 volumes, padded with annotations; a
    ConfigMap; a Secret), evaluates to a boolean, and every protective request still reaches its
    fail-closed webhook. On a fail-closed webhook a condition that errored or ran over the API
    server's cost limit would deny, never skip; on a fail-open one it only skips recording or
    plain CPU work (see the test above)."""
    import time

    import celpy

    pod = _padded(_pod(_huge_pod_spec(), "huge"))
    dep = _padded({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "huge", "namespace": "research"},
                   "spec": {"template": {"spec": _huge_pod_spec()}}})
    configmap = _padded({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "huge", "namespace": "research"},
                         "data": {f"k{i}": "v" * 100 for i in range(10000)}})
    secret = _padded({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "huge", "namespace": "research"},
                      "type": "kubernetes.io/service-account-token", "data": {"token": "dA=="}})
    requests = [(review(pod, resource=("", "pods"), user="eve").body(), "reach"),
                (review(dep, resource=("apps", "deployments"), user="eve").body(), "reach"),
                (_data_request("", "v1", "ConfigMap", "configmaps", "UPDATE", configmap), "data"),
                (_data_request("", "v1", "ConfigMap", "configmaps", "DELETE", configmap), "data"),
                (_data_request("", "v1", "ConfigMap", "configmaps", "CREATE", configmap), "data-new"),
                (_data_request("", "v1", "Secret", "secrets", "CREATE", secret), "data-sources")]
    report = []
    for body, expected in requests:
        req = body["request"]
        resource = req["resource"]["resource"]
        activation = {"request": celpy.json_to_cel({k: v for k, v in req.items() if k not in ("object", "oldObject")}),
                      "object": celpy.json_to_cel(req.get("object")),
                      "oldObject": celpy.json_to_cel(req.get("oldObject"))}
        for webhook in _webhooks(default_docs).values():
            if not any(rule_matches(r, req["operation"], req["resource"]["group"], resource) for r in webhook["rules"]):
                continue  # the API server evaluates only the conditions of webhooks whose rules match
            for condition in webhook.get("matchConditions", []):
                started = time.perf_counter()
                value, cost = _cel_cost(condition["expression"], activation)
                took = time.perf_counter() - started
                assert isinstance(value, celpy.celtypes.BoolType), (webhook["name"], condition["name"], value)
                report.append(f"{req['operation']} {req['resource']['resource']} {webhook['name']} "
                              f"{condition['name']}: {bool(value)}, {took:.2f} s, ~{cost} steps")
        routed = routed_to(default_docs, "ValidatingWebhookConfiguration", body, GOVERNED_NS)
        assert routed == [f"{expected}.validate.gpu-gateway.io"], routed
    print("\n".join(report))


# ------------------------------------------------------------ the CEL pre-filter

ALL_FIXTURES = [*CORE_FILES, *CRD_FILES]
RESOURCE_NAMES = ["nvidia.com/gpu", "nvidia.com/mig-1g.10gb", "amd.com/gpu", "gpu.intel.com/i915",
                  "gpu.intel.com/millicores", "gpu.intel.com/memory.max", "cpu", "memory", "example.com/fpga"]
PROPERTIES = settings(max_examples=150, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _resource_dicts(node: Any) -> list[dict[str, Any]]:
    """Every container's `resources` mapping (and TrainJob's resourcesPerNode) in an object: in
    containers lists, and in the single containers registered kinds keep (Argo's `container` and
    `script`, KServe's `model`)."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers", "sidecars") and isinstance(value, list):
                for c in value:
                    if isinstance(c, dict):
                        found.append(c.setdefault("resources", {}))
            elif key in ("container", "script", "model") and isinstance(value, dict):
                found.append(value.setdefault("resources", {}))
            elif key == "resourcesPerNode" and isinstance(value, dict):
                found.append(value)
            found.extend(_resource_dicts(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_resource_dicts(item))
    return found


def _gpu_blocks(node: Any) -> list[dict[str, Any]]:
    """Every `gpu: {name, quantity}` block (Spark's driver and executor) in an object."""
    if isinstance(node, list):
        return [b for item in node for b in _gpu_blocks(item)]
    if not isinstance(node, dict):
        return []
    found = [v for k, v in node.items() if k == "gpu" and isinstance(v, dict) and "name" in v]
    return found + [b for v in node.values() for b in _gpu_blocks(v)]


def _resource_of(obj: dict[str, Any]) -> tuple[str, str]:
    group, kind = group_kind(obj)
    registered = {(k.group, k.kind): k.resource for k in bundle().kinds}
    return group, registered.get((group, kind), kind.lower() + "s")


requests_map = st.dictionaries(st.sampled_from(RESOURCE_NAMES), st.sampled_from([0, 1, 8, "2", "500m"]),
                               max_size=3)


@PROPERTIES
@given(name=st.sampled_from(ALL_FIXTURES), data=st.data(), operation=st.sampled_from(["CREATE", "UPDATE"]),
       user=st.sampled_from(["alice", "system:serviceaccount:kube-system:job-controller"]))
def test_cel_prefilter_sends_every_object_that_asks_for_gpus(name, data, operation, user):
    """For real manifests of every kind, with resources rewritten at random: whenever the gateway
    counts a GPU (or finds GPUs it cannot count), the matchConditions send the request; each
    request goes to exactly one of the GPU and data webhooks (none for trusted controllers'
    objects without GPUs)."""
    policy = bundle()
    docs = rendered_as("defaults")
    webhooks = {w["name"]: w for w in one(docs, "ValidatingWebhookConfiguration")["webhooks"]}
    new, old = load_any(name), load_any(name)
    for obj in (new, old):
        for resources in _resource_dicts(obj):
            resources.clear()
            for part in ("limits", "requests"):
                chosen = data.draw(requests_map)
                if chosen:
                    resources[part] = chosen
        for block in _gpu_blocks(obj):
            block.update(name=data.draw(st.sampled_from(RESOURCE_NAMES)), quantity=data.draw(st.sampled_from([0, 1])))
    group, resource = _resource_of(new)
    body = review(new, old=old if operation == "UPDATE" else None, operation=operation, user=user,
                  resource=(group, resource)).body()

    def asks(obj: dict[str, Any]) -> bool:
        try:
            return _asks(obj, group)
        except Exception:  # unreadable (e.g. "500m" GPUs): the gateway must see it to deny it
            return any(policy.gpu(r) for res in _resource_dicts(copy.deepcopy(obj)) for part in res.values()
                       for r in part)

    def sent(webhook: str) -> bool:
        return all(evaluate(c["expression"], body) for c in webhooks[webhook]["matchConditions"])

    gpu_sent = sent("workloads.validate.gpu-gateway.io")
    data_sent = [w for w in ("reach.validate.gpu-gateway.io", "cpu.validate.gpu-gateway.io") if sent(w)]
    if asks(new) or (operation == "UPDATE" and asks(old)):
        assert gpu_sent, f"{name}: asks for GPUs but the pre-filter would not send it"
    assert gpu_sent + len(data_sent) <= 1, "sent to two webhooks"
    if user == "alice":
        assert gpu_sent or data_sent, "a person's workload reaches no webhook"
        if not gpu_sent and _reaches(new, group):
            assert data_sent == ["reach.validate.gpu-gateway.io"], f"{name} reaches data but fails open"


#: A kind outside ADAPTERS and the bundle's registry, walked generically, as an operator would route it.
EXTRA_KINDS = [{"group": "apps.kruise.io", "resource": "clonesets", "podSpecs": ["spec.template.spec"]}]


@cache
def _with_extra_kinds() -> list[dict[str, Any]]:
    return render({"webhook": {"extraWorkloadKinds": EXTRA_KINDS}})


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_cel_prefilter_on_each_fixture_agrees_with_the_gateway(name):
    """Each real manifest reaches the GPU webhook exactly when the gateway counts GPUs in it (or
    finds GPUs it cannot count); a kind of an API group the chart does not know is routed once
    the operator lists it."""
    obj = load_any(name)
    group, resource = _resource_of(obj)
    known = (group, obj["kind"]) in ADAPTERS or (group, obj["kind"]) in bundle().kinds
    docs = rendered_as("defaults") if known else _with_extra_kinds()
    body = review(obj, resource=(group, resource)).body()
    routed = routed_to(docs, "ValidatingWebhookConfiguration", body, GOVERNED_NS)
    if _asks(obj, group):
        assert routed == ["workloads.validate.gpu-gateway.io"]
    else:
        assert routed == [_cpu_webhook(obj, group)]
    if not known:
        assert routed_to(rendered_as("defaults"), "ValidatingWebhookConfiguration", body, GOVERNED_NS) == []
    for resources in _resource_dicts(obj):
        resources.clear()
    for block in _gpu_blocks(obj):
        block["name"] = "example.com/fpga"
    cpu_only = review(obj, resource=(group, resource)).body()
    # a TrainJob without resourcesPerNode holds GPUs the gateway cannot count
    expected = "workloads.validate.gpu-gateway.io" if _read(obj, group).unresolved else _cpu_webhook(obj, group)
    assert routed_to(docs, "ValidatingWebhookConfiguration", cpu_only, GOVERNED_NS) == [expected]
    if not expected.startswith("workloads"):
        assert routed_to(rendered_as("data-access-off"), "ValidatingWebhookConfiguration", cpu_only,
                         GOVERNED_NS) == []


def _spark_executor_only(o: dict[str, Any]) -> None:
    del o["spec"]["driver"]["gpu"]


def _spark_other_device(o: dict[str, Any]) -> None:
    for role in ("driver", "executor"):
        o["spec"][role]["gpu"]["name"] = "example.com/fpga"


def _spark_conf_gpus(o: dict[str, Any]) -> None:
    for role in ("driver", "executor"):
        del o["spec"][role]["gpu"]
    o["spec"]["sparkConf"] = {"spark.executor.resource.gpu.amount": "1"}


def _kserve_cpu_only(o: dict[str, Any]) -> None:
    for part in ("limits", "requests"):
        del o["spec"]["predictor"]["model"]["resources"][part]["nvidia.com/gpu"]


def _kserve_runtime_resources(o: dict[str, Any]) -> None:
    del o["spec"]["predictor"]["model"]["resources"]


def _kserve_transformer(o: dict[str, Any]) -> None:
    _kserve_cpu_only(o)
    o["spec"]["transformer"] = {"maxReplicas": 1, "containers": [
        {"name": "t", "image": "i", "resources": {"limits": {"amd.com/gpu": 1}}}]}


def _argo_cpu_only(o: dict[str, Any]) -> None:
    del o["spec"]["templates"][1]["container"]["resources"]


def _argo_container_set(o: dict[str, Any]) -> None:
    template = o["spec"]["templates"][1]
    del template["container"]
    template["containerSet"] = {"containers": [
        {"name": "a", "image": "i", "resources": {"limits": {"nvidia.com/gpu": 1}}}]}


def _argo_template_ref(o: dict[str, Any]) -> None:
    o["spec"]["templates"] = []
    o["spec"]["workflowTemplateRef"] = {"name": "x"}


def _as_is(o: dict[str, Any]) -> None:
    pass


#: (fixture, edit, whether the gateway must see it as a GPU request)
REGISTERED_CASES = {
    "a Spark executor's gpu block": ("sparkapplication-gpu.yaml", _spark_executor_only, True),
    "a Spark gpu block naming another device": ("sparkapplication-gpu.yaml", _spark_other_device, False),
    "Spark GPUs asked in sparkConf": ("sparkapplication-gpu.yaml", _spark_conf_gpus, True),
    "a KServe predictor model's resources": ("inferenceservice-llama.yaml", _as_is, True),
    "a KServe predictor without GPUs": ("inferenceservice-llama.yaml", _kserve_cpu_only, False),
    "a KServe model taking its resources from the runtime": (
        "inferenceservice-llama.yaml", _kserve_runtime_resources, True),
    "a KServe transformer's containers": ("inferenceservice-llama.yaml", _kserve_transformer, True),
    "an Argo template's container": ("workflow-sweep.yaml", _as_is, True),
    "an Argo template without GPUs": ("workflow-sweep.yaml", _argo_cpu_only, False),
    "an Argo containerSet": ("workflow-sweep.yaml", _argo_container_set, True),
    "an Argo workflowTemplateRef": ("workflow-sweep.yaml", _argo_template_ref, True),
    "a Notebook's template": ("notebook.yaml", _as_is, True),
    "a TrainJob without resourcesPerNode": ("trainjob-runtime.yaml", _as_is, True),
}


@pytest.mark.parametrize("case", sorted(REGISTERED_CASES))
def test_gpus_in_a_registered_kind_s_locations_route_it(case):
    """The chart routes the bundle's workload_kinds by where their entries say GPUs are, and the
    gateway agrees on each case."""
    name, edit, sent = REGISTERED_CASES[case]
    obj = load_any(name)
    edit(obj)
    group, resource = _resource_of(obj)
    assert _asks(obj, group) is sent
    body = review(obj, resource=(group, resource)).body()
    routed = routed_to(rendered_as("defaults"), "ValidatingWebhookConfiguration", body, GOVERNED_NS)
    assert routed == ["workloads.validate.gpu-gateway.io" if sent else _cpu_webhook(obj, group)]


def test_every_registered_kind_is_routed_and_granted(default_docs, rendered):
    """Every kind of the bundle's workload_kinds is sent to the webhooks and the controller may get
    and list it (its listing records the GPU workloads that predate the gateway)."""
    rules = [r for w in one(default_docs, "ValidatingWebhookConfiguration")["webhooks"] for r in w["rules"]]
    grants = _granted(rendered["everything"])
    for kind in bundle().kinds:
        assert any(kind.group in r["apiGroups"] and {kind.resource, "*"} & set(r["resources"])
                   and "CREATE" in r["operations"] for r in rules), kind
        assert ("controller", kind.group, kind.resource, "get", False, False) in grants, kind
        assert ("controller", kind.group, kind.resource, "list", False, False) in grants, kind


def test_a_kind_registered_in_an_overridden_bundle_is_routed():
    import yaml

    limits = yaml.safe_load((POLICIES / "limits.yaml").read_text())
    limits["workload_kinds"].append({"group": "inference.example.com", "kind": "ModelDeployment",
                                     "pods": [{"path": "/spec", "shape": "pod_spec", "gpus": ["accelerator"]}]})
    docs = render({"policy": {"files": {"limits.yaml": yaml.safe_dump(limits)}}})
    odd = {"apiVersion": "inference.example.com/v1", "kind": "ModelDeployment", "metadata": {"name": "m"},
           "spec": {"accelerator": {"name": "nvidia.com/gpu", "quantity": 2}}}
    body = review(odd, resource=("inference.example.com", "modeldeployments")).body()
    assert routed_to(docs, "ValidatingWebhookConfiguration", body, GOVERNED_NS) == [
        "workloads.validate.gpu-gateway.io"]
    assert routed_to(rendered_as("defaults"), "ValidatingWebhookConfiguration", body, GOVERNED_NS) == []


def test_cel_gpu_names_follow_the_policy_bundle():
    docs = render({"policy": {"files": {"limits.yaml": (POLICIES / "limits.yaml").read_text().replace(
        "\ngpu_resources: [", "\ngpu_resources: [example.com/tpu, ")}}})
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "t"},
           "spec": {"containers": [{"name": "m", "image": "i", "resources": {"limits": {"example.com/tpu": 4}}}]}}
    body = review(pod).body()
    assert routed_to(docs, "ValidatingWebhookConfiguration", body, GOVERNED_NS) == [
        "workloads.validate.gpu-gateway.io"]
    assert routed_to(rendered_as("defaults"), "ValidatingWebhookConfiguration", body, GOVERNED_NS) == [
        "cpu.validate.gpu-gateway.io"]


# ================================================================== RBAC


def _granted(docs: list[dict[str, Any]]) -> set[tuple[str, str, str, str, bool, bool]]:
    """(component, group, resource, verb, own namespace, named) for every rule bound to a service account."""
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in ("ClusterRole", "Role")}
    grants = set()
    for binding in (d for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        role = roles[(binding["roleRef"]["kind"], binding["roleRef"]["name"])]
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount" and subject["namespace"] == NAMESPACE
            component = subject["name"].removeprefix(f"{RELEASE}-gpu-gateway").lstrip("-") or "gateway"
            for rule in role["rules"]:
                for group, resource, verb in itertools.product(rule["apiGroups"], rule["resources"], rule["verbs"]):
                    grants.add((component, group, resource, verb, role["kind"] == "Role",
                                bool(rule.get("resourceNames"))))
    return grants


def _used(component: str | None = None) -> set[tuple[str, str, str, str, bool, bool]]:
    """Every API call the code makes with the default bundle (its registered kinds included), the
    controller's also as the gateway makes them running it in-process; or only `component`'s."""
    calls = api_calls(bundle().kinds)
    return {(c.component, c.group, c.resource, verb, c.own_namespace, c.named)
            for c in calls + in_process(calls) for verb in c.verbs if component in (None, c.component)}


def test_rbac_grants_exactly_the_api_calls_the_code_makes(rendered):
    """PostgreSQL with its own controller, and SQLite with the controller in the gateway that also evicts."""
    docs = rendered["everything"] + rendered["policy-evicts-rogue-pods"]
    used = _used()
    granted = _granted(docs)
    assert granted - used == set(), "granted but never used by the code"
    assert used - granted == set(), "used by the code but not granted"
    for grant in granted:
        assert "*" not in grant[1:4], f"wildcard grant {grant}"


def test_rbac_never_grants_what_admission_cannot_see(rendered):
    for name, docs in rendered.items():
        for component, _group, resource, verb, _own, _named in _granted(docs):
            assert resource not in ("secrets", "nodes/proxy", "pods/exec", "pods/attach", "serviceaccounts/token")
            assert verb not in ("impersonate", "escalate", "bind", "delete", "deletecollection"), (name, component)


def test_the_gateway_has_kubernetes_api_access_only_to_evict_or_to_run_the_controller(rendered):
    eviction = {("", "pods/eviction", "create")}
    as_controller = {g[1:] for g in _used("controller")}
    for name, docs in rendered.items():
        evicts = name == "policy-evicts-rogue-pods"
        runs_controller = "--controller" in one(docs, "Deployment", f"{RELEASE}-gpu-gateway")["spec"]["template"][
            "spec"]["containers"][0]["args"]
        postgresql = COMBINATIONS[name].get("database", {}).get("type") == "postgresql"
        assert runs_controller is (name != "controller-off" and not postgresql), name
        grants = {g[1:] for g in _granted(docs) if g[0] == "gateway"}
        assert {g[:3] for g in grants - as_controller} == (eviction if evicts else set()), name
        # Running the controller, the gateway's account has every call the controller makes.
        assert (grants & as_controller) == (as_controller if runs_controller else set()), name
        token = evicts or runs_controller
        account = one(docs, "ServiceAccount", f"{RELEASE}-gpu-gateway")
        assert account["automountServiceAccountToken"] is token
        pod = one(docs, "Deployment", f"{RELEASE}-gpu-gateway")["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is token


def test_rbac_of_every_combination_is_within_the_code_s_calls(rendered):
    used = _used()
    for name, docs in rendered.items():
        assert _granted(docs) <= used, name


def test_rendered_manifests_are_stable_except_generated_secrets():
    """Two renders differ only in what is generated (certificates, keys): no random names."""
    def strip(docs: list[dict[str, Any]]) -> str:
        out = []
        for d in docs:
            d = copy.deepcopy(d)
            if d["kind"] == "Secret":
                d.pop("data", None)
            for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
                if d["kind"] == kind:
                    for w in d["webhooks"]:
                        w["clientConfig"].pop("caBundle", None)
            if d["kind"] == "Deployment":
                (d["spec"]["template"]["metadata"].get("annotations") or {}).pop("checksum/tls", None)
            out.append(d)
        return json.dumps(out, sort_keys=True)

    assert strip(render(COMBINATIONS["everything"])) == strip(render(COMBINATIONS["everything"]))


def test_chart_files_are_where_the_docs_say(tmp_path: Path):
    from helm_chart import CHART

    assert (CHART / "values.schema.json").is_file()
    assert (CHART / "files" / "policies").resolve() == POLICIES.resolve()


def test_image_recipe_is_pinned_slim_and_non_root():
    """The Dockerfile the chart's image comes from: a pinned slim base, no root at run time,
    and a build context holding exactly what it copies."""
    from helm_chart import CHART

    repo = CHART.parents[2]
    dockerfile = (repo / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.M)
    assert base and re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base.group(1))
    assert re.search(r"^USER 65532:65532$", dockerfile, re.M)
    assert dockerfile.rstrip().splitlines()[-2:] == ['ENTRYPOINT ["gpu-gateway"]', 'CMD ["--help"]']
    copied = {m.split()[0].rstrip("/") for m in re.findall(r"^COPY (?!--from)(.+?) \S+$", dockerfile, re.M)}
    copied = {part.rstrip("/") for m in copied for part in m.split()}
    allowed = {line[1:].rstrip("/") for line in (repo / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    assert copied <= allowed, f"copied but ignored by .dockerignore: {copied - allowed}"
    # The chart runs it read-only as the same uid.
    pod = one(rendered_as("defaults"), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 65532


def test_helm_lint_is_clean_in_strict_mode():
    import helm_python
    from helm_chart import CHART

    for values in ({}, COMBINATIONS["everything"]):
        report = helm_python.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version="v1.34.0")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not report["errors"] and not problems, report


# ================================================================== monitoring: alerts and dashboard

#: PromQL's keywords and the functions and aggregations the chart's expressions may call; an
#: identifier followed by "(" that is not listed fails the test (a misspelled function).
_PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset"}
_PROMQL_FUNCTIONS = {
    "sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile", "group", "rate", "irate", "increase",
    "delta", "histogram_quantile", "vector", "time", "absent", "clamp_min", "clamp_max", "max_over_time",
    "min_over_time", "avg_over_time", "changes", "resets", "scalar", "abs", "round", "label_values"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression reads: what is left once strings, label matchers, range
    selectors, label lists (by, without, on, ignoring, group_*), Grafana variables, function
    calls and keywords are taken out. Unbalanced brackets fail."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    assert all(e.count(a) == e.count(b) for a, b in ("()", "[]", "{}")), f"unbalanced: {expr}"
    e = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", e):
        word = match.group()
        if word in _PROMQL_KEYWORDS:
            continue
        if e[match.end():].lstrip().startswith("("):
            assert word in _PROMQL_FUNCTIONS, f"{word}( is not a PromQL function the chart expects: {expr}"
        else:
            names.add(word)
    return names


def test_promql_metric_names_reads_what_an_expression_selects():
    expr = ('max by (namespace, configuration) (gpu_gateway_webhook_drift{namespace="a}b"} and on (namespace, pod) '
            '(gpu_gateway_controller_leader == 1)) > 0 or sum(rate(x_total{job=~"$job"}[$__rate_interval])) * 1.5')
    assert promql_metric_names(expr) == {"gpu_gateway_webhook_drift", "gpu_gateway_controller_leader", "x_total"}
    with pytest.raises(AssertionError, match="not a PromQL function"):
        promql_metric_names("sun(gpu_gateway_policy_ok)")


def exported_series(tmp_path: Path) -> set[str]:
    """Every series name the gateway's /metrics can carry, from the registries `serve` builds:
    the gateway's own with the ledger, queue and checkpoint collectors, and the controller's,
    which `gpu-gateway controller` (or `serve --controller`) registers beside them."""
    from gateway.audit.signing.checkpointer import build_checkpointer, generate_key
    from gateway.config import CheckpointSettings, Settings, StoreSettings
    from gateway.scheduling.controller.loop import ControllerMetrics
    from gateway.server import build_gateway

    gateway = build_gateway(Settings(store=StoreSettings(path=tmp_path / "state.db")))
    try:
        metrics = gateway.service.metrics
        generate_key(tmp_path / "checkpoint.key")
        checkpointer = build_checkpointer(CheckpointSettings(key_file=tmp_path / "checkpoint.key",
                                                             directory=tmp_path / "checkpoints"), gateway.service.store)
        assert checkpointer is not None
        metrics.watch_checkpoints(checkpointer)
        ControllerMetrics(metrics.registry)
        suffixes = {"counter": ("_total", "_created"), "gauge": ("",),
                    "histogram": ("_bucket", "_count", "_sum", "_created")}
        return {family.name + suffix for family in metrics.registry.collect() for suffix in suffixes[family.type]}
    finally:
        gateway.service.store.close()


def _alert_rules(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in one(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]}


def _dashboard(docs: list[dict[str, Any]]) -> dict[str, Any]:
    configmap = one(docs, "ConfigMap", f"{RELEASE}-gpu-gateway-dashboard")
    return json.loads(configmap["data"]["gpu-gateway.json"])


def _dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            metric = re.fullmatch(r"label_values\((\w+), *\w+\)", variable["query"]["query"])
            assert metric, variable
            queries.append(metric.group(1))
    return queries


def test_alerts_and_dashboard_read_only_metrics_the_gateway_exports(rendered, tmp_path):
    """Every metric name in an alert rule or a dashboard query is one the gateway's or the
    controller's registry defines, so no alert stays silent on a name that does not exist."""
    exported = exported_series(tmp_path)
    docs = rendered["everything"]
    rules = _alert_rules(docs)
    assert set(rules) == {"GpuGatewayPolicyNotLoaded", "GpuGatewayWebhookDrift", "GpuGatewayDecisionErrors",
                          "GpuGatewayDecisionLatencyHigh", "GpuGatewayQueuedTooLong", "GpuGatewayAuditCheckpointStale"}
    used = set()
    for name, rule in rules.items():
        names = promql_metric_names(rule["expr"])
        assert names and names <= exported, f"{name} reads {names - exported}, which the gateway does not export"
        assert f'namespace="{NAMESPACE}"' in rule["expr"], name  # this release's gateway, not another's
        used |= names
    assert {"gpu_gateway_policy_ok", "gpu_gateway_webhook_drift", "gpu_gateway_errors_total",
            "gpu_gateway_request_seconds_bucket", "gpu_gateway_queue_oldest_age_seconds",
            "gpu_gateway_audit_checkpoint_age_seconds"} <= used
    queries = _dashboard_queries(_dashboard(docs))
    for query in queries:
        names = promql_metric_names(query)
        assert names and names <= exported, f"the dashboard reads {names - exported}: {query}"


def test_the_dashboard_is_grafana_json_on_a_chosen_prometheus(rendered):
    from helm_chart import CHART

    for combination in ("everything", "alerts-and-dashboard-on-sqlite"):
        dashboard = _dashboard(rendered[combination])
        assert dashboard == json.loads((CHART / "files" / "dashboards" / "gpu-gateway.json").read_text())
    assert dashboard["uid"] == "gpu-gateway" and dashboard["panels"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel["targets"]:
            assert 'namespace="$namespace"' in target["expr"], panel["title"]
    configmap = one(rendered["everything"], "ConfigMap", f"{RELEASE}-gpu-gateway-dashboard")
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "GPU"}


def test_monitoring_is_off_by_default_and_follows_what_is_installed(rendered):
    for docs in (rendered["defaults"], rendered["monitoring-and-network-policy"]):
        kinds = {d["kind"] for d in docs}
        assert "PrometheusRule" not in kinds and "PodMonitor" not in kinds
        assert not [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    # Without checkpoints there is no age to watch; the controller inside the SQLite gateway checks
    # for drift (its metrics on the gateway's /metrics), and without a controller nothing does.
    alerts = {"GpuGatewayPolicyNotLoaded", "GpuGatewayDecisionErrors", "GpuGatewayDecisionLatencyHigh",
              "GpuGatewayQueuedTooLong"}
    assert set(_alert_rules(rendered["alerts-and-dashboard-on-sqlite"])) == alerts | {"GpuGatewayWebhookDrift"}
    assert "PodMonitor" not in {d["kind"] for d in rendered["alerts-and-dashboard-on-sqlite"]}
    off = render(COMBINATIONS["alerts-and-dashboard-on-sqlite"] | {"controller": {"enabled": False}})
    assert set(_alert_rules(off)) == alerts
    docs = rendered["everything"]
    rule = one(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert all(r["labels"]["team"] == "platform" and r["labels"]["severity"] in ("warning", "critical")
               for r in _alert_rules(docs).values())
    # The controller's metrics (drift, queue waits) are scraped from its pods.
    monitor = one(docs, "PodMonitor")
    controller = one(docs, "Deployment", f"{RELEASE}-gpu-gateway-controller")
    assert selects(monitor["spec"]["selector"], controller["spec"]["template"]["metadata"]["labels"])
    ports = {p["name"] for p in controller["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports


def test_alert_thresholds_come_from_the_values():
    docs = render(COMBINATIONS["everything"] | {"prometheusRule": {
        "enabled": True, "decisionLatencyP99Seconds": 0.5, "queueAgeSeconds": 3600, "checkpointMissedIntervals": 5},
        "checkpoints": {"enabled": True, "existingSecret": "ckpt", "intervalSeconds": 30}})
    rules = _alert_rules(docs)
    assert rules["GpuGatewayDecisionLatencyHigh"]["expr"].endswith("> 0.5")
    assert rules["GpuGatewayQueuedTooLong"]["expr"].endswith("> 3600")
    assert rules["GpuGatewayAuditCheckpointStale"]["expr"].endswith("> 150")


def test_the_latency_threshold_stays_inside_the_histogram_s_buckets():
    """histogram_quantile never answers more than the largest finite bucket: a threshold at or
    above it could never fire, so the schema refuses it."""
    import helm_python
    from helm_chart import CHART

    from gateway.metrics import Metrics

    buckets = Metrics().latency._upper_bounds
    largest = max(b for b in buckets if b != float("inf"))
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["properties"]["prometheusRule"]["properties"]["decisionLatencyP99Seconds"][
        "exclusiveMaximum"] == largest
    with pytest.raises(helm_python.HelmValuesError, match="decisionLatencyP99Seconds"):
        render({"prometheusRule": {"enabled": True, "decisionLatencyP99Seconds": largest}})


# ================================================================== the admin API: turning authentication on


def _notes(values: dict[str, Any]) -> str:
    from helm_chart import chart

    rendered = chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return rendered["gpu-gateway/templates/NOTES.txt"]


def _set_values(text: str) -> dict[str, Any]:
    """The values of the `--set a.b=c` flags in `text`, as helm would build them ({x} is a list)."""
    values: dict[str, Any] = {}
    for path, value in re.findall(r"--set ([\w.]+)=(\S+)", text):
        *parents, leaf = path.split(".")
        node = values
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value[1:-1].split(",") if value.startswith("{") else value
    return values


def test_notes_of_a_default_install_say_the_admin_api_answers_503_and_how_to_turn_it_on():
    notes = _notes({})
    assert "authentication is OFF: every /api/v1 request answers 503" in notes
    oidc, secret = notes.split("Or with a shared secret")
    oidc_values, secret_values = _set_values(oidc), _set_values(secret.split("Log in with gpuctl")[0])
    assert oidc_values == {"adminApi": {"auth": {"oidc": {"issuer": "https://login.example.com",
                                                          "audience": "gpuctl"}}}}
    assert secret_values["adminApi"]["auth"]["jwt"]["existingSecret"] == f"{RELEASE}-gpu-gateway-jwt"
    # Each set of flags renders, and the gateway then runs with that authentication.
    for values, flag in ((oidc_values, "--oidc-issuer=https://login.example.com"),
                         (secret_values, "--jwt-secret-file=/etc/gpu-gateway/jwt/jwt-secret")):
        args = one(render(values), "Deployment", f"{RELEASE}-gpu-gateway")["spec"]["template"]["spec"][
            "containers"][0]["args"]
        assert flag in args
        assert "authentication is OFF" not in _notes(values)
    assert "authentication: OIDC, tokens of https://login.example.com for audience gpuctl" in _notes(oidc_values)
    assert "gpuctl login --server https://localhost:8443 --token \"$TOKEN\" --certificate-authority ca.crt" in notes
    assert "--set adminApi.dnsNames={localhost}" in notes
    assert "--set adminApi.dnsNames" not in _notes({"adminApi": {"dnsNames": ["localhost"]}})


def test_admin_api_dns_names_are_served_by_the_certificate(rendered):
    import base64

    from cryptography import x509

    secret = one(render({"adminApi": {"dnsNames": ["localhost", "gpu.example.com"]}}), "Secret",
                 f"{RELEASE}-gpu-gateway-tls")
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    assert {"localhost", "gpu.example.com", f"{RELEASE}-gpu-gateway-api.{NAMESPACE}.svc"} <= set(names)
    serving = one(rendered["everything"], "Certificate", f"{RELEASE}-gpu-gateway-serving")
    assert {"localhost", "gpu-gateway.example.com"} <= set(serving["spec"]["dnsNames"])


# ================================================================== the chart's objects, run for real


def _kubelet_configmap_volume(root: Path, data: dict[str, str] | dict[str, bytes], version: int,
                              mode: int = 0o644) -> Path:
    """Write `data` the way the kubelet's AtomicWriter lays out a ConfigMap or Secret volume:
    files in a timestamped directory, `..data` a symlink to it, each key a symlink through
    `..data`; an update writes a new directory and swaps `..data` atomically."""
    root.mkdir(exist_ok=True)
    stamped = root / f"..2026_11_26_00_00_{version:02d}.{version}"
    stamped.mkdir()
    for key, content in data.items():
        path = stamped / key
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        path.chmod(mode)
    tmp_link = root / "..data_tmp"
    tmp_link.symlink_to(stamped.name)
    tmp_link.replace(root / "..data")
    for key in data:
        if not (root / key).is_symlink():
            (root / key).symlink_to(f"..data/{key}")
    return root


def test_policy_configmap_reloads_as_the_kubelet_updates_it(tmp_path):
    """The rendered policy ConfigMap, mounted as the kubelet mounts it, loads; an edit swapped
    in reloads; a broken edit keeps the last good bundle in force."""
    from gateway.policy_bundle import PolicyHolder

    data = dict(one(rendered_as("defaults"), "ConfigMap")["data"])
    volume = _kubelet_configmap_volume(tmp_path / "policies", data, 1)
    holder = PolicyHolder(volume)
    before = holder.policy.version
    changed = data | {"limits.yaml": data["limits.yaml"] + "\n# edited through the ConfigMap\n"}
    _kubelet_configmap_volume(volume, changed, 2)
    assert holder.reload().changed and holder.policy.version != before
    _kubelet_configmap_volume(volume, data | {"limits.yaml": "roles: [not, a, mapping\n"}, 3)
    result = holder.reload()
    assert result.error and not result.changed
    assert holder.policy.version != before  # the edited, last good bundle is still in force


def _pod_volumes(root: Path, docs: list[dict[str, Any]], pod: dict[str, Any]) -> dict[str, Path]:
    """The rendered pod's volumes laid out under `root` as the kubelet would: mount path -> directory.
    Secrets and ConfigMaps come from the rendered objects; claims and emptyDirs start empty."""
    import base64

    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts: dict[str, Path] = {}
    for mount in container["volumeMounts"]:
        volume, target = volumes[mount["name"]], root / mount["name"]
        if "secret" in volume:
            secret = one(docs, "Secret", volume["secret"]["secretName"])
            data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
            items = volume["secret"].get("items")
            if items:
                data = {i["path"]: data[i["key"]] for i in items}
            _kubelet_configmap_volume(target, data, 1, mode=volume["secret"].get("defaultMode", 0o644))
        elif "configMap" in volume:
            _kubelet_configmap_volume(target, one(docs, "ConfigMap", volume["configMap"]["name"])["data"], 1)
        else:
            target.mkdir()
        mounts[mount["mountPath"]] = target
    return mounts


@pytest.fixture
def api_double(tmp_path: Path) -> Any:
    """The Kubernetes API (tests/k8s_api_double.py) for the controller inside the rendered gateway:
    the path of a kubeconfig that reaches it (the pod's in-cluster access, here)."""
    from k8s_api_double import FakeApiServer

    double = FakeApiServer()
    double.start()
    yield str(double.write_kubeconfig(tmp_path / "kubeconfig"))
    double.stop()


def _run_rendered_gateway(root: Path, docs: list[dict[str, Any]], env: dict[str, str] | None = None) -> tuple[Any, int]:
    """Start `gpu-gateway serve` with the exact arguments of the rendered Deployment, its volumes
    laid out under `root` where the pod mounts them, `$(VAR)` expanded from `env` as the
    kubelet expands it; on loopback and a free port instead of 0.0.0.0:8443."""
    import os
    import subprocess
    import sys

    from served import _free_port

    (root / "volumes").mkdir(parents=True)
    pod = one(docs, "Deployment", f"{RELEASE}-gpu-gateway")["spec"]["template"]["spec"]
    mounts = _pod_volumes(root / "volumes", docs, pod)
    port = _free_port()
    args = []
    for arg in pod["containers"][0]["args"]:
        if arg.startswith("--host="):
            arg = "--host=127.0.0.1"
        elif arg.startswith("--port="):
            arg = f"--port={port}"
        for inside in sorted(mounts, key=len, reverse=True):  # the deepest mount owns a path
            if inside in arg:
                arg = arg.replace(inside, str(mounts[inside]))
                break
        for name, value in (env or {}).items():
            arg = arg.replace(f"$({name})", value)
        args.append(arg)
    log = open(root / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.gpu_gateway", *args], stdout=log,
                            stderr=subprocess.STDOUT, env=os.environ | (env or {}))
    return proc, port


def _wait_ready(proc: Any, client: Any, path: str, sni: dict[str, str], log: Path) -> None:
    import time

    import httpx

    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if client.get(path, extensions=sni).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"the rendered gateway never became ready: {log.read_text()}"
        time.sleep(0.2)


def _api_server_trust(docs: list[dict[str, Any]]) -> tuple[Any, dict[str, str]]:
    """The TLS trust the API server has in the gateway: the webhook's caBundle, and the Service's DNS name."""
    import base64
    import ssl

    webhook = one(docs, "ValidatingWebhookConfiguration")["webhooks"][0]
    service = webhook["clientConfig"]["service"]
    trust = ssl.create_default_context(cadata=base64.b64decode(webhook["clientConfig"]["caBundle"]).decode())
    return trust, {"sni_hostname": f"{service['name']}.{service['namespace']}.svc"}


def test_the_rendered_gateway_serves_its_webhooks_as_the_api_server_calls_them(tmp_path, api_double):
    """The chart's Deployment arguments run the real gateway; the API server's view holds: the
    caBundle of the webhook configuration verifies the served certificate for the Service's
    DNS name, the readiness probe path answers, and each webhook path decides a request it routes."""
    import signal

    import httpx

    docs = rendered_as("defaults")
    proc, port = _run_rendered_gateway(tmp_path / "pod", docs, {"KUBECONFIG": api_double})
    validating = {w["name"]: w for w in one(docs, "ValidatingWebhookConfiguration")["webhooks"]}
    mutating = {w["name"]: w for w in one(docs, "MutatingWebhookConfiguration")["webhooks"]}
    trust, sni = _api_server_trust(docs)
    probe = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"]
    try:
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trust, timeout=10) as client:
            _wait_ready(proc, client, probe, sni, tmp_path / "pod" / "server.log")
            job = load_any("pytorchjob.yaml")
            launch = review(job, user="bob", groups=("gpu-researchers",),
                            resource=("kubeflow.org", "pytorchjobs")).body()
            assert routed_to(docs, "MutatingWebhookConfiguration", launch, GOVERNED_NS) == [
                "workloads.mutate.gpu-gateway.io"]
            path = mutating["workloads.mutate.gpu-gateway.io"]["clientConfig"]["service"]["path"]
            answer = client.post(path, json=launch, extensions=sni).json()["response"]
            assert answer["uid"] == launch["request"]["uid"] and answer["allowed"]
            assert answer["patchType"] == "JSONPatch"
            assert routed_to(docs, "ValidatingWebhookConfiguration", launch, GOVERNED_NS) == [
                "workloads.validate.gpu-gateway.io"]
            path = validating["workloads.validate.gpu-gateway.io"]["clientConfig"]["service"]["path"]
            answer = client.post(path, json=launch, extensions=sni).json()["response"]
            assert answer["allowed"], answer
            intern = review(job | {"metadata": {"name": "big", "namespace": "research"}}, user="eve",
                            groups=("gpu-interns",), resource=("kubeflow.org", "pytorchjobs")).body()
            answer = client.post(path, json=intern, extensions=sni).json()["response"]
            assert answer["allowed"] is False and "gpu-gateway: denied launch" in answer["status"]["message"]
            # No authentication configured: the admin API answers 503, as NOTES.txt says.
            assert client.get("/api/v1/whoami", extensions=sni).status_code == 503
        # A wrong name is refused (a new connection), as the API server would refuse it.
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trust, timeout=10) as fresh, \
                pytest.raises(httpx.ConnectError, match="certificate"):
            fresh.get(probe, extensions={"sni_hostname": "someone-else.example.com"})
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_the_rendered_gateway_runs_the_controller_that_frees_a_force_deleted_pod(tmp_path):
    """The default install's gateway, with the exact rendered arguments, runs the controller against
    the API server (tests/k8s_api_double.py): it takes the chart's Lease as the gateway's service
    account, and forgets the record of a GPU pod force-deleted once the pod's grace period is over."""
    import signal
    import time

    import httpx
    from k8s_api_double import FakeApiServer

    from gateway.store.sqlite import SQLiteStore

    double = FakeApiServer()
    double.start()
    double.add_node("gpu-1", 64)
    docs = rendered_as("defaults")
    proc, port = _run_rendered_gateway(tmp_path / "pod", docs,
                                       {"KUBECONFIG": str(double.write_kubeconfig(tmp_path / "kubeconfig"))})
    log = tmp_path / "pod" / "server.log"
    trust, sni = _api_server_trust(docs)
    hooks = {w["name"]: w for c in docs if c["kind"].endswith("WebhookConfiguration") for w in c["webhooks"]}

    def wait_for(what: str, done: Any) -> None:
        deadline = time.monotonic() + 60
        while not done():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"{what} never happened: {log.read_text()[-3000:]}"
            time.sleep(0.2)

    store = None
    try:
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trust, timeout=10) as client:
            def send(kind: str, body: dict[str, Any]) -> dict[str, Any]:
                (name,) = routed_to(docs, kind, body, GOVERNED_NS)
                answer = client.post(hooks[name]["clientConfig"]["service"]["path"], json=body, extensions=sni)
                return dict(answer.json()["response"])

            _wait_ready(proc, client, "/readyz", sni, log)
            lease = (NAMESPACE, "gpu-gateway-controller")
            wait_for("the Lease", lambda: lease in double.leases)
            holder = double.leases[lease]["spec"]["holderIdentity"]
            assert holder.startswith(f"system:serviceaccount:{NAMESPACE}:{RELEASE}-gpu-gateway@"), holder

            pod = make_pod(gpus=4).named("research", "train").obj()
            pod["spec"]["terminationGracePeriodSeconds"] = 1
            launch = review(pod, user="bob", groups=("gpu-researchers", "team:vision")).body()
            answer = send("MutatingWebhookConfiguration", launch)
            if "patch" in answer:
                import base64

                import jsonpatch

                pod = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(answer["patch"])))
            verdict = send("ValidatingWebhookConfiguration",
                           review(pod, user="bob", groups=("gpu-researchers", "team:vision")).body())
            assert verdict["allowed"], verdict
            pod["spec"].pop("schedulingGates", None)  # released (or never gated): scheduled, it runs
            pod["spec"]["nodeName"] = "gpu-1"
            double.add_pod(pod, phase="Running")
            store = SQLiteStore(next((tmp_path / "pod" / "volumes").glob("*/gpu-gateway.db")))
            assert [(r.name, r.owner, r.gpus) for r in store.reservations()] == [("train", "bob", 4)]

            # kubectl delete pod train --grace-period=0 --force: the object goes at once, the
            # kubelet stops its containers within its grace period; the record is held until then.
            delete = review(None, old=double.pod("research", "train"), user="bob",
                            groups=("gpu-researchers", "team:vision"), operation="DELETE").body()
            delete["request"]["options"] = {"apiVersion": "meta.k8s.io/v1", "kind": "DeleteOptions",
                                            "gracePeriodSeconds": 0}
            assert send("ValidatingWebhookConfiguration", delete)["allowed"]
            double.delete_pod("research", "train")
            wait_for("the forgetting", lambda: not store.reservations())
        forgotten = [r for r in store.audit_rows() if r["rule"] == "reconcile-forget"]
        assert [r["name"] for r in forgotten] == ["train"], forgotten
        assert "grace period" in forgotten[0]["reason"] and forgotten[0]["action"] == "reconcile"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        if store is not None:
            store.close()
        double.stop()


def test_notes_shared_secret_steps_let_gpuctl_log_in_to_the_rendered_gateway(tmp_path, api_double):
    """NOTES.txt followed on a default install: the Secret its kubectl line creates, its --set
    flags and adminApi.dnsNames={localhost}; the rendered gateway then accepts a token signed
    with that secret, and `gpuctl login` verifies the chart's CA for localhost."""
    import base64
    import os
    import secrets
    import signal
    import ssl
    import subprocess
    import sys
    import time

    import httpx
    import jwt

    notes = _notes({})
    created = re.search(r"create secret generic (\S+) --from-literal=([\w-]+)=", notes)
    assert created, notes
    secret_name, secret_key = created.groups()
    values = _set_values(notes.split("Or with a shared secret")[1].split("Log in with gpuctl")[0])
    values["adminApi"]["dnsNames"] = ["localhost"]
    docs = render(values)
    secret_value = base64.b64encode(secrets.token_bytes(48))  # what `openssl rand -base64 48` prints
    docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret_name, "namespace": NAMESPACE},
                 "data": {secret_key: base64.b64encode(secret_value).decode()}})
    ca = tmp_path / "ca.crt"  # as `kubectl get secret ... -o jsonpath='{.data.ca\\.crt}' | base64 -d`
    ca.write_bytes(base64.b64decode(one(docs, "Secret", f"{RELEASE}-gpu-gateway-tls")["data"]["ca.crt"]))
    proc, port = _run_rendered_gateway(tmp_path / "pod", docs, {"KUBECONFIG": api_double})
    server = f"https://localhost:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCTL_")} | {
        "GPUCTL_CONFIG": str(tmp_path / "gpuctl.json")}

    def gpuctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.cli.gpuctl", *args], capture_output=True, text=True,
                              timeout=60, env=env, check=False)

    try:
        with httpx.Client(base_url=server, verify=ssl.create_default_context(cafile=str(ca)), timeout=10) as client:
            _wait_ready(proc, client, "/readyz", {}, tmp_path / "pod" / "server.log")
        claims = values["adminApi"]["auth"]["jwt"]
        token = jwt.encode({"iss": claims["issuer"], "aud": claims["audience"], "sub": "root", "groups": ["gpu-admins"],
                            "exp": int(time.time()) + 600}, secret_value, "HS256")
        login = gpuctl("login", "--server", server, "--token", token, "--certificate-authority", str(ca))
        assert login.returncode == 0, login.stderr
        assert f"logged in to {server} as root (role admin)" in login.stdout
        whoami = gpuctl("-o", "json", "whoami")
        assert whoami.returncode == 0 and json.loads(whoami.stdout)["username"] == "root"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_the_rendered_ha_gateway_shares_one_ledger_across_replicas(tmp_path, pg_url):  # noqa: F811
    """Two replicas started from the HA rendering (PostgreSQL URL from its Secret through the
    environment, the history key from the chart's Secret, read-only) share one ledger: a
    user's concurrent cap holds across them, and neither writes beside the mounted key."""
    import signal

    import httpx

    docs = render(COMBINATIONS["postgresql-3-replicas"])
    env = {"GPU_GATEWAY_DATABASE_URL": pg_url}
    replicas = [_run_rendered_gateway(tmp_path / f"pod-{i}", docs, env) for i in range(2)]
    trust, sni = _api_server_trust(docs)
    path = one(docs, "ValidatingWebhookConfiguration")["webhooks"][0]["clientConfig"]["service"]["path"]

    def launch(port: int, name: str) -> dict[str, Any]:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "research"},
               "spec": {"containers": [{"name": "m", "image": "i", "resources": {"limits": {"nvidia.com/gpu": 8}}}]}}
        body = review(pod, user="eve", groups=("gpu-interns",)).body()
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trust, timeout=10) as client:
            return client.post(path, json=body, extensions=sni).json()["response"]

    try:
        for i, (proc, port) in enumerate(replicas):
            with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trust, timeout=10) as client:
                _wait_ready(proc, client, "/readyz", sni, tmp_path / f"pod-{i}" / "server.log")
        (_, port_a), (_, port_b) = replicas
        assert launch(port_a, "one")["allowed"] and launch(port_b, "two")["allowed"]  # 16 GPUs: the intern cap
        third = launch(port_a, "three")
        assert third["allowed"] is False and "16" in third["status"]["message"]
        for i in range(2):
            history = tmp_path / f"pod-{i}" / "volumes" / "history-key"
            assert sorted(p.name for p in history.iterdir() if not p.name.startswith("..")) == [
                "gpu-gateway.db.history-key"]
    finally:
        for proc, _port in replicas:
            proc.send_signal(signal.SIGTERM)
        for proc, _port in replicas:
            assert proc.wait(timeout=30) == 0


def _through_the_chart(docs: list[dict[str, Any]], service: Any, body: dict[str, Any]) -> tuple[bool, list[str]]:
    """What the API server does with the chart's webhook configurations: call each mutating
    webhook that matches and apply its patch, then each validating one; a request none matches
    is admitted without the gateway. Returns (allowed, the webhooks called)."""
    import base64

    import jsonpatch

    called = routed_to(docs, "MutatingWebhookConfiguration", body, GOVERNED_NS)
    for _ in called:
        out = service.mutate(body)["response"]
        if "patch" in out:
            patch = json.loads(base64.b64decode(out["patch"]))
            body["request"]["object"] = jsonpatch.apply_patch(body["request"]["object"], patch)
    validating = routed_to(docs, "ValidatingWebhookConfiguration", body, GOVERNED_NS)
    allowed = all(service.validate(body)["response"]["allowed"] for _ in validating)
    return allowed, called + validating


def test_the_chart_routes_the_sabotage_defence_through_the_gateway(service):
    """The data rules hold in a cluster wired by the chart: a claim is stamped and recorded, an
    intern's CPU pod that mounts it read-write is sent to the gateway and denied, while the
    same pod from a trusted controller is not sent (and the gateway would allow it anyway)."""
    docs = rendered_as("defaults")
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": "llm-70b-ckpt", "namespace": "research"},
             "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "10Ti"}}}}
    body = review(claim, user="bob", groups=("gpu-researchers",)).body()
    allowed, called = _through_the_chart(docs, service, body)
    assert allowed and called == ["data.mutate.gpu-gateway.io", "data-new.validate.gpu-gateway.io"]
    assert body["request"]["object"]["metadata"]["annotations"]["gpu-gateway.io/owner"] == "bob"

    probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", "namespace": "research"},
             "spec": {"containers": [{"name": "m", "image": "busybox", "volumeMounts": [
                 {"name": "ckpt", "mountPath": "/ckpt"}]}],
                 "volumes": [{"name": "ckpt", "persistentVolumeClaim": {"claimName": "llm-70b-ckpt"}}]}}
    allowed, called = _through_the_chart(docs, service, review(copy.deepcopy(probe), user="eve",
                                                               groups=("gpu-interns",)).body())
    assert not allowed and called == ["reach.validate.gpu-gateway.io"]

    controller = "system:serviceaccount:kube-system:replicaset-controller"
    body = review(copy.deepcopy(probe), user=controller, groups=("system:serviceaccounts",)).body()
    assert _through_the_chart(docs, service, body) == (True, [])
    assert service.validate(body)["response"]["allowed"]

    gpu_pod = copy.deepcopy(probe) | {"metadata": {"name": "train", "namespace": "research"}}
    gpu_pod["spec"] = {"containers": [{"name": "m", "image": "i", "resources": {"limits": {"nvidia.com/gpu": 8}}}]}
    body = review(gpu_pod, user="eve", groups=("gpu-interns",)).body()
    allowed, called = _through_the_chart(docs, service, body)
    assert allowed and called == ["workloads.mutate.gpu-gateway.io", "workloads.validate.gpu-gateway.io"]
    assert body["request"]["object"]["metadata"]["annotations"]["gpu-gateway.io/owner"] == "eve"
    delete = review(None, old=body["request"]["object"], operation="DELETE", user="alice",
                    groups=("gpu-interns",)).body()
    assert _through_the_chart(docs, service, delete) == (False, ["access.validate.gpu-gateway.io"])


def _during_an_outage(docs: list[dict[str, Any]], body: dict[str, Any]) -> bool:
    """Whether the API server admits `body` while the gateway cannot be reached: each webhook it
    is routed to applies its failurePolicy."""
    webhooks = _webhooks(docs)
    called = [*routed_to(docs, "MutatingWebhookConfiguration", body, GOVERNED_NS),
              *routed_to(docs, "ValidatingWebhookConfiguration", body, GOVERNED_NS)]
    return all(webhooks[name]["failurePolicy"] == "Ignore" for name in called)


def test_an_outage_never_turns_the_data_rules_off(service):
    """The sabotage of the introduction, with the gateway up and then down: an intern may not
    overwrite another's Secret or mount their checkpoint claim read-write, whether the gateway
    answers (denied by it) or not (denied by the failure policy); ordinary CPU pods and new
    objects that read nothing are admitted during the outage, the latter unowned."""
    docs = rendered_as("defaults")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wandb", "namespace": "research"},
              "data": {"key": "c2VjcmV0"}}
    body = review(copy.deepcopy(secret), user="bob", groups=("gpu-researchers",)).body()
    assert _through_the_chart(docs, service, body)[0]
    overwrite = copy.deepcopy(body["request"]["object"]) | {"data": {"key": "ZXZl"}}
    attack = review(overwrite, old=body["request"]["object"], operation="UPDATE", user="eve",
                    groups=("gpu-interns",)).body()
    assert _through_the_chart(docs, service, copy.deepcopy(attack)) == (False, ["data.validate.gpu-gateway.io"])
    assert not _during_an_outage(docs, attack)
    assert not _during_an_outage(docs, review(None, old=overwrite, operation="DELETE", user="eve").body())
    probe = _pod(REACHING["claim"], "probe")
    assert not _during_an_outage(docs, review(probe, user="eve", groups=("gpu-interns",)).body())
    assert _during_an_outage(docs, review(_pod(REACHING_NOTHING["default-token"]), user="eve").body())
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "research"}}
    assert _during_an_outage(docs, review(configmap, user="eve").body())
    relaxed = render({"webhook": {"dataAccess": {"failurePolicy": "Ignore"}}})
    assert _during_an_outage(relaxed, attack), "the documented price of relaxing the data webhooks"


def test_the_packaged_chart_carries_the_policy_bundle(tmp_path):
    """`helm package` follows the files/policies link: the archive renders the same bundle."""
    import helm_python
    from helm_chart import CHART

    archive = helm_python.package(CHART, destination=tmp_path)
    packaged = helm_python.Chart.load_archive(Path(archive).read_bytes())
    rendered = packaged.render({}, name=RELEASE, namespace=NAMESPACE)
    configmap = next(t for path, t in rendered.items() if path.endswith("policy-configmap.yaml"))
    import yaml

    data = yaml.safe_load(configmap)["data"]
    assert data == {name: (POLICIES / name).read_text() for name in ("model.conf", "policy.csv", "limits.yaml")}
