"""`gpuctl` output as kubectl users expect it, against a real gateway on loopback: exact tables
(with and without headers, -o wide), -o before or after the subcommand, RFC 3339 times beside
epoch `ts`, targets named as people name them, and an example in every command's --help."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner
from conftest import INTERN, make_pytorchjob, review
from served import Served, api_token, start_api_server, stop_server

from gateway.cli.gpu_gateway import main as gpu_gateway
from gateway.cli.gpuctl import main as gpuctl_main
from integration.test_gpuctl import gpuctl

ADMIN = api_token("root", ["gpu-admins"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A gateway whose log holds, in order: alice's denied 8,000-GPU launch, a quota and a binding
    set by root, and a break-glass grant."""
    tmp = tmp_path_factory.mktemp("output")
    served = start_api_server(tmp)
    with served.client() as c:
        c.post("/validate", json=review(make_pytorchjob().obj(), user="alice", groups=INTERN).body())
    cfg = tmp / "c.json"
    for args in (["quota", "set", "team:vision", "--max-concurrent-gpus", "512", "--reason", "Q4 budget"],
                 ["roles", "bind", "user:zoe", "researcher", "--reason", "promotion"],
                 ["grant", "ivan", "lead", "--reason", "on-call", "--for", "30m"]):
        out = gpuctl("--server", served.url, "--token", ADMIN, *args, config=cfg)
        assert out.returncode == 0, out.stderr
    yield served
    stop_server(served)


def run(server: Served, tmp_path: Path, *args: str) -> str:
    out = gpuctl("--server", server.url, "--token", ADMIN, *args, config=tmp_path / "c.json")
    assert out.returncode == 0, out.stderr
    return out.stdout


def records(server: Served, tmp_path: Path) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(run(server, tmp_path, "audit", "list", "-o", "json"))
    return items


def test_audit_list_is_a_table_with_time_and_targets_as_people_name_them(server: Served, tmp_path: Path) -> None:
    t1, t2, t3, t4 = (r["time"].replace("T", " ").rstrip("Z") for r in records(server, tmp_path))
    assert run(server, tmp_path, "audit", "list") == f"""\
#  TIME                 USER   ROLE    ACTION    TARGET                       GPUS  DECISION  RULE
1  {t1}  alice  intern  launch    PyTorchJob research/llm-70b  8000  denied    workload-gpu-limit
2  {t2}  root   admin   settings  Quota team:vision            0     allowed   settings
3  {t3}  root   admin   settings  RoleBinding user:zoe         0     allowed   settings
4  {t4}  root   admin   grant     Grant ivan                   0     allowed   break-glass BREAK-GLASS
"""
    assert run(server, tmp_path, "audit", "list", "--no-headers", "--user", "root", "--action", "settings") == f"""\
2  {t2}  root  admin  settings  Quota team:vision     0  allowed  settings
3  {t3}  root  admin  settings  RoleBinding user:zoe  0  allowed  settings
"""


def test_wide_adds_the_columns_there_are_more_of(server: Served, tmp_path: Path) -> None:
    _, t2, t3, _ = (r["time"].replace("T", " ").rstrip("Z") for r in records(server, tmp_path))
    assert run(server, tmp_path, "-o", "wide", "audit", "list", "--action", "settings") == f"""\
#  TIME                 USER  ROLE   ACTION    TARGET                GPUS  DECISION  RULE      OWNER  TEAM  REASON
2  {t2}  root  admin  settings  Quota team:vision     0     allowed   settings  root   -     \
quota team:vision set by root: Q4 budget
3  {t3}  root  admin  settings  RoleBinding user:zoe  0     allowed   settings  root   -     \
binding user:zoe set by root: promotion
"""
    grant = json.loads(run(server, tmp_path, "grants", "-o", "json"))[0]

    def minute(epoch: float) -> str:
        return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M")

    until, created = minute(grant["expires_at"]), minute(grant["created_at"])
    assert run(server, tmp_path, "grants") == f"""\
ID               STATE   USER  ROLE  UNTIL             GRANTER  REASON
{grant['id']}  active  ivan  lead  {until}  root     on-call
"""
    assert run(server, tmp_path, "grants", "-o", "wide", "--no-headers") == f"""\
{grant['id']}  active  ivan  lead  {until}  root  on-call  {created}  -
"""


def test_output_flags_go_before_or_after_the_subcommand(server: Served, tmp_path: Path) -> None:
    after = run(server, tmp_path, "whoami", "-o", "json")
    assert after == run(server, tmp_path, "-o", "json", "whoami")
    assert json.loads(after)["username"] == "root"
    assert yaml.safe_load(run(server, tmp_path, "-o", "json", "whoami", "-o", "yaml")) == json.loads(after)
    assert run(server, tmp_path, "audit", "-o", "yaml", "list") == run(server, tmp_path, "audit", "list", "-o", "yaml")
    assert run(server, tmp_path, "--no-headers", "grants") == run(server, tmp_path, "grants", "--no-headers")
    assert run(server, tmp_path, "grants", "--no-headers").startswith("bg-")
    assert run(server, tmp_path, "--no-headers", "roles", "-o", "json") == run(server, tmp_path, "-o", "json", "roles")


def test_every_record_with_ts_carries_its_rfc3339_time(server: Served, tmp_path: Path) -> None:
    items = records(server, tmp_path)
    assert len(items) == 4
    for item in items:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", item["time"])
        assert item["time"] == dt.datetime.fromtimestamp(item["ts"], dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    exported = [json.loads(line) for line in run(server, tmp_path, "audit", "export").splitlines()]
    assert [(r["ts"], r["time"]) for r in exported] == [(r["ts"], r["time"]) for r in items]
    assert [r["time"] for r in yaml.safe_load(run(server, tmp_path, "audit", "list", "-o", "yaml"))] == \
        [r["time"] for r in items]
    # the signed chain does not cover `time`: the log still verifies
    assert "audit chain intact: 4 records" in run(server, tmp_path, "audit", "verify")


def test_gpu_gateway_json_records_carry_time_too(server: Served) -> None:
    out = CliRunner().invoke(gpu_gateway, ["audit", "list", "--state", str(server.state), "-o", "json"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.output.splitlines()]
    assert [r["time"] for r in rows] == [rfc(r["ts"]) for r in rows] and len(rows) == 4


def rfc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _commands(group: click.Group, path: str) -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        yield f"{path} {name}", command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{path} {name}")


@pytest.mark.parametrize(("cli", "name"), [(gpuctl_main, "gpuctl"), (gpu_gateway, "gpu-gateway")])
def test_every_command_s_help_has_an_example(cli: click.Group, name: str) -> None:
    runner = CliRunner()
    for path, _ in [(name, cli), *_commands(cli, name)]:
        out = runner.invoke(cli, [*path.split()[1:], "--help"], prog_name=name)
        assert out.exit_code == 0, (path, out.output)
        example = re.search(r"^ *Examples:\n +(\S+) ", out.output, re.MULTILINE)
        assert example and example.group(1) == name, f"`{path} --help` has no example:\n{out.output}"
