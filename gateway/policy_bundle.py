"""Load the operator's policy bundle (model.conf, policy.csv, limits.yaml) into a Policy.

This is the adapter around casbin: casbin evaluates the model once per (role, action,
scope) and resolves role bindings; the result is the plain `Policy` the core decides with.
The same limits.yaml carries the telemetry settings (`telemetry`), which are compiled beside
the policy rather than into it: admission never reads them. `PolicyHolder` keeps the last
good bundle when a changed one fails to load.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import shutil
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import casbin
import yaml

from gateway.admission.actors import Actors, parse_actors
from gateway.admission.decision import Mode
from gateway.admission.dra import DEFAULT_ALL_DEVICES_COUNT, DEFAULT_GPU_DEVICE_CLASSES, DraPolicy
from gateway.admission.kinds import KindRegistry, parse_kinds
from gateway.admission.overrides import Overrides, apply
from gateway.admission.podspec import DEFAULT_SAFE_CAPABILITIES, HATCHES
from gateway.admission.policy import POLICY_ACTIONS, RULES, SCOPES, Policy, RoleLimits, SecondPerson
from gateway.admission.quantity import MAX_GPUS
from gateway.admission.scheduling_settings import parse_scheduling
from gateway.admission.workloads import ADAPTERS, DEFAULT_GPU_RESOURCES, DEFAULT_NOT_GPU_RESOURCES
from gateway.errors import ConfigError
from gateway.logs import fields
from gateway.telemetry.settings import TelemetrySettings, parse_telemetry_settings

log = logging.getLogger("gateway.policy")

BUNDLE_FILES = ("model.conf", "policy.csv", "limits.yaml")


def default_policy_dir() -> Path:
    """The default bundle, `gateway/bundled_policies`: in a checkout a link to the repository's
    `policies/`, in an installed wheel a copy of it (package data)."""
    bundled = importlib.resources.files("gateway") / "bundled_policies"
    if isinstance(bundled, Path) and (bundled / "policy.csv").is_file():  # not a Path when imported from a zip
        return bundled.resolve()
    raise ConfigError("no default policy bundle in the installed package (gateway/bundled_policies); "
                      "pass --policy-dir")


def _opt_int(data: Mapping[str, Any], key: str, where: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}.{key} must be a non-negative integer or null, not {value!r}")
    return value


def _str_list(data: Mapping[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = data.get(key, list(default))
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"limits.yaml: {key} must be a list of strings")
    return tuple(value)


def _mapping(data: Any, where: str) -> Mapping[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping")
    return data


def _limits(raw: Mapping[str, Any]) -> dict[str, Any]:
    known = {
        "role_order", "roles", "teams", "default_team_max_concurrent_gpus", "team_group_prefix",
        "gpu_resources", "not_gpu_resources", "exempt_namespaces", "actors", "unowned_workloads", "modes",
        "safe_capabilities", "allowed_schedulers", "ignored_references", "second_person", "telemetry",
        "scheduling", "workload_kinds", "dra", "max_gpu_termination_grace_seconds",
    }
    if "trusted_controllers" in raw:
        raise ConfigError("limits.yaml: trusted_controllers was replaced by actors: list each controller's exact "
                          "username with the kinds it creates (README, 'Who may act for whom')")
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"limits.yaml: unknown setting(s) {', '.join(unknown)}")
    try:
        actors = Actors(parse_actors(_mapping(raw.get("actors"), "limits.yaml: actors")))
    except ValueError as exc:
        raise ConfigError(f"limits.yaml: {exc}") from None
    roles: dict[str, RoleLimits] = {}
    for role, spec in _mapping(raw.get("roles"), "limits.yaml: roles").items():
        spec = _mapping(spec, f"limits.yaml: roles.{role}")
        extra = sorted(set(spec) - {"max_gpus_per_workload", "max_concurrent_gpus", "priority_classes",
                                    "escape_hatches"})
        if extra:
            raise ConfigError(f"limits.yaml: roles.{role}: unknown setting(s) {', '.join(extra)}")
        classes = spec.get("priority_classes")
        if classes is not None and (
            not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)
        ):
            raise ConfigError(f"limits.yaml: roles.{role}.priority_classes must be a list of strings")
        roles[str(role)] = RoleLimits(
            max_gpus_per_workload=_opt_int(spec, "max_gpus_per_workload", f"roles.{role}"),
            max_concurrent_gpus=_opt_int(spec, "max_concurrent_gpus", f"roles.{role}"),
            priority_classes=frozenset(classes) if classes is not None else None,
            escape_hatches=_hatches(spec.get("escape_hatches"), f"roles.{role}.escape_hatches"),
        )
    teams: dict[str, int] = {}
    for team, spec in _mapping(raw.get("teams"), "limits.yaml: teams").items():
        cap = _opt_int(_mapping(spec, f"limits.yaml: teams.{team}"), "max_concurrent_gpus", f"teams.{team}")
        if cap is not None:
            teams[str(team)] = cap
    modes: dict[str, Mode] = {}
    for rule, mode in _mapping(raw.get("modes"), "limits.yaml: modes").items():
        if rule not in RULES:
            raise ConfigError(f"limits.yaml: modes: unknown rule {rule!r} (rules: {', '.join(RULES)})")
        try:
            modes[rule] = Mode(mode)
        except ValueError:
            raise ConfigError(f"limits.yaml: modes.{rule}: {mode!r} is not enforce, warn or dry-run") from None
    unowned = _mapping(raw.get("unowned_workloads"), "limits.yaml: unowned_workloads")
    prefix = raw.get("team_group_prefix", "team:")
    if not isinstance(prefix, str) or not prefix:
        raise ConfigError("limits.yaml: team_group_prefix must be a non-empty string")
    return {
        "role_order": _str_list(raw, "role_order", ()),
        "limits": roles,
        "team_caps": teams,
        "default_team_cap": _opt_int(raw, "default_team_max_concurrent_gpus", "limits.yaml"),
        "team_prefix": prefix,
        "gpu_resources": _str_list(raw, "gpu_resources", DEFAULT_GPU_RESOURCES),
        "not_gpu_resources": _str_list(raw, "not_gpu_resources", DEFAULT_NOT_GPU_RESOURCES),
        "exempt_namespaces": frozenset(_str_list(raw, "exempt_namespaces", ("kube-system",))),
        "actors": actors,
        "unowned_roles": frozenset(_str_list(unowned, "allow_roles", ())),
        "modes": modes,
        "safe_capabilities": frozenset(c.upper() for c in _str_list(raw, "safe_capabilities",
                                                                   tuple(DEFAULT_SAFE_CAPABILITIES))),
        "allowed_schedulers": frozenset(_str_list(raw, "allowed_schedulers", ("default-scheduler",))),
        "ignored_references": _references(_str_list(raw, "ignored_references", ("ConfigMap/kube-root-ca.crt",))),
        "max_gpu_termination_grace_s": _opt_int(raw, "max_gpu_termination_grace_seconds", "limits.yaml"),
        "second_person": _second_person(raw.get("second_person")),
        "telemetry": _telemetry(raw.get("telemetry")),
        "scheduling": parse_scheduling(raw.get("scheduling")),
        "kinds": _workload_kinds(raw.get("workload_kinds")),
        "dra": _dra(raw.get("dra")),
    }


def _dra(value: Any) -> DraPolicy:
    """limits.yaml `dra`: the DRA device classes that are GPUs, and what `allocationMode: All` counts as."""
    spec = _mapping(value, "limits.yaml: dra")
    extra = sorted(set(spec) - {"gpu_device_classes", "all_devices_count"})
    if extra:
        raise ConfigError(f"limits.yaml: dra: unknown setting(s) {', '.join(map(str, extra))} "
                          "(known: gpu_device_classes, all_devices_count)")
    classes = spec.get("gpu_device_classes", list(DEFAULT_GPU_DEVICE_CLASSES))
    if not isinstance(classes, list) or not all(isinstance(c, str) and c.strip() == c and c for c in classes):
        raise ConfigError("limits.yaml: dra.gpu_device_classes must be a list of DeviceClass names or "
                          "shell-style patterns, such as [gpu.nvidia.com, mig.nvidia.com]")
    count = spec.get("all_devices_count", DEFAULT_ALL_DEVICES_COUNT)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_GPUS:
        raise ConfigError(f"limits.yaml: dra.all_devices_count must be a whole number of GPUs of at least 1 "
                          f"(the most GPUs a request for all devices of a class can get), not {count!r}")
    return DraPolicy(gpu_device_classes=tuple(classes), all_devices_count=count)


def _workload_kinds(value: Any) -> KindRegistry:
    """limits.yaml `workload_kinds`: the kinds an operator registered (admission/kinds.py)."""
    try:
        return parse_kinds(value, builtin=ADAPTERS)
    except ValueError as exc:
        raise ConfigError(f"limits.yaml: {exc}") from None


def _telemetry(value: Any) -> TelemetrySettings:
    """limits.yaml `telemetry`: the node agent's alert thresholds (docs/agent.md)."""
    try:
        return parse_telemetry_settings(value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _second_person(value: Any) -> SecondPerson:
    """limits.yaml `second_person`: thresholds above which a second person must approve (null: never)."""
    spec = _mapping(value, "limits.yaml: second_person")
    extra = sorted(set(spec) - {"launch_over_gpus", "kill_or_modify_others_over_gpus", "policy_change"})
    if extra:
        raise ConfigError(f"limits.yaml: second_person: unknown setting(s) {', '.join(extra)}")
    return SecondPerson(
        launch_over_gpus=_opt_int(spec, "launch_over_gpus", "second_person"),
        touch_others_over_gpus=_opt_int(spec, "kill_or_modify_others_over_gpus", "second_person"),
        policy_change=_flag(spec, "policy_change", True, "second_person"),
    )


def _flag(data: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"limits.yaml: {where}.{key} must be true or false, not {value!r}")
    return value


def _hatches(value: Any, where: str) -> frozenset[str]:
    """`[hostPath, privileged]`, or `["*"]` for every escape hatch."""
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"limits.yaml: {where} must be a list of escape hatch names")
    if "*" in value:
        return frozenset(HATCHES)
    unknown = sorted(set(value) - set(HATCHES))
    if unknown:
        raise ConfigError(f"limits.yaml: {where}: unknown escape hatch(es) {', '.join(unknown)} "
                          f"(known: {', '.join(HATCHES)})")
    return frozenset(value)


def _references(values: tuple[str, ...]) -> frozenset[tuple[str, str]]:
    out = set()
    for value in values:
        kind, _, name = value.partition("/")
        if kind not in ("PersistentVolumeClaim", "ConfigMap", "Secret") or not name:
            raise ConfigError(f"limits.yaml: ignored_references: {value!r} is not Kind/name "
                              "(PersistentVolumeClaim, ConfigMap or Secret)")
        out.add((kind, name))
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class CompiledBundle:
    """What one bundle compiles to: the admission policy, and the telemetry settings read from
    the same limits.yaml (`telemetry`), kept apart so that admission never depends on them."""

    policy: Policy
    telemetry: TelemetrySettings


#: The bundle files a policy replaced through the admin API holds (model.conf stays the files').
REPLACEABLE_FILES = ("policy.csv", "limits.yaml")


def read_bundle(directory: Path) -> dict[str, str]:
    """The texts of a bundle's files, by name."""
    try:
        return {name: (Path(directory) / name).read_text() for name in BUNDLE_FILES}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"policy bundle {directory}: {exc}") from exc


def load_replacement(directory: Path, texts: Mapping[str, str]) -> CompiledBundle:
    """Compile `directory`'s model.conf with policy.csv and limits.yaml from `texts`."""
    missing = [name for name in REPLACEABLE_FILES if not isinstance(texts.get(name), str)]
    if missing:
        raise ConfigError(f"a policy replacement needs {' and '.join(missing)}")
    with tempfile.TemporaryDirectory(prefix="gpu-gateway-policy-") as tmp:
        shutil.copyfile(Path(directory) / "model.conf", Path(tmp) / "model.conf")
        for name in REPLACEABLE_FILES:
            (Path(tmp) / name).write_text(texts[name])
        return compile_bundle(Path(tmp))


# casbin parses its matcher with ast.parse on every enforce, and CPython 3.11's parser is
# not safe to run in two threads at once ("AST constructor recursion depth mismatch"):
# bundles are compiled one at a time. Decisions never call casbin, so this costs nothing there.
_COMPILING = threading.Lock()


def compile_bundle(directory: Path) -> CompiledBundle:
    """Read and compile a bundle; raise ConfigError naming the file and the problem."""
    with _COMPILING:
        return _compile_bundle(Path(directory))


def load_bundle(directory: Path) -> Policy:
    """The admission policy of a bundle (`compile_bundle`, for callers that decide only)."""
    return compile_bundle(directory).policy


def _compile_bundle(directory: Path) -> CompiledBundle:
    digest = hashlib.sha256()
    for name in BUNDLE_FILES:
        path = directory / name
        if not path.is_file():
            raise ConfigError(f"policy bundle {directory}: {name} is missing")
        digest.update(path.read_bytes())
    try:
        raw = yaml.safe_load((directory / "limits.yaml").read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"limits.yaml: {exc}") from exc
    settings = _limits(_mapping(raw, "limits.yaml"))
    try:
        enforcer = casbin.Enforcer(str(directory / "model.conf"), str(directory / "policy.csv"))
    except Exception as exc:  # casbin raises plain Exceptions of many kinds
        raise ConfigError(f"policy.csv/model.conf: casbin could not load them: {exc}") from exc
    for line in enforcer.get_policy():
        if len(line) < 3 or line[1] not in POLICY_ACTIONS or line[2] not in SCOPES:
            raise ConfigError(
                f"policy.csv: p, {', '.join(line)}: action must be one of {', '.join(POLICY_ACTIONS)} "
                f"and scope one of {', '.join(SCOPES)}"
            )
    roles = {line[0] for line in enforcer.get_policy()}
    subjects = set()
    for line in enforcer.get_grouping_policy():
        if len(line) < 2:
            raise ConfigError(f"policy.csv: g, {', '.join(line)}: needs a subject and a role")
        subjects.add(line[0])
        roles.add(line[1])
    for s in subjects:
        if not s.startswith(("group:", "user:")) and s not in roles:
            raise ConfigError(f"policy.csv: g, {s}: subjects are group:NAME, user:NAME or a role")
    telemetry: TelemetrySettings = settings.pop("telemetry")
    role_order = settings.pop("role_order") or tuple(sorted(roles))
    missing = sorted(roles - set(role_order) - {s for s in subjects if s.startswith(("group:", "user:"))})
    if missing:
        raise ConfigError(f"limits.yaml: role_order does not list role(s) {', '.join(missing)}")
    permissions = frozenset(
        (role, action, scope)
        for role in role_order
        for action in POLICY_ACTIONS
        for scope in SCOPES
        if enforcer.enforce(role, action, scope)
    )
    bindings = {
        s: frozenset(enforcer.get_implicit_roles_for_user(s))
        for s in subjects
        if s.startswith(("group:", "user:"))
    }
    policy = Policy(
        bindings=bindings,
        role_order=tuple(role_order),
        permissions=permissions,
        version=digest.hexdigest()[:16],
        **settings,
    )
    return CompiledBundle(policy, telemetry)


def _fingerprint(directory: Path) -> tuple[float, ...]:
    out: list[float] = []
    for name in BUNDLE_FILES:
        try:
            st = (directory / name).stat()
            out.extend((st.st_mtime_ns, st.st_size))
        except OSError:
            out.extend((-1, -1))
    return tuple(out)


@dataclass
class ReloadResult:
    changed: bool
    error: str | None = None


class PolicyHolder:
    """The policy in force, reloaded when the bundle changes; the last good one is kept.

    Run-time settings from the store (`set_runtime`) are layered over it: a policy that
    replaced the bundle through the admin API takes the place of the files' policy.csv and
    limits.yaml, and role bindings and quotas override what the bundle says. The telemetry
    settings of the bundle in force (`telemetry`) are held beside the policy.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._fingerprint = _fingerprint(self.directory)
        self._files: CompiledBundle = compile_bundle(self.directory)
        self._replacement: tuple[Mapping[str, str], CompiledBundle] | None = None
        self._overrides = Overrides()
        self.policy: Policy = self._files.policy
        self.telemetry: TelemetrySettings = self._files.telemetry
        """limits.yaml `telemetry` of the bundle in force, for telemetry ingest (no run-time overrides)."""
        self.last_error: str | None = None
        self.reloads = 0
        self.failures = 0

    @property
    def bundle(self) -> Policy:
        """The policy before run-time role bindings and quotas."""
        return self._in_force().policy

    @property
    def replaced(self) -> Mapping[str, str] | None:
        """The policy.csv and limits.yaml that replaced the files through the admin API, if any."""
        return self._replacement[0] if self._replacement else None

    def _in_force(self) -> CompiledBundle:
        return self._replacement[1] if self._replacement else self._files

    def _compose(self) -> None:
        compiled = self._in_force()
        self.policy = apply(compiled.policy, self._overrides)
        self.telemetry = compiled.telemetry

    def set_runtime(self, overrides: Overrides, replacement: Mapping[str, str] | None) -> str | None:
        """Put the store's settings in force; returns the error that kept the last good ones."""
        with self._lock:
            error = None
            if replacement is None:
                self._replacement = None
            elif self._replacement is None or dict(self._replacement[0]) != dict(replacement):
                try:
                    self._replacement = (dict(replacement), load_replacement(self.directory, replacement))
                except ConfigError as exc:
                    error = f"stored policy: {exc}"
            self._overrides = overrides
            self._compose()
            self._note(error)
            return error

    def _note(self, error: str | None) -> None:
        if error:
            self.failures += 1
            self.last_error = error
            log.error("policy reload failed; keeping version %s in force: %s",
                      self.policy.version, error, extra=fields(event="policy_reload_failed"))
        else:
            self.last_error = None

    def reload(self, *, force: bool = False) -> ReloadResult:
        with self._lock:
            fingerprint = _fingerprint(self.directory)
            if not force and fingerprint == self._fingerprint:
                return ReloadResult(changed=False)
            self._fingerprint = fingerprint
            try:
                files = compile_bundle(self.directory)
                replacement = self._replacement and (
                    self._replacement[0], load_replacement(self.directory, self._replacement[0]))
            except ConfigError as exc:
                self._note(str(exc))
                return ReloadResult(changed=False, error=str(exc))
            old = self.policy.version
            self._files, self._replacement = files, replacement or None
            self._compose()
            self._note(None)
            self.reloads += 1
            log.info("policy reloaded: %s -> %s", old, self.policy.version, extra=fields(event="policy_reloaded"))
            return ReloadResult(changed=True)
