"""Kubernetes resource quantities, as GPU counts.

Parsing is delegated to the Kubernetes client's own parser so that `8`, `"1k"` and
`"8000m"` mean here exactly what they mean to the API server. GPUs are whole devices:
a quantity that is not a whole, non-negative number is refused.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from functools import lru_cache

from kubernetes.utils.quantity import parse_quantity

from gateway.errors import WorkloadError

#: Larger GPU counts than this are refused as absurd (and would overflow a 64-bit ledger).
MAX_GPUS = 2**48


def gpu_count(value: object, resource: str = "gpu") -> int:
    """Return the whole number of devices a quantity asks for, or raise WorkloadError."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise WorkloadError(f"{resource}: quantity {value!r} is not a Kubernetes quantity")
    return _gpu_count(value, resource)


@lru_cache(maxsize=4096)
def _gpu_count(value: str | int | float, resource: str) -> int:
    try:
        amount = parse_quantity(value)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, InvalidOperation) as exc:
        raise WorkloadError(f"{resource}: {value!r} is not a Kubernetes quantity") from exc
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise WorkloadError(f"{resource}: {value!r} is not a finite quantity")
    if amount < 0:
        raise WorkloadError(f"{resource}: {value!r} is negative")
    if amount != amount.to_integral_value():
        raise WorkloadError(
            f"{resource}: {value!r} is a fractional GPU count; GPUs are whole devices"
        )
    count = int(amount)
    if count > MAX_GPUS:
        raise WorkloadError(f"{resource}: {value!r} is an absurd GPU count")
    return count
