"""``pip install .`` into a fresh virtual environment gives working ``odxtarget`` and
``odxtargetcli`` commands, with the license and version ranges of pyproject.toml.

The checkout is copied first (pip builds in the source tree), and pip's cache makes a rerun
quick. Where no virtual environment can be made or PyPI cannot be reached this skips; under
CI=true it fails (tests/packaging/venvs.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

from tests.packaging.venvs import REPO_ROOT, copy_checkout, pip_install, run, unavailable

pytestmark = pytest.mark.slow

SAMPLE_CONFIG = REPO_ROOT / "examples" / "demo.json"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the checkout installed by ``pip install .``; its bin directory."""
    base = tmp_path_factory.mktemp("pip-install")
    source = copy_checkout(base)
    environment_dir = base / "venv"
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(environment_dir)
    except (OSError, subprocess.CalledProcessError) as error:
        unavailable(f"cannot create a virtual environment with pip: {error}")
    bin_dir = environment_dir / "bin"
    pip_install(bin_dir, str(source), cwd=base)
    return bin_dir


def test_the_installed_package_comes_from_the_venv_not_the_checkout(installed, tmp_path):
    result = run(installed, "python", "-c", "import odxtarget; print(odxtarget.__file__)", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(installed.parent), result.stdout


def test_odxtarget_help_and_version(installed, tmp_path):
    result = run(installed, "odxtarget", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for command in ("serve", "check-config", "demo-config", "copy"):
        assert command in result.stdout
    version = run(installed, "odxtarget", "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("odxtarget "), version


def test_odxtarget_check_config_validates_the_sample(installed, tmp_path):
    config = tmp_path / "demo.json"
    shutil.copy(SAMPLE_CONFIG, config)
    result = run(installed, "odxtarget", "check-config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{config}: OK: 2 storage objects, 1 target, 2 LUNs")
    config.write_text('{"schema_version": 1, "targets": [{"iqn": "nope"}]}')
    bad = run(installed, "odxtarget", "check-config", str(config), cwd=tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.startswith(f"odxtarget: error: {config}: targets[0].iqn:")


def test_odxtargetcli_help(installed, tmp_path):
    result = run(installed, "odxtargetcli", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: odxtargetcli")
    assert "--socket PATH" in result.stdout


def test_the_metadata_carries_the_license_and_version_ranges(installed, tmp_path):
    script = ("import importlib.metadata as m, json; d = m.metadata('odxtarget');"
              "print(json.dumps({'license': d['License-Expression'], 'requires': d.get_all('Requires-Dist'),"
              " 'files': [str(f) for f in m.files('odxtarget') if 'LICENSE' in str(f)]}))")
    result = run(installed, "python", "-c", script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metadata = json.loads(result.stdout)
    assert metadata["license"] == "Apache-2.0"
    assert metadata["files"], "the LICENSE file is not in the installed distribution"
    runtime = {entry.replace(" ", "") for entry in metadata["requires"] if "extra" not in entry}
    assert "uvloop<1,>=0.17" in runtime or "uvloop>=0.17,<1" in runtime, runtime
    assert not any("==" in entry for entry in runtime), runtime
    lio = {entry.split(";")[0].replace(" ", "") for entry in metadata["requires"] if "lio" in entry}
    assert lio == {"rtslib-fb<3,>=2.1.75", "pyudev<1,>=0.24"}, lio
