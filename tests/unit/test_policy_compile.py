"""Compiling a policy bundle from several threads at once (a reload racing an admin replace)."""

from __future__ import annotations

import threading
from pathlib import Path

from gateway.policy_bundle import load_bundle

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def test_bundles_compiled_in_many_threads_at_once_all_compile_the_same() -> None:
    start = threading.Barrier(8)
    versions: list[str] = []
    errors: list[BaseException] = []

    def compile_one() -> None:
        try:
            start.wait(timeout=60)
            for _ in range(5):
                versions.append(load_bundle(POLICIES).version)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=compile_one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not errors, errors
    assert len(versions) == 40 and len(set(versions)) == 1
