"""The wheel as a user installs it: built from the sources the image copies, installed
non-editable into a fresh virtual environment, run from a folder with no `policies/` in it.

Nothing is downloaded: the wheel is built with the setuptools already installed (the test
extras), and installed with `--no-deps` into a venv that sees this interpreter's packages.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "gateway", "policies")
"""What the Dockerfile copies to build the image: the wheel must need nothing else."""

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]

JOB = """\
apiVersion: batch/v1
kind: Job
metadata: {name: big, namespace: research}
spec:
  parallelism: 4
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: main, image: busybox, resources: {limits: {nvidia.com/gpu: 8}}}
"""


def _run(*args: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, dict[str, str]]]:
    """(the venv's bin/, an empty working folder, the environment to run in)."""
    root = tmp_path_factory.mktemp("packaging")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_NO_INDEX"] = "1"  # nothing comes from a package index
    env["HOME"] = str(root)
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir",
                 root / "dist", src, cwd=root, env=env)
    assert built.returncode == 0, (
        f"cannot build the wheel (the test extras bring the setuptools that builds it):\n{built.stderr}")
    wheels = list((root / "dist").glob("gpu_gateway-*.whl"))
    assert len(wheels) == 1, wheels
    venv = root / "venv"
    # Without pip of its own: this interpreter's pip, seen through --system-site-packages, installs into it.
    made = _run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv, cwd=root, env=env)
    assert made.returncode == 0, made.stderr
    pip = _run(venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-build-isolation",
               "--force-reinstall", wheels[0], cwd=root, env=env)
    assert pip.returncode == 0, pip.stderr
    work = root / "work"
    work.mkdir()
    yield venv / "bin", work, env


def test_the_installed_package_is_the_wheel_not_the_checkout(installed: tuple[Path, Path, dict[str, str]]) -> None:
    bin_dir, work, env = installed
    where = _run(bin_dir / "python", "-c", "import gateway, gateway.policy_bundle as b; "
                 "print(gateway.__file__); print(b.default_policy_dir())", cwd=work, env=env)
    assert where.returncode == 0, where.stderr
    package, bundle = (Path(line) for line in where.stdout.splitlines())
    venv = bin_dir.parent
    assert package.is_relative_to(venv), package
    assert bundle.is_relative_to(venv) and bundle.name == "bundled_policies", bundle
    assert sorted(p.name for p in bundle.iterdir()) == sorted(p.name for p in (REPO / "policies").iterdir())
    assert not (work / "policies").exists()


def test_both_commands_print_their_name_and_version(installed: tuple[Path, Path, dict[str, str]]) -> None:
    bin_dir, work, env = installed
    for name in ("gpu-gateway", "gpuctl"):
        out = _run(bin_dir / name, "--version", cwd=work, env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout == f"{name} {VERSION}\n"


def test_the_demo_runs_on_the_bundled_policy(installed: tuple[Path, Path, dict[str, str]]) -> None:
    bin_dir, work, env = installed
    out = _run(bin_dir / "gpu-gateway", "demo", cwd=work, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Every step went as the policy says." in out.stdout
    assert "audit chain intact: 5 records verified" in out.stdout


def test_check_decides_with_the_bundled_policy(installed: tuple[Path, Path, dict[str, str]]) -> None:
    bin_dir, work, env = installed
    (work / "job.yaml").write_text(JOB)
    out = _run(bin_dir / "gpu-gateway", "check", "--user", "alice", "--group", "gpu-interns", "-f", "job.yaml",
               cwd=work, env=env)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "DENIED" in out.stdout and "workload-gpu-limit" in out.stdout


def test_serve_starts_on_the_bundled_policy(installed: tuple[Path, Path, dict[str, str]]) -> None:
    bin_dir, work, env = installed
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = work / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([str(bin_dir / "gpu-gateway"), "serve", "--insecure-http", "--host", "127.0.0.1",
                                 "--port", str(port)], cwd=work, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        ready = None
        deadline = time.monotonic() + 30
        while ready is None and proc.poll() is None and time.monotonic() < deadline:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
            except httpx.HTTPError:
                time.sleep(0.1)
        assert ready is not None, log.read_text()
        assert ready.status_code == 200 and ready.text == "ok", ready.text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()
