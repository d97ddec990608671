"""The pieces both CLIs share: exit codes of HTTP answers, flags in refusals, targets, times."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.cli.common import Exit, gateway_error, http_error, status_exit
from gateway.cli.render import target_text
from gateway.errors import ConfigError, GatewayError, InvalidToken, RequestError, StoreError
from gateway.store.approvals import StateConflict
from gateway.times import format_duration, rfc3339, with_time


@pytest.mark.parametrize(("status", "code"), [
    (400, Exit.USAGE), (401, Exit.UNAUTHENTICATED), (403, Exit.DENIED), (404, Exit.DENIED), (409, Exit.DENIED),
    (422, Exit.DENIED), (429, Exit.UNAVAILABLE), (500, Exit.UNAVAILABLE), (503, Exit.UNAVAILABLE),
])
def test_each_http_answer_has_one_exit_code(status: int, code: Exit) -> None:
    assert status_exit(status) == code == http_error(status, "why").exit_code


def test_a_bad_value_names_the_flag_the_person_typed() -> None:
    error = http_error(400, "expires_in_s must be above 0 and at most 86400 seconds (24h)", {"expires_in_s": "--for"})
    assert error.message == "--for must be above 0 and at most 86400 seconds (24h) (400)"
    # only a leading field name is a field: a refusal's prose is left as the server wrote it
    refused = http_error(403, "user alice (role intern) may not grant break-glass roles", {"user": "USER"})
    assert "forbidden: user alice" in refused.message and refused.exit_code == Exit.DENIED
    assert http_error(400, "username is taken", {"user": "USER"}).message == "username is taken (400)"


@pytest.mark.parametrize(("error", "code"), [
    (RequestError("bad manifest"), Exit.USAGE), (ConfigError("bad flag"), Exit.USAGE),
    (StoreError("database down"), Exit.UNAVAILABLE), (InvalidToken("expired"), Exit.UNAUTHENTICATED),
    (StateConflict("not pending"), Exit.DENIED),
])
def test_gateway_errors_map_to_the_same_codes(error: GatewayError, code: Exit) -> None:
    assert gateway_error(error).exit_code == code


@pytest.mark.parametrize(("kind", "namespace", "name", "shown"), [
    ("PyTorchJob", "research", "llm-70b", "PyTorchJob research/llm-70b"),
    ("Grant", "", "alice", "Grant alice"),
    ("Policy", "", "policy/bundle", "Policy bundle"),
    ("Setting", "", "quota/team:vision", "Quota team:vision"),
    ("Setting", "", "binding/user:zoe", "RoleBinding user:zoe"),
    ("Setting", "", "webhook/validating/gpu-gateway", "WebhookBaseline validating/gpu-gateway"),
    ("Approval", "research", "Job/big-run", "Approval Job research/big-run"),
    ("Approval", "", "Policy/7d36f59cfd892ecc", "Approval Policy 7d36f59cfd892ecc"),
    ("Policy", "", "7d36f59cfd892ecc", "Policy 7d36f59cfd892ecc"),
    ("AuditCheckpoint", "", "gpu-gateway-0", "AuditCheckpoint gpu-gateway-0"),
    ("ValidatingWebhookConfiguration", "", "gpu-gateway", "ValidatingWebhookConfiguration gpu-gateway"),
])
def test_targets_print_as_kind_and_name(kind: str, namespace: str, name: str, shown: str) -> None:
    assert target_text(kind, namespace, name) == shown


def test_records_carry_rfc3339_time_beside_ts() -> None:
    ts = dt.datetime(2026, 12, 2, 10, 0, 0, 900_000, tzinfo=dt.UTC).timestamp()
    record = with_time({"seq": 1, "ts": ts, "user": "alice"})
    assert list(record) == ["seq", "ts", "time", "user"]
    assert record["time"] == "2026-12-02T10:00:00Z" and record["ts"] == ts
    assert with_time({"seq": 1}) == {"seq": 1}
    assert rfc3339(1e300) is None and rfc3339(float("nan")) is None


@pytest.mark.parametrize(("seconds", "text"), [(86400, "24h"), (7 * 86400, "7d"), (1800, "30m"), (90, "90s"),
                                               (3 * 86400, "3d"), (1.5, "1.5s")])
def test_durations_read_as_people_write_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
