"""`root_pods`, the GPUs of the pods under each root, is kept by triggers on `reservations`
(ledger migration 7): whatever writes the ledger, in any order, it equals the recount.

Driven with raw statements on the real SQLite file and a real PostgreSQL, so that every kind
of write the triggers see is covered (inserts, upserts that move a pod to another root or
change its GPUs, updates of other columns, deletes), not only the ones today's code makes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from postgres_server import each_store, pg_url, postgres  # noqa: F401 - fixtures

from gateway.store.sql import Ledger
from gateway.store.sqlite import SQLiteStore

ROOTS = ("", "root-a", "root-b")
UIDS = ("root-a", "root-b", "pod-1", "pod-2", "pod-3", "")
NAMES = ("p1", "p2", "p3")

_UPSERT = (
    "INSERT INTO reservations (resource, namespace, name, owner, team, role, gpus, charged, shape, created_at, "
    "request_uid, uid, root_uid) VALUES (?, 'ns', ?, 'u', 't', 'r', ?, 0, '{}', 0, 'req', ?, ?) "
    "ON CONFLICT (resource, namespace, name) DO UPDATE SET gpus = excluded.gpus, uid = excluded.uid, "
    "root_uid = excluded.root_uid"
)

writes = st.one_of(
    st.tuples(st.just("upsert"), st.sampled_from(("pods", "pods", "replicasets.apps")), st.sampled_from(NAMES),
              st.integers(0, 8), st.sampled_from(UIDS), st.sampled_from(ROOTS)),
    st.tuples(st.just("delete"), st.sampled_from(NAMES)),
    st.tuples(st.just("charge"), st.sampled_from(NAMES)),
    st.tuples(st.just("delete_root"), st.sampled_from(ROOTS)),
)


def _apply(ledger: Ledger, write: tuple[Any, ...]) -> None:
    match write:
        case ("upsert", resource, name, gpus, uid, root):
            ledger.db.run(_UPSERT, (resource, name, gpus, uid, root))
        case ("delete", name):
            ledger.db.run("DELETE FROM reservations WHERE namespace = 'ns' AND name = ?", (name,))
        case ("charge", name):
            ledger.db.run("UPDATE reservations SET charged = 1, hold_until = 5 WHERE name = ?", (name,))
        case ("delete_root", root):
            ledger.db.run("DELETE FROM reservations WHERE root_uid = ?", (root,))


def _kept(ledger: Ledger) -> dict[str, int]:
    return {r["root_uid"]: int(r["gpus"]) for r in ledger.db.all("SELECT root_uid, gpus FROM root_pods") if r["gpus"]}


def _recounted(ledger: Ledger) -> dict[str, int]:
    rows = ledger.db.all(
        "SELECT root_uid, SUM(gpus) AS gpus FROM reservations WHERE resource = 'pods' AND root_uid <> '' "
        "AND uid <> root_uid GROUP BY root_uid")
    return {r["root_uid"]: int(r["gpus"]) for r in rows if r["gpus"]}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(writes, max_size=25))
def test_the_counter_equals_the_recount_after_any_writes(each_store: Any,  # noqa: F811
                                                         steps: list[tuple[Any, ...]]) -> None:
    def run(ledger: Ledger) -> tuple[dict[str, int], dict[str, int]]:
        ledger.db.run("DELETE FROM reservations")
        ledger.db.run("DELETE FROM root_pods")
        for write in steps:
            _apply(ledger, write)
        return _kept(ledger), _recounted(ledger)

    kept, recounted = each_store._write(run)
    assert kept == recounted


def test_pods_under_excludes_the_asking_pod_and_the_root_itself(each_store: Any) -> None:  # noqa: F811
    def run(ledger: Ledger) -> tuple[int, int, int]:
        for name, gpus, uid in (("p1", 2, "pod-1"), ("p2", 3, "pod-2"), ("root", 8, "root-a")):
            ledger.db.run(_UPSERT, ("pods", name, gpus, uid, "root-a"))
        return (ledger.pods_under("root-a", None), ledger.pods_under("root-a", ("pods", "ns", "p1")),
                ledger.pods_under("root-b", ("pods", "ns", "p1")))

    assert each_store._write(run) == (5, 3, 0)


def test_opening_the_store_recounts_a_counter_left_wrong(tmp_path: Path) -> None:
    """A counter that drifted (a row edited by hand with the triggers dropped) is set right at the next open."""
    store = SQLiteStore(tmp_path / "state.db")
    store._write(lambda ledger: ledger.db.run(_UPSERT, ("pods", "p1", 4, "pod-1", "root-a")))
    store._write(lambda ledger: ledger.db.run("UPDATE root_pods SET gpus = 99"))
    store.close()
    reopened = SQLiteStore(tmp_path / "state.db")
    try:
        assert reopened._read(lambda ledger: ledger.pods_under("root-a", None)) == 4
    finally:
        reopened.close()
