"""kubectl-generated objects → AdmissionReview → the real server over TLS → apply the JSONPatch
→ the result is still a valid Kubernetes object, owned by the requester on every template."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
import yaml
from builders_workloads import shipped_kinds
from conftest import FIXTURES, RESEARCHER, review
from served import Served, start_server, stop_server

from gateway.admission.pointer import annotations_at, labels_at
from gateway.admission.workloads import GpuMatcher, read_workload, template_paths

CORE = sorted((FIXTURES / "core").glob("*.json"))
CRDS = sorted((FIXTURES / "crds").glob("*.yaml"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = start_server(tmp_path_factory.mktemp("roundtrip"))
    yield served
    stop_server(served)


def _mutated(server: Served, obj: dict[str, Any], user: str = "bob") -> dict[str, Any]:
    body = review(obj, user=user, groups=RESEARCHER).body()
    with server.client() as c:
        resp = c.post("/mutate", json=body).json()["response"]
    assert resp["uid"] == body["request"]["uid"] and resp["allowed"] is True
    ops = json.loads(base64.b64decode(resp["patch"]))
    return dict(jsonpatch.apply_patch(obj, ops))


def _check_owned(obj: dict[str, Any], owner: str = "bob", owner_label: str = "bob") -> None:
    """Owner and team annotations, and the labels `kubectl get -l` / `-L` read, on the object and
    every pod template (so on every pod its controllers make)."""
    group = obj["apiVersion"].rpartition("/")[0]
    workload = read_workload(obj, group, obj["kind"], GpuMatcher(), kinds=shipped_kinds())
    assert annotations_at(obj)["gpu-gateway.io/owner"] == owner
    for pointer in ("", *template_paths(workload)):
        assert annotations_at(obj, pointer)["gpu-gateway.io/owner"] == owner, pointer
        assert annotations_at(obj, pointer)["gpu-gateway.io/team"] == "vision", pointer
        assert labels_at(obj, pointer)["gpu-gateway.io/owner"] == owner_label, pointer
        assert labels_at(obj, pointer)["gpu-gateway.io/team"] == "vision", pointer


@pytest.mark.parametrize("path", CORE, ids=[p.stem for p in CORE])
def test_kubectl_objects_stay_valid_after_the_ownership_patch(server: Served, path: Path) -> None:
    out = _mutated(server, json.loads(path.read_text()))
    _check_owned(out)
    kubernetes_validate.validate(out, "1.31.0", strict=True)


@pytest.mark.parametrize("path", CORE, ids=[p.stem for p in CORE])
def test_a_username_that_is_no_label_value_is_labelled_in_its_label_safe_form(server: Served, path: Path) -> None:
    """kubectl get jobs -l gpu-gateway.io/owner=alice_example.com-ff8d9819fc finds alice@example.com's."""
    out = _mutated(server, json.loads(path.read_text()), user="alice@example.com")
    _check_owned(out, owner="alice@example.com", owner_label="alice_example.com-ff8d9819fc")
    kubernetes_validate.validate(out, "1.31.0", strict=True)


@pytest.mark.parametrize("path", CRDS, ids=[p.stem for p in CRDS])
def test_training_crds_get_every_template_stamped(server: Served, path: Path) -> None:
    obj = yaml.safe_load(path.read_text())
    group = obj["apiVersion"].rpartition("/")[0]
    workload = read_workload(obj, group, obj["kind"], GpuMatcher(), kinds=shipped_kinds())
    if workload.gpus == 0 and not workload.unresolved:
        pytest.skip("asks for no GPUs")
    _check_owned(_mutated(server, obj))
