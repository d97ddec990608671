"""The Kubernetes API calls each gpu-gateway component makes: the RBAC its chart grants.

The Helm chart (deploy/helm/gpu-gateway) grants exactly these and nothing more; a test reads
the rendered ClusterRoles and Roles and compares. A component that starts making a new call
adds it here first, so the grant and its reason are reviewed together. The admission server
(`gpu-gateway serve`) calls the API only to evict rogue pods, when the policy asks for it, and
makes every controller call when it runs the controller itself (`serve --controller`, the chart's
default with SQLite): the chart then binds the controller's roles to the gateway's service
account (`in_process`).
With the node agent enabled it also reads the service-account issuer's discovery document and
JWKS (the non-resource URLs /.well-known/openid-configuration and /openid/v1/jwks, to verify the
agents' tokens): Kubernetes grants those to every service account through its default
ClusterRoleBinding system:service-account-issuer-discovery, so the chart grants nothing for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from gateway.admission.kinds import KindRegistry
from gateway.admission.workloads import ADAPTERS


@dataclass(frozen=True)
class ApiCall:
    """One resource a component reads or writes, with the verbs it uses and why."""

    component: str  # "gateway", "controller" or "agent"
    group: str
    resource: str
    verbs: frozenset[str]
    why: str
    #: Only in the component's own namespace (a Role), not cluster-wide.
    own_namespace: bool = False
    #: Only these objects (RBAC resourceNames), chart-side names.
    named: bool = False


def _verbs(*verbs: str) -> frozenset[str]:
    return frozenset(verbs)


CONTROLLER_CALLS: tuple[ApiCall, ...] = (
    ApiCall("controller", "", "pods", _verbs("list", "watch", "patch"),
            "rebuild the ledger from the cluster's pods; lift the gpu-gateway.io/quota scheduling gate"),
    ApiCall("controller", "", "nodes", _verbs("list"), "the cluster's GPU capacity (allocatable) is a cap too"),
    ApiCall("controller", "", "events", _verbs("create"), "tell a queued workload's owner why it waits"),
    ApiCall("controller", "admissionregistration.k8s.io", "validatingwebhookconfigurations", _verbs("get"),
            "notice when the installation's webhook configuration is edited or deleted (drift)", named=True),
    ApiCall("controller", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", _verbs("get"),
            "notice when the installation's webhook configuration is edited or deleted (drift)", named=True),
    ApiCall("controller", "coordination.k8s.io", "leases", _verbs("create"),
            "leader election: create the Lease the first time", own_namespace=True),
    ApiCall("controller", "coordination.k8s.io", "leases", _verbs("get", "update"),
            "leader election: read, hold and renew the Lease", own_namespace=True, named=True),
)

def workload_gets(resources: Iterable[tuple[str, str]]) -> tuple[ApiCall, ...]:
    """A `get` and a `list` per workload kind the gateway decides, by (group, plural resource),
    not pods (listed and watched above): a reservation without pods whose object the API server
    does not have is freed (gateway/scheduling/reconcile.py), and the GPU workloads that predate
    the gateway are recorded (gateway/scheduling/roots.py)."""
    return tuple(
        ApiCall("controller", group, resource, _verbs("get", "list"),
                "free the reservation of a workload that never came to exist (refused after admission); "
                "record the GPU workloads created before the gateway")
        for group, resource in sorted(set(resources)) if (group, resource) != ("", "pods")
    )


#: The gets and lists for the built-in kinds (admission/workloads.py ADAPTERS).
CONTROLLER_WORKLOAD_GETS: tuple[ApiCall, ...] = workload_gets((g, k.lower() + "s") for g, k in ADAPTERS)

AGENT_CALLS: tuple[ApiCall, ...] = (
    ApiCall("agent", "", "pods", _verbs("list"), "name the pod UIDs of GPU processes on its node"),
)

#: Only when the policy bundle sets `telemetry.evict_rogue_pods` (gateway/telemetry/eviction/evictor.py).
GATEWAY_EVICTION_CALLS: tuple[ApiCall, ...] = (
    ApiCall("gateway", "", "pods/eviction", _verbs("create"), "evict the pod of a rogue GPU process"),
)

API_CALLS: tuple[ApiCall, ...] = CONTROLLER_CALLS + CONTROLLER_WORKLOAD_GETS + AGENT_CALLS + GATEWAY_EVICTION_CALLS


def api_calls(kinds: KindRegistry) -> tuple[ApiCall, ...]:
    """Every call, with a `get` and a `list` for each kind the policy bundle registers (limits.yaml
    `workload_kinds`) too: the chart grants them from the bundle it installs."""
    extra = workload_gets((k.group, k.resource) for k in kinds)
    return API_CALLS + tuple(c for c in extra if c not in CONTROLLER_WORKLOAD_GETS)


def in_process(calls: Iterable[ApiCall], component: str = "gateway") -> tuple[ApiCall, ...]:
    """The controller's calls as `component` makes them when it runs the controller in its own
    process (`serve --controller`), under its own service account."""
    return tuple(replace(c, component=component) for c in calls if c.component == "controller")
