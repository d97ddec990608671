"""Kubernetes resource quantities, as GPU counts.

Parsing is delegated to the Kubernetes client's own parser so that `8`, `"1k"` and
`"8000m"` mean here exactly what they mean to the API server. GPUs are whole devices:
a quantity that is not a whole, non-negative number is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from functools import lru_cache

from kubernetes.utils.quantity import parse_quantity

from gateway.errors import WorkloadError

#: Larger GPU counts than this are refused as absurd (and would overflow a 64-bit ledger).
MAX_GPUS = 2**48

#: Replica counts above this are refused as absurd before any arithmetic.
MAX_REPLICAS = 2**31 - 1

#: Longer quantity strings are parsed but not cached (a cache of huge keys is a memory leak).
_CACHED_LENGTH = 64

_parse: Callable[[str | int | float], object] = parse_quantity


#: The API server's quantity syntax (its OpenAPI pattern). Python's Decimal, under the client's
#: parser, also takes surrounding spaces, `_` separators and non-ASCII digits (`"8 "`, a
#: full-width eight): those are refused here as the API server refuses them.
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_SYNTAX = re.compile(rf"[+-]?{_NUMBER}(?:[KMGTPE]i|[numkMGTPE]|[eE][+-]?{_NUMBER})?")


def replica_count(value: object, where: str) -> int:
    """A replica-like count: an integer from 0 to MAX_REPLICAS, else a WorkloadError naming `where`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise WorkloadError(f"{where} must be an integer, not {value!r}")
    if value < 0:
        raise WorkloadError(f"{where} must not be negative ({value})")
    if value > MAX_REPLICAS:
        raise WorkloadError(f"{where} is absurdly large ({value})")
    return value


def gpu_count(value: object, resource: str = "gpu") -> int:
    """Return the whole number of devices a quantity asks for, or raise WorkloadError."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise WorkloadError(f"{resource}: quantity {_show(value)} is not a Kubernetes quantity")
    try:
        if isinstance(value, str) and len(value) > _CACHED_LENGTH:
            return _gpu_count(value)
        return _gpu_count_cached(value)
    except WorkloadError as exc:
        # The count is cached by value alone; the resource is named only in the message.
        raise WorkloadError(f"{resource}: {exc}") from exc


def _gpu_count(value: str | int | float) -> int:
    """The whole devices in `value`; a WorkloadError's text does not name the resource. A string
    is checked against the API server's syntax here, so that a cached count skips the check."""
    if isinstance(value, str) and not _SYNTAX.fullmatch(value):
        raise WorkloadError(f"quantity {_show(value)} is not a Kubernetes quantity")
    try:
        amount = _parse(value)
    except (ValueError, TypeError, ArithmeticError) as exc:  # decimal errors are ArithmeticError
        raise WorkloadError(f"{_show(value)} is not a Kubernetes quantity") from exc
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise WorkloadError(f"{_show(value)} is not a finite quantity")
    if amount < 0:
        raise WorkloadError(f"{_show(value)} is negative")
    # Before any integer conversion: int(Decimal("1e999999999")) would build a huge integer.
    if amount > MAX_GPUS:
        raise WorkloadError(f"{_show(value)} is an absurd GPU count")
    if amount != amount.to_integral_value():
        raise WorkloadError(f"{_show(value)} is a fractional GPU count; GPUs are whole devices")
    return int(amount)


_gpu_count_cached = lru_cache(maxsize=4096)(_gpu_count)


def _show(value: object) -> str:
    """`repr` for a message, cut short: a quantity may be megabytes long."""
    try:
        text = repr(value)
    except ValueError:  # an integer beyond Python's int-to-str digit limit
        return "(a huge number)"
    return text if len(text) <= 40 else f"{text[:32]}...({len(text)} chars)"
