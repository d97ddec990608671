"""Render the Helm chart in-process (Helm's own engine) and read what it renders.

    docs = render({"gateway": {"replicas": 3}, ...})
    evaluate(condition, review_body)        # a webhook matchCondition, as CEL
    selects(namespace_selector, labels)     # a LabelSelector, as the API server applies it
    rule_matches(rule, operation, group, resource)
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "gpu-gateway"
RELEASE, NAMESPACE = "gg", "gpu-gateway-system"
KUBERNETES = "1.34.0"

Doc = dict[str, Any]


@cache
def chart() -> Any:
    import helm_python

    helm_python.disable_logging()
    return helm_python.Chart.load(CHART)


def render(values: dict[str, Any] | None = None, *, namespace: str = NAMESPACE) -> list[Doc]:
    """Every object the chart renders for `values`, as `helm template` would (schema checked)."""
    rendered = chart().render(values or {}, name=RELEASE, namespace=namespace, is_install=True)
    return [doc for path, text in sorted(rendered.items()) if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in of_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@cache
def _program(expression: str) -> Any:
    import celpy

    limit = sys.getrecursionlimit()
    env = celpy.Environment()  # raises the interpreter's recursion limit for everyone: put it back
    sys.setrecursionlimit(limit)
    return env.program(env.compile(expression))


def evaluate(expression: str, body: dict[str, Any]) -> bool:
    """A matchCondition over an AdmissionReview body, with the variables the API server binds."""
    import celpy

    req = body["request"]
    activation = {
        "request": celpy.json_to_cel({k: v for k, v in req.items() if k not in ("object", "oldObject")}),
        "object": celpy.json_to_cel(req.get("object")),
        "oldObject": celpy.json_to_cel(req.get("oldObject")),
    }
    return bool(_program(expression).evaluate(activation))


def conditions_hold(webhook: Doc, body: dict[str, Any]) -> bool:
    return all(evaluate(c["expression"], body) for c in webhook.get("matchConditions", []))


def selects(selector: Doc | None, labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector applied to `labels` (empty or absent selects everything)."""
    if not selector:
        return True
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": key not in labels or labels[key] not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def namespace_labels(name: str, **extra: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": name, **extra}


def rule_matches(rule: Doc, operation: str, group: str, resource: str) -> bool:
    """An admission RuleWithOperations against one request (resource may be `res/sub`)."""
    if not ({"*", operation} & set(rule["operations"])) or not ({"*", group} & set(rule["apiGroups"])):
        return False
    res, _, sub = resource.partition("/")
    for pattern in rule["resources"]:
        p_res, _, p_sub = pattern.partition("/")
        if (p_res in ("*", res)) and ((p_sub == sub) or (p_sub == "*" and sub)):
            return True
    return False


def routed_to(docs: list[Doc], kind: str, body: dict[str, Any], namespace_labels: dict[str, str]) -> list[str]:
    """Names of the webhooks of the `kind` configuration the API server sends `body` to."""
    req = body["request"]
    resource = req["resource"]["resource"] + (f"/{req['subResource']}" if req.get("subResource") else "")
    names = []
    for config in of_kind(docs, kind):
        for webhook in config["webhooks"]:
            if (any(rule_matches(r, req["operation"], req["resource"]["group"], resource) for r in webhook["rules"])
                    and selects(webhook.get("namespaceSelector"), namespace_labels)
                    and conditions_hold(webhook, body)):
                names.append(webhook["name"])
    return names


def dump(docs: list[Doc]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)
