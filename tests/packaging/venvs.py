"""Fresh virtual environments with the checkout installed by pip, for the packaging tests.

Where no virtual environment can be made, or pip cannot reach the package index, the tests
skip; under CI=true they fail (a package that does not install must not pass CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT = 900
COMMAND_TIMEOUT = 120
NETWORK_TROUBLE = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
                   "ConnectTimeoutError", "No matching distribution found")
NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "run", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".hypothesis", "bench-results", "*.img")


def unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but the package cannot be installed here: {reason}")
    pytest.skip(reason)


def clean_environment() -> dict[str, str]:
    """The caller's environment without what would make the checkout importable or pick
    another interpreter's packages."""
    return {key: value for key, value in os.environ.items()
            if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}


def copy_checkout(base: Path) -> Path:
    """The checkout's files under ``base`` (pip builds in the source tree it is given)."""
    source = base / "odxtarget-src"
    shutil.copytree(REPO_ROOT, source, ignore=NOT_COPIED)
    return source


def pip_install(bin_dir: Path, requirement: str, cwd: Path) -> str:
    """``pip install requirement`` in the venv of ``bin_dir``; pip's output."""
    result = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                             requirement],
                            capture_output=True, text=True, timeout=INSTALL_TIMEOUT, cwd=cwd,
                            env=clean_environment())
    output = result.stdout + result.stderr
    if result.returncode != 0:
        if any(sign in output for sign in NETWORK_TROUBLE):
            unavailable(f"pip cannot reach the package index:\n{output[-3000:]}")
        pytest.fail(f"pip install {requirement} failed:\n{output[-6000:]}")
    return output


def run(bin_dir: Path, *argv: str, cwd: Path, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
    """A command of the venv (``odxtarget``, ``python``...) with a clean environment."""
    return subprocess.run([str(bin_dir / argv[0]), *argv[1:]], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=clean_environment())
