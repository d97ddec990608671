"""A large generated policy bundle: the shipped model and permissions, scaled-up bindings.

10,000 people bound by ``g, user:NAME, ROLE`` lines, 1,000 teams each with a
``g, group:NAME, ROLE`` line for its Kubernetes group and a concurrent-GPU cap in
limits.yaml. Roles are spread as a lab would have them (mostly researchers).
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from gateway.policy_bundle import default_policy_dir

ROLE_SHARES = (("researcher", 0.6), ("intern", 0.25), ("lead", 0.1), ("admin", 0.05))


@dataclass(frozen=True)
class LargeBundle:
    directory: Path
    users: list[tuple[str, str]]
    """(username, team) of every bound person."""
    roles: dict[str, str]
    """username -> role of its `user:` binding."""
    teams: list[str]
    g_lines: int
    p_lines: int


def _role(rnd: random.Random) -> str:
    x = rnd.random()
    for role, share in ROLE_SHARES:
        if x < share:
            return role
        x -= share
    return ROLE_SHARES[0][0]


def write_large_bundle(directory: Path, *, users: int = 10_000, teams: int = 1_000,
                       seed: int = 11) -> LargeBundle:
    """Write model.conf, policy.csv and limits.yaml into `directory` (created)."""
    rnd = random.Random(seed)
    source = default_policy_dir()
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "model.conf", directory / "model.conf")
    shipped = (source / "policy.csv").read_text()
    p_lines = sum(1 for line in shipped.splitlines() if line.startswith("p,"))

    team_names = [f"t{t:04d}" for t in range(teams)]
    people: list[tuple[str, str]] = []
    roles: dict[str, str] = {}
    lines = [shipped.rstrip("\n"), "", "# Generated: one group per team, one binding per person."]
    for team in team_names:
        lines.append(f"g, group:{team}-gpu-users, researcher")
    for u in range(users):
        name = f"u{u:05d}"
        team = team_names[u % teams]
        role = _role(rnd)
        people.append((name, team))
        roles[name] = role
        lines.append(f"g, user:{name}, {role}")
    (directory / "policy.csv").write_text("\n".join(lines) + "\n")

    limits = yaml.safe_load((source / "limits.yaml").read_text())
    limits["teams"] = {team: {"max_concurrent_gpus": rnd.choice((64, 128, 256, 512, 1024))}
                       for team in team_names}
    (directory / "limits.yaml").write_text(yaml.safe_dump(limits, sort_keys=False))
    g_lines = sum(1 for line in shipped.splitlines() if line.startswith("g,")) + teams + users
    return LargeBundle(directory, people, roles, team_names, g_lines, p_lines)
