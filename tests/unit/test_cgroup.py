"""From /proc/<pid>/cgroup to pod UID and container, for each runtime, cgroup driver and version.

The fixtures in tests/fixtures/cgroup/ are shaped as the kubelet and the runtimes write them
(one line `0::/path` under cgroup v2, one line per hierarchy under v1).
"""

from __future__ import annotations

import pytest
from conftest import FIXTURES
from hypothesis import given
from hypothesis import strategies as st

from gateway.telemetry.cgroup import ContainerRef, parse_cgroup

UID = "0b6c3f4e-7d2a-4c1b-9e8f-5a6b7c8d9e0f"
CID = "4e1f7c9a0b2d3e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f"
CGROUPS = FIXTURES / "cgroup"

EXPECTED = {
    # file: (pod UID, container ID, runtime, QoS class, cgroup version)
    "containerd-v2-systemd.cgroup": (UID, CID, "containerd", "burstable", 2),
    "containerd-v1-systemd.cgroup": (UID, CID, "containerd", "burstable", 1),
    "containerd-v1-cgroupfs.cgroup": (UID, CID, "", "besteffort", 1),
    "containerd-v2-cgroupfs-guaranteed.cgroup": (UID, CID, "", "guaranteed", 2),
    "containerd-v2-nested-cgroupns.cgroup": (UID, CID, "containerd", "burstable", 2),
    "crio-v2-systemd.cgroup": (UID, CID, "cri-o", "guaranteed", 2),
    "crio-v1-systemd.cgroup": (UID, CID, "cri-o", "besteffort", 1),
    "crio-v1-cgroupfs.cgroup": (UID, CID, "cri-o", "burstable", 1),
    "crio-conmon-v2-systemd.cgroup": (UID, "", "", "burstable", 2),
    "docker-v1-systemd.cgroup": (UID, CID, "docker", "burstable", 1),
    "docker-v2-systemd.cgroup": (UID, CID, "docker", "besteffort", 2),
    "docker-v1-cgroupfs.cgroup": (UID, CID, "", "burstable", 1),
    "docker-standalone-v1.cgroup": ("", CID, "docker", "", 1),
    "docker-standalone-v2.cgroup": ("", CID, "docker", "", 2),
    "static-pod-v2-systemd.cgroup": ("3f6e0a9c1b2d4e5f8a7b6c5d4e3f2a1b", CID, "containerd", "burstable", 2),
}


def test_every_fixture_has_an_expectation() -> None:
    files = {p.name for p in CGROUPS.glob("*.cgroup")}
    assert files == set(EXPECTED) | {"host-v1-service.cgroup", "host-v2-session.cgroup"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_pod_and_container_from_each_runtime_and_cgroup_version(name: str) -> None:
    uid, cid, runtime, qos, version = EXPECTED[name]
    assert parse_cgroup((CGROUPS / name).read_text()) == ContainerRef(uid, cid, runtime, qos, version)


@pytest.mark.parametrize("name", ["host-v1-service.cgroup", "host-v2-session.cgroup"])
def test_host_processes_belong_to_no_container(name: str) -> None:
    assert parse_cgroup((CGROUPS / name).read_text()) is None


@pytest.mark.parametrize("text", ["", "hello world", "a:b:c", "0::/\nnot a line"])
def test_text_that_is_not_a_cgroup_file_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_cgroup(text)




@given(uid=st.uuids(), cid=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
       qos=st.sampled_from(["", "burstable", "besteffort"]),
       shape=st.sampled_from(["systemd-containerd", "systemd-crio", "systemd-docker", "cgroupfs", "cgroupfs-crio"]),
       version=st.sampled_from([1, 2]))
def test_any_kubelet_path_yields_its_pod_uid_and_container(uid: object, cid: str, qos: str, shape: str,
                                                          version: int) -> None:
    u = str(uid)
    if shape.startswith("systemd"):
        prefix = {"systemd-containerd": "cri-containerd-", "systemd-crio": "crio-", "systemd-docker": "docker-"}[shape]
        qslice = f"kubepods-{qos}.slice/kubepods-{qos}-" if qos else "kubepods-"
        path = f"/kubepods.slice/{qslice}pod{u.replace('-', '_')}.slice/{prefix}{cid}.scope"
    else:
        path = f"/kubepods/{qos + '/' if qos else ''}pod{u}/{'crio-' if shape.endswith('crio') else ''}{cid}"
    text = f"0::{path}\n" if version == 2 else f"11:memory:{path}\n10:devices:{path}\n1:name=systemd:{path}\n"
    ref = parse_cgroup(text)
    assert ref is not None
    assert (ref.pod_uid, ref.container_id, ref.qos, ref.cgroup_version) == (u, cid, qos or "guaranteed", version)


@given(st.text(max_size=300))
def test_arbitrary_text_gives_a_reference_none_or_value_error(text: str) -> None:
    try:
        result = parse_cgroup(text)
    except ValueError:
        return
    assert result is None or isinstance(result, ContainerRef)
