"""The telemetry settings come from the bundle's limits.yaml (`telemetry`) and are held beside
the admission policy: reloaded with it, replaced with it, and refused with it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from gateway.admission.overrides import Overrides
from gateway.errors import ConfigError
from gateway.policy_bundle import PolicyHolder, compile_bundle
from gateway.telemetry.settings import TelemetrySettings

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def _limits_with(telemetry: dict[str, object]) -> str:
    limits = yaml.safe_load((POLICIES / "limits.yaml").read_text())
    limits["telemetry"] = {**limits["telemetry"], **telemetry}
    return yaml.safe_dump(limits)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    shutil.copytree(POLICIES, directory)
    return directory


def test_the_bundles_telemetry_settings_are_held_beside_its_policy(bundle: Path) -> None:
    (bundle / "limits.yaml").write_text(_limits_with({"idle_after_s": 600, "evict_rogue_pods": True}))
    compiled = compile_bundle(bundle)
    assert compiled.telemetry == TelemetrySettings(idle_after_s=600, evict_rogue_pods=True)
    holder = PolicyHolder(bundle)
    assert holder.telemetry == compiled.telemetry
    assert holder.policy.version == compiled.policy.version


def test_a_reload_changes_the_telemetry_settings_and_a_bad_one_keeps_the_last_good(bundle: Path) -> None:
    holder = PolicyHolder(bundle)
    assert holder.telemetry == TelemetrySettings()
    (bundle / "limits.yaml").write_text(_limits_with({"collapse_min_pods": 8}))
    assert holder.reload(force=True).changed
    assert holder.telemetry.collapse_min_pods == 8
    (bundle / "limits.yaml").write_text(_limits_with({"idle_after_s": -1}))
    result = holder.reload(force=True)
    assert not result.changed
    assert result.error == "limits.yaml: telemetry.idle_after_s must be a number from 0.0 to 2592000.0, not -1"
    assert holder.telemetry.collapse_min_pods == 8


def test_a_policy_replaced_through_the_api_brings_its_telemetry_settings(bundle: Path) -> None:
    holder = PolicyHolder(bundle)
    replacement = {"policy.csv": (bundle / "policy.csv").read_text(),
                   "limits.yaml": _limits_with({"evict_rogue_pods": True})}
    assert holder.set_runtime(Overrides(), replacement) is None
    assert holder.telemetry.evict_rogue_pods
    assert holder.set_runtime(Overrides(), None) is None
    assert not holder.telemetry.evict_rogue_pods


def test_a_bundle_with_a_bad_telemetry_setting_is_refused_naming_it(bundle: Path) -> None:
    (bundle / "limits.yaml").write_text(_limits_with({"collapse_to_pct": 60}))
    with pytest.raises(ConfigError) as refused:
        compile_bundle(bundle)
    assert str(refused.value) == "limits.yaml: telemetry.collapse_to_pct must be below collapse_from_pct"
