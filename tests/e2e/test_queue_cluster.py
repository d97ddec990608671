"""End to end: the real controller against a real cluster whose gateway runs researchers in queue mode.

Skipped unless `KUBECONFIG`, `GPU_GATEWAY_E2E_NAMESPACE` (a governed namespace the test may
create objects in) and `GPU_GATEWAY_E2E_DATABASE_URL` (the installed gateway's PostgreSQL, whose
policy has `scheduling: {roles: {researcher: queue}}`) are set. The controller runs here, in
this process, through the kubeconfig (its identity must be the one the gateway was given with
`--service-account`, or the gate removal is denied), against the gateway's own store.

    KUBECONFIG=~/.kube/config GPU_GATEWAY_E2E_NAMESPACE=gpu-e2e \\
    GPU_GATEWAY_E2E_DATABASE_URL=postgresql://gateway@db:5432/gateway python3 -m pytest -q tests/e2e
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid

import pytest

NAMESPACE = os.environ.get("GPU_GATEWAY_E2E_NAMESPACE", "")
DATABASE_URL = os.environ.get("GPU_GATEWAY_E2E_DATABASE_URL", "")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.environ.get("KUBECONFIG") or not NAMESPACE or not DATABASE_URL,
                       reason="needs KUBECONFIG, GPU_GATEWAY_E2E_NAMESPACE and GPU_GATEWAY_E2E_DATABASE_URL "
                              "(a real cluster whose gateway queues researchers)"),
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl"),
]
RESEARCHER = ("e2e-researcher", ("gpu-researchers", "team:e2e", "system:authenticated"))


def kubectl(*args: str, stdin: str | None = None, as_researcher: bool = True) -> subprocess.CompletedProcess[str]:
    identity = ["--as", RESEARCHER[0], *(f"--as-group={g}" for g in RESEARCHER[1])] if as_researcher else []
    return subprocess.run(["kubectl", "-n", NAMESPACE, *identity, *args], input=stdin, capture_output=True,
                          text=True, timeout=60, check=False)


def pods_of(job: str) -> list[dict]:
    out = kubectl("get", "pods", "-l", f"job-name={job}", "-o", "json", as_researcher=False)
    return json.loads(out.stdout)["items"] if out.returncode == 0 else []


def test_a_queued_job_starts_gated_and_the_controller_releases_it() -> None:
    from gateway.kube import Cluster, api_client
    from gateway.policy_bundle import PolicyHolder, default_policy_dir
    from gateway.scheduling.controller.loop import Controller, ControllerSettings
    from gateway.store.postgres import PostgresStore

    name = f"e2e-q-{uuid.uuid4().hex[:8]}"
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
           "spec": {"parallelism": 1, "completions": 1, "template": {"spec": {
               "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["true"],
                                                         "resources": {"limits": {"nvidia.com/gpu": 1}}}]}}}}
    out = kubectl("create", "-f", "-", stdin=json.dumps(job))
    assert out.returncode == 0, out.stderr
    store = PostgresStore(DATABASE_URL)
    try:
        deadline = time.monotonic() + 60
        while not pods_of(name) and time.monotonic() < deadline:
            time.sleep(1)
        [pod] = pods_of(name)
        assert {"name": "gpu-gateway.io/quota"} in pod["spec"]["schedulingGates"]
        # Nobody but the gateway may lift the gate.
        patch = json.dumps([{"op": "remove", "path": "/spec/schedulingGates/0"}])
        out = kubectl("patch", "pod", pod["metadata"]["name"], "--type=json", "-p", patch)
        assert out.returncode != 0 and "only the gateway may remove" in out.stderr
        controller = Controller(Cluster(api_client(os.environ["KUBECONFIG"])), store,
                                PolicyHolder(default_policy_dir()), ControllerSettings(interval_s=1))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            controller.run_once()
            [pod] = pods_of(name)
            if not any(g.get("name") == "gpu-gateway.io/quota" for g in pod["spec"].get("schedulingGates") or []):
                break
        else:
            pytest.fail(f"the controller did not release {name}: {store.queue_rows()}")
    finally:
        kubectl("delete", "job", name, "--wait=false")
        store.close()
