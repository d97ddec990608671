"""`gpuctl audit tail` run as a subprocess against a real gateway: it follows new records as
they are written, filters like `audit list`, stops cleanly, and survives a server that goes away."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import INTERN, RESEARCHER, make_job, review
from served import Served, api_token, bearer, start_api_server, stop_server

from integration.test_gpuctl import gpuctl

ADMIN = api_token("root", ["gpu-admins"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = start_api_server(tmp_path_factory.mktemp("tail"))
    launch(served, "alice", INTERN, "a0")
    launch(served, "bob", RESEARCHER, "b0")
    yield served
    stop_server(served)


def launch(served: Served, user: str, groups: tuple[str, ...], name: str, gpus: int = 8) -> None:
    with served.client() as c:
        c.post("/validate", json=review(make_job(gpus=gpus).named("research", name).obj(), user=user,
                                        groups=groups).body()).raise_for_status()


class Tail:
    """A `gpuctl audit tail` process whose output lines are read with a deadline."""

    def __init__(self, *args: str, config: Path, token: str = ADMIN, server: str) -> None:
        exe = Path(sys.executable).with_name("gpuctl")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "gateway.cli.gpuctl"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCTL_")}
        env.update(GPUCTL_CONFIG=str(config), GPUCTL_SERVER=server, GPUCTL_TOKEN=token)
        self.proc = subprocess.Popen([*cmd, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                     text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def line(self, timeout: float = 15) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no output line in time") from None

    def records(self, n: int) -> list[dict[str, object]]:
        return [json.loads(self.line()) for _ in range(n)]

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str, str]:
        self.proc.send_signal(sig)
        assert self.proc.stderr is not None
        code = self.proc.wait(timeout=15)
        time.sleep(0.1)  # the reader thread takes the last lines
        rest = "".join(self.lines.get() for _ in range(self.lines.qsize()))
        return code, rest, self.proc.stderr.read()


def test_follows_new_records_and_ctrl_c_stops_cleanly(server: Served, tmp_path: Path) -> None:
    tail = Tail("-o", "json", "audit", "tail", "--limit", "1", "--interval", "0.2", config=tmp_path / "c.json",
                server=server.url)
    try:
        [newest] = tail.records(1)
        assert newest["user"] == "bob"
        launch(server, "carl", RESEARCHER, "c1")
        launch(server, "alice", INTERN, "a1", gpus=64)
        new = tail.records(2)
        assert [(r["user"], r["name"], r["decision"]) for r in new] == [
            ("carl", "c1", "allowed"), ("alice", "a1", "denied")]
        assert [r["seq"] for r in new] == [int(newest["seq"]) + 1, int(newest["seq"]) + 2]  # type: ignore[call-overload]
    finally:
        code, rest, err = tail.stop()
    assert code == 0 and rest == "" and "Traceback" not in err


def test_filters_as_in_audit_list_and_only_what_the_caller_may_read(server: Served, tmp_path: Path) -> None:
    mine = Tail("-o", "json", "audit", "tail", "--decision", "denied", "--interval", "0.2",
                config=tmp_path / "c.json", server=server.url, token=api_token("alice", list(INTERN)))
    try:
        first = mine.records(1)
        assert {r["user"] for r in first} == {"alice"}
        launch(server, "bob", RESEARCHER, "b-quiet")  # allowed, and not alice's
        launch(server, "dora", INTERN, "d-big", gpus=64)  # denied, but not alice's
        launch(server, "alice", INTERN, "a-big", gpus=64)
        [seen] = mine.records(1)
        assert (seen["user"], seen["name"]) == ("alice", "a-big")
    finally:
        code, rest, _ = mine.stop()
    assert code == 0 and rest == ""


def test_once_after_a_record_number_is_a_script_friendly_poll(server: Served, tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    out = gpuctl("--server", server.url, "--token", ADMIN, "-o", "json", "audit", "list", config=cfg)
    last = json.loads(out.stdout)[-1]["seq"]
    launch(server, "bob", RESEARCHER, "b-once")
    out = gpuctl("--server", server.url, "--token", ADMIN, "-o", "json", "audit", "tail", "--once",
                 "--after", str(last), config=cfg)
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["name"] for line in out.stdout.splitlines()] == ["b-once"]
    out = gpuctl("--server", server.url, "--token", ADMIN, "audit", "tail", "--once", "--limit", "2", config=cfg)
    header, *lines = out.stdout.splitlines()
    assert header.split()[:3] == ["#", "TIME", "USER"] and len(lines) == 2 and "b-once" in lines[-1]


def test_timeout_ends_a_quiet_follow(server: Served, tmp_path: Path) -> None:
    started = time.monotonic()
    out = gpuctl("--server", server.url, "--token", ADMIN, "audit", "tail", "--limit", "0", "--interval", "0.2",
                 "--timeout", "1s", config=tmp_path / "c.json")
    assert out.returncode == 0 and out.stdout == "", out.stderr
    assert time.monotonic() - started < 15


def test_refusals_and_bad_input_exit_with_their_codes(server: Served, tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    expired = api_token("root", ["gpu-admins"], exp=int(time.time()) - 600)
    out = gpuctl("--server", server.url, "--token", expired, "audit", "tail", "--once", config=cfg)
    assert out.returncode == 4 and "gpuctl login" in out.stderr
    out = gpuctl("--server", "http://127.0.0.1:9", "--token", ADMIN, "audit", "tail", "--once", config=cfg)
    assert out.returncode == 3 and "cannot reach" in out.stderr
    out = gpuctl("--server", server.url, "--token", ADMIN, "audit", "tail", "--interval", "soon", config=cfg)
    assert out.returncode == 2


def test_a_server_that_goes_away_is_retried_with_one_warning(tmp_path: Path) -> None:
    served = start_api_server(tmp_path)
    launch(served, "bob", RESEARCHER, "b0")
    tail = Tail("-o", "json", "audit", "tail", "--interval", "0.2", "--timeout", "3s",
                config=tmp_path / "c.json", server=served.url)
    try:
        assert tail.records(1)[0]["name"] == "b0"
    finally:
        stop_server(served)
    assert tail.proc.wait(timeout=20) == 0 and tail.lines.empty()
    assert tail.proc.stderr is not None
    err = tail.proc.stderr.read()
    assert err.count("warning: cannot reach") == 1 and "retrying" in err


def test_the_api_cursor(server: Served) -> None:
    admin = bearer("root", ["gpu-admins"])
    with server.client() as c:
        items = c.get("/api/v1/audit", headers=admin).json()["items"]
        middle = items[len(items) // 2]["seq"]
        after = c.get("/api/v1/audit", params={"after": middle}, headers=admin).json()["items"]
        assert [i["seq"] for i in after] == [i["seq"] for i in items if i["seq"] > middle]
        for bad in ("-1", "x", str(2**64)):
            r = c.get("/api/v1/audit", params={"after": bad}, headers=admin)
            assert r.status_code == 400 and "after" in r.json()["reason"]
