"""`gpu-gateway demo`: the sabotage scenario, replayed through the real HTTP endpoints."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import click
import httpx

from gateway.cli.render import audit_table
from gateway.config import PolicySettings, ServerSettings, Settings, StoreSettings
from gateway.server import build_gateway

_SA = "system:serviceaccount:kubeflow:training-operator"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pytorchjob(name: str, workers: int, gpus: int) -> dict[str, Any]:
    def replica(n: int) -> dict[str, Any]:
        return {"replicas": n, "restartPolicy": "OnFailure", "template": {"spec": {"containers": [
            {"name": "pytorch", "image": "ghcr.io/lab/llm-train:2026.11",
             "resources": {"limits": {"nvidia.com/gpu": gpus}}}]}}}

    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": {"name": name, "namespace": "research", "uid": str(uuid.uuid4())},
            "spec": {"pytorchReplicaSpecs": {"Master": replica(1), "Worker": replica(workers)}}}


def _review(op: str, user: str, groups: list[str], *, obj: Any = None, old: Any = None,
            kind: tuple[str, str, str] = ("kubeflow.org", "v1", "PyTorchJob"),
            resource: tuple[str, str] = ("kubeflow.org", "pytorchjobs"), name: str = "",
            sub: str = "") -> dict[str, Any]:
    req: dict[str, Any] = {
        "uid": str(uuid.uuid4()), "operation": op, "namespace": "research", "name": name,
        "kind": {"group": kind[0], "version": kind[1], "kind": kind[2]},
        "resource": {"group": resource[0], "version": kind[1], "resource": resource[1]},
        "userInfo": {"username": user, "groups": [*groups, "system:authenticated"]},
    }
    if sub:
        req["subResource"] = sub
    if obj is not None:
        req["object"] = obj
    if old is not None:
        req["oldObject"] = old
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}


class _Story:
    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.step = 0

    def say(self, text: str) -> None:
        self.step += 1
        click.echo(f"\n{self.step}. {text}")

    def send(self, body: dict[str, Any], *, mutate: bool = False) -> dict[str, Any]:
        if mutate:
            response = self.client.post("/mutate", json=body).json()["response"]
            ops = json.loads(base64.b64decode(response["patch"])) if "patch" in response else []
            stamped = sorted({op["path"].split("/metadata")[0] or "/" for op in ops})
            if ops:
                click.echo(f"   mutate: owner stamped on {', '.join(stamped)}")
                _apply_annotations(body["request"]["object"], ops)
        response = self.client.post("/validate", json=body).json()["response"]
        verdict = "ALLOWED" if response["allowed"] else "DENIED"
        click.echo(f"   -> {verdict}" + (f": {response['status']['message']}" if not response["allowed"] else ""))
        return dict(response)


def _apply_annotations(obj: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    """Apply the gateway's add/replace ops (the API server does this in a real cluster)."""
    for op in ops:
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].split("/")[1:]]
        node = obj
        for t in tokens[:-1]:
            node = node.setdefault(t, {})
        node[tokens[-1]] = op["value"]


def run_demo(keep: Path | None) -> int:
    workdir = keep or Path(tempfile.mkdtemp(prefix="gpu-gateway-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    state = workdir / "demo.db"
    port = _free_port()
    settings = Settings(server=ServerSettings(host="127.0.0.1", port=port, insecure_http=True),
                        store=StoreSettings(path=state, synchronous="NORMAL"),
                        policy=PolicySettings(reload_interval_s=0))
    gateway = build_gateway(settings)
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(gateway.app, host="127.0.0.1", port=port, log_level="error",
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            click.echo("the demo server did not start", err=True)
            return 1
        time.sleep(0.02)
    ok = True
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            ok = _scenario(_Story(client))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    click.echo("\nThe audit log an auditor reads (gpu-gateway audit list --state ...):\n")
    rows = list(gateway.service.store.audit_rows())
    click.echo(audit_table(rows))
    result = gateway.service.store.verify()
    click.echo(f"\ngpu-gateway audit verify: {result.describe()}")
    gateway.service.store.close()
    if keep is None:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        click.echo(f"state kept in {state}")
    return 0 if ok and result.ok else 1


def _scenario(story: _Story) -> bool:
    intern, researcher, lead = (["gpu-interns", "team:vision"], ["gpu-researchers", "team:vision"],
                                ["gpu-leads", "team:vision"])
    click.echo("gpu-gateway demo: a gateway on loopback, the default policy bundle, a fresh ledger.")
    click.echo("Cast: alice (intern, team vision), bob (researcher, team vision), "
               "lena (lead of team vision).")
    results = []

    story.say("alice, an intern, submits an 8,000-GPU PyTorchJob (1 master + 999 workers x 8 GPUs).")
    big = _pytorchjob("llm-70b", 999, 8)
    results.append(not story.send(_review("CREATE", "alice", intern, obj=big, name="llm-70b"), mutate=True)["allowed"])

    story.say("bob, a researcher, submits a 256-GPU PyTorchJob (32 pods x 8 GPUs).")
    job = _pytorchjob("llm-7b", 31, 8)
    results.append(story.send(_review("CREATE", "bob", researcher, obj=job, name="llm-7b"), mutate=True)["allowed"])

    story.say("The training operator creates bob's pods from the stamped templates "
              "(attributed to bob, not charged twice).")
    template = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]
    owner = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "llm-7b",
             "uid": job["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "llm-7b-worker-0", "namespace": "research", "uid": str(uuid.uuid4()),
                        "ownerReferences": [owner], "annotations": dict(template["metadata"]["annotations"])},
           "spec": template["spec"]}
    results.append(story.send(_review("CREATE", _SA, ["system:serviceaccounts"], obj=pod, name="llm-7b-worker-0",
                                      kind=("", "v1", "Pod"), resource=("", "pods")))["allowed"])

    story.say("alice tries to kill bob's job.")
    results.append(not story.send(_review("DELETE", "alice", intern, old=job, name="llm-7b"))["allowed"])

    story.say("alice tries to exec into one of bob's training pods.")
    exec_opts = {"apiVersion": "v1", "kind": "PodExecOptions", "command": ["sh"], "stdin": True, "tty": True}
    results.append(not story.send(_review("CONNECT", "alice", intern, obj=exec_opts, name="llm-7b-worker-0",
                                          kind=("", "v1", "PodExecOptions"), resource=("", "pods"),
                                          sub="exec"))["allowed"])

    story.say("lena, the lead of team vision, stops bob's job (her team's); its 256 GPUs are released.")
    results.append(story.send(_review("DELETE", "lena", lead, old=job, name="llm-7b"))["allowed"])
    ok = all(results)
    click.echo("\nEvery step went as the policy says." if ok else "\nA step did not go as expected!")
    return ok
