"""odxtarget[lio] installed over Debian 12's own packages: pip must find pyproject's version
ranges met by python3-crc32c, python3-uvloop, python3-configshell-fb, python3-pyparsing,
python3-rtslib-fb and python3-pyudev (a venv with --system-site-packages, as
docs/deployment.md describes) and install none of them again; then the daemon serves and
odxtargetcli drives it on those versions.

scripts/setup installs the Debian packages. Where they (or Debian's python3) are missing this
skips; under CI=true it fails.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.packaging.venvs import clean_environment, copy_checkout, pip_install, run, unavailable
from tests.support.daemon import free_port, port_accepts

pytestmark = pytest.mark.slow

SYSTEM_PYTHON = Path("/usr/bin/python3")
SYSTEM_SITE = "/usr/lib/python3/dist-packages"
#: Distribution name -> Debian package.
FROM_DEBIAN = {
    "crc32c": "python3-crc32c",
    "uvloop": "python3-uvloop",
    "configshell-fb": "python3-configshell-fb",
    "pyparsing": "python3-pyparsing",
    "rtslib-fb": "python3-rtslib-fb",
    "pyudev": "python3-pyudev",
}
START_TIMEOUT = 60.0
DEMO_IQN = "iqn.2026-11.org.odxtarget:demo"


def missing_debian_packages() -> list[str]:
    missing = []
    for package in FROM_DEBIAN.values():
        status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
        if status.stdout != "install ok installed":
            missing.append(package)
    return missing


@pytest.fixture(scope="module")
def debian_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A --system-site-packages venv of Debian's python3 with odxtarget[lio] installed; its
    bin directory and pip's output."""
    if not SYSTEM_PYTHON.exists():
        unavailable(f"no {SYSTEM_PYTHON} (Debian's python3)")
    try:
        missing = missing_debian_packages()
    except FileNotFoundError:
        unavailable("not a Debian system (no dpkg-query)")
    if missing:
        unavailable(f"Debian packages missing (scripts/setup installs them): {' '.join(missing)}")
    base = tmp_path_factory.mktemp("debian")
    source = copy_checkout(base)
    made = subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--system-site-packages", str(base / "venv")],
                          capture_output=True, text=True, timeout=300)
    if made.returncode != 0:
        unavailable(f"cannot create a venv with {SYSTEM_PYTHON} (python3-venv): {made.stderr.strip()}")
    bin_dir = base / "venv" / "bin"
    return bin_dir, pip_install(bin_dir, f"{source}[lio]", cwd=base)


def test_pip_takes_every_dependency_debian_packages_from_debian(debian_venv):
    _, output = debian_venv
    for distribution in FROM_DEBIAN:
        assert re.search(rf"Requirement already satisfied: {re.escape(distribution)}\S* in {SYSTEM_SITE}",
                         output, re.IGNORECASE), f"{distribution} not taken from Debian:\n{output}"
    installed = re.search(r"Successfully installed (.*)", output)
    assert installed is not None, output
    reinstalled = [name for name in installed.group(1).split() if name.rsplit("-", 1)[0].lower() in FROM_DEBIAN]
    assert reinstalled == [], output


def test_the_lio_front_end_resolves_debians_rtslib(debian_venv, tmp_path):
    bin_dir, _ = debian_venv
    script = ("import rtslib_fb, pyudev; from odxtarget.transport.tcmu.lio_config import not_in_configfs_error;"
              "error = not_in_configfs_error(rtslib_fb); assert issubclass(error, rtslib_fb.RTSLibError);"
              "print(rtslib_fb.__file__, error.__name__)")
    result = run(bin_dir, "python", "-c", script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    path, name = result.stdout.split()
    assert path.startswith(SYSTEM_SITE)
    assert name in ("RTSLibNotInCFS", "RTSLibNotInCFSError")


def test_the_daemon_serves_and_the_shell_drives_it_on_debians_packages(debian_venv, tmp_path):
    bin_dir, _ = debian_venv
    port = free_port()
    made = run(bin_dir, "odxtarget", "demo-config", "--dir", str(tmp_path), "--port", str(port), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    control = tmp_path / "control.sock"
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        daemon = subprocess.Popen([str(bin_dir / "odxtarget"), "serve", "--config", str(tmp_path / "odxtarget.json"),
                                   "--control-socket", str(control)],
                                  cwd=tmp_path, env=clean_environment(), stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (control.exists() and port_accepts("127.0.0.1", port)):
            assert daemon.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        listing = run(bin_dir, "odxtargetcli", "--socket", str(control), "ls", cwd=tmp_path)
        assert listing.returncode == 0, listing.stderr
        assert DEMO_IQN in listing.stdout and "disk0" in listing.stdout
        level = run(bin_dir, "odxtargetcli", "--socket", str(control), "loglevel", cwd=tmp_path)
        assert level.stdout.strip() == "log level: info", level
        versions = run(bin_dir, "python", "-c", "import uvloop, configshell_fb;"
                       "print(uvloop.__file__.startswith('/usr/lib/python3/'),"
                       " configshell_fb.__file__.startswith('/usr/lib/python3/'))", cwd=tmp_path)
        assert versions.stdout.split() == ["True", "True"], versions
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        status = daemon.wait(60)
    assert status == 0, log_path.read_text()
    assert "Traceback" not in log_path.read_text()
