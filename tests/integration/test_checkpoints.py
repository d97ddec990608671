"""Signed checkpoints close what the hash chain alone cannot: truncation of the newest records,
a consistent rewrite of the whole chain, and a fork across replicas.

Real components throughout: a real state file and a real PostgreSQL (tests/postgres_server.py),
a real loopback HTTP server as the external sink, `gpu-gateway serve` as a process stopped with
SIGTERM, and `gpu-gateway audit verify` as a separate process. The database is tampered with
behind the gateway's back, the way someone with write access but without the key would.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import POLICIES, RESEARCHER, make_job, review
from postgres_server import PostgresServer, pg_url, postgres  # noqa: F401 - fixtures
from served import start_server, stop_server

from gateway.audit.checkpoints import Verdict
from gateway.audit.signing.checkpointer import (
    FILE_NAME,
    Checkpointer,
    FileSink,
    HttpSink,
    generate_key,
    load_private_key,
    load_public_key,
    sign,
    verify_checkpoints,
)
from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder
from gateway.service import AdmissionService
from gateway.store.chain import GENESIS, row_hash
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore


def gateway_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli.gpu_gateway", *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "checkpoint.key"
    generate_key(path)
    return path


def launch(service: AdmissionService, name: str, gpus: int = 8) -> None:
    obj = make_job(gpus=gpus).named("research", name).obj()
    response = service.validate(review(obj, user="bob", groups=RESEARCHER).body())["response"]
    assert response["allowed"] is True, response


def audit_count(store: Any) -> int:
    return len(list(store.audit_rows()))


class Collector:
    """A real HTTP endpoint on loopback that keeps every checkpoint POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(201)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/checkpoints"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()


# ------------------------------------------------------------------ tampering helpers (SQLite)


def _rows(db: sqlite3.Connection) -> list[dict[str, Any]]:
    db.row_factory = sqlite3.Row
    return [dict(r) for r in db.execute("SELECT * FROM audit ORDER BY seq")]


def delete_newest(state: Path, n: int) -> int:
    """Delete the newest `n` records and point the head at the new last one: the chain still
    verifies on its own. Returns the number of records left."""
    with closing(sqlite3.connect(state)) as db:
        rows = _rows(db)
        keep = rows[: len(rows) - n]
        db.execute("DELETE FROM audit WHERE seq > ?", (len(keep),))
        db.execute("UPDATE audit_head SET count = ?, last_hash = ?", (len(keep), keep[-1]["hash"]))
        db.commit()
    return len(keep)


def rewrite_chain(state: Path, change: Any) -> None:
    """Apply `change(row)` to every record, then recompute every hash and the head."""
    with closing(sqlite3.connect(state)) as db:
        prev = GENESIS
        for row in _rows(db):
            change(row)
            row["prev_hash"], row["hash"] = prev, row_hash(prev, row)
            db.execute('UPDATE audit SET "user" = ?, reason = ?, prev_hash = ?, hash = ? WHERE seq = ?',
                       (row["user"], row["reason"], row["prev_hash"], row["hash"], row["seq"]))
            prev = row["hash"]
        db.execute("UPDATE audit_head SET last_hash = ?", (prev,))
        db.commit()


def verify(store: Any, checkpoints: Path, key: Path) -> Verdict:
    return verify_checkpoints(store, checkpoints, load_public_key(key.with_name(key.name + ".pub")))


# ------------------------------------------------------------------ the CLI contract, end to end


def test_cli_keygen_serve_sigterm_verify_then_truncation_is_caught(tmp_path: Path, collector: Collector):
    key = tmp_path / "keys" / "checkpoint.key"
    made = gateway_cli("audit", "keygen", "--out", str(key))
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PUBLIC KEY" in (tmp_path / "keys" / "checkpoint.key.pub").read_bytes()
    assert gateway_cli("audit", "keygen", "--out", str(key)).returncode != 0  # never overwrites a key

    cp_dir = tmp_path / "checkpoints"
    served = start_server(tmp_path, "--checkpoint-key", str(key), "--checkpoint-dir", str(cp_dir),
                          "--checkpoint-interval", "0.3", "--checkpoint-replica", "gw-0",
                          "--checkpoint-url", collector.url, tls=False)
    try:
        with served.client() as client:
            for i in range(4):
                obj = make_job(gpus=8).named("research", f"job-{i}").obj()
                answer = client.post("/validate", json=review(obj, user="bob", groups=RESEARCHER).body())
                assert answer.json()["response"]["allowed"] is True
        deadline = time.monotonic() + 15
        while len((cp_dir / FILE_NAME).read_text().splitlines()) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        assert stop_server(served) == 0
    lines = [json.loads(line) for line in (cp_dir / FILE_NAME).read_text().splitlines()]
    reasons = [line["checkpoint"]["reason"] for line in lines]
    assert reasons[0] == "start" and reasons[-1] == "shutdown" and "periodic" in reasons
    assert collector.bodies == lines  # the external sink got every checkpoint, the final one included
    state = tmp_path / "state.db"
    with closing(sqlite3.connect(state)) as db:
        records = db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
        heartbeats = db.execute("SELECT COUNT(*) FROM audit WHERE action = 'heartbeat'").fetchone()[0]
    assert lines[-1]["checkpoint"]["seq"] == records  # the final checkpoint covers everything
    assert heartbeats == len(lines)  # each checkpoint signs the head just after its heartbeat

    args = ["audit", "verify", "--state", str(state), "--checkpoints", str(cp_dir),
            "--public-key", str(key) + ".pub"]
    ok = gateway_cli(*args)
    assert ok.returncode == 0, ok.stderr
    assert f"audit chain intact: {records} records verified" in ok.stdout
    assert f"covers records 1-{records}" in ok.stdout

    left = delete_newest(state, 3)
    assert gateway_cli("audit", "verify", "--state", str(state)).returncode == 0  # the chain alone is fooled
    bad = gateway_cli(*args)
    assert bad.returncode == 1
    assert f"records {left + 1} to {records} were deleted" in bad.stderr
    assert f"cannot be trusted from record {left + 1} on" in bad.stderr
    out = json.loads(gateway_cli(*args, "-o", "json").stdout)
    assert out["ok"] is False and out["first_bad"] == left + 1 and out["untrusted_since"]


def test_serve_rejects_incomplete_checkpoint_flags(tmp_path: Path, key: Path):
    result = gateway_cli("serve", "--insecure-http", "--host", "127.0.0.1", "--state", str(tmp_path / "s.db"),
                         "--checkpoint-key", str(key))
    assert result.returncode == 2
    assert "--checkpoint-key and --checkpoint-dir go together" in result.stderr


# ------------------------------------------------------------------ in-process, SQLite


@pytest.fixture
def signed_log(tmp_path: Path, key: Path, collector: Collector) -> tuple[Path, Path, list[float]]:
    """A log of 3 checkpoints and 6 launches (records: hb, 2 launches, hb, 2 launches, hb, 2 launches,
    hb), published to the file and to the HTTP collector. Returns (state, checkpoint dir, times)."""
    state, cp_dir = tmp_path / "state.db", tmp_path / "checkpoints"
    store = SQLiteStore(state)
    service = AdmissionService(PolicyHolder(POLICIES), store, metrics=Metrics())
    http = HttpSink(collector.url)
    signer = Checkpointer(store, load_private_key(key), [FileSink(cp_dir), http], replica="gw-0", interval_s=60)
    times = []
    try:
        for round_ in range(3):
            times.append(signer.checkpoint("periodic").checkpoint.ts)
            launch(service, f"a{round_}")
            launch(service, f"b{round_}")
        final = signer.checkpoint("shutdown")
        assert final.failed == () and final.checkpoint.seq == 10
        times.append(final.checkpoint.ts)
    finally:
        http.close()
        store.close()
    return state, cp_dir, times


def test_checkpoints_reach_the_http_sink_and_verify(signed_log, key: Path, collector: Collector, tmp_path: Path):
    state, cp_dir, _ = signed_log
    lines = [json.loads(line) for line in (cp_dir / FILE_NAME).read_text().splitlines()]
    assert collector.bodies == lines
    # What the external sink kept verifies the log on its own.
    external = tmp_path / "external.jsonl"
    external.write_text("".join(json.dumps(b) + "\n" for b in collector.bodies))
    store = SQLiteStore(state, readonly=True)
    verdict = verify(store, external, key)
    assert verdict.ok and verdict.covered == 10 and verdict.checkpoints == 4, verdict.describe()
    assert verify(store, cp_dir, key).ok


def test_rewrite_of_every_record_with_recomputed_hashes_is_caught(signed_log, key: Path):
    state, cp_dir, _times = signed_log

    def launder(row: dict[str, Any]) -> None:
        row["user"] = "nobody" if row["user"] == "bob" else row["user"]
        row["reason"] = row["reason"] + " "

    rewrite_chain(state, launder)
    store = SQLiteStore(state, readonly=True)
    assert store.verify().ok  # a consistent rewrite fools the chain
    verdict = verify(store, cp_dir, key)
    assert not verdict.ok
    assert verdict.first_untrusted == 1 and verdict.untrusted_since is None
    assert "record 1 is not the record" in verdict.problem


def test_rewrite_from_the_middle_names_the_last_good_checkpoint(signed_log, key: Path):
    state, cp_dir, times = signed_log
    rewrite_chain(state, lambda row: row.update(user="eve") if row["seq"] == 6 else None)
    verdict = verify(SQLiteStore(state, readonly=True), cp_dir, key)
    # Checkpoints vouch for records 1, 4, 7 and 10: 4 still matches, 7 no longer does.
    assert not verdict.ok and verdict.first_untrusted == 5 and verdict.untrusted_since == times[1]
    assert "cannot be trusted from record 5 on" in verdict.describe()


def test_truncation_of_the_newest_records_is_caught(signed_log, key: Path):
    state, cp_dir, _ = signed_log
    assert delete_newest(state, 2) == 8
    verdict = verify(SQLiteStore(state, readonly=True), cp_dir, key)
    assert not verdict.ok and verdict.first_untrusted == 9
    assert "records 9 to 10 were deleted" in verdict.problem


def test_an_edit_in_the_middle_is_still_named_by_the_chain(signed_log, key: Path):
    state, cp_dir, times = signed_log
    with closing(sqlite3.connect(state)) as db:
        db.execute("UPDATE audit SET gpus = 1 WHERE seq = 6")
        db.commit()
    verdict = verify(SQLiteStore(state, readonly=True), cp_dir, key)
    assert not verdict.ok and verdict.first_untrusted == 6 and verdict.untrusted_since == times[1]
    assert "hash chain is broken at record 6" in verdict.problem


def test_forged_and_edited_checkpoints_are_refused(signed_log, key: Path, tmp_path: Path):
    state, cp_dir, times = signed_log
    lines = (cp_dir / FILE_NAME).read_text().splitlines()
    # Someone without the key rewrites the chain and signs a checkpoint of their own.
    rewrite_chain(state, lambda row: row.update(user="eve") if row["seq"] >= 8 else None)
    forger = tmp_path / "forger.key"
    generate_key(forger)
    store = SQLiteStore(state, readonly=True)
    head = list(store.audit_rows())[-1]
    from gateway.audit.checkpoints import Checkpoint

    forged = sign(load_private_key(forger), Checkpoint("gw-0", 10, head["hash"], times[-1] + 1, 60, "periodic"))
    # ...and drops the genuine final checkpoint, keeping the three before it.
    (cp_dir / FILE_NAME).write_text("\n".join([*lines[:3], json.dumps(forged)]) + "\n")
    verdict = verify(store, cp_dir, key)
    assert not verdict.ok and verdict.first_untrusted == 8 and verdict.untrusted_since == times[2]
    assert f"{FILE_NAME}:4" in verdict.problem and "signature does not verify" in verdict.problem

    # An edited genuine line (its seq moved back) fails its signature the same way.
    edited = json.loads(lines[1])
    edited["checkpoint"]["seq"] = 1
    (cp_dir / FILE_NAME).write_text("\n".join([lines[0], json.dumps(edited), *lines[2:]]) + "\n")
    verdict = verify(store, cp_dir, key)
    assert not verdict.ok and verdict.first_untrusted == 2 and f"{FILE_NAME}:2" in verdict.problem


def test_no_checkpoints_is_not_trusted(tmp_path: Path, key: Path, store: SQLiteStore):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / FILE_NAME).write_text("")
    verdict = verify(store, tmp_path / "empty", key)
    assert not verdict.ok and "no signed checkpoints" in verdict.problem


# ------------------------------------------------------------------ PostgreSQL: two replicas, one chain


def _replica(url: str, name: str, key: Path, cp_dir: Path) -> tuple[PostgresStore, AdmissionService, Checkpointer]:
    store = PostgresStore(url)
    service = AdmissionService(PolicyHolder(POLICIES), store, metrics=Metrics())
    return store, service, Checkpointer(store, load_private_key(key), [FileSink(cp_dir)], replica=name,
                                        interval_s=0.05)


def test_two_replicas_append_one_chain_and_a_fork_is_caught(postgres: PostgresServer, pg_url: str,  # noqa: F811
                                                            key: Path, tmp_path: Path):
    cp_dir = tmp_path / "checkpoints"
    a, b = _replica(pg_url, "gw-a", key, cp_dir), _replica(pg_url, "gw-b", key, cp_dir)
    try:
        # Both replicas launch and sign concurrently (their checkpointer threads every 50 ms).
        for _, _, signer in (a, b):
            signer.start()

        def work(service: AdmissionService, prefix: str) -> None:
            for i in range(15):
                launch(service, f"{prefix}-{i}", gpus=1)

        threads = [threading.Thread(target=work, args=(svc, name)) for (_, svc, _), name in ((a, "a"), (b, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        for _, _, signer in (a, b):
            signer.stop()
        verdict = verify(a[0], cp_dir, key)
        assert verdict.ok, verdict.describe()
        assert verdict.replicas == ("gw-a", "gw-b") and verdict.covered == audit_count(a[0])
        common = verdict.covered
    finally:
        for store, _, _ in (a, b):
            store.close()

    # Replica b is failed over to a copy of the database (a restored backup, a split brain):
    # from now on the two replicas append to two chains that share their first `common` records.
    fork_url = pg_url.rsplit("/", 1)[0] + "/forked"
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE forked TEMPLATE {pg_url.rsplit('/', 1)[1]}")
    a, b = _replica(pg_url, "gw-a", key, cp_dir), _replica(fork_url, "gw-b", key, cp_dir)
    try:
        launch(a[1], "after-a")
        launch(b[1], "after-b")
        a[2].checkpoint()
        b[2].checkpoint()
        for store in (a[0], b[0]):
            assert store.verify().ok  # each chain is consistent on its own
            verdict = verify(store, cp_dir, key)
            assert not verdict.ok and verdict.first_untrusted == common + 1, verdict.describe()
            assert "forked" in verdict.problem
    finally:
        for store, _, _ in (a, b):
            store.close()

    result = gateway_cli("audit", "verify", "--database-url", pg_url, "--checkpoints", str(cp_dir),
                         "--public-key", str(key) + ".pub")
    assert result.returncode == 1 and f"cannot be trusted from record {common + 1} on" in result.stderr


def test_http_sink_down_is_logged_and_the_file_still_written(tmp_path: Path, key: Path, store: SQLiteStore):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/x"
    http = HttpSink(dead, timeout_s=1)
    signer = Checkpointer(store, load_private_key(key), [FileSink(tmp_path / "cp"), http], replica="r",
                          interval_s=60)
    published = signer.checkpoint()
    http.close()
    assert published.failed == (dead,) and signer.failures == 1
    assert verify(store, tmp_path / "cp", key).ok
    assert os.path.getsize(tmp_path / "cp" / FILE_NAME) > 0
