"""Decoding the kubelet's pod-resources answer: which pod holds which GPU."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from podresources_wire import list_response

from gateway.telemetry.podresources import gpu_allocations
from gateway.telemetry.samples import PodRef

UUID = "GPU-5b1b8a2e-6c41-2f0e-9a6d-0c0e7b3c2a11"


def test_gpus_and_mig_slices_map_to_their_pods_and_other_devices_are_ignored() -> None:
    answer = list_response([
        ("research", "llm-70b-worker-0", [("pytorch", [("nvidia.com/gpu", [UUID, "GPU-2"])])]),
        ("vision", "small", [("main", [("nvidia.com/mig-1g.10gb", ["MIG-7a"]), ("example.com/nic", ["eth9"])])]),
        ("research", "shared", [("main", [("nvidia.com/gpu", ["GPU-3::0", "GPU-3::1"])])]),
        ("kube-system", "no-devices", [("main", [])]),
    ])
    assert gpu_allocations(answer) == {
        UUID: PodRef("research", "llm-70b-worker-0"), "GPU-2": PodRef("research", "llm-70b-worker-0"),
        "MIG-7a": PodRef("vision", "small"), "GPU-3": PodRef("research", "shared")}


@pytest.mark.parametrize("raw", [b"\x0a\x05ab", b"\x0a", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"\x0b\x00"])
def test_a_malformed_answer_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        gpu_allocations(raw)


_id = st.text(alphabet="abcdef0123456789-", min_size=1, max_size=12)


@given(st.lists(st.tuples(_id, _id, st.lists(st.tuples(_id, st.lists(st.tuples(
    st.sampled_from(["nvidia.com/gpu", "amd.com/gpu"]), st.lists(_id, max_size=3)), max_size=2)), max_size=2)),
    max_size=5))
def test_every_nvidia_device_of_every_pod_is_found(pods: list) -> None:  # type: ignore[type-arg]
    expected = {}
    for namespace, name, containers in pods:
        for _, devices in containers:
            for resource, ids in devices:
                if resource == "nvidia.com/gpu":
                    expected.update({i: PodRef(namespace, name) for i in ids})
    assert gpu_allocations(list_response(pods)) == expected


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_are_refused(raw: bytes) -> None:
    with contextlib.suppress(ValueError):  # UnicodeDecodeError is one
        assert isinstance(gpu_allocations(raw), dict)
