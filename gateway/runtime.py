"""Keep this replica's policy in step with the run-time settings in the store.

Every replica polls the settings' revision (one indexed read) at most once per `TTL_S` and,
when it moved, re-reads the settings and layers them over its bundle. A change made through
any replica's admin API is so in force everywhere within about a second; the replica that
made it applies it at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping

from gateway.admission.overrides import BINDING, QUOTA, Overrides
from gateway.admission.ports import Setting
from gateway.errors import GatewayError
from gateway.policy_bundle import PolicyHolder
from gateway.store.base import Store

log = logging.getLogger("gateway.runtime")


def overrides_of(settings: Iterable[Setting]) -> tuple[Overrides, Mapping[str, str] | None]:
    """The role bindings and quotas, and the stored policy replacement, of `settings`."""
    bindings: dict[str, tuple[str, ...]] = {}
    quotas: dict[str, dict[str, int | None]] = {}
    replacement: Mapping[str, str] | None = None
    for s in settings:
        if s.kind == BINDING:
            bindings[s.name] = tuple(s.value)
        elif s.kind == QUOTA:
            quotas[s.name] = dict(s.value)
        elif s.kind == "policy" and s.name == "bundle":
            replacement = dict(s.value)
    return Overrides(bindings, quotas), replacement


class RuntimeSettings:
    TTL_S = 1.0

    def __init__(self, holder: PolicyHolder, store: Store,
                 on_error: Callable[[str], None] | None = None) -> None:
        """`on_error` hears of a stored policy that does not compile (the last good one stays)."""
        self.holder = holder
        self.store = store
        self.on_error = on_error
        self.revision = -1
        self._checked = float("-inf")
        self._lock = threading.Lock()
        self.unreadable: str | None = None

    def refresh(self, now: float, *, force: bool = False) -> None:
        """Re-read the settings if their revision moved; a store that cannot be read leaves
        the settings last read in force (and says so on /readyz)."""
        if not force and 0 <= now - self._checked < self.TTL_S:
            return
        with self._lock:
            self._checked = now
            try:
                revision = self.store.settings_revision()
                if revision == self.revision:
                    self.unreadable = None
                    return
                overrides, replacement = overrides_of(self.store.settings())
            except GatewayError as exc:
                if self.unreadable is None:
                    log.warning("cannot read run-time settings; keeping those last read: %s", exc)
                self.unreadable = str(exc)
                return
            self.unreadable = None
            error = self.holder.set_runtime(overrides, replacement)
            self.revision = revision
        if error and self.on_error is not None:
            self.on_error(error)
