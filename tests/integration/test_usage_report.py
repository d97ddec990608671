"""GPU-hours per user, team and role over a period, as JSON, CSV (`format=csv` or `Accept:
text/csv`) and `gpuctl usage` tables, from a ledger written at known times and served by a
real gateway."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import INTERN, LEAD, POLICIES, RESEARCHER, delete_review, make_job, review
from served import Served, api_token, bearer, start_api_server, stop_server

from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder
from gateway.service import AdmissionService
from gateway.store.sqlite import SQLiteStore
from integration.test_gpuctl import gpuctl

T0 = 1_790_000_000.0  # 2026-09-21T14:13:20Z
HOUR = 3600.0
PERIOD = {"since": str(T0), "until": str(T0 + 3 * HOUR)}
ADMIN = api_token("root", ["gpu-admins"])


class Clock:
    now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """bob (researcher, vision) holds 8 GPUs for 2 h; alice (intern, vision) 2 GPUs from T0+1h on;
    nina (researcher, nlp) 4 GPUs from T0+2h on."""
    tmp = tmp_path_factory.mktemp("usage-report")
    store = SQLiteStore(tmp / "state.db")
    clock = Clock()
    service = AdmissionService(PolicyHolder(POLICIES), store, metrics=Metrics(), clock=clock)
    job = make_job(gpus=8).named("research", "j").obj()

    def admit(body: dict[str, object]) -> None:
        assert service.validate(body)["response"]["allowed"]

    admit(review(job, user="bob", groups=RESEARCHER).body())
    clock.now = T0 + HOUR
    admit(review(make_job(gpus=2).named("research", "s").obj(), user="alice", groups=INTERN).body())
    clock.now = T0 + 2 * HOUR
    admit(delete_review(job, user="bob", groups=RESEARCHER).body())
    admit(review(make_job(gpus=4).named("nlp", "n").obj(), user="nina",
                 groups=("gpu-researchers", "team:nlp")).body())
    store.close()
    served = start_api_server(tmp)
    yield served
    stop_server(served)


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_has_gpu_hours_per_user_team_and_role(server: Served) -> None:
    with server.client() as c:
        r = c.get("/api/v1/usage", params={**PERIOD, "format": "csv"}, headers=bearer("root", ["gpu-admins"]))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.text.splitlines()[0] == "by,name,gpus_now,gpu_hours,since,until"
    got = {(x["by"], x["name"]): (x["gpus_now"], float(x["gpu_hours"])) for x in rows(r.text)}
    assert got == {
        ("user", "alice"): ("2", 4.0), ("user", "bob"): ("0", 16.0), ("user", "nina"): ("4", 4.0),
        ("team", "nlp"): ("4", 4.0), ("team", "vision"): ("2", 20.0),
        ("role", "intern"): ("", 4.0), ("role", "researcher"): ("", 20.0),
    }
    assert {(x["since"], x["until"]) for x in rows(r.text)} == {("2026-09-21T14:13:20Z", "2026-09-21T17:13:20Z")}


def test_csv_by_one_scope_and_through_accept(server: Served) -> None:
    with server.client() as c:
        r = c.get("/api/v1/usage", params={**PERIOD, "by": "team"},
                  headers={**bearer("root", ["gpu-admins"]), "accept": "text/csv"})
        assert [(x["by"], x["name"], x["gpu_hours"]) for x in rows(r.text)] == [
            ("team", "nlp", "4.000000"), ("team", "vision", "20.000000")]
        r = c.get("/api/v1/usage", params=PERIOD, headers={**bearer("root", ["gpu-admins"]),
                                                           "accept": "application/json, text/csv"})
        assert r.headers["content-type"] == "application/json"
        r = c.get("/api/v1/usage", params={"format": "csv"}, headers=bearer("root", ["gpu-admins"]))
        assert {x["gpu_hours"] for x in rows(r.text)} == {""}  # no period: GPUs now only


def test_csv_is_scoped_like_the_json(server: Served) -> None:
    with server.client() as c:
        mine = c.get("/api/v1/usage", params={**PERIOD, "format": "csv"}, headers=bearer("alice", list(INTERN)))
        team = c.get("/api/v1/usage", params={**PERIOD, "format": "csv"}, headers=bearer("lena", list(LEAD)))
    assert [(x["by"], x["name"]) for x in rows(mine.text)] == [("user", "alice")]
    assert [(x["by"], x["name"]) for x in rows(team.text)] == [("team", "vision")]


@pytest.mark.parametrize("params", [{"format": "xml"}, {"by": "group"}, {"since": "nan"},
                                    {"since": str(T0 + 10 * HOUR), "until": str(T0)}, {"since": "1e300"}])
def test_bad_parameters_are_400(server: Served, params: dict[str, str]) -> None:
    with server.client() as c:
        r = c.get("/api/v1/usage", params=params, headers=bearer("root", ["gpu-admins"]))
    assert r.status_code == 400 and r.json()["error"] == "bad_request"


def test_gpuctl_usage_csv_and_tables(server: Served, tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    period = ["--since", PERIOD["since"], "--until", PERIOD["until"]]
    out = gpuctl("--server", server.url, "--token", ADMIN, "usage", "--by", "role", *period, "-o", "csv", config=cfg)
    assert out.returncode == 0, out.stderr
    assert [(x["name"], x["gpu_hours"]) for x in rows(out.stdout)] == [("intern", "4.000000"),
                                                                       ("researcher", "20.000000")]
    again = gpuctl("--server", server.url, "--token", ADMIN, "-o", "csv", "usage", "--by", "role", *period, config=cfg)
    assert again.stdout == out.stdout
    table = gpuctl("--server", server.url, "--token", ADMIN, "usage", "--by", "team", *period, config=cfg)
    assert [line.split() for line in table.stdout.splitlines()] == [
        ["BY", "NAME", "GPUS", "NOW", "LIMIT", "GPU-HOURS"], ["team", "nlp", "4", "unlimited", "4.0"],
        ["team", "vision", "2", "unlimited", "20.0"]]
    out = gpuctl("--server", server.url, "--token", ADMIN, "-o", "csv", "whoami", config=cfg)
    assert out.returncode == 2 and "only for `gpuctl usage`" in out.stderr
