"""GPU-hours from admission to release, kept by the ledger in the same transactions."""

from __future__ import annotations

from conftest import INTERN, RESEARCHER, delete_review, make_deployment, make_job, review

from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder
from gateway.service import AdmissionService
from gateway.store.sqlite import SQLiteStore

T0 = 1_790_000_000.0
HOUR = 3600.0


class Clock:
    now = T0

    def __call__(self) -> float:
        return self.now


def test_gpu_hours_per_user_team_and_role_over_a_period(tmp_path, policy_dir) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    clock = Clock()
    service = AdmissionService(PolicyHolder(policy_dir), store, metrics=Metrics(), clock=clock)
    job = make_job(gpus=8).named("research", "j").obj()
    assert service.validate(review(job, user="bob", groups=RESEARCHER).body())["response"]["allowed"]
    clock.now = T0 + HOUR
    small = make_job(gpus=2).named("research", "s").obj()
    assert service.validate(review(small, user="alice", groups=INTERN).body())["response"]["allowed"]
    clock.now = T0 + 2 * HOUR
    assert service.validate(delete_review(job, user="bob", groups=RESEARCHER).body())["response"]["allowed"]
    hours = store.gpu_hours(T0, T0 + 3 * HOUR)
    assert hours["users"] == {"bob": 16.0, "alice": 4.0}   # 8 GPUs x 2 h; 2 GPUs x 2 h (still running)
    assert hours["teams"] == {"vision": 20.0}
    assert hours["roles"] == {"researcher": 16.0, "intern": 4.0}
    assert store.gpu_hours(T0 + HOUR, T0 + 2 * HOUR)["users"] == {"bob": 8.0, "alice": 2.0}
    assert store.gpu_hours(T0 - 2 * HOUR, T0)["users"] == {}


def test_a_scale_closes_one_interval_and_opens_the_next(tmp_path, policy_dir) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    clock = Clock()
    service = AdmissionService(PolicyHolder(policy_dir), store, metrics=Metrics(), clock=clock)
    small = make_deployment(gpus=1, replicas=2).named("research", "d").obj()
    small["spec"]["strategy"] = {"type": "Recreate"}  # no rolling-update surge to count
    assert service.validate(review(small, user="bob", groups=RESEARCHER).body())["response"]["allowed"]
    clock.now = T0 + HOUR
    big = make_deployment(gpus=1, replicas=6).named("research", "d").obj()
    big["spec"]["strategy"] = {"type": "Recreate"}
    body = review(big, old=small, user="bob", groups=RESEARCHER, operation="UPDATE").body()
    assert service.validate(body)["response"]["allowed"]
    assert store.gpu_hours(T0, T0 + 2 * HOUR)["users"] == {"bob": 2.0 + 6.0}
