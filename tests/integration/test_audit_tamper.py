"""The audit log is tamper-evident: `gpu-gateway audit verify` names the first bad record.

A real log is written by AdmissionService.validate; the state file is then changed behind
the gateway's back with the sqlite3 module, and the CLI runs as a separate process.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    INTERN,
    POLICIES,
    RESEARCHER,
    delete_review,
    exec_review,
    make_job,
    make_pod,
    make_pytorchjob,
    review,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.ports import VerifyResult
from gateway.metrics import Metrics
from gateway.policy_bundle import PolicyHolder
from gateway.service import AdmissionService
from gateway.store.chain import AUDIT_FIELDS, GENESIS, row_hash, verify_rows
from gateway.store.sqlite import SQLiteStore

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
STEP = 60.0
NLP_INTERN = ("gpu-interns", "team:nlp")


class StepClock:
    """Each decision one minute after the last: record i (1-based) has ts T0 + (i-1) * STEP."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> float:
        self.n += 1
        return T0 + (self.n - 1) * STEP


# (user, action, decision) of each record the script below writes, in order.
EXPECTED = [
    ("alice", "launch", "allowed"),    # 1  Job research/a, 8 GPUs
    ("alice", "launch", "denied"),     # 2  PyTorchJob of 8000 GPUs
    ("bob", "launch", "allowed"),      # 3  Job research/big, 64 GPUs
    ("carol", "kill", "denied"),       # 4  carol may not kill bob's job
    ("bob", "launch", "allowed"),      # 5  Pod research/bob-pod, 8 GPUs
    ("alice", "exec", "denied"),       # 6  alice may not exec into bob's pod
    ("bob", "kill", "allowed"),        # 7  bob deletes big
    ("mallory", "launch", "denied"),   # 8  no role
    ("alice", "launch", "allowed"),    # 9  dry run
    ("alice", "kill", "allowed"),      # 10 alice deletes a
]
N = len(EXPECTED)


def write_log(state: Path, policy_dir: Path) -> None:
    store = SQLiteStore(state)
    service = AdmissionService(PolicyHolder(policy_dir), store, metrics=Metrics(), clock=StepClock())
    job_a = make_job(gpus=8).named("research", "a").obj()
    big = make_job(gpus=8, parallelism=8).named("research", "big").obj()
    bodies = [
        review(job_a, user="alice", groups=INTERN).body(),
        review(make_pytorchjob().obj(), user="alice", groups=INTERN).body(),
        review(big, user="bob", groups=RESEARCHER).body(),
        delete_review(big, user="carol", groups=NLP_INTERN).body(),
        review(make_pod(gpus=8).named("research", "bob-pod").obj(), user="bob", groups=RESEARCHER).body(),
        exec_review("research", "bob-pod", user="alice", groups=INTERN).body(),
        delete_review(big, user="bob", groups=RESEARCHER).body(),
        review(make_pod(gpus=1).obj(), user="mallory", groups=()).body(),
        review(make_job(gpus=8).named("research", "b").obj(), user="alice", groups=INTERN,
               dry_run=True).body(),
        delete_review(job_a, user="alice", groups=INTERN).body(),
    ]
    try:
        for body, (_, _, verdict) in zip(bodies, EXPECTED, strict=True):
            resp = service.validate(body)["response"]
            assert resp["allowed"] is (verdict == "allowed"), resp
        assert store.verify().ok
    finally:
        store.close()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audit")
    shutil.copytree(POLICIES, root / "policies")
    state = root / "pristine.db"
    write_log(state, root / "policies")
    return state


@pytest.fixture
def state(pristine: Path, tmp_path: Path) -> Path:
    """A private copy of the log to tamper with (the store is closed: one file, no WAL)."""
    copy = tmp_path / "state.db"
    shutil.copy(pristine, copy)
    return copy


def gateway_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`gpu-gateway ARGS` as a separate process."""
    exe = Path(sys.executable).with_name("gpu-gateway")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "gateway.cli.gpu_gateway"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120, check=False)


def gateway_cli_many(*calls: Sequence[str]) -> list[subprocess.CompletedProcess[str]]:
    """Several independent CLI runs side by side (each process mostly waits on imports)."""
    with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2))) as pool:
        return list(pool.map(lambda args: gateway_cli(*args), calls))


# ------------------------------------------------------------------ tampering, by hand


def rows(db: sqlite3.Connection) -> list[dict[str, Any]]:
    db.row_factory = sqlite3.Row
    return [dict(r) for r in db.execute("SELECT * FROM audit ORDER BY seq")]


def put(db: sqlite3.Connection, row: dict[str, Any]) -> None:
    cols = list(row)
    db.execute(f"INSERT INTO audit ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
               [row[c] for c in cols])


def set_fields(db: sqlite3.Connection, seq: int, **values: Any) -> None:
    sets = ", ".join(f"{k} = ?" for k in values)
    db.execute(f"UPDATE audit SET {sets} WHERE seq = ?", [*values.values(), seq])


def shift(db: sqlite3.Connection, first: int, by: int) -> None:
    """Renumber records `first`.. by `by` (via negative numbers: seq is the primary key)."""
    db.execute("UPDATE audit SET seq = -seq WHERE seq >= ?", (first,))
    db.execute("UPDATE audit SET seq = -seq + ? WHERE seq < 0", (by,))


def set_head(db: sqlite3.Connection, **values: Any) -> None:
    sets = ", ".join(f"{k} = ?" for k in values)
    db.execute(f"UPDATE audit_head SET {sets} WHERE id = 1", list(values.values()))


def forged(db: sqlite3.Connection, seq: int, *, well_formed: bool = True) -> dict[str, Any]:
    """A plausible record `seq` (mallory's 64-GPU launch, allowed) chained after record seq-1."""
    by_seq = {r["seq"]: r for r in rows(db)}
    prev = by_seq[seq - 1]["hash"] if seq > 1 else GENESIS
    row = dict(by_seq[1])
    row.update(seq=seq, ts=T0 + (seq - 1.5) * STEP, request_uid="uid-forged", user="mallory",
               groups='["gpu-admins"]', role="admin", gpus=64, decision="allowed",
               rule="role-limits", reason="user mallory (role admin) may launch 64 GPUs",
               owner="mallory", prev_hash=prev)
    row["hash"] = row_hash(prev, row) if well_formed else by_seq[seq - 1]["hash"]
    return row


def edit_and_rehash(db: sqlite3.Connection, seq: int) -> None:
    row = next(r for r in rows(db) if r["seq"] == seq)
    row.update(decision="allowed", gpus=0)
    set_fields(db, seq, decision="allowed", gpus=0, hash=row_hash(row["prev_hash"], row))


def swap_contents(db: sqlite3.Connection, a: int, b: int) -> None:
    by_seq = {r["seq"]: r for r in rows(db)}
    for target, source in ((a, b), (b, a)):
        values = {k: v for k, v in by_seq[source].items() if k != "seq"}
        set_fields(db, target, **values)


def swap_seq(db: sqlite3.Connection, a: int, b: int) -> None:
    db.execute("UPDATE audit SET seq = -1 WHERE seq = ?", (a,))
    db.execute("UPDATE audit SET seq = ? WHERE seq = ?", (a, b))
    db.execute("UPDATE audit SET seq = ? WHERE seq = -1", (b,))


def insert_renumbering(db: sqlite3.Connection, at: int, *, well_formed: bool = True) -> None:
    row = forged(db, at, well_formed=well_formed)
    shift(db, at, +1)
    put(db, row)
    set_head(db, count=N + 1)  # a careful forger also fixes the count


def insert_without_renumbering(db: sqlite3.Connection, at: int) -> None:
    """Rebuild the table without its primary key, so that two records can claim number `at`."""
    row = forged(db, at)
    schema = db.execute("SELECT sql FROM sqlite_master WHERE name = 'audit'").fetchone()[0]
    db.execute("ALTER TABLE audit RENAME TO audit_old")
    db.execute(schema.replace("seq            INTEGER PRIMARY KEY", "seq INTEGER"))
    db.execute("INSERT INTO audit SELECT * FROM audit_old ORDER BY seq")
    db.execute("DROP TABLE audit_old")
    put(db, row)
    set_head(db, count=N + 1)


def delete_renumbering(db: sqlite3.Connection, seq: int) -> None:
    db.execute("DELETE FROM audit WHERE seq = ?", (seq,))
    shift(db, seq + 1, -1)
    set_head(db, count=N - 1)


def replay(db: sqlite3.Connection, seq: int) -> None:
    """Record `seq` again right after itself (a copy, renumbered)."""
    copy = next(r for r in rows(db) if r["seq"] == seq)
    shift(db, seq + 1, +1)
    put(db, {**copy, "seq": seq + 1})


Tamper = Callable[[sqlite3.Connection], None]

# (what is done, how, first bad record the verifier must name). Every case is verified in
# process; those in BY_CLI also by `gpu-gateway audit verify` as a separate process.
TAMPERING: list[tuple[str, Tamper, int]] = [
    ("edit the decision of a middle record", lambda db: set_fields(db, 4, decision="allowed"), 4),
    ("edit the GPUs of a middle record", lambda db: set_fields(db, 5, gpus=0), 5),
    ("edit the first record", lambda db: set_fields(db, 1, user="nobody"), 1),
    ("edit the last record", lambda db: set_fields(db, N, ts=T0), N),
    ("edit a prev_hash", lambda db: set_fields(db, 6, prev_hash=GENESIS), 6),
    ("delete a middle record", lambda db: db.execute("DELETE FROM audit WHERE seq = 5"), 5),
    ("delete a middle record, renumber the rest, fix the count", lambda db: delete_renumbering(db, 5), 5),
    ("delete the first record", lambda db: db.execute("DELETE FROM audit WHERE seq = 1"), 1),
    ("delete the last record", lambda db: db.execute("DELETE FROM audit WHERE seq = ?", (N,)), N),
    ("delete the last three records", lambda db: db.execute("DELETE FROM audit WHERE seq > ?", (N - 3,)), N - 2),
    ("delete every record", lambda db: db.execute("DELETE FROM audit"), 1),
    ("insert a forged record, renumbering the rest", lambda db: insert_renumbering(db, 5), 5),
    ("insert a badly forged record, renumbering the rest",
     lambda db: insert_renumbering(db, 5, well_formed=False), 5),
    ("insert a forged record without renumbering", lambda db: insert_without_renumbering(db, 5), 5),
    ("append a forged record", lambda db: put(db, forged(db, N + 1)), N + 1),
    ("replay a record", lambda db: replay(db, 3), 4),
    ("swap the contents of two records", lambda db: swap_contents(db, 4, 7), 4),
    ("swap the contents of two adjacent records", lambda db: swap_contents(db, 5, 6), 5),
    ("swap the numbers of two records", lambda db: swap_seq(db, 4, 7), 4),
    ("edit a middle record and recompute its hash", lambda db: edit_and_rehash(db, 5), 5),
    ("edit the first record and recompute its hash", lambda db: edit_and_rehash(db, 1), 1),
    ("edit the last record and recompute its hash", lambda db: edit_and_rehash(db, N), N),
    ("raise the head's count", lambda db: set_head(db, count=N + 1), N + 1),
    ("lower the head's count", lambda db: set_head(db, count=N - 2), N - 1),
    ("change the head's hash", lambda db: set_head(db, last_hash=GENESIS), N),
    ("delete the head", lambda db: db.execute("DELETE FROM audit_head"), 1),
]


BY_CLI = [
    "change the head's hash",
    "delete a middle record",
    "delete the head",
    "delete the last record",
    "delete the last three records",
    "edit a middle record and recompute its hash",
    "edit the decision of a middle record",
    "insert a forged record without renumbering",
    "insert a forged record, renumbering the rest",
    "lower the head's count",
    "raise the head's count",
    "swap the contents of two records",
    "swap the numbers of two records",
]


def tamper(state: Path, how: Tamper) -> None:
    with closing(sqlite3.connect(state)) as db:
        how(db)
        db.commit()


def first_bad(output: str) -> int:
    found = re.search(r"audit chain broken at record (\d+): ", output)
    assert found, output
    return int(found.group(1))


# ------------------------------------------------------------------ verify


def rechain_after_editing(db: sqlite3.Connection, seq: int = 5) -> None:
    """Edit record `seq` and recompute every hash from there on (but leave the head alone)."""
    prev = GENESIS
    for row in rows(db):
        if row["seq"] == seq:
            row["gpus"] = 0
        row["prev_hash"], row["hash"] = prev, row_hash(prev, row)
        set_fields(db, row["seq"], gpus=row["gpus"], prev_hash=row["prev_hash"], hash=row["hash"])
        prev = row["hash"]


# Further `audit verify` runs: name -> (tampering or None for the pristine log, extra options).
VERIFY_EXTRAS: dict[str, tuple[Tamper | None, tuple[str, ...]]] = {
    "untampered": (None, ()),
    "json": (lambda db: edit_and_rehash(db, 3), ("-o", "json")),
    "rechained": (rechain_after_editing, ()),
    "no audit table": (lambda db: db.execute("DROP TABLE audit"), ()),
}


@pytest.fixture(scope="module")
def verify_runs(
    pristine: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, subprocess.CompletedProcess[str]]:
    """`audit verify` on a copy tampered each way of BY_CLI and VERIFY_EXTRAS, side by side."""
    root = tmp_path_factory.mktemp("tampered")
    cases = {what: (how, ()) for what, how, _ in TAMPERING if what in BY_CLI}
    assert len(cases) == len(BY_CLI)
    cases.update(VERIFY_EXTRAS)
    calls = []
    for i, (how, options) in enumerate(cases.values()):
        state = pristine
        if how is not None:
            state = root / f"{i}.db"
            shutil.copy(pristine, state)
            tamper(state, how)
        calls.append(["audit", "verify", "--state", str(state), *options])
    calls.append(["audit", "verify", "--state", str(root / "missing.db")])
    results = gateway_cli_many(*calls)
    return dict(zip([*cases, "missing"], results, strict=True))


def test_the_untampered_log_verifies(verify_runs):
    result = verify_runs["untampered"]
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"audit chain intact: {N} records verified"


@pytest.mark.parametrize(("what", "bad"), [pytest.param(what, bad, id=what) for what, _, bad in TAMPERING
                                           if what in BY_CLI])
def test_tampering_is_detected_at_the_first_bad_record(verify_runs, what, bad):
    result = verify_runs[what]
    assert result.returncode != 0
    assert first_bad(result.stdout + result.stderr) == bad


@pytest.mark.parametrize(("how", "bad"), [pytest.param(how, bad, id=what) for what, how, bad in TAMPERING])
def test_the_store_names_the_same_record_in_process(state, how, bad):
    tamper(state, how)
    store = SQLiteStore(state, readonly=True)
    try:
        result = store.verify()
    finally:
        store.close()
    assert (result.ok, result.first_bad) == (False, bad), result.problem


def test_verify_json_names_the_first_bad_record(verify_runs):
    result = verify_runs["json"]
    assert result.returncode == 1
    out = json.loads(result.stdout)
    assert (out["ok"], out["first_bad"]) == (False, 3)
    assert "re-hashed" in out["problem"]


def test_rewriting_every_record_after_an_edit_is_still_caught_by_the_head(verify_runs):
    """Without a key the chain alone cannot tell; the head (count, last hash) still can."""
    result = verify_runs["rechained"]
    assert result.returncode != 0
    assert "head" in result.stderr


def test_a_missing_state_file_is_an_error(verify_runs):
    result = verify_runs["missing"]
    assert result.returncode != 0 and "does not exist" in result.stderr


def test_a_missing_audit_table_is_reported_not_verified(verify_runs):
    result = verify_runs["no audit table"]
    assert result.returncode != 0
    assert first_bad(result.stderr) == 1


def test_an_integer_clock_still_writes_a_verifiable_chain(tmp_path, policy_dir):
    """ts is a REAL column: an int timestamp must be hashed the way it reads back."""
    store = SQLiteStore(tmp_path / "s.db")
    service = AdmissionService(PolicyHolder(policy_dir), store, metrics=Metrics(), clock=lambda: 1_767_225_600)
    assert service.validate(review(make_job(gpus=1).obj(), user="alice", groups=INTERN).body())["response"]["allowed"]
    assert store.verify().ok
    [row] = store.audit_rows()
    assert row["ts"] == 1_767_225_600.0
    store.close()


# ------------------------------------------------------------------ list


def seqs_where(pred: Callable[[int, tuple[str, str, str]], bool]) -> list[int]:
    return [i for i, rec in enumerate(EXPECTED, start=1) if pred(i, rec)]


def iso(seq: int) -> str:
    """The time of record `seq`, in ISO 8601 (UTC)."""
    return dt.datetime.fromtimestamp(T0 + (seq - 1) * STEP, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# filters -> the records `audit list` must show, oldest first
FILTERS: dict[tuple[str, ...], list[int]] = {
    ("--user", "alice"): seqs_where(lambda _, r: r[0] == "alice"),
    ("--action", "kill"): [4, 7, 10],
    ("--decision", "denied"): seqs_where(lambda _, r: r[2] == "denied"),
    ("--user", "alice", "--action", "launch", "--decision", "allowed"): [1, 9],
    ("--limit", "3", "--user", "bob"): [3, 5, 7],
    ("--user", "nobody"): [],
    # since is inclusive, until exclusive; epoch seconds or ISO 8601, UTC when no zone is given
    ("--since", repr(T0 + 3 * STEP), "--until", repr(T0 + 7 * STEP)): [4, 5, 6, 7],
    ("--since", iso(4), "--until", iso(8)): [4, 5, 6, 7],
    ("--since", iso(9).removesuffix("Z")): [9, 10],
    ("--until", iso(1)): [],
    ("--since", iso(2), "--until", iso(8), "--decision", "denied"): [2, 4, 6],
}
OTHER_LISTS = [(), ("-o", "json"), ("--user", "nobody"), ("--since", "yesterday")]


@pytest.fixture(scope="module")
def list_runs(
    pristine: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, ...], subprocess.CompletedProcess[str]]:
    """`audit list` with each of OTHER_LISTS and FILTERS (as JSON), side by side; key: the options.
    ("tampered",) lists the denied records of a copy whose record 2 was edited."""
    tampered = tmp_path_factory.mktemp("list") / "tampered.db"
    shutil.copy(pristine, tampered)
    tamper(tampered, lambda db: set_fields(db, 2, decision="allowed"))
    queries = [*OTHER_LISTS, *(("-o", "json", *f) for f in FILTERS)]
    calls = [["audit", "list", "--state", str(pristine), *q] for q in queries]
    calls.append(["audit", "list", "--state", str(tampered), "-o", "json", "--decision", "denied"])
    return dict(zip([*queries, ("tampered",)], gateway_cli_many(*calls), strict=True))


def json_lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_list_as_a_table(list_runs):
    result = list_runs[()]
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["#", "TIME", "USER", "ROLE", "ACTION", "TARGET", "GPUS", "DECISION", "RULE"]
    assert [int(line.split()[0]) for line in lines] == list(range(1, N + 1))
    assert lines[1].split() == ["2", "2026-01-01", "00:01:00", "alice", "intern", "launch", "PyTorchJob",
                                "research/llm-70b", "8000", "denied", "workload-gpu-limit"]
    assert lines[7].split()[3:6] == ["mallory", "-", "launch"]  # mallory has no role
    assert "allowed (dry run)" in lines[8]


def test_list_as_json_lines_is_the_whole_log_oldest_first(list_runs):
    out = json_lines(list_runs[("-o", "json")])
    assert [r["seq"] for r in out] == list(range(1, N + 1))
    assert [(r["user"], r["action"], r["decision"]) for r in out] == EXPECTED
    assert [r["ts"] for r in out] == [T0 + i * STEP for i in range(N)]
    assert out[0]["groups"] == [*INTERN, "system:authenticated"]
    assert [r["dry_run"] for r in out] == [i == 9 for i in range(1, N + 1)]
    assert (out[2]["kind"], out[2]["name"], out[2]["gpus"], out[2]["owner"], out[2]["team"]) == (
        "Job", "big", 64, "bob", "vision")
    prev = GENESIS
    for r in out:  # the listed records carry the chain
        assert r["prev_hash"] == prev
        prev = r["hash"]


@pytest.mark.parametrize(("filters", "seqs"), [pytest.param(f, s, id=" ".join(f)) for f, s in FILTERS.items()])
def test_list_filters(list_runs, filters, seqs):
    out = json_lines(list_runs[("-o", "json", *filters)])
    assert [r["seq"] for r in out] == seqs


def test_list_says_when_nothing_matches_and_rejects_a_bad_time(list_runs):
    result = list_runs[("--user", "nobody")]
    assert result.returncode == 0 and result.stdout.strip() == "no audit records match"
    result = list_runs[("--since", "yesterday")]
    assert result.returncode != 0 and "is neither epoch seconds, an ISO 8601 time nor an age like 30d" in result.stderr


def test_list_reads_a_tampered_log_without_judging_it(list_runs):
    """`list` shows what is stored; `verify` is what judges it."""
    assert [r["seq"] for r in json_lines(list_runs[("tampered",)])] == [4, 6, 8]


# ------------------------------------------------------------------ the chain alone, at random


def synthetic_chain(n: int) -> list[dict[str, Any]]:
    chain, prev = [], GENESIS
    for seq in range(1, n + 1):
        row: dict[str, Any] = {f: "" for f in AUDIT_FIELDS}
        row.update(seq=seq, ts=T0 + seq, user=f"u{seq % 3}", gpus=seq, dry_run=0, decision="allowed")
        row["prev_hash"], row["hash"] = prev, row_hash(prev, row)
        prev = row["hash"]
        chain.append(row)
    return chain


def renumbered(chain: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**row, "seq": i} for i, row in enumerate(chain, start=1)]


def rehashed(row: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = {**row, **changes}
    out["hash"] = row_hash(out["prev_hash"], out)
    return out


@settings(max_examples=300, deadline=None, derandomize=True)
@given(n=st.integers(2, 30), data=st.data())
def test_verify_names_the_first_record_touched_by_any_single_tampering(n, data):
    chain = synthetic_chain(n)
    head = (n, chain[-1]["hash"])
    op = data.draw(st.sampled_from(["edit", "edit+rehash", "delete", "delete+renumber", "forge+renumber",
                                    "swap", "swap seq"]))
    k = data.draw(st.integers(1, n - 1))  # a record that has a successor
    rows_, bad = list(chain), k
    if op == "edit":
        rows_[k - 1] = {**chain[k - 1], "user": "mallory"}
    elif op == "edit+rehash":
        rows_[k - 1] = rehashed(chain[k - 1], user="mallory")
    elif op == "delete":
        del rows_[k - 1]
    elif op == "delete+renumber":
        del rows_[k - 1]
        rows_, head = renumbered(rows_), (n - 1, head[1])
    elif op == "forge+renumber":
        prev = chain[k - 2]["hash"] if k > 1 else GENESIS
        rows_.insert(k - 1, rehashed({**chain[k - 1], "seq": k, "user": "mallory", "prev_hash": prev}))
        rows_, head = renumbered(rows_), (n + 1, head[1])
    else:
        j = data.draw(st.integers(k + 1, n))
        if op == "swap":  # contents change places, numbers stay
            rows_[k - 1], rows_[j - 1] = {**chain[j - 1], "seq": k}, {**chain[k - 1], "seq": j}
        else:  # numbers change places
            rows_[k - 1], rows_[j - 1] = {**chain[k - 1], "seq": j}, {**chain[j - 1], "seq": k}
    result = verify_rows(sorted(rows_, key=lambda r: r["seq"]), *head)
    assert (result.ok, result.first_bad) == (False, bad), (op, k, result)
    assert verify_rows(chain, n, chain[-1]["hash"]) == VerifyResult(True, n)
