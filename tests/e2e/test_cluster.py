"""End to end against a real cluster with gpu-gateway installed and registered.

Skipped unless `KUBECONFIG` is set and `GPU_GATEWAY_E2E_NAMESPACE` names a governed namespace
the test may create objects in. The caller's kubeconfig must be allowed to impersonate
(`kubectl --as/--as-group`), which is how the test acts as an intern and a researcher.

    KUBECONFIG=~/.kube/config GPU_GATEWAY_E2E_NAMESPACE=gpu-e2e python3 -m pytest -q tests/e2e
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import pytest

NAMESPACE = os.environ.get("GPU_GATEWAY_E2E_NAMESPACE", "")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.environ.get("KUBECONFIG") or not NAMESPACE,
                       reason="needs KUBECONFIG and GPU_GATEWAY_E2E_NAMESPACE (a real cluster with the gateway)"),
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl"),
]


def kubectl(*args: str, user: str, groups: tuple[str, ...],
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    identity = ["--as", user, *(f"--as-group={g}" for g in groups)]
    return subprocess.run(["kubectl", "-n", NAMESPACE, *identity, *args], input=stdin, capture_output=True,
                          text=True, timeout=60, check=False)


def gpu_job(name: str, gpus: int, parallelism: int) -> str:
    return json.dumps({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"parallelism": parallelism, "suspend": True, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]}}},
    })


def test_an_intern_is_denied_an_oversized_job_with_the_gateways_message() -> None:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    out = kubectl("create", "-f", "-", user="e2e-intern", groups=("gpu-interns", "system:authenticated"),
                  stdin=gpu_job(name, 8, 4))
    assert out.returncode != 0
    assert "gpu-gateway: denied launch of Job" in out.stderr and "at most 8 GPUs per workload" in out.stderr


def test_a_researchers_job_is_stamped_and_an_intern_cannot_delete_it() -> None:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    researcher = ("e2e-researcher", ("gpu-researchers", "team:e2e", "system:authenticated"))
    out = kubectl("create", "-f", "-", user=researcher[0], groups=researcher[1], stdin=gpu_job(name, 1, 1))
    assert out.returncode == 0, out.stderr
    try:
        got = kubectl("get", "job", name, "-o", "json", user=researcher[0], groups=researcher[1])
        annotations = json.loads(got.stdout)["metadata"]["annotations"]
        assert annotations["gpu-gateway.io/owner"] == "e2e-researcher"
        out = kubectl("delete", "job", name, user="e2e-intern", groups=("gpu-interns", "system:authenticated"))
        assert out.returncode != 0 and "gpu-gateway: denied kill of Job" in out.stderr
    finally:
        kubectl("delete", "job", name, "--wait=false", user=researcher[0], groups=researcher[1])
