"""A launch reads its target, its owner's and team's usage and the records of what it references
in one statement, a controller's pod its target and references (`Ledger.target_and_usage`);
`Ledger.facts` falls back to one read each past `_KEYS_PER_STATEMENT` references. Whatever the
ledger holds, on the real SQLite file and a real PostgreSQL, the one statement answers what the
separate reads answer.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from postgres_server import each_store, pg_url, postgres  # noqa: F401 - fixtures

from gateway.store import sql
from gateway.store.sql import Ledger

NAMES = ("a", "b", "c", "d")
KEYS = [(resource, ns, name) for resource in ("pytorchjobs.kubeflow.org", "persistentvolumeclaims", "pods")
        for ns in ("ns", "other") for name in NAMES]

records = st.dictionaries(
    st.sampled_from(KEYS),
    st.tuples(st.sampled_from(("u1", "u2")), st.sampled_from(("t1", "", "t2")), st.integers(0, 64), st.booleans()),
    max_size=12)
reads = st.tuples(st.sampled_from(KEYS), st.sampled_from(("u1", "u2", "u3")), st.sampled_from(("t1", "", "t3")),
                  st.lists(st.sampled_from(KEYS), max_size=6), st.booleans())


def _fill(ledger: Ledger, held: dict[tuple[str, str, str], tuple[str, str, int, bool]]) -> None:
    for table in ("reservations", "usage", "refs", "root_pods"):
        ledger.db.run(f"DELETE FROM {table}")
    for (resource, ns, name), (owner, team, gpus, charged) in held.items():
        ledger.db.run(
            "INSERT INTO reservations (resource, namespace, name, owner, team, role, gpus, charged, shape, "
            "created_at, request_uid, uid, root_uid) VALUES (?, ?, ?, ?, ?, 'researcher', ?, ?, '{}', 0, 'r', ?, ?)",
            (resource, ns, name, owner, team, gpus, int(charged), f"uid-{ns}-{name}", f"uid-{ns}-{name}"))
    ledger.rebuild_usage()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(held=records, read=reads)
def test_one_statement_reads_what_the_separate_reads_read(each_store: Any, held: Any,  # noqa: F811
                                                          read: Any) -> None:
    key, owner, team, references, with_usage = read

    def run(ledger: Ledger) -> tuple[Any, Any]:
        _fill(ledger, held)
        merged = ledger.target_and_usage(key, references, usage_of=(owner, team) if with_usage else None)
        separate = ledger.target(key)
        anchor_owner, anchor_team = (separate.owner, separate.team) if separate is not None else (owner, team)
        expected_usage = ledger.usage(separate, anchor_owner, anchor_team) if with_usage else None
        return merged, (separate, expected_usage, ledger.targets(references))

    merged, separate = each_store._write(run)
    assert merged == separate


def test_past_one_statements_worth_of_references_facts_reads_them_all(each_store: Any,  # noqa: F811
                                                                       monkeypatch: Any) -> None:
    monkeypatch.setattr(sql, "_KEYS_PER_STATEMENT", 2)
    held = {KEYS[i]: ("u1", "t1", 8, True) for i in range(0, 12, 2)}
    references = [k for k in KEYS[:12] if k[0] == "persistentvolumeclaims"] + list(held)[:4]

    def run(ledger: Ledger) -> Any:
        _fill(ledger, held)
        return ledger.facts(KEYS[1], "u2", "t2", references)

    facts = each_store._write(run)
    assert set(facts.references) == {k for k in references if k in held}
    assert facts.usage.user == 0 and facts.usage.team == 0


# A controller's pod reads its parent, the parent's root and what the root's other pods hold in one
# statement (`Ledger.parent_and_root`): the same as `pods_under` reads alone.
UIDS = ("job-1", "job-2", "rs-1", "pod-1", "pod-2", "pod-3", "")
rows = st.lists(st.tuples(st.sampled_from(("pods", "pods", "replicasets.apps", "jobs.batch")),
                          st.sampled_from(NAMES), st.sampled_from(UIDS), st.sampled_from(UIDS), st.integers(0, 8)),
                max_size=14)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(held=rows, parent_uid=st.sampled_from(UIDS[:-1]), pod=st.sampled_from(NAMES))
def test_a_pods_parent_root_and_siblings_are_read_as_pods_under_reads_them(
        each_store: Any, held: Any, parent_uid: str, pod: str) -> None:  # noqa: F811
    key = ("pods", "ns", pod)

    def run(ledger: Ledger) -> tuple[Any, Any]:
        _fill(ledger, {})
        for resource, name, uid, root_uid, gpus in held:
            ledger.db.run(
                "INSERT INTO reservations (resource, namespace, name, owner, team, role, gpus, charged, shape, "
                "created_at, request_uid, uid, root_uid) VALUES (?, 'ns', ?, 'u', 't', 'r', ?, 0, '{}', 0, 'q', ?, ?) "
                "ON CONFLICT (resource, namespace, name) DO UPDATE SET gpus = excluded.gpus, uid = excluded.uid, "
                "root_uid = excluded.root_uid", (resource, name, gpus, uid, root_uid))
        parent, root, siblings = ledger.parent_and_root(parent_uid, None, key)
        expected = ledger.pods_under(root.uid, key) if root is not None and root.uid else None
        return (parent, root, siblings if expected is not None else None), (parent, root, expected)

    merged, separate = each_store._write(run)
    assert merged == separate
