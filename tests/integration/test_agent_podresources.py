"""The agent asks a kubelet pod-resources server (real gRPC on a unix socket) which pod holds
each GPU, puts it in its samples, and keeps the last answer while the kubelet is away."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import FIXTURES
from podresources_wire import list_response

from gateway.telemetry.agent.agent import Agent
from gateway.telemetry.agent.podresources import KubeletPodResources
from gateway.telemetry.agent.pods import StaticPods
from gateway.telemetry.agent.simulate import ScriptedSource, load_simulation
from gateway.telemetry.samples import PodRef

GPU0 = "GPU-00000000-1111-2222-3333-000000000000"


class Kubelet:
    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.answer = list_response([("research", "llm-70b-worker-0", [("pytorch", [("nvidia.com/gpu", [GPU0])])])])
        self.calls = 0
        self.server: Any = None

    def start(self) -> None:
        def handle(request: bytes, context: Any) -> bytes:
            assert request == b""
            self.calls += 1
            return self.answer

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("v1.PodResourcesLister", {
            "List": grpc.unary_unary_rpc_method_handler(handle, request_deserializer=None,
                                                        response_serializer=None)})])
        self.server.add_insecure_port(f"unix://{self.socket}")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None).wait(5)


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[Kubelet]:
    server = Kubelet(tmp_path / "kubelet.sock")
    server.start()
    yield server
    server.stop()


def test_samples_name_the_pod_the_kubelet_allocated_each_gpu_to(kubelet: Kubelet) -> None:
    sim = load_simulation(FIXTURES / "agent" / "llm-node.yaml")
    source = ScriptedSource(sim)
    resources = KubeletPodResources(kubelet.socket, timeout_s=2)
    agent = Agent(sim.node, source, source, StaticPods(sim.pods), None, None, allocations=resources.allocations)
    report = agent.sample(1_764_000_000)
    assert report is not None
    allocated = {s["uuid"]: s["allocated"] for s in report["samples"]}
    assert allocated[GPU0] == {"namespace": "research", "name": "llm-70b-worker-0"}
    assert [a for u, a in allocated.items() if u != GPU0] == [None, None, None]
    assert kubelet.calls == 1
    resources.close()


def test_the_last_answer_is_kept_while_the_kubelet_is_away(kubelet: Kubelet, caplog: pytest.LogCaptureFixture) -> None:
    resources = KubeletPodResources(kubelet.socket, timeout_s=1)
    assert resources.allocations() == {GPU0: PodRef("research", "llm-70b-worker-0")}
    kubelet.stop()
    assert resources.allocations() == {GPU0: PodRef("research", "llm-70b-worker-0")}
    assert resources.allocations() == {GPU0: PodRef("research", "llm-70b-worker-0")}
    warnings = [r.getMessage() for r in caplog.records if "pod-resources" in r.getMessage()]
    assert len(warnings) == 1 and "UNAVAILABLE" in warnings[0]  # said once, not every tick
    kubelet.answer = b""  # back, with the pod gone
    kubelet.start()
    deadline = time.monotonic() + 15  # the channel reconnects after its backoff
    while resources.allocations() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert resources.allocations() == {}
    resources.close()
