"""Fixtures of the ODX integration tests: a real daemon whose LUN images and state_dir live on
XFS (reflink=1, the snapshot token path) or on ext4 (the cancel-on-write path).

``filesystem`` parametrizes a test over both; ``start_daemon(spec)`` starts a daemon on the
test's filesystem and stops it (and removes its files) at teardown.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.odx.odx_support import OdxSession
from tests.support.daemon import MIB, DaemonProcess, DaemonSpec, LunSpec
from tests.unit.copy.odx_helpers import xfs_unavailable_is_fatal

pytestmark = [pytest.mark.integration]

TWO_LUNS = [LunSpec(lun=0, size=64 * MIB), LunSpec(lun=1, size=64 * MIB)]


def filesystem_type(path: str) -> str:
    completed = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True)
    return completed.stdout.strip()


@pytest.fixture(scope="session")
def ext4_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A directory on ext4: the temporary directory when it is ext4, else a loop mount."""
    base = str(tmp_path_factory.mktemp("ext4"))
    if filesystem_type(base) in ("ext2/ext3", "ext4"):
        yield base
        return
    image, mountpoint = os.path.join(base, "ext4.img"), os.path.join(base, "mnt")
    os.mkdir(mountpoint)
    try:
        if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
            raise OSError("need root and mkfs.ext4")
        subprocess.run(["truncate", "-s", "2G", image], check=True, capture_output=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "loop", image, mountpoint], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as error:
        if xfs_unavailable_is_fatal():
            pytest.fail(f"CI=true but no ext4 directory: {error}")
        pytest.skip(f"no ext4 directory: {error}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", mountpoint], capture_output=True)


@pytest.fixture(params=["xfs", "ext4"])
def filesystem(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def fs_base(filesystem: str, request: pytest.FixtureRequest) -> Iterator[Path]:
    root = request.getfixturevalue("xfs_mount" if filesystem == "xfs" else "ext4_dir")
    directory = Path(tempfile.mkdtemp(prefix="odx-it-", dir=root))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


StartDaemon = Callable[..., DaemonProcess]


@pytest.fixture
def start_daemon(fs_base: Path, request: pytest.FixtureRequest) -> Iterator[StartDaemon]:
    daemons: list[DaemonProcess] = []

    def start(spec: DaemonSpec | None = None, *, odx: dict | None = None) -> DaemonProcess:
        spec = spec or DaemonSpec(luns=[LunSpec(lun.lun, lun.size, lun.block_size) for lun in TWO_LUNS])
        if odx:
            spec.extra_config = {**spec.extra_config, "odx": odx}
        daemon = DaemonProcess(spec, fs_base / f"daemon{len(daemons)}")
        daemons.append(daemon)
        return daemon.start()

    try:
        yield start
    finally:
        for daemon in daemons:
            daemon.stop()
            request.node.add_report_section("teardown", f"odxtarget log ({daemon.directory.name})",
                                            daemon.log_text()[-20_000:])


@pytest.fixture
def daemon(start_daemon: StartDaemon) -> DaemonProcess:
    """The default: two 64 MiB LUNs of 512-byte blocks, default copy limits."""
    return start_daemon()


@pytest.fixture
def session(daemon: DaemonProcess) -> Iterator[OdxSession]:
    with OdxSession(daemon) as opened:
        yield opened
