"""Reading DRA claims: the GPUs a ResourceClaim or ResourceClaimTemplate asks for, and which
claims a pod names (gateway/admission/dra.py)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from builders_dra import claim, claim_template, exactly, first_available, gpu_template, naming, validated
from conftest import POLICIES, make_deployment
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.admission.dra import (
    CLAIM,
    TEMPLATE,
    DraPolicy,
    PodClaim,
    claim_gpus,
    claim_shape,
    object_gpus,
    pod_claims,
    recorded_gpus,
)
from gateway.admission.quantity import MAX_GPUS
from gateway.admission.workloads import GpuMatcher, read_workload
from gateway.errors import ConfigError
from gateway.policy_bundle import load_bundle

DRA = DraPolicy()
PROPERTIES = settings(max_examples=300, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def gpus(obj: dict[str, Any], dra: DraPolicy = DRA) -> int:
    return object_gpus(obj["kind"], obj, dra)


# ------------------------------------------------------------------ what a claim asks for


def test_a_template_for_four_gpus_counts_four() -> None:
    assert gpus(gpu_template("gpu-x4", 4)) == 4


def test_a_request_without_a_count_asks_for_one_device() -> None:
    assert gpus(claim("one", exactly("gpu.nvidia.com"))) == 1
    assert gpus(claim("one", exactly("gpu.nvidia.com", mode="ExactCount"))) == 1


def test_all_devices_counts_as_the_policy_says() -> None:
    every = claim_template("node", exactly("gpu.nvidia.com", mode="All"))
    assert gpus(every) == 8
    assert gpus(every, DraPolicy(all_devices_count=72)) == 72


def test_first_available_counts_its_largest_gpu_alternative() -> None:
    spec = claim("flex", first_available(("gpu.nvidia.com", 2), ("mig.nvidia.com", 7), ("nic.example.com", 32)))
    assert gpus(spec) == 7


def test_devices_of_other_classes_count_zero() -> None:
    assert gpus(claim("nic", exactly("nic.example.com", 4))) == 0
    channel = claim_template("imex", exactly("compute-domain-default-channel.nvidia.com"))
    assert gpus(channel) == 0


def test_every_request_of_a_claim_counts() -> None:
    both = claim("pair", exactly("gpu.nvidia.com", 2, name="a"), exactly("gpu.amd.com", 3, name="b"),
                 exactly("nic.example.com", 9, name="c"))
    assert gpus(both) == 5


def test_device_classes_are_shell_style_patterns() -> None:
    mine = DraPolicy(gpu_device_classes=("*.nvidia.com",))
    assert gpus(claim("c", exactly("compute-domain-default-channel.nvidia.com", 2)), mine) == 2
    assert gpus(claim("c", exactly("gpu.amd.com", 2)), mine) == 0


def test_the_v1beta1_and_v1beta2_shapes_count_too() -> None:
    beta1 = validated({"apiVersion": "resource.k8s.io/v1beta1", "kind": "ResourceClaimTemplate",
                       "metadata": {"name": "old", "namespace": "research"},
                       "spec": {"spec": {"devices": {"requests": [
                           {"name": "gpus", "deviceClassName": "gpu.nvidia.com", "count": 3},
                           {"name": "all", "deviceClassName": "mig.nvidia.com", "allocationMode": "All"},
                           {"name": "alt", "firstAvailable": [
                               {"name": "a", "deviceClassName": "gpu.amd.com", "count": 2}]}]}}}})
    assert gpus(beta1) == 3 + 8 + 2
    beta2 = validated({"apiVersion": "resource.k8s.io/v1beta2", "kind": "ResourceClaim",
                       "metadata": {"name": "b2", "namespace": "research"},
                       "spec": {"devices": {"requests": [
                           {"name": "gpus", "exactly": {"deviceClassName": "gpu.nvidia.com", "count": 6}}]}}})
    assert gpus(beta2) == 6


def test_a_request_the_gateway_cannot_read_counts_as_the_worst_case() -> None:
    assert claim_gpus({"devices": {"requests": [{"name": "future", "someNewShape": {"x": 1}}]}}, DRA) == 8
    assert claim_gpus({"devices": {"requests": [
        {"name": "g", "exactly": {"deviceClassName": "gpu.nvidia.com", "count": "4"}}]}}, DRA) == 8
    assert claim_gpus({"devices": {"requests": [
        {"name": "g", "exactly": {"deviceClassName": "gpu.nvidia.com", "allocationMode": "Most"}}]}}, DRA) == 8


def test_a_template_is_read_from_its_spec_spec_and_a_claim_from_its_spec() -> None:
    template = gpu_template("t", 2)
    assert object_gpus(CLAIM, template, DRA) == 0  # a template read as a claim has no spec.devices
    assert object_gpus(TEMPLATE, template, DRA) == 2
    assert object_gpus(TEMPLATE, None, DRA) == 0


def test_the_ledger_keeps_the_count() -> None:
    assert recorded_gpus(claim_shape(4)) == 4
    assert recorded_gpus('{"data":true,"shareable":false}') is None
    assert recorded_gpus("not json") is None


# ------------------------------------------------------------------ which claims a pod names


def test_a_pod_names_templates_and_shared_claims() -> None:
    spec = naming(make_deployment(gpus=0).obj()["spec"]["template"]["spec"], templates=("gpu-x4",),
                  claims=("shared",))
    validated({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "research"}, "spec": spec})
    assert pod_claims(spec) == (PodClaim("t0", TEMPLATE, "gpu-x4"), PodClaim("c0", CLAIM, "shared"))
    assert pod_claims({"containers": []}) == ()
    assert pod_claims({"resourceClaims": [{"name": "x", "source": {"resourceClaimName": "legacy"}}]}) == (
        PodClaim("x", CLAIM, "legacy"),)


def test_every_pod_set_keeps_the_claims_its_pods_name() -> None:
    dep = make_deployment(gpus=0, replicas=3).named("research", "serve").obj()
    naming(dep["spec"]["template"]["spec"], templates=("gpu-x4",))
    workload = read_workload(dep, "apps", "Deployment", GpuMatcher())
    [ps] = workload.pod_sets
    assert (ps.count, ps.surge, ps.gpus_each) == (4, 1, 0)  # 3 replicas and the rolling update's surge
    assert ps.claims == (PodClaim("t0", TEMPLATE, "gpu-x4"),)


# ------------------------------------------------------------------ properties

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4),
    max_leaves=30,
)
CLASSES = st.sampled_from(["gpu.nvidia.com", "mig.nvidia.com", "gpu.amd.com", "gpu.intel.com", "nic.example.com",
                           "compute-domain-default-channel.nvidia.com", ""])
COUNTS = st.one_of(st.none(), st.integers(-5, 10**9))


def _device(draw: st.DrawFn) -> dict[str, Any]:
    device: dict[str, Any] = {"deviceClassName": draw(CLASSES)}
    count = draw(COUNTS)
    if count is not None:
        device["count"] = count
    mode = draw(st.sampled_from([None, "ExactCount", "All"]))
    if mode is not None:
        device["allocationMode"] = mode
    return device


@st.composite
def requests(draw: st.DrawFn) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(draw(st.integers(0, 4))):
        shape = draw(st.sampled_from(["exactly", "firstAvailable", "beta1"]))
        if shape == "exactly":
            out.append({"name": f"r{i}", "exactly": _device(draw)})
        elif shape == "firstAvailable":
            alts = [_device(draw) for _ in range(draw(st.integers(1, 3)))]
            out.append({"name": f"r{i}", "firstAvailable": alts})
        else:
            out.append({"name": f"r{i}", **_device(draw)})
    return out


def _explicit(device: dict[str, Any]) -> int:
    """The GPUs a request states outright: its count, for a GPU class (written independently)."""
    if device["deviceClassName"] not in ("gpu.nvidia.com", "mig.nvidia.com", "gpu.amd.com", "gpu.intel.com"):
        return 0
    return max(device.get("count", 1), 0)


@PROPERTIES
@given(JSON)
def test_reading_never_crashes_on_any_json(value: Any) -> None:
    for kind in (CLAIM, TEMPLATE):
        assert 0 <= object_gpus(kind, value, DRA) <= MAX_GPUS
        assert 0 <= object_gpus(kind, {"spec": value}, DRA) <= MAX_GPUS
        assert 0 <= object_gpus(kind, {"spec": {"spec": value}}, DRA) <= MAX_GPUS
    assert 0 <= claim_gpus({"devices": {"requests": value}}, DRA) <= MAX_GPUS
    assert 0 <= claim_gpus({"devices": {"requests": [value]}}, DRA) <= MAX_GPUS
    assert all(isinstance(c, PodClaim) for c in pod_claims(value))
    assert all(isinstance(c, PodClaim) for c in pod_claims({"resourceClaims": value}))


@PROPERTIES
@given(requests(), JSON)
def test_never_fewer_than_the_counts_gpu_requests_state(reqs: list[dict[str, Any]], noise: Any) -> None:
    spec = {"devices": {"requests": copy.deepcopy(reqs), "config": noise}}
    counted = claim_gpus(spec, DRA)
    stated = 0
    for r in reqs:
        if "exactly" in r:
            stated += _explicit(r["exactly"])
        elif "firstAvailable" in r:
            stated += max(_explicit(a) for a in r["firstAvailable"])
        else:
            stated += _explicit(r)
    assert counted >= min(stated, MAX_GPUS)
    for r in reqs:  # a request for every device counts at least what the policy says `All` is
        devices = r.get("firstAvailable") or [r.get("exactly", r)]
        if all(d.get("allocationMode") == "All" and _explicit(d) for d in devices):
            assert counted >= DRA.all_devices_count


# ------------------------------------------------------------------ limits.yaml `dra`


def _bundle(tmp_path: Path, dra: Any) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    limits = yaml.safe_load((target / "limits.yaml").read_text())
    if dra is None:
        limits.pop("dra")
    else:
        limits["dra"] = dra
    (target / "limits.yaml").write_text(yaml.safe_dump(limits))
    return target


def test_the_default_bundle_counts_the_vendors_gpu_classes(policy: Any) -> None:
    assert policy.dra.gpu_device_classes == ("gpu.nvidia.com", "mig.nvidia.com", "gpu.amd.com", "gpu.intel.com")
    assert policy.dra.all_devices_count == 8


def test_without_a_dra_section_the_defaults_hold(tmp_path: Path) -> None:
    assert load_bundle(_bundle(tmp_path, None)).dra == DraPolicy()


def test_the_dra_settings_are_read(tmp_path: Path) -> None:
    dra = load_bundle(_bundle(tmp_path, {"gpu_device_classes": ["*.nvidia.com"], "all_devices_count": 4})).dra
    assert dra == DraPolicy(("*.nvidia.com",), 4)


@pytest.mark.parametrize(("dra", "error"), [
    ({"gpu_classes": []}, "dra: unknown setting(s) gpu_classes"),
    ({"gpu_device_classes": "gpu.nvidia.com"}, "dra.gpu_device_classes must be a list"),
    ({"gpu_device_classes": [""]}, "dra.gpu_device_classes must be a list"),
    ({"all_devices_count": 0}, "dra.all_devices_count must be a whole number of GPUs of at least 1"),
    ({"all_devices_count": "8"}, "dra.all_devices_count must be a whole number"),
    ([1], "limits.yaml: dra must be a mapping"),
])
def test_bad_dra_settings_are_refused_by_name(tmp_path: Path, dra: Any, error: str) -> None:
    with pytest.raises(ConfigError, match=error.replace("(", r"\(").replace(")", r"\)")):
        load_bundle(_bundle(tmp_path, dra))
