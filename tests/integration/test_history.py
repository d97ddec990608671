"""One object's change history: written by AdmissionService.validate, read by `gpu-gateway audit history`.

Three people change one PyTorchJob over time; the CLI, run as a separate process, shows
who changed what, in order, allowed and denied, and the chain still verifies.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import sqlite3
import stat
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from conftest import INTERN, LEAD, RESEARCHER, make_deployment, make_pytorchjob, review

from gateway.admission.admission import prepare
from gateway.admission.policy import Policy
from gateway.admission.review import parse_review
from gateway.audit.history import changes, keyed_digest
from gateway.audit.ports import AuditQuery
from gateway.audit.signing.history_key import KEY_BYTES, history_key_path, load_history_key
from gateway.config import Settings, StoreSettings
from gateway.errors import StoreError
from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder
from gateway.server import build_gateway
from gateway.service import AdmissionService, admission_job
from gateway.store.base import decide_one
from gateway.store.sqlite import SQLiteStore

T0 = dt.datetime(2026, 11, 20, 10, 0, 0, tzinfo=dt.UTC).timestamp()
DIGEST = keyed_digest(b"test-key-" * 4)
WANDB_KEY = "wandb-2f1c9a77e0d4-do-not-log"


def gateway_cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("gpu-gateway")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "gateway.cli.gpu_gateway"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120, check=False)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def worker_container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]


@pytest.fixture
def history_state(tmp_path: Path, policy_dir: Path) -> Path:
    """bob launches llm-70b; eve (an intern) tries to swap its image; bob adds an API key and
    changes the learning rate; carol (his lead) scales it up; eve tries to scale it further."""
    state = tmp_path / "state.db"
    store = SQLiteStore(state)
    clock = Clock()
    service = AdmissionService(PolicyHolder(policy_dir), store, metrics=Metrics(), clock=clock, digest=DIGEST)

    v1 = make_pytorchjob(workers=3).named("research", "llm-70b").owned_by("bob", "vision").obj()
    for replica in v1["spec"]["pytorchReplicaSpecs"].values():
        container = replica["template"]["spec"]["containers"][0]
        container.update(image="ghcr.io/lab/llm:1", env=[{"name": "LR", "value": "0.001"}])
    evil = copy.deepcopy(v1)
    worker_container(evil)["image"] = "ghcr.io/eve/llm:evil"
    v2 = copy.deepcopy(v1)
    worker_container(v2)["env"] = [{"name": "LR", "value": "0.0003"}, {"name": "WANDB_API_KEY", "value": WANDB_KEY}]
    v3 = copy.deepcopy(v2)
    v3["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = 7
    v4 = copy.deepcopy(v3)
    v4["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = 100

    steps = [
        (review(v1, user="bob", groups=RESEARCHER), True),
        (review(evil, old=v1, operation="UPDATE", user="eve", groups=INTERN), False),
        (review(v2, old=v1, operation="UPDATE", user="bob", groups=RESEARCHER), True),
        (review(v3, old=v2, operation="UPDATE", user="carol", groups=LEAD), True),
        (review(v4, old=v3, operation="UPDATE", user="eve", groups=INTERN), False),
    ]
    for minutes, (request, allowed) in zip((0, 2, 5, 61, 62), steps, strict=True):
        clock.now = T0 + minutes * 60 + 11
        response = service.validate(request.body())["response"]
        assert response["allowed"] is allowed, response
    store.close()
    return state


EXPECTED = [
    "2026-11-20 10:00:11  bob (researcher)  launch  ALLOWED  32 GPUs",
    "2026-11-20 10:02:11  eve (intern)  modify  DENIED  image of container pytorch in Worker: "
    "ghcr.io/lab/llm:1 -> ghcr.io/eve/llm:evil",
    "2026-11-20 10:05:11  bob (researcher)  modify  ALLOWED  env LR of container pytorch in Worker: "
    "changed (value not recorded)",
    "env WANDB_API_KEY of container pytorch in Worker: added (literal)",
    "2026-11-20 11:01:11  carol (lead)  modify  ALLOWED  spec.pytorchReplicaSpecs.Worker.replicas: 3 -> 7",
    "2026-11-20 11:02:11  eve (intern)  modify  DENIED  spec.pytorchReplicaSpecs.Worker.replicas: 7 -> 100",
]


def squeezed(text: str) -> list[str]:
    """Lines with the column padding taken out (two spaces between columns)."""
    return ["  ".join(part.strip() for part in line.strip().split("  ") if part.strip())
            for line in text.splitlines()]


def test_the_history_of_one_workload_shows_who_changed_what_in_order(history_state: Path):
    result = gateway_cli("audit", "history", "PyTorchJob", "research/llm-70b", "--state", str(history_state))
    assert result.returncode == 0, result.stderr
    assert squeezed(result.stdout) == EXPECTED
    # The changes line up in one column under each other.
    lines = result.stdout.splitlines()
    starts = {line.index(expected.split("  ")[-1]) for line, expected in zip(lines, EXPECTED, strict=True)}
    assert len(starts) == 1
    assert WANDB_KEY not in result.stdout and "0.0003" not in result.stdout
    assert SQLiteStore(history_state, readonly=True).verify().ok


def test_the_history_as_json_lines_and_by_resource_name(history_state: Path):
    result = gateway_cli("audit", "history", "pytorchjobs", "research/llm-70b", "--state", str(history_state),
                         "-o", "json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["user"], r["action"], r["decision"]) for r in rows] == [
        ("bob", "launch", "allowed"), ("eve", "modify", "denied"), ("bob", "modify", "allowed"),
        ("carol", "modify", "allowed"), ("eve", "modify", "denied")]
    assert rows[0]["changes"] == []
    assert rows[1]["changes"] == [{"field": "image", "change": "changed", "template": "Worker",
                                   "container": "pytorch", "old": "ghcr.io/lab/llm:1",
                                   "new": "ghcr.io/eve/llm:evil"}]
    assert rows[3]["changes"] == [{"field": "count", "change": "changed",
                                   "key": "spec.pytorchReplicaSpecs.Worker.replicas", "old": 3, "new": 7}]


def test_the_history_filters_by_time_and_object(history_state: Path):
    since = dt.datetime.fromtimestamp(T0 + 3600, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = gateway_cli("audit", "history", "PYTORCHJOB", "research/llm-70b", "--state", str(history_state),
                         "--since", since, "--until", repr(T0 + 62 * 60))
    assert result.returncode == 0, result.stderr
    assert squeezed(result.stdout) == EXPECTED[4:5]
    for kind, ref in (("PyTorchJob", "research/other"), ("PyTorchJob", "prod/llm-70b"), ("Job", "research/llm-70b")):
        result = gateway_cli("audit", "history", kind, ref, "--state", str(history_state))
        assert (result.returncode, result.stdout.strip()) == (0, "no audit records match")
    result = gateway_cli("audit", "history", "PyTorchJob", "research/", "--state", str(history_state))
    assert result.returncode != 0 and "NAMESPACE/NAME" in result.stderr


def test_a_changed_record_that_is_edited_breaks_the_chain(history_state: Path):
    """`changes` is covered by the hash: emptying a record's changes is caught."""
    with closing(sqlite3.connect(history_state)) as db, db:
        db.execute("UPDATE audit SET changes = '[]' WHERE seq = 2")
    result = SQLiteStore(history_state, readonly=True).verify()
    assert (result.ok, result.first_bad) == (False, 2)


def test_a_scale_shows_in_the_history_of_its_workload(service: AdmissionService):
    dep = make_deployment(replicas=1).named("research", "serve").obj()
    assert service.validate(review(dep, user="bob", groups=RESEARCHER).body())["response"]["allowed"]
    scale = {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "serve", "namespace": "research"}}
    up = review({**scale, "spec": {"replicas": 3}}, old={**scale, "spec": {"replicas": 1}}, operation="UPDATE",
                user="bob", groups=RESEARCHER, sub_resource="scale", kind=("autoscaling", "v1", "Scale"),
                resource=("apps", "deployments"))
    assert service.validate(up.body())["response"]["allowed"]
    rows = list(service.store.audit_rows(AuditQuery(kind="Deployment", namespace="research", name="serve")))
    assert [(r["kind"], r["changes"]) for r in rows] == [
        ("Deployment", []),
        ("deployments.apps", [{"field": "count", "change": "changed", "key": "spec.replicas", "old": 1, "new": 3}]),
    ]
    assert service.store.verify().ok


def test_an_unreadable_update_is_still_audited_with_what_can_be_read(service: AdmissionService):
    job = make_pytorchjob(workers=1).named("research", "j").obj()
    assert service.validate(review(job, user="bob", groups=RESEARCHER).body())["response"]["allowed"]
    absurd = copy.deepcopy(job)
    absurd["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = 10**30
    deep: list[Any] = []
    for _ in range(1000):
        deep = [deep]
    too_deep = [copy.deepcopy(job), copy.deepcopy(job)]
    too_deep[0]["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["args"] = deep
    too_deep[1]["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["args"] = [deep]
    for old, new in ((job, absurd), (too_deep[0], too_deep[1])):
        response = service.validate(review(new, old=old, operation="UPDATE", user="eve", groups=INTERN).body())
        assert response["response"]["allowed"] is False
    _, absurd_row, deep_row = service.store.audit_rows()
    assert absurd_row["rule"] == "unreadable-object" and absurd_row["changes"] == [
        {"field": "count", "change": "changed", "key": "spec.pytorchReplicaSpecs.Worker.replicas",
         "old": 1, "new": "(an integer of 100 bits)"}]
    assert deep_row["user"] == "eve" and deep_row["changes"] == []
    assert service.store.verify().ok


# ------------------------------------------------------------------ secret values never stored


SECRET_OLD = b"hunter2-old-password-0042"
SECRET_NEW = b"hunter2-new-password-0043"


def secret(value: bytes) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "db-creds", "namespace": "research"},
            "data": {"password": base64.b64encode(value).decode()}}


def state_bytes(state: Path) -> bytes:
    """The state file and its WAL, as they are on disk."""
    return b"".join(p.read_bytes() for p in (state, Path(f"{state}-wal")) if p.exists())


def assert_no_secret_in(state: Path) -> None:
    data = state_bytes(state)
    for value in (SECRET_OLD, SECRET_NEW):
        assert value not in data and base64.b64encode(value) not in data


def test_a_secret_change_is_stored_as_digests_only(store: SQLiteStore, policy: Policy):
    """Straight into the store, as the service writes a record, with a Secret's diff."""
    found = changes("", "Secret", secret(SECRET_OLD), secret(SECRET_NEW), digest=DIGEST)
    assert found == [{"field": "data", "change": "changed", "key": "password",
                      "old": DIGEST(SECRET_OLD), "new": DIGEST(SECRET_NEW)}]
    body = review(secret(SECRET_NEW), old=secret(SECRET_OLD), operation="UPDATE", user="eve", groups=INTERN,
                  resource=("", "secrets"), uid="uid-secret").body()
    job = admission_job(prepare(parse_review(body), policy), policy, now=T0, digest=DIGEST)
    assert decide_one(store, job).audited
    [row] = store.audit_rows()
    assert row["changes"] == found
    assert store.verify().ok
    assert_no_secret_in(Path(store.path))


def test_a_secret_update_through_the_service_never_stores_the_value(service: AdmissionService):
    """Secrets are audited once the core governs them; whatever it decides, no value is stored."""
    body = review(secret(SECRET_NEW), old=secret(SECRET_OLD), operation="UPDATE", user="eve", groups=INTERN,
                  resource=("", "secrets")).body()
    service.validate(body)
    rows = list(service.store.audit_rows())
    assert len(rows) == 1
    for row in rows:
        assert row["changes"] == [{"field": "data", "change": "changed", "key": "password",
                                   "old": service.digest(SECRET_OLD), "new": service.digest(SECRET_NEW)}]
    assert_no_secret_in(Path(service.store.path))


# ------------------------------------------------------------------ the key, the schema


def test_the_history_key_is_created_private_beside_the_state_and_kept(tmp_path: Path):
    state = tmp_path / "deep" / "state.db"
    key = load_history_key(state)
    path = history_key_path(state)
    assert path == tmp_path / "deep" / "state.db.history-key"
    assert len(key) == KEY_BYTES and path.read_bytes() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_history_key(state) == key
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    path.write_bytes(b"short")
    with pytest.raises(StoreError, match="damaged"):
        load_history_key(state)


def test_the_server_digests_with_the_installation_key(tmp_path: Path):
    state = tmp_path / "state.db"
    gateway = build_gateway(Settings(store=StoreSettings(path=state)))
    try:
        key = history_key_path(state).read_bytes()
        assert gateway.service.digest(b"x") == keyed_digest(key)(b"x")
    finally:
        gateway.service.store.close()


def test_a_state_file_from_before_the_changes_column_still_verifies(tmp_path: Path, policy_dir: Path):
    state = tmp_path / "old.db"
    store = SQLiteStore(state)
    service = AdmissionService(PolicyHolder(policy_dir), store, metrics=Metrics())
    job = make_pytorchjob(workers=1).named("research", "j").obj()
    assert service.validate(review(job, user="bob", groups=RESEARCHER).body())["response"]["allowed"]
    store.close()
    with closing(sqlite3.connect(state)) as db, db:  # the schema of the previous version
        db.execute("DROP INDEX audit_object")
        db.execute("ALTER TABLE audit DROP COLUMN changes")
        db.execute("DROP TABLE schema_versions")
    old = SQLiteStore(state, readonly=True)
    assert old.verify().ok and [r["changes"] for r in old.audit_rows()] == [[]]
    old.close()
    upgraded = SQLiteStore(state)
    assert upgraded.verify().ok
    upgraded.close()
    with closing(sqlite3.connect(state)) as db:
        assert "changes" in [r[1] for r in db.execute("PRAGMA table_info(audit)")]


def test_three_people_change_a_job_and_its_configmap_and_secret(tmp_path: Path, policy_dir: Path) -> None:
    """The job's config and credentials have a history too; no Secret value reaches the store."""
    state = tmp_path / "state.db"
    store = SQLiteStore(state)
    clock = Clock()
    service = AdmissionService(PolicyHolder(policy_dir), store, metrics=Metrics(), clock=clock, digest=DIGEST)
    team = ("team:vision",)

    def cm(lr: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "llm-70b-config", "namespace": "research",
                             "annotations": {"gpu-gateway.io/owner": "bob", "gpu-gateway.io/team": "vision"}},
                "data": {"train.yaml": f"lr: {lr}\n"}}

    def sec(value: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "llm-70b-wandb", "namespace": "research",
                             "annotations": {"gpu-gateway.io/owner": "bob", "gpu-gateway.io/team": "vision"}},
                "data": {"key": base64.b64encode(value.encode()).decode()}}

    steps = [
        (review(cm("3e-4"), user="bob", groups=RESEARCHER), True),
        (review(sec(WANDB_KEY), user="bob", groups=RESEARCHER), True),
        (review(cm("1.0"), old=cm("3e-4"), operation="UPDATE", user="eve", groups=INTERN), False),
        (review(cm("1e-4"), old=cm("3e-4"), operation="UPDATE", user="carol", groups=("gpu-leads", *team)), True),
        (review(sec("stolen"), old=sec(WANDB_KEY), operation="UPDATE", user="eve", groups=INTERN), False),
    ]
    for minutes, (request, allowed) in enumerate(steps):
        clock.now = T0 + minutes * 60
        assert service.validate(request.body())["response"]["allowed"] is allowed
    store.close()

    out = gateway_cli("audit", "history", "ConfigMap", "research/llm-70b-config", "--state", str(state))
    assert out.returncode == 0, out.stderr
    lines = squeezed(out.stdout)
    assert [line.split("  ")[1:4] for line in lines if line[:4] == "2026"] == [
        ["bob (researcher)", "launch", "ALLOWED"], ["eve (intern)", "modify", "DENIED"],
        ["carol (lead)", "modify", "ALLOWED"]]
    assert sum("data key train.yaml" in line for line in lines) == 2
    out = gateway_cli("audit", "history", "secrets", "research/llm-70b-wandb", "--state", str(state), "-o", "json")
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["user"], r["decision"]) for r in records] == [("bob", "allowed"), ("eve", "denied")]
    assert records[1]["changes"][0]["old"] == DIGEST(WANDB_KEY.encode())
    assert gateway_cli("audit", "verify", "--state", str(state)).returncode == 0
    for path in tmp_path.glob("state.db*"):
        data = path.read_bytes()
        assert WANDB_KEY.encode() not in data and base64.b64encode(WANDB_KEY.encode()) not in data
