"""A launch's burst over HTTP: the training operator creates the pods of one admitted PyTorchJob.

A lead launches a PyTorchJob of 4,096 one-GPU pods (`payloads.launch_burst`); then, as the
training operator's service account (an actor of the shipped bundle), every pod's CREATE is
POSTed to /validate at once over many keep-alive connections, each pod with a controller
ownerReference carrying the job's UID: the controller path, with its ledger lookups.

The client is a minimal HTTP/1.1 client on asyncio streams (uvloop when installed): bodies
and request bytes are built and the connections opened before the clock starts, so a request
costs it one write and one read. Its CPU per request is reported beside the result; the
null webhook's burst, with the same client, is the baseline and shows the client's ceiling.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import sqlite3
import ssl
import statistics
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from benchmarks.payloads import Burst

CLIENT = "asyncio streams (HTTP/1.1 keep-alive)"


class BurstError(RuntimeError):
    pass


@dataclass(frozen=True)
class Answer:
    sent: float
    answered: float
    status: int
    body: bytes


def _request_bytes(host: str, body: bytes) -> bytes:
    return (f"POST /validate HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


def _content_length(head: bytes) -> tuple[int, int]:
    """(status, content-length) of a response head; the servers answer with a length, never chunked."""
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return status, int(value)
    raise BurstError(f"response without content-length: {lines[0]!r}")


async def post_all(url: str, bodies: list[bytes], *, connections: int,
                   tls: ssl.SSLContext | None = None) -> tuple[float, list[Answer]]:
    """POST every body to `url`'s /validate over `connections` keep-alive connections, each sending
    its next body when the answer to the last arrives. Returns (seconds from the first send to
    the last answer, answers in the order of `bodies`)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)
    raws = collections.deque(enumerate(_request_bytes(parts.netloc, b) for b in bodies))
    answers: list[Answer | None] = [None] * len(bodies)
    opened = [await asyncio.open_connection(host, port, ssl=tls) for _ in range(min(connections, len(bodies)))]

    async def sender(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while raws:
            i, raw = raws.popleft()
            sent = time.perf_counter()
            writer.write(raw)
            status, length = _content_length(await reader.readuntil(b"\r\n\r\n"))
            body = await reader.readexactly(length)
            answers[i] = Answer(sent, time.perf_counter(), status, body)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(sender(r, w) for r, w in opened))
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise BurstError(f"the server broke off an answer: {exc!r}") from exc
    finally:
        for _, writer in opened:
            writer.close()
    done = [a for a in answers if a is not None]
    if len(done) != len(bodies):
        raise BurstError(f"{len(bodies) - len(done)} of {len(bodies)} requests got no answer")
    return max(a.answered for a in done) - started, done


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def _verdicts(answers: list[Answer]) -> tuple[int, int, int]:
    """(allowed, denied, not an answer) over the pod creates."""
    allowed = denied = bad = 0
    for a in answers:
        if a.status != 200:
            bad += 1
            continue
        response = orjson.loads(a.body).get("response") or {}
        if response.get("allowed") is True:
            allowed += 1
        else:
            denied += 1
    return allowed, denied, bad


def run_burst(url: str, burst: Burst, *, connections: int, cpus: set[int] | None = None,
              tls: bool = False) -> dict[str, Any]:
    """Launch `burst`'s job (it must be admitted), then POST its pod creates as fast as `url` answers.

    The client runs on `cpus` (this thread's affinity, restored after) when given.
    """
    with httpx.Client(verify=False, timeout=30.0) as client:
        answer = client.post(url + "/validate", content=burst.job, headers={"content-type": "application/json"})
    response = (orjson.loads(answer.content).get("response") or {}) if answer.status_code == 200 else {}
    if response.get("allowed") is not True:
        raise BurstError(f"the burst's PyTorchJob was not admitted ({answer.status_code}): "
                         f"{response.get('status') or answer.text[:300]}")
    context = None
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    saved = os.sched_getaffinity(0) if cpus else None
    if cpus:
        os.sched_setaffinity(0, cpus)
    try:
        cpu = time.process_time()
        elapsed, answers = _run(post_all(url, burst.pods, connections=connections, tls=context))
        cpu = time.process_time() - cpu
    finally:
        if saved:
            os.sched_setaffinity(0, saved)
    allowed, denied, bad = _verdicts(answers)
    latencies = sorted((a.answered - a.sent) * 1e3 for a in answers)
    return {
        "pods": len(answers), "connections": connections, "client": CLIENT,
        "seconds": elapsed, "per_s": len(answers) / elapsed if elapsed else 0.0,
        "p50_ms": statistics.median(latencies), "p99_ms": latencies[int(len(latencies) * 0.99)],
        "max_ms": latencies[-1], "allowed": allowed, "denied": denied, "non200": bad,
        "client_cpu_us": cpu / len(answers) * 1e6,
    }


def burst_ledger(state: Path, burst: Burst) -> dict[str, Any]:
    """What the gateway's ledger holds for `burst`: the job charged its GPUs once, every pod
    recorded under it uncharged, the lead's usage the job's GPUs."""
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        job = db.execute("SELECT gpus, charged FROM reservations WHERE uid = ?", (burst.job_uid,)).fetchone()
        children = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(charged), 0), COALESCE(SUM(gpus), 0) FROM reservations "
            "WHERE root_uid = ? AND uid != ? AND resource = 'pods'", (burst.job_uid, burst.job_uid)).fetchone()
        usage = db.execute("SELECT gpus FROM usage WHERE scope = 'user' AND name = ?", (burst.lead,)).fetchone()
    finally:
        db.close()
    out = {
        "job_gpus": int(job[0]) if job else 0, "job_charged": bool(job and job[1]),
        "children": int(children[0]), "children_charged": int(children[1]), "children_gpus": int(children[2]),
        "lead_usage_gpus": int(usage[0]) if usage else 0,
    }
    out["ok"] = (out["job_gpus"] == burst.gpus and out["job_charged"] and out["children"] == len(burst.pods)
                 and out["children_charged"] == 0 and out["lead_usage_gpus"] == burst.gpus)
    return out
